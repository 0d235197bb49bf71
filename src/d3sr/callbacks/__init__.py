"""Lightning callbacks for training (image grids in TensorBoard, EMA). May import models/ and the ground floor."""

from d3sr.callbacks.ema import EMA
from d3sr.callbacks.image_logger import ImageGridLogger

__all__ = ["EMA", "ImageGridLogger"]
