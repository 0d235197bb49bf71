"""LoRA on diffusers UNets through peft (as diffusers' training scripts: freeze → add_adapter → fp32 LoRA)."""

from __future__ import annotations

import torch
from diffusers import UNet2DConditionModel
from peft import LoraConfig

# The one list of UNet layer types that carry LoRA, in the generator and (inside its down/mid blocks) the
# discriminator. Our choice; it reproduces the paper's 966.3 M inference parameters (PAPER_FACTS.md). Configs refer
# to it through `model.lora_targets`.
LORA_TARGETS = (
    "to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2",
    "conv", "conv1", "conv2", "conv_shortcut", "conv_out",
)  # fmt: skip

# The discriminator keeps only the down path and middle block: LoRA on the same layer types inside those blocks.
DISCRIMINATOR_BLOCKS = ("down_blocks", "mid_block")


def blocks_regex(blocks: tuple[str, ...] | list[str], targets: tuple[str, ...] | list[str]) -> str:
    """peft `target_modules` regex matching the layers named `targets` inside the top-level `blocks` only."""
    layer = "|".join(t.replace(".", r"\.") for t in targets)
    return rf"^({'|'.join(blocks)})\..*\.({layer})$"


def add_lora(
    unet: UNet2DConditionModel, rank: int, alpha: float, targets: str | list[str] | tuple[str, ...]
) -> UNet2DConditionModel:
    """Freeze `unet`, add a LoRA adapter (rank, alpha) on `targets`, and keep the LoRA weights in fp32."""
    if rank <= 0:
        raise ValueError(f"lora rank must be > 0, got {rank}")
    unet.requires_grad_(False)
    config = LoraConfig(
        r=rank, lora_alpha=alpha, init_lora_weights="gaussian",
        target_modules=targets if isinstance(targets, str) else list(targets),
    )  # fmt: skip
    unet.add_adapter(config)
    for param in unet.parameters():
        if param.requires_grad:
            param.data = param.data.float()
    return unet


def cast_frozen(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Cast frozen parameters of `module` to `dtype` (bf16 halves memory), leaving trainable ones in fp32."""
    for param in module.parameters():
        if not param.requires_grad and param.dtype.is_floating_point:
            param.data = param.data.to(dtype)
