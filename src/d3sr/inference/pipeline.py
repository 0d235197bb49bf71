"""D3SRPipeline: ×4 super-resolution of images of any size with a trained generator (bundle or checkpoint).

    pipe = D3SRPipeline.from_pretrained("bundle_dir" or "last.ckpt", device="cuda", dtype=torch.bfloat16)
    sr = pipe(pil_image)              # PIL image, 4× the size
    srs = pipe([pil_a, pil_b])        # list of PIL images
    sr = pipe(tensor)                 # (3, h, w) or (B, 3, h, w) in [0, 1] -> (…, 4h, 4w) in [0, 1]

Per image: ×4 bicubic upsampling → padding to a multiple of 8 → VAE encode → one UNet call at T_L → VAE decode
(each stage tiled above `tile_size` output pixels, see tiling.py) → crop → colour fix towards the bicubic upsample.
The math is OneStepGenerator's; this module only loads weights and handles images.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from PIL import Image
from safetensors.torch import load_file

from d3sr.config import D3SRError, check_choice
from d3sr.data.datasets import pil_to_tensor, to_uint8
from d3sr.inference.color_fix import COLOR_FIXES
from d3sr.inference.color_fix import color_fix as apply_color_fix
from d3sr.inference.tiling import check_tiling, pad_to_multiple, run_generator, upsample
from d3sr.models.generator import OneStepGenerator
from d3sr.models.loading import Backbone

log = logging.getLogger(__name__)

BUNDLE_JSON = "d3sr_bundle.json"
LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
PROMPT_EMBEDS = "prompt_embeds.safetensors"
UNET_FOLDER = "unet"
LORA_PREFIX = "unet."  # diffusers' pipeline-level LoRA files prefix the UNet's keys with its component name

# Defaults shared by the Python API and `d3sr.infer` (conf/infer.yaml).
DEFAULT_TILE_SIZE = 512  # output pixels; only images larger than this along a side are split along it
DEFAULT_TILE_OVERLAP = 128  # output pixels (16 latent pixels)
DEFAULT_COLOR_FIX = "adain"  # as StableSR's and OSEDiff's inference scripts

ImageInput = Image.Image | torch.Tensor | Sequence[Image.Image]


# ------------------------------------------------------------------------------------------------------------------
# Loading.


def backbone_config(description: dict, config: dict | None) -> dict:
    """The Hydra node that builds the base model: the trained run's, else one rebuilt from the description."""
    if config and "_target_" in config:
        return dict(config)
    if description.get("preset") == "tiny":
        return {"_target_": "d3sr.models.loading.tiny", "kind": description.get("kind", "sd"),
                "seed": description.get("seed", 0)}  # fmt: skip
    if "model" in description:
        return {"_target_": "d3sr.models.loading.pretrained", "model": description["model"],
                "kind": description.get("kind", "sd"), "revision": description.get("revision")}  # fmt: skip
    raise D3SRError(f"cannot tell which base model to load from {description}")


def build_backbone(config: dict, embeds: dict[str, torch.Tensor], base_model: str | None = None) -> Backbone:
    """Instantiate the base model (UNet, VAE, ᾱ_t) described by `config` with the stored fixed embeddings.

    Pretrained bases are loaded in float32 without their text encoders; `base_model` replaces the stored model
    id/folder (e.g. a local copy of SD 2.1-base). A missing base raises loading.pretrained's D3SRError.
    """
    config = dict(config)
    pretrained = config["_target_"].endswith(".pretrained")
    if pretrained:
        config.update(dtype="float32", with_vae=True)
        if base_model:
            config["model"] = str(base_model)
    elif base_model:
        log.info("base_model=%s ignored: this generator was trained on the %s base", base_model, config["_target_"])
    build = instantiate(config, _partial_=True)
    backbone = build(embeds=embeds) if pretrained else build()
    backbone.embeds = {**backbone.embeds, **embeds}
    return backbone


def _lora_layers(unet: torch.nn.Module) -> list[torch.nn.Module]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [module for module in unet.modules() if isinstance(module, BaseTunerLayer)]


def fuse_lora(unet: torch.nn.Module) -> torch.nn.Module:
    """Merge the LoRA weights into the base layers (W + α/r·BA) and remove the adapter: a plain diffusers UNet."""
    for layer in _lora_layers(unet):
        layer.merge()
    unet.unload_lora()
    return unet


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


