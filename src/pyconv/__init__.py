"""pyconv: train small convolutional networks on the CPU, on top of convcore.

    import pyconv
    ds = pyconv.datasets.load("mnist")                  # uint8 images, labels
    model = pyconv.models.tutorial_cnn(seed=0)          # or Sequential([...], input_shape)
    history = model.fit(ds.x_train, ds.y_train, epochs=1, batch_size=50, lr=1e-4,
                        validation_split=1 / 12)
    model.evaluate(ds.x_test, ds.y_test)                # {"loss": ..., "accuracy": ...}
    pyconv.save(model, "model.npz"); model = pyconv.load("model.npz")
"""
from . import data, init, io, layers, losses, models, optim, train
from .data import datasets
from .errors import DataError, ModelFileError, ShapeError, WriteError
from .graph import Input
from .io import load, load_network, save
from .model import Model, Sequential
from .train import callbacks, distributed, fit
from .version import __version__

__all__ = ["callbacks", "data", "datasets", "distributed", "init", "io", "layers", "losses",
           "models", "optim", "train", "Input", "Model", "Sequential", "fit", "save", "load",
           "load_network", "DataError", "ModelFileError", "ShapeError", "WriteError",
           "__version__"]
