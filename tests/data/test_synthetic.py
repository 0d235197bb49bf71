"""Procedural pretraining images and colour augmentation (d3sr.data.synthetic)."""

from __future__ import annotations

import torch

from d3sr.data.synthetic import augment_color, dead_leaves
from d3sr.images import embedded_photo


def luma(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of (3, H, W)."""
    return 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]


def test_dead_leaves_is_deterministic_colourful_and_scale_rich():
    a = dead_leaves(96, torch.Generator().manual_seed(3))
    b = dead_leaves(96, torch.Generator().manual_seed(3))
    c = dead_leaves(96, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (3, 96, 96) and 0 <= a.min() and a.max() <= 1
    # Colour: the channels differ (a gray image would give 0); measured 0.12–0.15 mean channel spread.
    assert (a.max(0).values - a.min(0).values).mean() > 0.05
    # Edges at every scale: per pixel, the gradient energy of the 2× box-downscaled image is between white noise's
    # (÷4: averaging cancels it) and a smooth ramp's (×4: the same change over half the pixels); measured 1.53.
    grad = lambda x: ((x[..., 1:] - x[..., :-1]) ** 2).mean()  # noqa: E731
    small = torch.nn.functional.avg_pool2d(a[None], 2)[0]
    assert 0.75 < float(grad(small) / grad(a)) < 3.0


def test_augment_color_changes_hue_keeps_gray_and_luma():
    photo = embedded_photo("astronaut")[:, :64, :64]
    gray = luma(photo).expand(3, -1, -1).contiguous()
    generator = torch.Generator().manual_seed(0)
    out = augment_color(photo, generator, saturation=(1.0, 1.0), permute=False)
    assert (out - photo).abs().mean() > 0.02  # a different colour
    assert (luma(out) - luma(photo)).abs().mean() < 0.02  # hue rotation at constant luma (up to clamping)
    assert torch.allclose(augment_color(gray, generator, permute=False), gray, atol=1e-5)  # gray stays gray
