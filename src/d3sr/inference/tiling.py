"""Any image size in bounded memory: the generator's three stages on tiles.

The generator runs in three stages (VAE encode → one UNet call → VAE decode), each of which can run on tiles, so
the activations on the device stay those of a batch of tiles however large the image is; only the input, the
latents and the output image grow with it.

- VAE encode and decode, `vae_tiling='groupnorm_sync'` (default): tiled_vae.py. The encoder and decoder run layer
  by layer over non-overlapping tiles of `tile_size` output pixels (tile_size/f latent pixels for a VAE of
  f = generator.vae_factor pixels per latent pixel, 8 for SD's), each layer's tiles
  cut again from the whole previous map with the halo that layer reads, and every GroupNorm normalises with the
  statistics of the whole image, accumulated over the tiles' cores (as the tiled VAE of StableSR and OSEDiff does,
  made exact). The mid-block attention attends over the whole latent (`vae_attention='global'`) or within each tile
  ('tile'). Tiled equals untiled to float rounding with global attention (bench/tiling.py: over 100 dB). The whole
  maps sit in host memory between layers when the device is a GPU (`vae_offload`).
- The UNet, and the VAE with `vae_tiling='blend'`: overlapping tiles of `tile_size` output pixels (tile_size/f
  latent pixels, overlap tile_overlap/f), outputs blended with Gaussian weights (MultiDiffusion, StableSR, OSEDiff).
  Along each side, tiles start every `tile_size − tile_overlap` pixels and the last tile is placed flush with the
  border. This is not exact: the UNet's GroupNorm and attention layers see one tile, not the image.

A side that fits in one tile is not split, so `tile_size` only takes effect on images larger than it, and
`tile_size = 0` runs every stage on the whole image (exactly generator(image)). `tile_batch_size` tiles go through
each forward together ('auto': as many as fill the pixels of one 512² tile: 1 tile of 512, 4 of 256, 16 of 128),
so device memory grows with tile_batch_size × tile_size². bench/tiling.py measures tiled against untiled per stage,
bench/inference.py the time and memory; tests/inference/test_tiling.py and test_tiled_vae.py bound both.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from d3sr.errors import ConfigError
from d3sr.images import LATENT_FACTOR
from d3sr.inference.defaults import default
from d3sr.inference.tiled_vae import run_tiled
from d3sr.models.generator import OneStepGenerator

VAE_TILINGS = ("groupnorm_sync", "blend")
AUTO_BATCH_PIXELS = 512 * 512  # tile_batch_size='auto': tiles per forward fill one 512² tile's pixels

Progress = Callable[[int, int], None]  # (done, total)
StageProgress = Callable[[str, int, int], None]  # (stage, done, total)


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


def tile_batch(tile_batch_size: int | str, tile_size: int) -> int:
    """Tiles per forward: tile_batch_size, or for 'auto' as many tiles as fill AUTO_BATCH_PIXELS (at least 1)."""
    if tile_batch_size == "auto":
        return max(1, AUTO_BATCH_PIXELS // tile_size**2) if tile_size > 0 else 1
    return int(tile_batch_size)


def tiled(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, tile: int, overlap: int, batch_size: int = 1,
          progress: Progress | None = None, static: bool = False) -> torch.Tensor:  # fmt: skip
    """fn applied on overlapping tiles of x (B, C, H, W), outputs blended with Gaussian weights (float32).

    fn maps a (N, C, h, w) batch of tiles to (N, C', h·s, w·s) for a fixed scale s (1/8 for the VAE encoder, 1 for
    the UNet, 8 for the decoder); `batch_size` tiles go through one call (N = tiles × B). static: pad the last
    batch with copies of its last tile so every call has the same shape (a compiled fn reuses its graph).
    progress(done, total) after each call, in tiles. With one tile (tile = 0 or x no larger than a tile), this is
    exactly fn(x).
    """
    height, width = x.shape[-2:]
    rows, cols = tile_starts(height, tile, overlap), tile_starts(width, tile, overlap)
    if len(rows) == 1 and len(cols) == 1:
        return fn(x).float()
    th, tw = min(tile, height), min(tile, width)
    starts = [(top, left) for top in rows for left in cols]
    batch = x.shape[0]
    out = weight = w = None
    if progress is not None:
        progress(0, len(starts))
    for first in range(0, len(starts), batch_size):
        # A batch of tiles, tile-major, through one call.
        group = starts[first : first + batch_size]
        padding = batch_size - len(group) if static else 0
        tiles = torch.cat([x[..., top : top + th, left : left + tw] for top, left in group + group[-1:] * padding])
        y = fn(tiles).float()
        scale = y.shape[-2] / th
        if out is None:
            out_size = (round(height * scale), round(width * scale))
            out = torch.zeros(batch, y.shape[1], *out_size, device=y.device)
            weight = torch.zeros(1, 1, *out_size, device=y.device)
            w = gaussian_weights(*y.shape[-2:], y.device)
        # Blend each tile's output into the image with its Gaussian weights.
        for t, (top, left) in enumerate(group):
            r, c = round(top * scale), round(left * scale)
            out[..., r : r + y.shape[-2], c : c + y.shape[-1]] += y[t * batch : (t + 1) * batch] * w
            weight[..., r : r + y.shape[-2], c : c + y.shape[-1]] += w
        if progress is not None:
            progress(first + len(group), len(starts))
    return out / weight


STAGES = ("encode", "denoise", "decode")


@dataclass(frozen=True)
class TilingOptions:
    """The tiling settings that InferenceOptions (validated there) and Tiling share, declared once, with the defaults
    of conf/inference/default.yaml, their one owner (see InferenceOptions for what each means)."""

    tile_size: int = default("tile_size")
    tile_overlap: int = default("tile_overlap")
    tile_batch_size: int | str = default("tile_batch_size")
    vae_tiling: str = default("vae_tiling")
    vae_attention: str = default("vae_attention")
    vae_offload: bool = default("vae_offload")
    compile: bool = default("compile")


@dataclass(frozen=True)
class Tiling(TilingOptions):
    """How the three stages are tiled: the TilingOptions, channels_last resolved, see the module docstring.

    tiled_stages: the stages that are tiled, the others run on the whole input. compile: the models are compiled,
    keep tile shapes static (the last batch is padded) and compile the synchronised VAE's pointwise work.
    """

    channels_last: bool = False  # resolved: InferenceOptions.tiling turns its 'auto' into true or false
    tiled_stages: tuple[str, ...] = STAGES

    def __post_init__(self) -> None:
        check_tiling(self.tile_size, self.tile_overlap)
        if unknown := set(self.tiled_stages) - set(STAGES):
            raise ValueError(f"tiled_stages must be among {STAGES}, got {sorted(unknown)}")

    @property
    def batch_size(self) -> int:
        return tile_batch(self.tile_batch_size, self.tile_size)

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def tiles(self, stage: str, factor: int) -> tuple[int, int]:
        """(tile, overlap) for `stage` at 1/factor of the output resolution; (0, 0) when it is not tiled."""
        return (self.tile_size // factor, self.tile_overlap // factor) if stage in self.tiled_stages else (0, 0)

    def synced(self, stage: str, height: int, width: int) -> bool:
        """Whether the VAE stage runs layer by layer with whole-image GroupNorm (an output larger than a tile)."""
        tiled = self.vae_tiling == "groupnorm_sync" and stage in self.tiled_stages
        return tiled and 0 < self.tile_size < max(height, width)

    def vae_settings(self, factor: int) -> dict:
        """run_tiled's settings for a VAE of `factor` pixels per latent pixel."""
        return {"core": self.tile_size // factor, "batch_size": self.batch_size,
                "attention": self.vae_attention, "offload": self.vae_offload, "compile": self.compile,
                "channels_last": self.channels_last}  # fmt: skip


