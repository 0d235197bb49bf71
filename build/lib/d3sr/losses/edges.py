"""Sobel edge maps for the edge-aware perceptual loss."""

from __future__ import annotations

import kornia
import torch

LUMA_601 = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights


def sobel_magnitude(image: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """S(x): Sobel gradient magnitude sqrt(gx² + gy² + eps) of the BT.601 grayscale of (B, 3, H, W) in [0, 1].

    Standard unnormalised 3×3 Sobel kernels, replicate padding (kornia.filters.sobel); repeated to 3 channels so the
    edge map can go through an RGB perceptual network. Values lie in [0, 4·sqrt(2)].
    """
    if image.ndim != 4 or image.shape[1] != 3:
        raise ValueError(f"sobel_magnitude needs (B, 3, H, W), got {tuple(image.shape)}")
    weights = image.new_tensor(LUMA_601).view(1, 3, 1, 1)
    gray = (image * weights).sum(1, keepdim=True)
    return kornia.filters.sobel(gray, normalized=False, eps=eps).expand(-1, 3, -1, -1)
