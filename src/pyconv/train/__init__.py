"""Training: the loop (Trainer, fit), its callbacks, and data-parallel
training over several processes (distributed). Importing it lends the model
its fit method (pyconv.model.register_loop)."""
from ..model import register_loop
from . import callbacks, distributed
from .loop import BatchSampler, History, Trainer, TrainingDiverged, fit

register_loop("fit", fit)

__all__ = ["BatchSampler", "History", "Trainer", "TrainingDiverged", "callbacks",
           "distributed", "fit"]
