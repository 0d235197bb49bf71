"""Checkpoint → inference bundle: `python -m d3sr.export ckpt=PATH output=DIR [merge=true] [overwrite=true]`.

A bundle is a folder that D3SRPipeline.from_pretrained (and `d3sr.infer bundle=DIR`) loads with the base model:

    d3sr_bundle.json                   base model id/folder (or the tiny preset), T_L, VAE scaling factor,
                                       LoRA rank/α/targets/scale, package version, source checkpoint and iteration
    prompt_embeds.safetensors          the fixed text embedding c ("prompt_embeds", (1, 77, 1024) for SD 2.1)
    pytorch_lora_weights.safetensors   the generator's UNet LoRA (default), or with merge=true:
    unet/                              the UNet with the LoRA merged in (diffusers save_pretrained format)

The LoRA file is what diffusers' `StableDiffusionPipeline.save_lora_weights` writes for a peft-adapted UNet: peft
keys (`get_peft_model_state_dict`) prefixed `unet.`, with the LoraConfig in the safetensors metadata
(`lora_adapter_metadata`), so `pipe.load_lora_weights(DIR)` and
`unet.load_lora_adapter(DIR, weight_name="pytorch_lora_weights.safetensors", prefix="unet")` read it as well.
The peft keys are kept as they are (no `convert_state_dict_to_diffusers`): with LoRA on conv layers as well as
attention, that conversion renames only the attention keys, and diffusers' loaders then skip those layers.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import hydra
import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from d3sr.cli import run_reporting_errors
from d3sr.config import D3SRError
from d3sr.inference.pipeline import (
    BUNDLE_JSON,
    LORA_PREFIX,
    LORA_WEIGHTS,
    PROMPT_EMBEDS,
    UNET_FOLDER,
    _generator_from_checkpoint,
    fuse_lora,
    load_checkpoint,
)

log = logging.getLogger("d3sr.export")


def export_bundle(
    ckpt: str | Path,
    output: str | Path,
    merge: bool = False,
    overwrite: bool = False,
    base_model: str | None = None,
) -> Path:
    """Write the inference bundle of training checkpoint `ckpt` to the folder `output` (atomically); returns it."""
    ckpt, output = Path(ckpt).expanduser(), Path(output).expanduser()
    if not ckpt.is_file():
        raise D3SRError(f"ckpt={ckpt} does not exist")
    if output.exists() and not output.is_dir():
        raise D3SRError(f"output={output} exists and is not a folder")
    if output.is_dir() and any(output.iterdir()) and not overwrite:
        raise D3SRError(f"output={output} is not empty; choose another folder or pass overwrite=true")

    checkpoint_meta = load_checkpoint(ckpt)["d3sr"]
    generator, _ = _generator_from_checkpoint(ckpt, base_model)
    info = bundle_info(generator, checkpoint_meta, ckpt, merge)

    # Write everything into a hidden sibling folder, then move it into place in one rename.
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = output.parent / f".{output.name}.tmp-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        save_file(
            {"prompt_embeds": generator.prompt_embeds.detach().float().contiguous()}, str(staging / PROMPT_EMBEDS)
        )
        if merge:
            fuse_lora(generator.unet).save_pretrained(staging / UNET_FOLDER, safe_serialization=True)
        else:
            save_lora(generator.unet, staging)
        (staging / BUNDLE_JSON).write_text(json.dumps(info, indent=2) + "\n")
        _replace_folder(staging, output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return output


def save_lora(unet: torch.nn.Module, folder: Path) -> None:
    """The UNet's LoRA as diffusers' save_lora_weights writes it (peft keys prefixed `unet.`, config in metadata)."""
    from diffusers import StableDiffusionPipeline
    from peft.utils import get_peft_model_state_dict

    weights = {k: v.detach().float().contiguous() for k, v in get_peft_model_state_dict(unet).items()}
    config = unet.peft_config["default"].to_dict()
    StableDiffusionPipeline.save_lora_weights(
        folder, unet_lora_layers=weights, unet_lora_adapter_metadata=config, weight_name=LORA_WEIGHTS
    )
    assert all(k.startswith(LORA_PREFIX) for k in _keys(folder / LORA_WEIGHTS))


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        return list(handle.keys())


def bundle_info(generator, checkpoint_meta: dict, ckpt: Path, merge: bool) -> dict:
    """The content of d3sr_bundle.json."""
    import d3sr

    config = ((checkpoint_meta.get("config") or {}).get("model") or {}).get("generator") or {}
    return {
        "format": "d3sr-bundle",
        "format_version": 1,
        "d3sr_version": d3sr.__version__,
        "weights": "merged" if merge else "lora",
        "base": generator.backbone_description,  # {"model", "kind", "revision"} or {"preset": "tiny", ...}
        "kind": generator.backbone_description.get("kind", "sd"),
        "backbone": config.get("backbone"),  # the Hydra node that built the base model in training
        "timestep": generator.timestep,  # T_L
        "scaling_factor": generator.scaling_factor,  # VAE latent scaling factor
        "lora": {
            "rank": generator.lora_rank,
            "alpha": generator.lora_alpha,
            "targets": generator.lora_targets,
            "scale": generator.lora_alpha / generator.lora_rank,  # α / r, already merged when weights == "merged"
            "file": None if merge else LORA_WEIGHTS,
        },
        "unet": UNET_FOLDER if merge else None,
        "prompt_embeds": PROMPT_EMBEDS,
        "source": {
            "checkpoint": str(ckpt.resolve()),
            "iteration": checkpoint_meta.get("iteration"),
            "d3sr_version": checkpoint_meta.get("version"),
        },
    }


def _replace_folder(staging: Path, output: Path) -> None:
    """Move `staging` to `output`, replacing an existing (empty or overwritable) folder."""
    if not output.exists():
        staging.rename(output)
        return
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    output.rename(old)
    staging.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def run(cfg: DictConfig) -> Path:
    """Check the command line and export."""
    if not cfg.get("ckpt") or not cfg.get("output"):
        raise D3SRError("usage: python -m d3sr.export ckpt=PATH/TO/last.ckpt output=BUNDLE_DIR [merge=true]")
    output = export_bundle(cfg.ckpt, cfg.output, cfg.merge, cfg.overwrite, cfg.get("base_model"))
    kind = "merged UNet" if cfg.merge else "LoRA"
    print(f"Exported {cfg.ckpt} → {output} ({kind}); load with D3SRPipeline.from_pretrained({str(output)!r})")
    return output


@hydra.main(version_base="1.3", config_path="../../conf", config_name="export")
def main(cfg: DictConfig) -> None:
    run_reporting_errors(run, cfg)


if __name__ == "__main__":
    main()
