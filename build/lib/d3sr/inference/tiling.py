"""Any image size in bounded memory: the generator's three stages on overlapping, blended tiles.

The generator runs in three stages (VAE encode → one UNet call → VAE decode). Each stage can run on overlapping
tiles whose outputs are blended with Gaussian weights (as in MultiDiffusion, StableSR and OSEDiff), so the
activations of the networks stay those of one tile however large the image is; only the input, the latents and
the output image itself grow with it.

Tiles are given in pixels of the ×4 output (`tile_size`, `tile_overlap`); the latent stages use size/8 and
overlap/8. Along each side, tiles start every `tile_size − tile_overlap` pixels and the last tile is placed flush
with the border; a side that fits in one tile is not split, so `tile_size` only takes effect on images larger than
it, and `tile_size = 0` runs every stage on the whole image.

Tiling is not exactly equivalent to one pass: the GroupNorm layers normalise with statistics of what they see,
and the attention layers (the VAE's middle block, the UNet's transformer blocks) attend to what they see; on a tile
that is the tile. Synchronising GroupNorm statistics across tiles would need all tiles' activations at once, which
gives up the memory bound, so each tile is normalised on its own. bench/tiling.py measures the difference per tile
setting and per stage; tests/inference/test_tiling.py bounds it and checks that the blend is exact for local
operations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from d3sr.errors import ConfigError
from d3sr.images import LATENT_FACTOR
from d3sr.models.generator import OneStepGenerator


def check_tiling(tile_size: int, tile_overlap: int) -> None:
    """ConfigError naming the option unless tile_size is 0 or a positive multiple of 8 larger than tile_overlap."""
    if tile_size < 0 or tile_size % LATENT_FACTOR:
        raise ConfigError(
            f"inference.tile_size must be 0 (off) or a positive multiple of {LATENT_FACTOR}, got {tile_size}"
        )
    if tile_overlap < 0 or tile_overlap % LATENT_FACTOR:
        raise ConfigError(
            f"inference.tile_overlap must be a non-negative multiple of {LATENT_FACTOR}, got {tile_overlap}"
        )
    if tile_size and tile_overlap >= tile_size:
        raise ConfigError(
            f"inference.tile_overlap ({tile_overlap}) must be smaller than inference.tile_size ({tile_size})"
        )


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of size `tile` covering [0, length) with at least `overlap` overlap; last one flush."""
    if tile <= 0 or length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def gaussian_weights(height: int, width: int, device: torch.device, var: float = 0.01) -> torch.Tensor:
    """(1, 1, H, W) separable Gaussian, peak 1 at the centre, σ = sqrt(var)·size (MultiDiffusion/OSEDiff's var)."""

    def profile(n: int) -> torch.Tensor:
        x = torch.arange(n, device=device, dtype=torch.float32)
        return torch.exp(-((x - (n - 1) / 2) ** 2) / (n * n) / (2 * var))

    return (profile(height)[:, None] * profile(width)[None, :])[None, None]


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int) -> torch.Tensor:
    """fn applied on overlapping tiles of x (B, C, H, W), outputs blended with Gaussian weights (float32).

    fn maps a (B, C, h, w) tile to (B, C', h·s, w·s) for a fixed scale s (1/8 for the VAE encoder, 1 for the UNet,
    8 for the decoder). With one tile (tile = 0 or x no larger than a tile), this is exactly fn(x).
    """
    height, width = x.shape[-2:]
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return fn(x).float()
    th, tw = min(tile, height), min(tile, width)
    out = weight = None
    for top in rows:
        for left in cols:
            y = fn(x[..., top : top + th, left : left + tw]).float()
            scale = y.shape[-2] / th
            if out is None:
                out_size = (round(height * scale), round(width * scale))
                out = torch.zeros(*y.shape[:2], *out_size, device=y.device)
                weight = torch.zeros(1, 1, *out_size, device=y.device)
                w = gaussian_weights(*y.shape[-2:], y.device)
            r, c = round(top * scale), round(left * scale)
            out[..., r : r + y.shape[-2], c : c + y.shape[-1]] += y * w
            weight[..., r : r + y.shape[-2], c : c + y.shape[-1]] += w
    return out / weight


STAGES = ("encode", "denoise", "decode")


@torch.no_grad()
def run_generator(
    generator: OneStepGenerator,
    image: torch.Tensor,
    tile_size: int = 0,
    tile_overlap: int = 0,
    tiled_stages: tuple[str, ...] = STAGES,
):
    """SR image (float32, [-1, 1]) from `image` (B, 3, H, W) in [-1, 1] with H, W multiples of 8.

    The three stages of OneStepGenerator (encode, denoise, decode) each run on tiles of `tile_size` output pixels
    (latent tiles of tile_size/8 for the UNet and the decoder); tile_size = 0 is one pass per stage, exactly
    generator(image)[0]. tiled_stages: the stages that are tiled, the others run on the whole input (all by
    default; one at a time shows which stage a tiled/untiled difference comes from, see bench/tiling.py).
    """
    check_tiling(tile_size, tile_overlap)
    if unknown := set(tiled_stages) - set(STAGES):
        raise ValueError(f"tiled_stages must be among {STAGES}, got {sorted(unknown)}")
    if image.shape[-1] % LATENT_FACTOR or image.shape[-2] % LATENT_FACTOR:
        raise ValueError(f"image height and width must be multiples of 8, got {tuple(image.shape[-2:])}")

    def tiles(stage: str, factor: int) -> tuple[int, int]:
        return (tile_size // factor, tile_overlap // factor) if stage in tiled_stages else (0, 0)

    unet_dtype = generator.unet.dtype
    # VAE encode on pixel tiles, one UNet call per latent tile, VAE decode on latent tiles.
    z_lq = tiled(generator.encode, image.to(generator.vae.dtype), *tiles("encode", 1))
    z_sr = tiled(lambda z: generator.denoise(z.to(unet_dtype)), z_lq, *tiles("denoise", LATENT_FACTOR))
    return tiled(generator.decode, z_sr, *tiles("decode", LATENT_FACTOR)).clamp(-1, 1)


def tile_count(height: int, width: int, tile_size: int, tile_overlap: int) -> int:
    """Number of tiles per stage for an output of height × width (after padding to a multiple of 8)."""
    height, width = (math.ceil(s / LATENT_FACTOR) * LATENT_FACTOR for s in (height, width))
    return len(tile_starts(height, tile_size, tile_overlap)) * len(tile_starts(width, tile_size, tile_overlap))
