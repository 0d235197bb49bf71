"""Torch-only full-reference fidelity: PSNR and SSIM on the Y channel (training validation and evaluation).

Conventions (BasicSR / pyiqa, the ones SR papers report): images (B, 3, H, W) in [0, 1]; Y of YCbCr by ITU-R BT.601
with the studio range (Y = 16 + 65.481·R + 128.553·G + 24.966·B, /255); optional `crop_border` pixels removed.
Cross-checked against scikit-image in tests/test_psnr_ssim.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rgb_to_y(image: torch.Tensor) -> torch.Tensor:
    """BT.601 luma (studio range) of (B, 3, H, W) RGB in [0, 1] → (B, 1, H, W) in [16/255, 235/255]."""
    weights = image.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return (image * weights).sum(1, keepdim=True) / 255.0 + 16.0 / 255.0


def _crop(image: torch.Tensor, border: int) -> torch.Tensor:
    return image[..., border:-border, border:-border] if border > 0 else image


def psnr_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """PSNR (dB) on the Y channel, per image (B,); inf for identical images."""
    sr, gt = _crop(rgb_to_y(sr.double()), crop_border), _crop(rgb_to_y(gt.double()), crop_border)
    mse = (sr - gt).pow(2).mean(dim=(1, 2, 3))
    return (10 * torch.log10(1.0 / mse)).float()


def _gaussian_window(size: int = 11, sigma: float = 1.5, device=None) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64, device=device) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :]).view(1, 1, size, size)


def ssim_y(sr: torch.Tensor, gt: torch.Tensor, crop_border: int = 0) -> torch.Tensor:
    """SSIM on the Y channel (Wang et al. 2004; 11×11 Gaussian σ=1.5, 'valid' filtering, on the 0–255 scale), (B,)."""
    x = _crop(rgb_to_y(sr.double()), crop_border) * 255.0
    y = _crop(rgb_to_y(gt.double()), crop_border) * 255.0
    window = _gaussian_window(device=x.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sigma_x = F.conv2d(x * x, window) - mu_x**2
    sigma_y = F.conv2d(y * y, window) - mu_y**2
    sigma_xy = F.conv2d(x * y, window) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2))
    return ssim_map.mean(dim=(1, 2, 3)).float()


# ------------------------------------------------------------------------------------------------------------------
# Colour error and sharpness: what PSNR-Y / SSIM-Y do not see (a colour cast; a blurry but well-placed output).

# sRGB primaries → CIE XYZ, and the D65 reference white (2° observer), as scikit-image's rgb2lab and kornia use.
_RGB_TO_XYZ = ((0.412453, 0.357580, 0.180423), (0.212671, 0.715160, 0.072169), (0.019334, 0.119193, 0.950227))
_D65_WHITE = (0.95047, 1.0, 1.08883)


def rgb_to_lab(image: torch.Tensor) -> torch.Tensor:
    """CIELAB (L* in [0, 100], a*, b*) of sRGB (B, 3, H, W) in [0, 1], D65 white; float64 (B, 3, H, W)."""
    rgb = image.double()
    # Undo the sRGB transfer curve (IEC 61966-2-1), then the linear map to XYZ relative to the white point.
    linear = torch.where(rgb > 0.04045, ((rgb + 0.055) / 1.055).pow(2.4), rgb / 12.92)
    matrix = rgb.new_tensor(_RGB_TO_XYZ) / rgb.new_tensor(_D65_WHITE)[:, None]
    xyz = torch.einsum("cd,bdhw->bchw", matrix, linear)
    # CIE 1976 L*a*b*: the cube root, with its linear segment near black.
    delta = 6 / 29
    f = torch.where(xyz > delta**3, xyz.clamp_min(delta**3).pow(1 / 3), xyz / (3 * delta**2) + 4 / 29)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116 * fy - 16, 500 * (fx - fy), 200 * (fy - fz)], dim=1)


def color_error(sr: torch.Tensor, gt: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Mean CIELAB a*b* distance (ΔE over a*, b* only) after a 1/`factor` box downscale of both, per image (B,).

    The box downscale (average over factor×factor blocks, sRGB values) keeps the colour of regions and drops the
    texture, so the score measures colour casts and shifts rather than detail. Images (B, 3, H, W) in [0, 1].
    """
    if sr.shape != gt.shape:
        raise ValueError(f"sr and gt must have the same shape, got {tuple(sr.shape)} and {tuple(gt.shape)}")
    if min(sr.shape[-2:]) < factor:
        raise ValueError(f"an image of {sr.shape[-2]}×{sr.shape[-1]} is smaller than the downscale factor {factor}")
    ab_sr = rgb_to_lab(F.avg_pool2d(sr.double(), factor))[:, 1:]
    ab_gt = rgb_to_lab(F.avg_pool2d(gt.double(), factor))[:, 1:]
    return (ab_sr - ab_gt).pow(2).sum(1).sqrt().mean(dim=(1, 2)).float()


def gradient_energy(image: torch.Tensor) -> torch.Tensor:
    """Mean over pixels of (∂x Y)² + (∂y Y)², forward differences on the BT.601 luma of `rgb_to_y`, per image (B,)."""
    if min(image.shape[-2:]) < 2:
        raise ValueError(f"gradient energy needs at least 2×2 pixels, got {tuple(image.shape)}")
    y = rgb_to_y(image.double())[:, 0]
    dx = y[:, :-1, 1:] - y[:, :-1, :-1]
    dy = y[:, 1:, :-1] - y[:, :-1, :-1]
    return (dx.pow(2) + dy.pow(2)).mean(dim=(1, 2))


def sharpness(sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """√(gradient energy of sr ÷ that of gt), the ratio of RMS luma gradients, per image (B,): 1 as sharp as the HR,
    < 1 blurrier, > 1 harsher.

    The square root puts it on the scale of the reference measurement the demo bounds were set on (bicubic ×4 ≈ 0.3
    on chelsea/coffee/rocket; the plain energy ratio gives 0.17/0.09/0.04 there, measured).
    """
    if sr.shape != gt.shape:
        raise ValueError(f"sr and gt must have the same shape, got {tuple(sr.shape)} and {tuple(gt.shape)}")
    reference = gradient_energy(gt)
    if (reference == 0).any():
        raise ValueError("sharpness is relative to gt's gradients, and a gt image is flat (zero gradient energy)")
    return (gradient_energy(sr) / reference).sqrt().float()
