"""Data: IDX files (idx), the registry of named data sets with their
checksums and a user's own data in its forms (datasets), image folders
(images), the Dataset they all give (dataset), and the augmentation of
training batches (augment)."""
from .augment import Augment, batch
from .dataset import Dataset, NpyRows
from .datasets import REGISTRY, load, load_mnist, names
from .idx import read_idx, read_mnist_dir, to_float

__all__ = ["Augment", "batch", "Dataset", "NpyRows", "REGISTRY", "load", "load_mnist", "names",
           "read_idx", "read_mnist_dir", "to_float"]
