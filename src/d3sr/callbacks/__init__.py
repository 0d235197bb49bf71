"""Lightning callbacks."""

from d3sr.callbacks.image_logger import ImageGridLogger

__all__ = ["ImageGridLogger"]
