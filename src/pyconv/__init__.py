"""pyconv: train small convolutional networks on the CPU, on top of convcore.

    import pyconv
    model = pyconv.models.tutorial_cnn(seed=0)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-4)
    loss = model.train_step(x, y, opt)   # x float32 (N, 28, 28, 1), y int (N,)
    logits = model.predict(x)            # (N, 10), no dropout
    pyconv.save(model, "model.npz"); model = pyconv.load("model.npz")
"""
from . import data, init, layers, losses, models, optim
from .errors import DataError, ModelFileError, WriteError
from .model import Sequential
from .serialize import load, save

__version__ = "0.1.0"
__all__ = ["data", "init", "layers", "losses", "models", "optim", "Sequential", "save", "load",
           "DataError", "ModelFileError", "WriteError"]
