"""Data: HQ image sources, training samples, degradations and the Lightning data module.

May import the ground floor only (images, errors, options): never models/, losses/, inference/ or evaluation/.
"""

from d3sr.data.datasets import EmbeddedPhotos, ImageFiles, SRSamples
from d3sr.data.degradation import BicubicDegradation, RealESRGANDegradation
from d3sr.data.sr_datamodule import SRDataModule

__all__ = ["BicubicDegradation", "EmbeddedPhotos", "ImageFiles", "RealESRGANDegradation", "SRDataModule", "SRSamples"]
