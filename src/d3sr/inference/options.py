"""The inference settings shared by the Python API, `d3sr.infer`, `d3sr.evaluate` and the notebook.

One dataclass, validated once when it is made; its config node is conf/inference/default.yaml (`inference.*` in
infer.yaml and evaluate.yaml), which owns the defaults: the fields read them from there (d3sr.inference.defaults).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import torch

from d3sr.errors import ConfigError
from d3sr.inference.color_fix import COLOR_FIXES
from d3sr.inference.defaults import default
from d3sr.inference.tiled_vae import ATTENTIONS
from d3sr.inference.tiling import VAE_TILINGS, TilingOptions, check_tiling
from d3sr.options import (
    DTYPES,
    auto_channels_last,
    auto_precision,
    check_choice,
    resolve_channels_last,
    resolve_device,
    resolve_precision,
)


@dataclass(frozen=True)
class InferenceOptions(TilingOptions):
    """How D3SRPipeline runs: tiling, colour fix, device, precision and speed settings (see tiling.py).

    tile_size / tile_overlap: output pixels; sides up to tile_size are not split; 0 = never tile. tile_overlap is
    the overlap of the UNet's (and the blended VAE's) tiles.
    tile_batch_size: tiles per forward, or 'auto' (as many as fill one 512² tile: 1 of 512, 4 of 256, 16 of 128).
    vae_tiling: 'groupnorm_sync' (layer by layer, whole-image GroupNorm statistics, exact) | 'blend' (each tile
    encoded/decoded on its own, Gaussian blend). vae_attention: 'global' (exact) | 'tile' (within each tile).
    vae_offload: with groupnorm_sync on a GPU, keep the whole activation maps in host memory between layers.
    color_fix: 'adain' | 'wavelet' | 'none', towards the bicubic upsample (StableSR/OSEDiff; see color_fix.py).
    device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'. precision: 'auto' | fp32 | bf16 | fp16 (CUDA only); 'auto' is bf16 on
    CUDA and on CPUs with bf16 matrix units (AMX or AVX512-BF16), fp32 elsewhere (d3sr.options.auto_precision).
    compile: torch.compile the UNet and VAE (in place, at the first call that asks; they stay compiled).
    channels_last: the UNet, the VAE and their inputs in channels-last memory format: 'auto' | true | false; 'auto'
    is on for CUDA and for CPUs with bf16 matrix units or AVX-512, off elsewhere (d3sr.options.auto_channels_last).
    """

    # The tiling fields come from TilingOptions. Defaults from conf/inference/default.yaml, their one owner (the
    # reasons for each choice are written there).
    color_fix: str = default("color_fix")
    device: str = default("device")
    precision: str = default("precision")
    channels_last: bool | str = default("channels_last")

    def __post_init__(self) -> None:
        check_tiling(int(self.tile_size), int(self.tile_overlap))
        check_choice("inference.color_fix", self.color_fix, COLOR_FIXES)
        check_choice("inference.precision", self.precision, ("auto", *DTYPES))
        check_choice("inference.vae_tiling", self.vae_tiling, VAE_TILINGS)
        check_choice("inference.vae_attention", self.vae_attention, ATTENTIONS)
        batch = self.tile_batch_size
        if batch != "auto" and (isinstance(batch, bool) or not isinstance(batch, int) or batch < 1):
            raise ConfigError(f"inference.tile_batch_size must be 'auto' or a positive integer, got {batch!r}")
        for key in ("vae_offload", "compile"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"inference.{key} must be true or false, got {getattr(self, key)!r}")
        if self.channels_last != "auto" and not isinstance(self.channels_last, bool):
            raise ConfigError(f"inference.channels_last must be 'auto', true or false, got {self.channels_last!r}")
        object.__setattr__(self, "tile_size", int(self.tile_size))
        object.__setattr__(self, "tile_overlap", int(self.tile_overlap))

    def tiling(self, device: torch.device) -> dict:
        """The keyword arguments of tiling.run_generator these options give on `device` ('auto' resolved)."""
        settings = {key: getattr(self, key) for key in TILING_KEYS}
        settings["channels_last"] = resolve_channels_last(self.channels_last, device)
        return settings

    @classmethod
    def from_config(cls, node) -> InferenceOptions:
        """From an `inference` config node (DictConfig or dict); unknown keys are named in the error."""
        data = dict(node)
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ConfigError(f"inference.{unknown[0]} is not an inference option; choose from {sorted(known)}")
        return cls(**data)

    def replace(self, **changes) -> InferenceOptions:
        """A copy with `changes` (None values ignored), validated."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def torch_device(self) -> torch.device:
        return resolve_device(self.device, "inference.device")

    def torch_dtype(self) -> torch.dtype:
        return resolve_precision(self.precision, self.torch_device(), "inference.precision")

    def resolved(self, device: torch.device | None = None) -> str:
        """One line saying what precision and channels_last are on `device` (default: the options' device) and,
        for 'auto', why: `inference: precision auto -> float32 (no bf16 matrix units on this CPU), ...`."""
        device = self.torch_device() if device is None else torch.device(device)
        parts = []
        for key, value, auto in (("precision", self.precision, auto_precision),
                                 ("channels_last", self.channels_last, auto_channels_last)):  # fmt: skip
            if value == "auto":
                choice = auto(device)
                shown, reason = choice.value, f" ({choice.reason})"
            else:
                shown = resolve_precision(value, device, "inference.precision") if key == "precision" else value
                reason = ""
            if isinstance(shown, torch.dtype):
                shown = str(shown).removeprefix("torch.")
            elif isinstance(shown, bool):
                shown = "on" if shown else "off"
            parts.append(f"{key} {str(value).lower()} -> {shown}{reason}")
        return f"inference: {', '.join(parts)}"


# The options that say how the generator's stages are tiled (tiling.run_generator's keyword arguments): the
# TilingOptions fields and channels_last (resolved by InferenceOptions.tiling), read from the dataclass.
TILING_KEYS = (*(f.name for f in fields(TilingOptions)), "channels_last")