def _stage_progress(progress: StageProgress | None, stage: str) -> Progress | None:
    return None if progress is None else (lambda done, total: progress(stage, done, total))


def encode_stage(generator: OneStepGenerator, image: torch.Tensor, tiling: Tiling,
                 progress: StageProgress | None = None) -> torch.Tensor:  # fmt: skip
    """z_L (B, C, H/f, W/f) float32 (f = generator.vae_factor) from the image (B, 3, H, W) in [-1, 1]: VAE encode,
    tiled as `tiling` says."""
    vae, report = generator.vae, _stage_progress(progress, "encode")
    image = image.to(vae.dtype).contiguous(memory_format=tiling.memory_format)
    if tiling.synced("encode", *image.shape[-2:]):
        moments = run_tiled(vae.encoder, image, progress=report, **tiling.vae_settings(generator.vae_factor))
        moments = vae.quant_conv(moments) if vae.quant_conv is not None else moments
        return generator.latent_from_posterior(DiagonalGaussianDistribution(moments)).float()
    return tiled(generator.encode, image, *tiling.tiles("encode", 1), tiling.batch_size, report, tiling.compile)


def denoise_stage(generator: OneStepGenerator, z_lq: torch.Tensor, tiling: Tiling,
                  progress: StageProgress | None = None) -> torch.Tensor:  # fmt: skip
    """ẑ_H (float32) from z_L: one UNet call per latent tile, blended."""
    dtype, memory_format = generator.unet.dtype, tiling.memory_format

    def denoise(z: torch.Tensor) -> torch.Tensor:
        return generator.denoise(z.to(dtype).contiguous(memory_format=memory_format))

    return tiled(denoise, z_lq, *tiling.tiles("denoise", generator.vae_factor), tiling.batch_size,
                 _stage_progress(progress, "denoise"), tiling.compile)  # fmt: skip


