"""The VAE encoder and decoder on tiles, normalised with the statistics of the whole image: tiled equals untiled.

The tiled VAE of StableSR and OSEDiff (pkuliyi2015's multidiffusion-upscaler "Tiled VAE") unrolls the encoder or
decoder into a queue of layers, runs every tile layer by layer, and at each GroupNorm waits until all tiles have
given their statistics, so every tile is normalised like the whole image. This module does the same, written for
diffusers' Encoder/Decoder, with two changes that make it exact rather than close:
- Between layers the whole activation map is kept (in host memory when the device is a GPU and `offload` is on),
  and each pass cuts every tile out of it again with a fresh halo of the 1–2 pixels its one spatial layer reads.
  (The original gives each tile a fixed 32-pixel / 11-latent-pixel halo once and lets errors creep in from its edge.)
- The statistics are exact: each tile contributes the count, mean and squared deviations of its own core only (not
  its halo, not the padding beyond the image), merged across tiles with Chan et al.'s parallel-variance formula in
  float64. (The original averages per-tile variances, halos included.)

One pass = one spatial layer (3×3 conv, stride-2 conv, ×2 upsample + conv, or the mid-block attention) with the
pointwise work before it (GroupNorm with the whole-image statistics, SiLU) and after it (residual add). A pass
visits all tiles, `batch_size` at a time, and writes the tiles' cores into the next map while accumulating that
map's statistics for the next GroupNorm. The tiles' cores partition the image (no overlap, no blend); a core is
`core` latent pixels (`core`·8 pixels at full resolution); positions beyond the image read as zero, as in the
convs' own padding. Device memory holds the weights, one batch of tiles and, for global attention, the keys and
values of the latent (see below); the whole maps sit on `storage`.

Mid-block attention (`attention`): 'global' (default) attends over the whole latent, exactly as untiled: a first
pass computes every tile's keys and values into one (B, N, C) buffer on the device (N = latent pixels: 2·N·C
values, 128 MiB in bf16 for a 2048² output with the SD VAE's 512 channels), a second pass attends each tile's
queries to all of them. Its compute grows as N² (twice 4·N²·C multiply-adds, encoder and decoder), which overtakes
the convolutions above roughly 2–3k output pixels a side. 'tile' attends within each core only (memory and time
bounded by the tile, not exact).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from diffusers.models.autoencoders.vae import Decoder, Encoder
from diffusers.models.downsampling import Downsample2D
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.upsampling import Upsample2D
from torch import nn

ATTENTIONS = ("global", "tile")
MARGIN = 2  # halo kept around every stored map: the most a pass reads beyond its core (the stride-2 conv's 2 pixels)

Progress = Callable[[int, int], None]  # (tile passes done, tile passes in all)


# ------------------------------------------------------------------------------------------------------------------
# Whole-image statistics for GroupNorm.


@dataclass
class Stats:
    """Count, mean and summed squared deviations (M2) per (image, channel) of a map, over the image (float64)."""

    count: int
    mean: torch.Tensor  # (B, C)
    m2: torch.Tensor  # (B, C)

    @staticmethod
    def of(parts: list[tuple[int, torch.Tensor, torch.Tensor]]) -> Stats:
        """Merge (count, mean, m2) parts: Chan, Golub & LeVeque's parallel variance, exact in exact arithmetic."""
        counts = torch.tensor([n for n, _, _ in parts], dtype=torch.float64, device=parts[0][1].device)[:, None, None]
        means = torch.stack([m.double() for _, m, _ in parts])
        m2s = torch.stack([m2.double() for _, _, m2 in parts])
        count = sum(n for n, _, _ in parts)
        mean = (counts * means).sum(0) / count
        m2 = m2s.sum(0) + (counts * (means - mean) ** 2).sum(0)
        return Stats(count, mean, m2)

    def merge(self, other: Stats | None) -> Stats:
        if other is None:
            return self
        return Stats.of([(self.count, self.mean, self.m2), (other.count, other.mean, other.m2)])

    def group_norm_affine(self, norm: nn.GroupNorm) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (B, C) float32, such that norm(x) = x·scale + shift for this map's whole image."""
        batch, channels = self.mean.shape
        groups = norm.num_groups
        mean_c = self.mean.view(batch, groups, channels // groups)
        mean_g = mean_c.mean(-1, keepdim=True)  # channels of a group have equal counts
        m2_g = (self.m2.view_as(mean_c) + self.count * (mean_c - mean_g) ** 2).sum(-1, keepdim=True)
        var_g = m2_g / (self.count * (channels // groups))  # biased, as GroupNorm
        rstd = (var_g + norm.eps).rsqrt().expand_as(mean_c).reshape(batch, channels)
        mean = mean_g.expand_as(mean_c).reshape(batch, channels)
        weight = norm.weight.double() if norm.affine else torch.ones_like(rstd)
        bias = norm.bias.double() if norm.affine else torch.zeros_like(rstd)
        scale = rstd * weight
        return scale.float(), (bias - mean * scale).float()


def _tile_stats_(y: torch.Tensor) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(count, mean, m2) per (image, channel) of y (B, C, h, w), computed in float32; a float32 y is overwritten.

    The corrected two-pass algorithm (Chan, Golub & LeVeque 1983, eq. 1.7): mean, then the deviations from it in
    place of y (no temporary the size of y), their sum (the rounding of the mean) and their squared norm. As exact as
    torch.var_mean's Welford pass and, on a CPU, about three times faster (its plain sums are vectorised).
    """
    y = y.float()
    count = y.shape[2] * y.shape[3]
    mean = y.sum((2, 3)) / count
    deviations = y.sub_(mean[..., None, None])
    correction = deviations.sum((2, 3)) / count
    m2 = torch.linalg.vector_norm(deviations, dim=(2, 3)).square() - count * correction.square()
    return count, mean + correction, m2.clamp_min(0)


def _norm_act(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, silu: bool) -> torch.Tensor:
    """x·scale + shift (GroupNorm with given statistics; scale, shift (N, C) float32) in float32, then SiLU, in x's
    dtype. A new tensor."""
    y = torch.addcmul(shift[..., None, None], x, scale[..., None, None])
    return (F.silu(y, inplace=True) if silu else y).to(x.dtype)


_compiled_norm_act = None


def _norm_act_fn(compile: bool) -> Callable:
    global _compiled_norm_act
    if not compile:
        return _norm_act
    if _compiled_norm_act is None:
        _compiled_norm_act = torch.compile(_norm_act, dynamic=True)  # one pointwise kernel for every tile shape
    return _compiled_norm_act


# ------------------------------------------------------------------------------------------------------------------
# Maps and the tile grid.


@dataclass
class Map:
    """A whole activation map, stored with MARGIN pixels around a grid of rows × cols cores of `cell` pixels.

    data: (B, C, rows·cell + 2·MARGIN, cols·cell + 2·MARGIN); only [MARGIN, MARGIN + height) × [MARGIN, MARGIN +
    width) is the image, the rest is never read as data (passes mask it to zero). stats: over the image, when a
    GroupNorm reads this map next.
    """

    data: torch.Tensor
    height: int
    width: int
    cell: int
    stats: Stats | None = None


@dataclass(frozen=True)
class Grid:
    """Cores of `core` latent pixels covering a latent of height × width; tile (i, j) is core row i, column j."""

    height: int
    width: int
    core: int

    @property
    def rows(self) -> int:
        return math.ceil(self.height / self.core)

    @property
    def cols(self) -> int:
        return math.ceil(self.width / self.core)

    @property
    def tiles(self) -> list[tuple[int, int]]:
        return [(i, j) for i in range(self.rows) for j in range(self.cols)]


class _Runner:
    """The passes of one encoder or decoder call: every pass over every tile of the grid, `batch_size` at a time."""

    def __init__(self, grid: Grid, batch_size: int, attention: str, device: torch.device, dtype: torch.dtype,
                 storage: torch.device, progress: Progress | None, total: int, compile: bool,
                 channels_last: bool) -> None:  # fmt: skip
        self.grid, self.batch_size, self.attention = grid, batch_size, attention
        self.device, self.dtype, self.storage = device, dtype, storage
        self.progress, self.total, self.done = progress, total, 0
        self.norm_act = _norm_act_fn(compile)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self._scratch: dict[torch.dtype, torch.Tensor] = {}  # see scratch
        self._free: list[torch.Tensor] = []  # storage of dropped maps (host memory), see new_map

    # -- Maps in and out.

    def store(self, x: torch.Tensor, factor: int) -> Map:
        """x (B, C, H, W) at `factor` × the latent resolution as a stored Map (no statistics yet)."""
        cell = self.grid.core * factor
        data = torch.zeros(*x.shape[:2], self.grid.rows * cell + 2 * MARGIN, self.grid.cols * cell + 2 * MARGIN,
                           dtype=self.dtype, device=self.storage)  # fmt: skip
        data[..., MARGIN : MARGIN + x.shape[-2], MARGIN : MARGIN + x.shape[-1]] = x
        return Map(data, x.shape[-2], x.shape[-1], cell)

    @staticmethod
    def image(x: Map) -> torch.Tensor:
        return x.data[..., MARGIN : MARGIN + x.height, MARGIN : MARGIN + x.width]

    def batches(self) -> Iterator[list[tuple[int, int]]]:
        tiles = self.grid.tiles
        for start in range(0, len(tiles), self.batch_size):
            yield tiles[start : start + self.batch_size]

    def crops(self, x: Map, tiles: list[tuple[int, int]], halo: int) -> list[torch.Tensor]:
        """Views of each tile's core and halo in x's storage: (B, C, cell + 2·halo, cell + 2·halo)."""
        s, lo = x.cell, MARGIN - halo
        return [x.data[..., lo + i * s : lo + (i + 1) * s + 2 * halo, lo + j * s : lo + (j + 1) * s + 2 * halo]
                for i, j in tiles]  # fmt: skip

    def scratch(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor | None:
        """An uninitialised (shape) tensor in the one buffer of its dtype that every call reuses (valid until the
        next call), on a CPU; None on a GPU, whose caching allocator reuses memory already. On a CPU a fresh buffer
        of a batch of full-resolution tiles is fresh pages from the system, faulted in on first write: as slow as
        the write itself."""
        if self.device.type != "cpu":
            return None
        numel = math.prod(shape)
        if dtype not in self._scratch or self._scratch[dtype].numel() < numel:
            self._scratch[dtype] = torch.empty(numel, dtype=dtype, device=self.device)
        return self._scratch[dtype][:numel].view(shape)

    def windows(self, x: Map, tiles: list[tuple[int, int]], halo: int, reuse: bool = False) -> torch.Tensor:
        """(T·B, C, cell + 2·halo, cell + 2·halo) on the device, tile-major: each tile's core and halo. Positions
        beyond the image hold anything; a spatial layer's input is zeroed there first (zero_outside).
        reuse: in the scratch buffer (valid until the next reuse), when the maps are stored on the device."""
        crops = self.crops(x, tiles, halo)
        if reuse and self.storage == self.device and x.data.dtype == self.dtype:
            out = self.scratch((len(crops) * crops[0].shape[0], *crops[0].shape[1:]), self.dtype)
            if out is not None:
                return torch.cat(crops, out=out).contiguous(memory_format=self.memory_format)
        batch = torch.cat(crops).to(self.device, self.dtype, non_blocking=True)
        return batch.contiguous(memory_format=self.memory_format)

    def normalized(self, x: Map, tiles: list[tuple[int, int]], halo: int, affine: tuple[torch.Tensor, torch.Tensor],
                   silu: bool) -> torch.Tensor:  # fmt: skip
        """windows(x, tiles, halo) through GroupNorm (affine: the whole image's scale and shift) and SiLU.

        Eager: the norm is applied while cutting the windows (one pass over the data less, which is what a CPU is
        short of), into the scratch buffer on a CPU (valid until its next use); compiled: one fused kernel over the
        cut windows.
        """
        scale, shift = (self.repeat(a, len(tiles)) for a in affine)
        if self.norm_act is not _norm_act:
            return self.norm_act(self.windows(x, tiles, halo), scale, shift, silu)
        batch, crops = x.data.shape[0], self.crops(x, tiles, halo)
        shape = (len(tiles) * batch, *crops[0].shape[1:])
        out = self.scratch(shape, torch.float32)
        out = torch.empty(shape, dtype=torch.float32, device=self.device) if out is None else out
        for t, crop in enumerate(crops):
            part = slice(t * batch, (t + 1) * batch)
            torch.addcmul(shift[part, :, None, None], crop.to(self.device), scale[part, :, None, None], out=out[part])
        if silu:
            F.silu(out, inplace=True)
        return out.to(self.dtype).contiguous(memory_format=self.memory_format)

    def zero_outside(self, h: torch.Tensor, x: Map, tiles: list[tuple[int, int]], halo: int) -> None:
        """Set the positions of windows h (windows(x, tiles, halo)) beyond the image to zero, in place."""
        s, batch, size = x.cell, x.data.shape[0], h.shape[-1]
        for t, (i, j) in enumerate(tiles):
            part = h[t * batch : (t + 1) * batch]
            top, left = max(0, halo - i * s), max(0, halo - j * s)  # window rows/cols before the image
            bottom, right = x.height - (i * s - halo), x.width - (j * s - halo)  # window rows/cols up to its end
            if top:
                part[..., :top, :] = 0
            if left:
                part[..., :, :left] = 0
            if bottom < size:
                part[..., max(bottom, 0) :, :] = 0
            if right < size:
                part[..., :, max(right, 0) :] = 0

    def outside(self, x: Map, tiles: list[tuple[int, int]], halo: int) -> torch.Tensor | None:
        """(T·B, 1, h, w) bool, True beyond the image, for windows(x, tiles, halo); None if all windows are inside."""
        s, batch = x.cell, x.data.shape[0]
        inside_rows = [(i * s - halo >= 0, (i + 1) * s + halo <= x.height) for i, _ in tiles]
        inside_cols = [(j * s - halo >= 0, (j + 1) * s + halo <= x.width) for _, j in tiles]
        if all(a and b for a, b in inside_rows + inside_cols):
            return None
        span = torch.arange(-halo, s + halo, device=self.device)
        masks = []
        for i, j in tiles:
            rows, cols = span + i * s, span + j * s
            inside = ((rows >= 0) & (rows < x.height))[:, None] & ((cols >= 0) & (cols < x.width))[None, :]
            masks.append((~inside)[None, None].expand(batch, 1, -1, -1))
        return torch.cat(masks)

    def write(self, out: Map, tiles: list[tuple[int, int]], y: torch.Tensor) -> list[tuple]:
        """Store the cores y (T·B, C, cell, cell) into `out`; return their statistics (Stats.of parts) over the
        image. y is consumed: the statistics are computed in its place, after the copy."""
        batch, s = out.data.shape[0], out.cell
        host = y.to(self.storage)  # synchronous: a non-blocking copy to the host could be read before it lands
        for t, (i, j) in enumerate(tiles):
            rows, cols = slice(MARGIN + i * s, MARGIN + (i + 1) * s), slice(MARGIN + j * s, MARGIN + (j + 1) * s)
            out.data[..., rows, cols] = host[t * batch : (t + 1) * batch]
        # Statistics of the part of each core inside the image.
        parts = [_tile_stats_(y[t * batch : (t + 1) * batch, :, : out.height - i * s, : out.width - j * s])
                 for t, (i, j) in enumerate(tiles)]  # fmt: skip
        self.step(len(tiles))
        return parts

    def new_map(self, like: Map, channels: int, factor: float) -> Map:
        """An uninitialised map of `channels` at `factor` × like's resolution.

        In host memory, its storage is that of a map no longer referenced, when one of the same shape is (a fresh
        buffer of a full-resolution map is fresh pages, faulted in at its first write: as slow as the write). Maps
        come in runs of one shape, so a shape not in the pool drops the pool: it holds a map or two at most.
        """
        cell = round(like.cell * factor)
        shape = (like.data.shape[0], channels, self.grid.rows * cell + 2 * MARGIN, self.grid.cols * cell + 2 * MARGIN)
        reusable = [k for k, data in enumerate(self._free) if data.shape == shape]
        if reusable:
            data = self._free.pop(reusable[0])
        else:
            self._free.clear()
            data = torch.empty(shape, dtype=self.dtype, device=self.storage)
        out = Map(data, round(like.height * factor), round(like.width * factor), cell)
        if self.storage.type == "cpu":
            weakref.finalize(out, self._free.append, data).atexit = False  # back to the pool when dropped
        return out

    def step(self, tiles: int) -> None:
        self.done += tiles
        if self.progress is not None:
            self.progress(self.done, self.total)

    def repeat(self, value: torch.Tensor, tiles: int) -> torch.Tensor:
        """(B, C) per-image values repeated for a tile-major batch of `tiles` tiles: (T·B, C)."""
        return value.repeat(tiles, 1)

    # -- Passes.

    def conv(self, x: Map, op: nn.Module, channels: int, *, norm: nn.GroupNorm | None = None, silu: bool = False,
             factor: float = 1, residual: Map | None = None, shortcut: nn.Module | None = None,
             divide: float = 1.0) -> Map:  # fmt: skip
        """One pass: op(SiLU(GroupNorm(x))) on every tile (+ shortcut(residual)) / divide, with output statistics.

        op: a 3×3 conv (factor 1), a Downsample2D (factor 1/2) or an Upsample2D (factor 2), reading `halo` input
        pixels beyond the core; its output window is cut back to the core.
        """
        halo = 2 if factor < 1 else 1
        crop = round(halo * factor)
        out = self.new_map(x, channels, factor)
        affine = x.stats.group_norm_affine(norm) if norm is not None else None
        parts = []
        for tiles in self.batches():
            # Cut the tiles with their halo; normalise with the whole image's statistics; zero beyond the image.
            if norm is None:
                h = self.windows(x, tiles, halo, reuse=True)
            else:
                h = self.normalized(x, tiles, halo, affine, silu)
            self.zero_outside(h, x, tiles, halo)
            # The layer, cut back to the cores; the residual; store the cores and their statistics.
            y = op(h)[..., crop : crop + out.cell, crop : crop + out.cell]
            del h
            if residual is not None:
                y = self.add_residual(y, residual, tiles, shortcut)
                if divide != 1:  # x / 1 is x: skip a pass over the map (the SD VAEs' output_scale_factor is 1)
                    y = y / divide
            parts += self.write(out, tiles, y)
        out.stats = Stats.of(parts)
        return out

    def add_residual(self, y: torch.Tensor, residual: Map, tiles: list[tuple[int, int]],
                     shortcut: nn.Module | None) -> torch.Tensor:  # fmt: skip
        """residual's cores (through `shortcut` if any) + y, for the cores y of `tiles` (y, a layer's fresh output,
        is added to in place when there is no shortcut, as diffusers computes shortcut(x) + h)."""
        if shortcut is not None:
            return shortcut(self.windows(residual, tiles, 0)) + y
        batch = residual.data.shape[0]
        for t, core in enumerate(self.crops(residual, tiles, 0)):
            part = y[t * batch : (t + 1) * batch]
            part.add_(core.to(self.device, y.dtype, non_blocking=True))
        return y

    def resnet(self, x: Map, block: ResnetBlock2D) -> Map:
        """diffusers' ResnetBlock2D (no time embedding): two passes."""
        h = self.conv(x, block.conv1, block.conv1.out_channels, norm=block.norm1, silu=True)
        return self.conv(h, block.conv2, block.conv2.out_channels, norm=block.norm2, silu=True, residual=x,
                         shortcut=block.conv_shortcut, divide=block.output_scale_factor)  # fmt: skip

    def attend(self, x: Map, attn: Attention) -> Map:
        """diffusers' Attention on a spatial map (the VAE mid block): one or two passes, see the module docstring."""
        batch, channels, s = x.data.shape[0], x.data.shape[1], x.cell
        heads, dim = attn.heads, channels // attn.heads
        affine = x.stats.group_norm_affine(attn.group_norm)

        def tokens(tiles):  # (T·B, s², C): the normalised cores
            return self.normalized(x, tiles, 0, affine, silu=False).flatten(2).transpose(1, 2)

        def split(t):  # (n, L, C) -> (n, heads, L, dim)
            return t.unflatten(-1, (heads, dim)).transpose(1, 2)

        keys = values = None
        if self.attention == "global":
            # Keys and values of the whole latent, on the device.
            keys = torch.empty(batch, x.height, x.width, channels, dtype=self.dtype, device=self.device)
            values = torch.empty_like(keys)
            for tiles in self.batches():
                h = tokens(tiles)
                k, v = (f(h).unflatten(1, (s, s)) for f in (attn.to_k, attn.to_v))
                for t, (i, j) in enumerate(tiles):
                    rows = slice(i * s, min((i + 1) * s, x.height))
                    cols = slice(j * s, min((j + 1) * s, x.width))
                    part = slice(t * batch, (t + 1) * batch)
                    keys[:, rows, cols] = k[part, : rows.stop - rows.start, : cols.stop - cols.start]
                    values[:, rows, cols] = v[part, : rows.stop - rows.start, : cols.stop - cols.start]
                self.step(len(tiles))
            keys, values = split(keys.flatten(1, 2)), split(values.flatten(1, 2))

        out = self.new_map(x, channels, 1)
        parts = []
        for tiles in self.batches():
            n = len(tiles)
            h = tokens(tiles)
            q = attn.to_q(h)
            if keys is not None:
                # All tiles' queries of an image in one sequence, against the whole image's keys.
                q = q.unflatten(0, (n, batch)).transpose(0, 1).flatten(1, 2)  # (B, T·s², C)
                o = F.scaled_dot_product_attention(split(q), keys, values)
                o = o.transpose(1, 2).flatten(2).unflatten(1, (n, s * s)).transpose(0, 1).flatten(0, 1)
            else:
                # Within each core; positions beyond the image are not attended to.
                mask = self.outside(x, tiles, 0)
                mask = None if mask is None else ~mask.flatten(2)[:, None]  # (T·B, 1, 1, s²), True = attend
                o = F.scaled_dot_product_attention(split(q), split(attn.to_k(h)), split(attn.to_v(h)), attn_mask=mask)
                o = o.transpose(1, 2).flatten(2)
            o = attn.to_out[0](o).transpose(1, 2).unflatten(2, (s, s))
            if attn.residual_connection:
                o = o + self.windows(x, tiles, 0)
            if attn.rescale_output_factor != 1:
                o = o / attn.rescale_output_factor
            parts += self.write(out, tiles, o)
        out.stats = Stats.of(parts)
        return out

    def mid(self, x: Map, block: nn.Module) -> Map:
        x = self.resnet(x, block.resnets[0])
        for attn, resnet in zip(block.attentions, block.resnets[1:]):
            if attn is not None:
                x = self.attend(x, attn)
            x = self.resnet(x, resnet)
        return x


# ------------------------------------------------------------------------------------------------------------------
# The encoder and decoder, pass by pass (the order of diffusers' Encoder.forward and Decoder.forward).


def _encoder_passes(runner: _Runner, encoder: Encoder, image: Map) -> Map:
    h = runner.conv(image, encoder.conv_in, encoder.conv_in.out_channels)
    for block in encoder.down_blocks:
        for resnet in block.resnets:
            h = runner.resnet(h, resnet)
        for down in block.downsamplers or ():
            h = runner.conv(h, down, down.out_channels, factor=0.5)
    h = runner.mid(h, encoder.mid_block)
    return runner.conv(h, encoder.conv_out, encoder.conv_out.out_channels, norm=encoder.conv_norm_out, silu=True)


def _decoder_passes(runner: _Runner, decoder: Decoder, z: Map) -> Map:
    h = runner.conv(z, decoder.conv_in, decoder.conv_in.out_channels)
    h = runner.mid(h, decoder.mid_block)
    for block in decoder.up_blocks:
        for resnet in block.resnets:
            h = runner.resnet(h, resnet)
        for up in block.upsamplers or ():
            h = runner.conv(h, up, up.out_channels, factor=2)
    return runner.conv(h, decoder.conv_out, decoder.conv_out.out_channels, norm=decoder.conv_norm_out, silu=True)


def encoder_factor(encoder: Encoder) -> int:
    """Pixels per latent pixel of a diffusers VAE Encoder: 2 per down block with a downsampler (8 for SD's VAEs)."""
    return 2 ** sum(1 for block in encoder.down_blocks if block.downsamplers)


def count_passes(net: Encoder | Decoder, attention: str = "global") -> int:
    """Passes over the grid that the tiled `net` makes (each visits every tile once)."""
    mid = net.mid_block
    attentions = sum(a is not None for a in mid.attentions) * (2 if attention == "global" else 1)
    blocks = net.down_blocks if isinstance(net, Encoder) else net.up_blocks
    samplers = sum(len(getattr(b, "downsamplers", None) or getattr(b, "upsamplers", None) or ()) for b in blocks)
    resnets = len(mid.resnets) + sum(len(b.resnets) for b in blocks)
    return 2 + 2 * resnets + samplers + attentions


def check_supported(net: Encoder | Decoder) -> None:
    """ValueError naming what differs unless `net` is built of the layers this module unrolls (the SD VAEs are)."""
    problems = []
    for name, module in net.named_modules():
        if isinstance(module, ResnetBlock2D):
            if module.time_emb_proj is not None or module.upsample is not None or module.downsample is not None:
                problems.append(f"{name}: a ResnetBlock2D with a time embedding or resampling")
            if not isinstance(module.nonlinearity, nn.SiLU) or not isinstance(module.norm1, nn.GroupNorm):
                problems.append(f"{name}: a ResnetBlock2D without GroupNorm + SiLU")
        elif isinstance(module, Attention):
            if module.group_norm is None or module.spatial_norm is not None or module.norm_q is not None:
                problems.append(f"{name}: an Attention without exactly one GroupNorm")
        elif isinstance(module, Downsample2D) and (not module.use_conv or module.norm is not None):
            problems.append(f"{name}: a Downsample2D without a conv or with a norm")
        elif isinstance(module, Upsample2D) and (module.use_conv_transpose or not module.interpolate or module.norm):
            problems.append(f"{name}: an Upsample2D that is not nearest ×2 + conv")
    if not isinstance(net.conv_norm_out, nn.GroupNorm) or not isinstance(net.conv_act, nn.SiLU):
        problems.append("conv_norm_out/conv_act: not GroupNorm + SiLU")
    if getattr(net, "mid_block", None) is None:
        problems.append("no mid block")
    if problems:
        raise ValueError(
            f"vae_tiling=groupnorm_sync cannot unroll this {type(net).__name__} ({'; '.join(problems[:3])}); "
            "use inference.vae_tiling=blend"
        )


def run_tiled(net: Encoder | Decoder, x: torch.Tensor, core: int, batch_size: int = 4, attention: str = "global",
              offload: bool = True, progress: Progress | None = None, compile: bool = False,
              channels_last: bool = False) -> torch.Tensor:  # fmt: skip
    """net(x) for a diffusers VAE Encoder (x: image (B, 3, H, W)) or Decoder (x: latent (B, C, h, w)), on tiles.

    core: tile core side in latent pixels (the image side is `encoder_factor` × that: 8 for SD's VAEs); batch_size:
    tiles per forward; attention: 'global' | 'tile' (module docstring); offload: keep the whole maps in host memory
    when the device is not the CPU. Returns net(x) (to rounding with 'global' attention) in the net's dtype, on x's
    device.
    """
    if attention not in ATTENTIONS:
        raise ValueError(f"attention must be one of {ATTENTIONS}, got {attention!r}")
    check_supported(net)
    encoder = isinstance(net, Encoder)
    weight = net.conv_in.weight
    device, dtype = weight.device, weight.dtype
    factor = encoder_factor(net) if encoder else 1
    latent = (x.shape[-2] // factor, x.shape[-1] // factor)
    grid = Grid(*latent, core)
    storage = torch.device("cpu") if offload and device.type != "cpu" else device
    total = count_passes(net, attention) * len(grid.tiles)
    runner = _Runner(grid, max(1, batch_size), attention, device, dtype, storage, progress, total, compile,
                     channels_last)  # fmt: skip
    if progress is not None:
        progress(0, total)
    inputs = runner.store(x.to(dtype), factor)
    out = (_encoder_passes if encoder else _decoder_passes)(runner, net, inputs)
    return runner.image(out).to(x.device)
