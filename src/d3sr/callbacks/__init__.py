"""Lightning callbacks and plugins for training (image grids in TensorBoard, EMA, pre-emption, atomic checkpoint
files). May import models/ and the ground floor."""

from d3sr.callbacks.atomic_checkpoints import AtomicCheckpointIO, check_checkpoint_folders, use_atomic_checkpoints
from d3sr.callbacks.ema import EMA
from d3sr.callbacks.image_logger import ImageGridLogger
from d3sr.callbacks.preemption import Preemption

__all__ = [
    "EMA",
    "AtomicCheckpointIO",
    "ImageGridLogger",
    "Preemption",
    "check_checkpoint_folders",
    "use_atomic_checkpoints",
]