def decode_stage(generator: OneStepGenerator, z_sr: torch.Tensor, tiling: Tiling,
                 progress: StageProgress | None = None) -> torch.Tensor:  # fmt: skip
    """SR image (float32, [-1, 1]) from ẑ_H: VAE decode, tiled as `tiling` says."""
    vae, report, factor = generator.vae, _stage_progress(progress, "decode"), generator.vae_factor
    if tiling.synced("decode", z_sr.shape[-2] * factor, z_sr.shape[-1] * factor):
        z = z_sr.to(vae.dtype) / generator.scaling_factor
        z = vae.post_quant_conv(z) if vae.post_quant_conv is not None else z
        return run_tiled(vae.decoder, z, progress=report, **tiling.vae_settings(factor)).float().clamp(-1, 1)
    return tiled(generator.decode, z_sr, *tiling.tiles("decode", factor), tiling.batch_size, report, tiling.compile)


@torch.no_grad()
def run_generator(
    generator: OneStepGenerator,
    image: torch.Tensor,
    tile_size: int = 0,
    tile_overlap: int = 0,
    tiled_stages: tuple[str, ...] = STAGES,
    progress: StageProgress | None = None,
    **settings,
) -> torch.Tensor:
    """SR image (float32, [-1, 1]) from `image` (B, 3, H, W) in [-1, 1] with H, W multiples of 8.

    The three stages of OneStepGenerator (encode, denoise, decode) each run on tiles of `tile_size` output pixels;
    settings: the other Tiling fields (tile_batch_size, vae_tiling, vae_attention, vae_offload, compile,
    channels_last). tile_size = 0 is one pass per stage, exactly generator(image)[0]. tiled_stages: the stages that
    are tiled (all by default; one at a time shows which stage a tiled/untiled difference comes from, see
    bench/tiling.py). progress(stage, done, total): called as each tiled stage starts and after each batch of tiles
    (done/total in tiles for the UNet and the blended VAE, in tile passes, tiles × layers, for the synchronised VAE).
    """
    tiling = Tiling(tile_size, tile_overlap, tiled_stages=tuple(tiled_stages), **settings)
    if image.shape[-1] % LATENT_FACTOR or image.shape[-2] % LATENT_FACTOR:
        raise ValueError(f"image height and width must be multiples of 8, got {tuple(image.shape[-2:])}")
    z_lq = encode_stage(generator, image, tiling, progress)
    z_sr = denoise_stage(generator, z_lq, tiling, progress)
    return decode_stage(generator, z_sr, tiling, progress)


def tile_count(height: int, width: int, tile_size: int, tile_overlap: int) -> int:
    """Number of UNet (or blended VAE) tiles for an output of height × width (after padding to a multiple of 8)."""
    height, width = (math.ceil(s / LATENT_FACTOR) * LATENT_FACTOR for s in (height, width))
    return len(tile_starts(height, tile_size, tile_overlap)) * len(tile_starts(width, tile_size, tile_overlap))


def core_count(height: int, width: int, tile_size: int) -> int:
    """Number of synchronised-VAE tiles (cores of tile_size, no overlap) for an output of height × width."""
    if not 0 < tile_size < max(height, width):
        return 1
    return math.ceil(height / tile_size) * math.ceil(width / tile_size)
