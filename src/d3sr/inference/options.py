"""The inference settings shared by the Python API, `d3sr.infer`, `d3sr.evaluate` and the notebook.

One dataclass, validated once when it is made; its config node is conf/inference/default.yaml (`inference.*` in
infer.yaml and evaluate.yaml), whose values are these defaults (a test keeps them equal).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path

import torch

from d3sr.inference.color_fix import COLOR_FIXES
from d3sr.inference.tiling import check_tiling
from d3sr.options import DTYPES, check_choice, resolve_device, resolve_precision

CONFIG_FILE = Path(__file__).resolve().parents[1] / "conf" / "inference" / "default.yaml"


@dataclass(frozen=True)
class InferenceOptions:
    """How D3SRPipeline runs: tiling, colour fix, device and precision.

    tile_size / tile_overlap: output pixels; sides up to tile_size are not split; 0 = never tile (see tiling.py).
    color_fix: 'adain' | 'wavelet' | 'none', towards the bicubic upsample (StableSR/OSEDiff; see color_fix.py).
    device: 'auto' | 'cpu' | 'cuda' | 'cuda:N'. precision: 'auto' (bf16 on CUDA, fp32 on the CPU) | fp32 | bf16 | fp16.
    """

    tile_size: int = 512
    tile_overlap: int = 128
    color_fix: str = "adain"  # our choice where the paper is silent: as StableSR's and OSEDiff's inference scripts
    device: str = "auto"
    precision: str = "auto"

    def __post_init__(self) -> None:
        check_tiling(int(self.tile_size), int(self.tile_overlap))
        check_choice("inference.color_fix", self.color_fix, COLOR_FIXES)
        check_choice("inference.precision", self.precision, ("auto", *DTYPES))
        object.__setattr__(self, "tile_size", int(self.tile_size))
        object.__setattr__(self, "tile_overlap", int(self.tile_overlap))

    @classmethod
    def from_config(cls, node) -> InferenceOptions:
        """From an `inference` config node (DictConfig or dict); unknown keys are named in the error."""
        from d3sr.errors import ConfigError

        data = dict(node)
        known = {f.name for f in fields(cls)}
        if unknown := sorted(set(data) - known):
            raise ConfigError(f"inference.{unknown[0]} is not an inference option; choose from {sorted(known)}")
        return cls(**data)

    @classmethod
    def defaults_from_file(cls) -> InferenceOptions:
        """The shipped defaults (conf/inference/default.yaml)."""
        from omegaconf import OmegaConf

        return cls.from_config(OmegaConf.load(CONFIG_FILE))

    def replace(self, **changes) -> InferenceOptions:
        """A copy with `changes` (None values ignored), validated."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def torch_device(self) -> torch.device:
        return resolve_device(self.device, "inference.device")

    def torch_dtype(self) -> torch.dtype:
        return resolve_precision(self.precision, self.torch_device(), "inference.precision")
