"""The generator's saved form: the one owner of what checkpoints and bundles hold and how a generator comes back.

A `GeneratorSpec` says how to rebuild a OneStepGenerator without its weights: the Hydra node of its base model
(`Backbone.source`), T_L, the LoRA settings and the VAE scaling factor. Training checkpoints store it under
`checkpoint["d3sr"]["generator"]` next to the trainable tensors; inference bundles store it in `d3sr_bundle.json`.

An inference bundle is a folder:

    d3sr_bundle.json                   format, GeneratorSpec, weights ("lora" | "merged"), source checkpoint, version
    README.md                          a Hugging Face model card (d3sr.models.model_card)
    prompt_embeds.safetensors          the fixed text embedding c ("prompt_embeds", (1, 77, 1024) for SD 2.1)
    pytorch_lora_weights.safetensors   the generator's UNet LoRA (weights "lora"), or
    unet/                              the UNet with the LoRA merged in (weights "merged", diffusers format)

The LoRA file is what diffusers' `StableDiffusionPipeline.save_lora_weights` writes for a peft-adapted UNet: peft
keys (`get_peft_model_state_dict`) prefixed `unet.`, with the LoraConfig in the safetensors metadata
(`lora_adapter_metadata`), so `pipe.load_lora_weights(DIR)` and
`unet.load_lora_adapter(DIR, weight_name="pytorch_lora_weights.safetensors", prefix="unet")` read it as well.
The peft keys are kept as they are (no `convert_state_dict_to_diffusers`): with LoRA on conv layers as well as
attention, that conversion renames only the attention keys, and diffusers' loaders then skip those layers.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from hydra.utils import get_method
from safetensors.torch import load_file, save_file

import d3sr
from d3sr.atomic_files import check_output_folder, write_folder_atomically
from d3sr.errors import D3SRError
from d3sr.models.generator import OneStepGenerator
from d3sr.models.loading import Backbone
from d3sr.models.model_card import model_card

log = logging.getLogger(__name__)

BUNDLE_JSON = "d3sr_bundle.json"
BUNDLE_FORMAT_VERSION = 2
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
PROMPT_EMBEDS = "prompt_embeds.safetensors"
UNET_FOLDER = "unet"
MODEL_CARD = "README.md"
LORA_PREFIX = "unet."  # diffusers' pipeline-level LoRA files prefix the UNet's keys with its component name


@dataclass
class GeneratorSpec:
    """Everything but the weights that rebuilds a OneStepGenerator (stored in checkpoints and bundles)."""

    backbone: dict  # Hydra node of the base model (Backbone.source), e.g. {"_target_": "...pretrained", "model": ...}
    timestep: int  # T_L
    lora_rank: int
    lora_alpha: float
    lora_targets: list[str] = field(default_factory=list)
    scaling_factor: float = 0.18215  # VAE latent scaling factor, checked against the rebuilt base
    posterior: str = "mode"  # VAE posterior read as its mode or a sample (absent before d3sr 0.1.0's EMA/ablations)

    @classmethod
    def of(cls, generator: OneStepGenerator) -> GeneratorSpec:
        """The spec of a built generator."""
        return cls(dict(generator.backbone_source), generator.timestep, generator.lora_rank, generator.lora_alpha,
                   list(generator.lora_targets), generator.scaling_factor, generator.posterior)  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict, source: str | Path) -> GeneratorSpec:
        """Parse a stored spec; D3SRError naming `source` when keys are missing (e.g. an older format)."""
        try:
            return cls(**{key: data[key] for key in ("backbone", "timestep", "lora_rank", "lora_alpha",
                                                     "lora_targets", "scaling_factor")},
                       posterior=data.get("posterior", "mode"))  # fmt: skip
        except (KeyError, TypeError) as error:
            raise D3SRError(
                f"{source}: the stored generator description lacks {error}; it was written by another d3sr version "
                "(re-export the bundle from its checkpoint with this version)"
            ) from error

    def to_dict(self) -> dict:
        return asdict(self)

    def build(self, embeds: dict[str, torch.Tensor], base_model: str | None = None) -> OneStepGenerator:
        """A generator (fresh zero-effect LoRA) on the stored base with the stored fixed embedding.

        base_model: a local folder or hub id replacing the stored one (pretrained SD bases only). Pretrained bases
        load in float32 without their text encoders; a missing base raises loading.pretrained's D3SRError.
        """
        arguments = dict(self.backbone)
        load = get_method(arguments.pop("_target_"))
        accepted = set(inspect.signature(load).parameters)
        arguments.update({key: value for key, value in (("embeds", embeds), ("dtype", "float32"), ("with_vae", True))
                          if key in accepted})  # fmt: skip
        if base_model:
            if "model" in arguments:
                arguments["model"] = str(base_model)
            else:
                log.info("base_model=%s ignored: this generator was trained on %s", base_model, self.backbone)
        backbone: Backbone = load(**arguments)
        backbone.embeds = {**backbone.embeds, **embeds}
        generator = OneStepGenerator(backbone, self.timestep, self.lora_rank, self.lora_alpha, self.lora_targets,
                                     posterior=self.posterior)  # fmt: skip
        if abs(generator.scaling_factor - float(self.scaling_factor)) > 1e-6:
            raise D3SRError(
                f"the generator was trained with VAE scaling factor {self.scaling_factor}, the loaded base has "
                f"{generator.scaling_factor}"
            )
        return generator


# ------------------------------------------------------------------------------------------------------------------
# Training checkpoints.


def load_checkpoint(path: str | Path) -> dict:
    """A d3sr training checkpoint (torch.load on the CPU); D3SRError if it is not one or cannot be read."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise D3SRError(f"checkpoint {path} does not exist")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any decoding failure means "not a checkpoint"
        raise D3SRError(f"cannot read {path} as a checkpoint: {type(error).__name__}: {error}") from error
    if not isinstance(checkpoint, dict) or "d3sr" not in checkpoint or "state_dict" not in checkpoint:
        raise D3SRError(f"{path} is not a d3sr training checkpoint (no 'd3sr' entry)")
    return checkpoint


