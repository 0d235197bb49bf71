"""Lightning callbacks for training (image grids in TensorBoard). May import models/ and the ground floor."""

from d3sr.callbacks.image_logger import ImageGridLogger

__all__ = ["ImageGridLogger"]
