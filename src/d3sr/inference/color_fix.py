"""Colour correction of the SR output towards the LQ input (as StableSR and OSEDiff do).

One-step diffusion SR can shift the colour of an image; the corrections below keep the generated detail and take
the colour from the input: from its bicubic upsample (the reference, which has the input's colours by construction)
or, for `backproject`, from the LQ itself. Images are (B, 3, H, W) in [0, 1]; `sr` is ×4 the LQ's size.

- `adain`: per-image, per-channel mean and standard deviation of `sr` set to those of the reference (AdaIN,
  Huang & Belongie 2017; StableSR's `adaptive_instance_normalization`). The default, as in StableSR's and
  OSEDiff's inference scripts.
- `wavelet`: the low-frequency band of `sr` replaced by the reference's, from a 5-level dilated-blur
  ("à trous") wavelet decomposition (StableSR's `wavelet_reconstruction`).
- `backproject`: iterative back-projection onto the LQ (Irani & Peleg 1991; the data-consistency step of DDNM-style
  diffusion restoration): three times, the bicubic ×4 upsample of the residual lq − downscale(sr) is added, with
  `downscale` the clean ×4 degradation (d3sr.images.downscale). What the LQ determines (the band its pixels resolve:
  the tone of every region) then comes from the LQ, the detail above that band from the generator. The luma (BT.601
  YCbCr, kornia's conversion) is the back-projected SR's; the chroma is the back-projected bicubic upsample's, so
  colour comes from the LQ alone, as in the classic practice of super-resolving luma and upscaling chroma (SRCNN,
  Dong et al. 2014): the eye resolves chroma far more coarsely than luma. Right for LQ made by that downscale (clean
  ×4 SR, the demo); on LQ with unknown blur, noise or JPEG it pulls those back in, so `adain` stays the default.
- `none`: `sr` unchanged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.color import rgb_to_ycbcr, ycbcr_to_rgb

from d3sr.images import SCALE, downscale, upsample_lq
from d3sr.options import check_choice

COLOR_FIXES = ("adain", "wavelet", "backproject", "none")
# Back-projection steps, measured on the 8 held-out photos (BENCHMARKS.md): 1 step leaves PSNR-Y 0.05–0.18 dB below
# 3 steps', and 10 steps take 0.006–0.018 off the sharpness for at most 0.01 dB.
BACKPROJECT_STEPS = 3


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


def back_projection(image: torch.Tensor, lq: torch.Tensor, steps: int = BACKPROJECT_STEPS) -> torch.Tensor:
    """`image` (×4 the LQ's size) moved towards the images whose clean ×4 downscale is `lq`, in `steps` steps."""
    for _ in range(steps):
        residual = lq - downscale(image)
        image = image + F.interpolate(residual, scale_factor=SCALE, mode="bicubic", align_corners=False)
    return image


def backproject(sr: torch.Tensor, lq: torch.Tensor, steps: int = BACKPROJECT_STEPS) -> torch.Tensor:
    """The luma of the back-projected `sr` with the chroma of the back-projected bicubic upsample of `lq`."""
    luma = rgb_to_ycbcr(back_projection(sr, lq, steps))[:, :1]
    chroma = rgb_to_ycbcr(back_projection(upsample_lq(lq), lq, steps))[:, 1:]
    return ycbcr_to_rgb(torch.cat([luma, chroma], dim=1))


def color_fix(sr: torch.Tensor, lq: torch.Tensor, method: str = "adain") -> torch.Tensor:
    """Apply colour correction `method` (one of COLOR_FIXES) to `sr` (B, 3, 4h, 4w) from its input `lq` (B, 3, h, w),
    in float32; result clamped to [0, 1]."""
    check_choice("color_fix", method, COLOR_FIXES)
    if sr.shape[:2] != lq.shape[:2] or tuple(sr.shape[-2:]) != (lq.shape[-2] * SCALE, lq.shape[-1] * SCALE):
        raise ValueError(f"color_fix needs sr ×{SCALE} the size of lq, got {tuple(sr.shape)} and {tuple(lq.shape)}")
    if method == "none":
        return sr
    if method == "backproject":
        fixed = backproject(sr.float(), lq.float())
    else:
        fixed = (adain if method == "adain" else wavelet)(sr.float(), upsample_lq(lq))
    return fixed.clamp(0, 1).to(sr.dtype)