def checkpoint_record(generator: OneStepGenerator, config: dict | None, iteration: int) -> dict:
    """What D3SRModule stores under checkpoint['d3sr']: version, run config, iteration and the GeneratorSpec."""
    return {"version": d3sr.__version__, "config": config, "iteration": iteration,
            "generator": GeneratorSpec.of(generator).to_dict()}  # fmt: skip


def generator_from_checkpoint(
    path: str | Path, base_model: str | None = None, use_ema: bool = False
) -> tuple[OneStepGenerator, dict]:
    """The trained generator of a training checkpoint, and {'source', 'iteration', 'timestep', 'd3sr_version'}.

    use_ema: take the EMA of the trainable weights (d3sr.callbacks.EMA, checkpoint['ema']) instead of the weights.
    """
    checkpoint = load_checkpoint(path)
    record = checkpoint["d3sr"]
    spec = GeneratorSpec.from_dict(record.get("generator") or {}, path)
    weights = dict(checkpoint["state_dict"])
    if use_ema:
        if "ema" not in checkpoint:
            raise D3SRError(f"{path} holds no EMA weights: train with callbacks.ema.decay=0.999 (for example)")
        weights.update(checkpoint["ema"]["state_dict"])
    state = {k.removeprefix("generator."): v for k, v in weights.items() if k.startswith("generator.")}
    if "prompt_embeds" not in state:
        raise D3SRError(f"{path}: the checkpoint holds no generator.prompt_embeds")
    generator = spec.build({"prompt_embeds": state["prompt_embeds"].float()}, base_model)
    own = dict(generator.state_dict())
    missing = sorted({k for k in own if ".lora_" in k} - set(state))
    if missing:
        raise D3SRError(f"{path}: {len(missing)} generator LoRA tensors missing (e.g. {missing[0]})")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise D3SRError(f"{path}: generator tensors this model does not have (e.g. {unexpected[0]})")
    generator.load_state_dict(state, strict=False)
    info = {"source": str(path), "iteration": record.get("iteration"), "timestep": spec.timestep,
            "d3sr_version": record.get("version"), "ema": use_ema, "config": record.get("config")}  # fmt: skip
    return generator, info


# ------------------------------------------------------------------------------------------------------------------
# Inference bundles.


def read_bundle_info(folder: str | Path) -> dict:
    """The bundle's d3sr_bundle.json; D3SRError if the folder is not a bundle of this format."""
    info_file = Path(folder) / BUNDLE_JSON
    if not info_file.is_file():
        raise D3SRError(f"{folder} is not a d3sr inference bundle (no {BUNDLE_JSON}); create one with d3sr.export")
    info = json.loads(info_file.read_text())
    if info.get("format_version") != BUNDLE_FORMAT_VERSION:
        raise D3SRError(
            f"{folder} is a bundle of format {info.get('format_version')}, this d3sr reads format "
            f"{BUNDLE_FORMAT_VERSION}: re-export it from its checkpoint with `python -m d3sr.export`"
        )
    return info


def generator_from_bundle(folder: str | Path, base_model: str | None = None) -> tuple[OneStepGenerator, dict]:
    """The generator of an inference bundle folder, and the bundle's info (with 'source')."""
    folder = Path(folder)
    info = read_bundle_info(folder)
    spec = GeneratorSpec.from_dict(info["generator"], folder)
    generator = spec.build(load_file(str(folder / PROMPT_EMBEDS)), base_model)
    if info["weights"] == "merged":
        from diffusers import UNet2DConditionModel

        # The merged weights already hold the LoRA: replace the adapted UNet with the saved plain one.
        generator.unet = UNet2DConditionModel.from_pretrained(folder / UNET_FOLDER).requires_grad_(False)
    else:
        load_lora_file(generator.unet, folder / LORA_WEIGHTS)
    return generator, {**info, "source": str(folder)}