class D3SRPipeline:
    """×4 super-resolution with a OneStepGenerator; see the module docstring for inputs and outputs.

    tile_size / tile_overlap: tiling of the three stages in output pixels (0 = one pass; see tiling.py).
    color_fix: 'adain' (default), 'wavelet' or 'none' (see color_fix.py).
    """

    def __init__(
        self,
        generator: OneStepGenerator,
        tile_size: int = DEFAULT_TILE_SIZE,
        tile_overlap: int = DEFAULT_TILE_OVERLAP,
        color_fix: str = DEFAULT_COLOR_FIX,
        info: dict | None = None,
    ) -> None:
        check_tiling(tile_size, tile_overlap)
        check_choice("color_fix", color_fix, COLOR_FIXES)
        self.generator = generator.eval().requires_grad_(False)
        self.tile_size, self.tile_overlap, self.color_fix = int(tile_size), int(tile_overlap), color_fix
        self.info = dict(info or {})

    # --------------------------------------------------------------------------------------------------------------
    # Construction.

    @classmethod
    def from_pretrained(
        cls,
        path: str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        base_model: str | None = None,
        fuse: bool = True,
        **kwargs: Any,
    ) -> D3SRPipeline:
        """Load an inference bundle folder (d3sr.export) or a training checkpoint (.ckpt).

        device: default 'cuda' when available, else 'cpu'. dtype: of the UNet and VAE (default float32).
        base_model: a local folder or hub id replacing the stored SD base (pretrained bases only).
        fuse: merge the LoRA into the UNet weights (faster; float32 merge before any cast).
        kwargs: tile_size, tile_overlap, color_fix.
        """
        path = Path(path).expanduser()
        if path.is_dir():
            generator, info = _generator_from_bundle(path, base_model)
        elif path.is_file():
            generator, info = _generator_from_checkpoint(path, base_model)
        else:
            raise D3SRError(f"{path} is neither an inference bundle folder nor a checkpoint file")
        if fuse and _lora_layers(generator.unet):
            fuse_lora(generator.unet)
        device = device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
        return cls(generator, info=info, **kwargs).to(device, dtype or torch.float32)

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None) -> D3SRPipeline:
        """Move to `device`; cast the UNet and VAE to `dtype` (ᾱ_t and the x0 formula stay float32)."""
        if device is not None:
            self.generator.to(device)
        if dtype is not None:
            if dtype not in (torch.float32, torch.bfloat16, torch.float16):
                raise ValueError(f"dtype must be float32, bfloat16 or float16, got {dtype}")
            # nn.Module.to: diffusers' own `to` warns about keeping fp32 modules, which these models do not have.
            for model in (self.generator.unet, self.generator.vae):
                if model.dtype != dtype:
                    torch.nn.Module.to(model, dtype)
        return self

    @property
    def device(self) -> torch.device:
        return self.generator.alphas_cumprod.device

    @property
    def dtype(self) -> torch.dtype:
        return self.generator.unet.dtype

    # --------------------------------------------------------------------------------------------------------------
    # Super-resolution.

    @torch.inference_mode()
    def super_resolve(
        self,
        lq: torch.Tensor,
        tile_size: int | None = None,
        tile_overlap: int | None = None,
        color_fix: str | None = None,
    ) -> torch.Tensor:
        """(B, 3, 4h, 4w) float32 in [0, 1] on the pipeline's device from lq (B, 3, h, w) in [0, 1]."""
        tile_size = self.tile_size if tile_size is None else int(tile_size)
        tile_overlap = self.tile_overlap if tile_overlap is None else int(tile_overlap)
        method = check_choice("color_fix", self.color_fix if color_fix is None else color_fix, COLOR_FIXES)
        if lq.ndim != 4 or lq.shape[1] != 3:
            raise ValueError(f"lq must be (B, 3, h, w), got {tuple(lq.shape)}")
        # Bicubic ×4, pad to a multiple of 8, generator stages (tiled), crop, colour fix.
        up = upsample(lq.to(self.device, torch.float32))
        height, width = up.shape[-2:]
        sr = run_generator(self.generator, pad_to_multiple(up) * 2 - 1, tile_size, tile_overlap)
        sr = ((sr[..., :height, :width] + 1) / 2).clamp(0, 1)
        return apply_color_fix(sr, up, method)

    def __call__(self, images: ImageInput, **options: Any) -> Image.Image | torch.Tensor | list[Image.Image]:
        """Super-resolve a PIL image, a list of PIL images, or a (3, h, w) / (B, 3, h, w) tensor in [0, 1].

        Returns the same kind: PIL image(s) (RGB, 8 bit) or a float32 tensor in [0, 1] on the input's device.
        options: tile_size, tile_overlap, color_fix for this call.
        """
        if isinstance(images, Image.Image):
            return self._pil(images, options)
        if isinstance(images, torch.Tensor):
            return self._tensor(images, options)
        if isinstance(images, (list, tuple)) and all(isinstance(image, Image.Image) for image in images):
            return [self._pil(image, options) for image in images]
        raise TypeError(f"expected a PIL image, a list of PIL images or a tensor, got {type(images).__name__}")

    def _pil(self, image: Image.Image, options: dict) -> Image.Image:
        sr = self.super_resolve(pil_to_tensor(image)[None], **options)[0]
        return tensor_to_pil(sr)

    def _tensor(self, images: torch.Tensor, options: dict) -> torch.Tensor:
        single = images.ndim == 3
        batch = images[None] if single else images
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected a (3, h, w) or (B, 3, h, w) tensor, got {tuple(images.shape)}")
        if batch.is_floating_point() and (batch.min() < -1e-3 or batch.max() > 1 + 1e-3):
            raise ValueError(f"image tensors must be in [0, 1], got [{batch.min():.3g}, {batch.max():.3g}]")
        sr = self.super_resolve(batch.float(), **options).to(images.device)
        return sr[0] if single else sr


