"""Inference: the ×4 pipeline (bundles and checkpoints), tiling for any image size, colour correction."""

from d3sr.inference.color_fix import color_fix
from d3sr.inference.pipeline import D3SRPipeline

__all__ = ["D3SRPipeline", "color_fix"]