def load_generator(path: str | Path, base_model: str | None = None) -> tuple[OneStepGenerator, dict]:
    """The generator of a bundle folder or a training checkpoint file, and where it came from."""
    path = Path(path).expanduser()
    if path.is_dir():
        return generator_from_bundle(path, base_model)
    if path.is_file():
        return generator_from_checkpoint(path, base_model)
    raise D3SRError(f"{path} is neither an inference bundle folder nor a checkpoint file")


def export_bundle(
    ckpt: str | Path,
    output: str | Path,
    merge: bool = False,
    overwrite: bool = False,
    base_model: str | None = None,
    use_ema: bool = False,
    evaluation: str | Path | None = None,
) -> Path:
    """Write the inference bundle of training checkpoint `ckpt` to the folder `output` (atomically); returns it.

    use_ema: export the EMA weights the checkpoint holds (d3sr.callbacks.EMA) instead of the trained ones.
    evaluation: a `summary.json` of `python -m d3sr.evaluate` whose results the model card lists.
    """
    ckpt, output = Path(ckpt).expanduser(), Path(output).expanduser()
    check_output_folder(output, overwrite)
    summary = None
    if evaluation:
        try:
            summary = json.loads(Path(evaluation).expanduser().read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise D3SRError(
                f"evaluation={evaluation} is not a readable summary.json of d3sr.evaluate: {error}"
            ) from error
    generator, info = generator_from_checkpoint(ckpt, base_model, use_ema)
    bundle = {
        "format": "d3sr-bundle",
        "format_version": BUNDLE_FORMAT_VERSION,
        "d3sr_version": d3sr.__version__,
        "weights": "merged" if merge else "lora",
        "generator": GeneratorSpec.of(generator).to_dict(),
        "lora_scale": generator.lora_alpha / generator.lora_rank,  # α / r, already applied when weights == "merged"
        "source": {
            "checkpoint": str(ckpt.resolve()),
            "iteration": info["iteration"],
            "d3sr_version": info["d3sr_version"],
            "ema": use_ema,
        },  # fmt: skip
    }

    # Write everything into a hidden sibling folder, then move it into place in one rename.
    def write(folder: Path) -> None:
        embeds = {"prompt_embeds": generator.prompt_embeds.detach().float().contiguous()}
        save_file(embeds, str(folder / PROMPT_EMBEDS))
        if merge:
            fuse_lora(generator.unet).save_pretrained(folder / UNET_FOLDER, safe_serialization=True)
        else:
            save_lora(generator.unet, folder)
        (folder / BUNDLE_JSON).write_text(json.dumps(bundle, indent=2) + "\n")
        (folder / MODEL_CARD).write_text(model_card(bundle, info["config"], summary))

    return write_folder_atomically(output, write)


# ------------------------------------------------------------------------------------------------------------------
# LoRA weights.


def lora_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    """The peft LoRA layers of a UNet (empty for a plain or merged UNet)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in unet.modules() if isinstance(module, BaseTunerLayer)]


def fuse_lora(unet: torch.nn.Module) -> torch.nn.Module:
    """Merge the LoRA weights into the base layers (W + α/r·BA) and remove the adapter: a plain diffusers UNet."""
    for layer in lora_layers(unet):
        layer.merge()
    unet.unload_lora()
    return unet


def save_lora(unet: torch.nn.Module, folder: Path) -> Path:
    """The UNet's LoRA as diffusers' save_lora_weights writes it (peft keys prefixed `unet.`, config in metadata)."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    weights = {k: v.detach().float().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    config = unet.peft_config["default"].to_dict()
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=weights, unet_lora_adapter_metadata=config, weight_name=LORA_WEIGHTS
    )
    return folder / LORA_WEIGHTS


def load_lora_file(unet: torch.nn.Module, path: Path) -> None:
    """Load a bundle's LoRA weights (diffusers/peft keys prefixed `unet.`) into `unet`'s existing adapter."""
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict

    weights = {k.removeprefix(LORA_PREFIX): v for k, v in load_file(str(path)).items()}
    expected = set(get_peft_model_state_dict(unet))
    missing, unexpected = sorted(expected - set(weights)), sorted(set(weights) - expected)
    if missing or unexpected:
        raise D3SRError(
            f"{path} does not match the bundle's LoRA settings: {len(missing)} tensors missing, "
            f"{len(unexpected)} unexpected (e.g. {(missing or unexpected)[0]})"
        )
    set_peft_model_state_dict(unet, weights)
