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
