"""Inference: the ×4 pipeline (bundles and checkpoints), its options, tiling for any image size, colour correction.

May import models/ and the ground floor (images, options, errors); never data/, losses/ or evaluation/.
"""

from d3sr.inference.color_fix import color_fix
from d3sr.inference.options import InferenceOptions
from d3sr.inference.pipeline import D3SRPipeline

__all__ = ["D3SRPipeline", "InferenceOptions", "color_fix"]
