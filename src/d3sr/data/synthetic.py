"""Procedural training images and colour augmentation for the demo backbone's pretraining (d3sr.pretrain_tiny).

- `dead_leaves`: the dead-leaves model (Matheron 1968; Lee, Mumford & Huang 2001), occluding discs of random colour
  whose radii follow a power law p(r) ∝ r^-3, which reproduces the scale invariance and edge statistics of natural
  images; Baradad et al. (NeurIPS 2021) and Achddou et al. (2021) show that restoration and representation networks
  trained on such images come close to those trained on photos. Each disc carries a random linear shading and, with
  some probability, a sinusoidal texture; discs are drawn at twice the size and box-averaged, so edges are
  antialiased like a camera's.
- `augment_color`: a hue rotation about the gray axis (YIQ), a saturation scale and a channel permutation, which
  keep luminance structure while showing the network colours the few colour photos do not hold (gray photos stay
  gray under the first two).
All functions take a torch.Generator and are deterministic for a given one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# RGB → YIQ (NTSC 1953); its inverse maps back. Hue rotation = rotation of (I, Q) at constant Y.
_RGB_TO_YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]])
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _uniform(generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> float:
    """One float drawn uniformly from [low, high)."""
    return low + (high - low) * float(torch.rand((), generator=generator))


def dead_leaves(
    size: int, generator: torch.Generator, r_min: float = 1.5, r_max: float | None = None, discs: int | None = None
) -> torch.Tensor:
    """(3, size, size) in [0, 1]: a dead-leaves image, discs with radii ~ r^-3 on [r_min, r_max] pixels.

    r_max defaults to size/3; `discs` (default ~ 6 per 100 pixels² of area, enough to cover the canvas) are painted
    back to front, each later disc occluding the earlier ones.
    """
    if size <= 0 or r_min <= 0:
        raise ValueError(f"dead_leaves needs size > 0 and r_min > 0, got size={size}, r_min={r_min}")
    scale = 2  # drawn at 2× and box-averaged: antialiased edges
    side = size * scale
    r_max = size / 3 if r_max is None else r_max
    discs = int(0.06 * size * size) if discs is None else discs
    canvas = torch.full((3, side, side), 0.5)
    coords = torch.arange(side, dtype=torch.float32)
    # Inverse-CDF sampling of p(r) ∝ r^-3 on [r_min, r_max]: r = (r_min^-2 − u·(r_min^-2 − r_max^-2))^(-1/2).
    u = torch.rand(discs, generator=generator)
    radii = (r_min**-2 - u * (r_min**-2 - r_max**-2)).pow(-0.5) * scale
    centres = torch.rand(discs, 2, generator=generator) * side
    # Colours: uniform RGB pulled towards their gray by a random amount (natural scenes are rarely all saturated).
    colors = torch.rand(discs, 3, generator=generator)
    chroma = torch.rand(discs, 1, generator=generator)
    colors = colors.mean(1, keepdim=True) + chroma * (colors - colors.mean(1, keepdim=True))
    for radius, (cy, cx), color in zip(radii.tolist(), centres.tolist(), colors):
        # The disc's bounding box on the canvas.
        top, bottom = max(0, int(cy - radius)), min(side, int(cy + radius) + 1)
        left, right = max(0, int(cx - radius)), min(side, int(cx + radius) + 1)
        if top >= bottom or left >= right:
            continue
        ys, xs = coords[top:bottom, None] - cy, coords[None, left:right] - cx
        inside = ys**2 + xs**2 <= radius**2
        # A linear shading across the disc, and on one disc in four a sinusoidal texture.
        angle = _uniform(generator, 0, 2 * math.pi)
        along = (ys * math.cos(angle) + xs * math.sin(angle)) / max(radius, 1.0)
        shade = 1 + _uniform(generator, -0.25, 0.25) * along
        if _uniform(generator) < 0.25:
            period = _uniform(generator, 3.0, 12.0) * scale
            phase = _uniform(generator, 0, 2 * math.pi)
            shade = shade + _uniform(generator, 0.05, 0.3) * torch.sin(2 * math.pi * along * radius / period + phase)
        patch = (color[:, None, None] * shade).clamp(0, 1)
        region = canvas[:, top:bottom, left:right]
        canvas[:, top:bottom, left:right] = torch.where(inside, patch, region)
    return F.avg_pool2d(canvas[None], scale)[0].clamp(0, 1)


def augment_color(
    x: torch.Tensor, generator: torch.Generator, saturation: tuple[float, float] = (0.5, 1.5), permute: bool = True
) -> torch.Tensor:
    """(3, H, W) in [0, 1] with a random hue rotation, saturation scale in `saturation`, and (permute) RGB order."""
    angle = _uniform(generator, 0, 2 * math.pi)
    gain = _uniform(generator, *saturation)
    rotation = torch.tensor(
        [[1.0, 0.0, 0.0], [0.0, math.cos(angle), -math.sin(angle)], [0.0, math.sin(angle), math.cos(angle)]]
    )
    matrix = _YIQ_TO_RGB @ torch.diag(torch.tensor([1.0, gain, gain])) @ rotation @ _RGB_TO_YIQ
    out = torch.einsum("ij,jhw->ihw", matrix, x).clamp(0, 1)
    order = torch.randperm(3, generator=generator)
    return out[order] if permute else out
