"""Colour correction of the SR output towards the bicubic upsample of the LQ input (as StableSR and OSEDiff do).

One-step diffusion SR can shift the global colour of an image; both corrections below keep the generated detail
and take the colour from the bicubic upsample, which has the input's colours by construction.
Images are (B, 3, H, W) in [0, 1]; `sr` and `reference` have the same size.

- `adain`: per-image, per-channel mean and standard deviation of `sr` set to those of the reference (AdaIN,
  Huang & Belongie 2017; StableSR's `adaptive_instance_normalization`). The default, as in StableSR's and
  OSEDiff's inference scripts.
- `wavelet`: the low-frequency band of `sr` replaced by the reference's, from a 5-level dilated-blur
  ("à trous") wavelet decomposition (StableSR's `wavelet_reconstruction`).
- `none`: `sr` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from d3sr.options import check_choice

COLOR_FIXES = ("adain", "wavelet", "none")


def adain(sr: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """`sr` with each channel's mean and std replaced by the reference's (statistics over H×W)."""
    sr_mean, sr_std = _mean_std(sr, eps)
    ref_mean, ref_std = _mean_std(reference, eps)
    return (sr - sr_mean) / sr_std * ref_std + ref_mean


def _mean_std(image: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    flat = image.flatten(2)
    mean = flat.mean(-1)[..., None, None]
    std = (flat.var(-1) + eps).sqrt()[..., None, None]
    return mean, std


def wavelet_blur(image: torch.Tensor, radius: int) -> torch.Tensor:
    """3×3 binomial blur with dilation `radius` (replicate padding): one level of the à trous transform."""
    kernel = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]], device=image.device) / 16
    channels = image.shape[1]
    kernel = kernel.to(image.dtype).expand(channels, 1, 3, 3)
    padded = F.pad(image, (radius, radius, radius, radius), mode="replicate")
    return F.conv2d(padded, kernel, groups=channels, dilation=radius)


def wavelet_decomposition(image: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """(high, low) with high + low == image: the sum of `levels` detail bands and the residual low band."""
    high = torch.zeros_like(image)
    for level in range(levels):
        low = wavelet_blur(image, 2**level)
        high = high + (image - low)
        image = low
    return high, image


def wavelet(sr: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """The detail bands of `sr` on the low-frequency band of the reference."""
    high, _ = wavelet_decomposition(sr, levels)
    _, low = wavelet_decomposition(reference, levels)
    return high + low


def color_fix(sr: torch.Tensor, reference: torch.Tensor, method: str = "adain") -> torch.Tensor:
    """Apply colour correction `method` ('adain', 'wavelet' or 'none') in float32; result clamped to [0, 1]."""
    check_choice("color_fix", method, COLOR_FIXES)
    if sr.shape != reference.shape:
        raise ValueError(
            f"color_fix needs images of the same shape, got {tuple(sr.shape)} and {tuple(reference.shape)}"
        )
    if method == "none":
        return sr
    fix = adain if method == "adain" else wavelet
    return fix(sr.float(), reference.float()).clamp(0, 1).to(sr.dtype)