# ------------------------------------------------------------------------------------------------------------------
# Images.


def tensor_to_pil(image: torch.Tensor) -> Image.Image:
    """8-bit RGB PIL image from (3, H, W) in [0, 1]."""
    return Image.fromarray(to_uint8(image), "RGB")


# ------------------------------------------------------------------------------------------------------------------
# Sources: bundles and checkpoints.


def read_bundle_info(folder: Path) -> dict:
    """The bundle's d3sr_bundle.json; D3SRError if the folder is not a bundle."""
    info_file = folder / BUNDLE_JSON
    if not info_file.is_file():
        raise D3SRError(f"{folder} is not a d3sr inference bundle (no {BUNDLE_JSON}); create one with d3sr.export")
    return json.loads(info_file.read_text())


def _generator_from_bundle(folder: Path, base_model: str | None) -> tuple[OneStepGenerator, dict]:
    info = read_bundle_info(folder)
    embeds = load_file(str(folder / info.get("prompt_embeds", PROMPT_EMBEDS)))
    backbone = build_backbone(backbone_config(info["base"], info.get("backbone")), embeds, base_model)
    lora = info["lora"]
    if info["weights"] == "merged":
        from diffusers import UNet2DConditionModel

        backbone.unet = UNet2DConditionModel.from_pretrained(folder / info.get("unet", UNET_FOLDER))
    generator = OneStepGenerator(backbone, info["timestep"], lora["rank"], lora["alpha"], lora["targets"])
    if info["weights"] == "merged":
        generator.unet.unload_lora()  # the merged weights already hold the LoRA; drop the fresh adapter
    else:
        load_lora_file(generator.unet, folder / lora.get("file", LORA_WEIGHTS))
    _check_scaling_factor(generator, info["scaling_factor"], folder)
    return generator, {**info, "source": str(folder)}


def load_checkpoint(path: Path) -> dict:
    """A d3sr training checkpoint (torch.load on CPU); D3SRError if it is not one."""
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # noqa: BLE001 - any decoding failure means "not a checkpoint"
        raise D3SRError(f"cannot read {path} as a checkpoint: {type(error).__name__}: {error}") from error
    if not isinstance(checkpoint, dict) or "d3sr" not in checkpoint or "state_dict" not in checkpoint:
        raise D3SRError(f"{path} is not a d3sr training checkpoint (no 'd3sr' entry)")
    return checkpoint


def _generator_from_checkpoint(path: Path, base_model: str | None) -> tuple[OneStepGenerator, dict]:
    checkpoint = load_checkpoint(path)
    meta = checkpoint["d3sr"]["generator"]
    state = {
        k.removeprefix("generator."): v for k, v in checkpoint["state_dict"].items() if k.startswith("generator.")
    }
    config = ((checkpoint["d3sr"].get("config") or {}).get("model") or {}).get("generator") or {}
    embeds = {"prompt_embeds": state["prompt_embeds"].float()}
    backbone = build_backbone(backbone_config(meta["backbone"], config.get("backbone")), embeds, base_model)
    generator = OneStepGenerator(
        backbone, meta["timestep"], meta["lora_rank"], meta["lora_alpha"], meta["lora_targets"]
    )
    own = dict(generator.state_dict())
    lora_keys = {k for k in own if ".lora_" in k}
    missing = sorted(lora_keys - set(state))
    if missing:
        raise D3SRError(f"{path}: {len(missing)} generator LoRA tensors missing (e.g. {missing[0]})")
    unexpected = sorted(set(state) - set(own))
    if unexpected:
        raise D3SRError(f"{path}: generator tensors this model does not have (e.g. {unexpected[0]})")
    generator.load_state_dict(state, strict=False)
    _check_scaling_factor(generator, meta["scaling_factor"], path)
    info = {"source": str(path), "iteration": checkpoint["d3sr"].get("iteration"), "timestep": meta["timestep"]}
    return generator, info


def _check_scaling_factor(generator: OneStepGenerator, stored: float, source: Path) -> None:
    if abs(generator.scaling_factor - float(stored)) > 1e-6:
        raise D3SRError(
            f"{source} was trained with VAE scaling factor {stored}, the loaded base has {generator.scaling_factor}"
        )
