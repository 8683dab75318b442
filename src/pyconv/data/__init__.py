"""Data: IDX files (idx), the registry of named data sets with their
checksums and a user's own data in its forms (datasets), image folders
(images), and the Dataset they all give (dataset)."""
from .dataset import Dataset, NpyRows
from .datasets import REGISTRY, load, load_mnist, names
from .idx import read_idx, read_mnist_dir, to_float

__all__ = ["Dataset", "NpyRows", "REGISTRY", "load", "load_mnist", "names", "read_idx",
           "read_mnist_dir", "to_float"]
