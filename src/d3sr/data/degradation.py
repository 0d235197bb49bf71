"""Degradations that turn a batch of HQ crops into LQ inputs, on the batch's device (BasicSR-style split).

Every degradation has the same two halves:
- `sample(rng) -> dict[str, Tensor]`: per-image random parameters, drawn on the CPU in the dataset workers from the
  sample's own `numpy.random.Generator` (kernels, scales, noise seeds, ...). Collated into the batch.
- `__call__(batch) -> batch`: batched, no-grad, on the device (`SRDataModule.on_after_batch_transfer`); reads
  `gt` (B, 3, H, W) in [0, 1] and the sampled parameters, adds `lq` (B, 3, H, W) in [0, 1] — the ×scale-smaller
  LQ image resized back to the HR size, as SD-based generators take it — and may replace `gt` (e.g. USM sharpening).
  `degrade(batch)` returns the small LQ (B, 3, H/scale, W/scale) before the resize back.
Determinism comes from the sampled parameters alone: no global RNG is used on the device side.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from d3sr.config import check_choice

RESIZE_MODES = ("bicubic", "bilinear", "area", "nearest")


def resize(image: torch.Tensor, size: tuple[int, int], mode: str = "bicubic") -> torch.Tensor:
    """Resize (B, C, H, W) to `size`; antialiased when shrinking with bicubic/bilinear (like MATLAB's imresize)."""
    check_choice("resize mode", mode, RESIZE_MODES)
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    kwargs = {"align_corners": False} if mode in ("bicubic", "bilinear") else {}
    if mode in ("bicubic", "bilinear") and shrinking:
        kwargs["antialias"] = True
    return F.interpolate(image, size=size, mode=mode, **kwargs)


def quantize(image: torch.Tensor) -> torch.Tensor:
    """8-bit quantisation: round(x·255)/255, clamped to [0, 1]."""
    return (image.clamp(0, 1) * 255).round() / 255


class BicubicDegradation:
    """Classic ×scale bicubic down-sampling (antialiased), 8-bit quantised: the clean-SR setting."""

    def __init__(self, scale: int = 4, resize_back: bool = True, resize_back_mode: str = "bicubic") -> None:
        if scale < 1:
            raise ValueError(f"degradation.scale must be >= 1, got {scale}")
        self.scale, self.resize_back = int(scale), resize_back
        self.resize_back_mode = check_choice("degradation.resize_back_mode", resize_back_mode, RESIZE_MODES)

    def sample(self, rng: np.random.Generator) -> dict[str, torch.Tensor]:
        """No per-image parameters."""
        return {}

    def degrade(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """LQ (B, 3, H/scale, W/scale) in [0, 1]."""
        gt = batch["gt"]
        height, width = gt.shape[-2:]
        if height % self.scale or width % self.scale:
            raise ValueError(f"gt size {height}×{width} is not divisible by the scale {self.scale}")
        return quantize(resize(gt, (height // self.scale, width // self.scale), "bicubic"))

    @torch.no_grad()
    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        batch = dict(batch)
        batch["lq"] = resize_lq(self.degrade(batch), batch["gt"].shape[-2:], self.resize_back, self.resize_back_mode)
        return batch


def resize_lq(lq: torch.Tensor, size: tuple[int, int], resize_back: bool, mode: str = "bicubic") -> torch.Tensor:
    """The generator's input: the small LQ resized back to the HR `size` (clamped to [0, 1]), or kept small."""
    if not resize_back:
        return lq
    return resize(lq, tuple(size), mode).clamp_(0, 1)
