"""Data: HQ image sources, training samples, degradations and the Lightning data module."""

from d3sr.data.datasets import EmbeddedPhotos, ImageFiles, SRSamples, read_image
from d3sr.data.degradation import BicubicDegradation, RealESRGANDegradation
from d3sr.data.sr_datamodule import SRDataModule

__all__ = [
    "BicubicDegradation", "EmbeddedPhotos", "ImageFiles", "RealESRGANDegradation", "SRDataModule", "SRSamples",
    "read_image",
]  # fmt: skip
