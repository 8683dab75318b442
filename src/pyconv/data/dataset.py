"""A data set as pyconv holds it (Dataset), the rows of an .npy file read on
demand (NpyRows), and the checks every data set passes (checked)."""
import os
from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass
class Dataset:
    """Training and test images (N, H, W) or (N, H, W, C), uint8 or float, with
    integer labels in [0, classes), and the classes' names."""
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list

    @property
    def input_shape(self):
        """One example's shape with its channel axis: (H, W, C)."""
        shape = tuple(self.x_train.shape[1:])
        return shape + (1,) if len(shape) == 2 else shape

    def __repr__(self):
        return (f"Dataset({self.name!r}, train {self.x_train.shape} {self.x_train.dtype}, "
                f"test {self.x_test.shape}, {len(self.class_names)} classes)")


class NpyRows:
    """The rows of an .npy file, read on demand with positioned reads: a batch
    costs its own rows and nothing else is read, so a data set larger than
    memory trains from disk. (np.load(mmap_mode="r") maps the file instead; a
    kernel that maps page-cache pages in large folios, as Linux does on ext4,
    then counts megabytes as resident for every row touched: a few hundred
    random batches of a 2 GB set made the process's resident set 2 GB.)

    Indexing: an int (a row), an array of ints (a batch), a slice of step 1
    (another NpyRows over those rows); np.asarray reads them all."""

    def __init__(self, path, start=0, stop=None):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read(f)
            offset = f.tell()
        if fortran or dtype.hasobject or len(shape) < 1:
            raise ValueError("needs a C-ordered array of numbers with at least one axis")
        self.path, self.dtype, self.row_shape = path, dtype, tuple(shape[1:])
        self.row_bytes = dtype.itemsize * int(np.prod(self.row_shape))
        self._offset, self.start = offset, start
        self.stop = shape[0] if stop is None else stop
        self._fd = os.open(path, os.O_RDONLY)

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            os.close(self._fd)

    @property
    def shape(self):
        return (self.stop - self.start, *self.row_shape)

    @property
    def ndim(self):
        return 1 + len(self.row_shape)

    def __len__(self):
        return self.stop - self.start

    def _read(self, first, count):
        """count consecutive rows from row `first` (of this view)."""
        want = count * self.row_bytes
        data = os.pread(self._fd, want, self._offset + (self.start + first) * self.row_bytes)
        if len(data) != want:
            raise DataError(f"{self.path}: truncated ({len(data)} of {want} bytes at row "
                            f"{self.start + first})")
        return np.frombuffer(data, self.dtype).reshape((count, *self.row_shape))

    def __getitem__(self, key):
        if isinstance(key, slice):
            first, last, step = key.indices(len(self))
            if step != 1:
                raise IndexError("NpyRows: slices must have step 1")
            return NpyRows(self.path, self.start + first, self.start + max(first, last))
        if np.isscalar(key):
            return self[np.array([key])][0]
        idx = np.asarray(key)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise IndexError("NpyRows: index with an int, a slice or a 1-d array of ints")
        if len(idx) and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"NpyRows: index out of range for {len(self)} rows")
        out = np.empty((len(idx), *self.row_shape), self.dtype)
        for k, i in enumerate(idx % max(len(self), 1)):
            out[k] = self._read(int(i), 1)[0]
        return out

    def __array__(self, dtype=None, copy=None):
        a = self._read(0, len(self)) if len(self) else np.empty(self.shape, self.dtype)
        return a if dtype is None else a.astype(dtype)

    def __repr__(self):
        return f"NpyRows({self.path!r}, rows {self.start}:{self.stop}, {self.dtype} {self.shape})"


def checked(ds, where):
    """Shapes, dtypes and label ranges checked; class names filled in."""
    for split in ("train", "test"):
        x, y = getattr(ds, f"x_{split}"), getattr(ds, f"y_{split}")
        if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] < 1):
            raise DataError(f"{where}: x_{split} must be images (N, H, W) or (N, H, W, C), "
                            f"got shape {x.shape}")
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise DataError(f"{where}: x_{split} must hold integer or float pixels, "
                            f"got {x.dtype}")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{where}: y_{split} must be integer labels (N,), got {y.dtype} "
                            f"{y.shape}")
        if len(x) != len(y):
            raise DataError(f"{where}: x_{split} has {len(x)} images but y_{split} has "
                            f"{len(y)} labels")
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        raise DataError(f"{where}: training images are {ds.x_train.shape[1:]} but test images "
                        f"are {ds.x_test.shape[1:]}")
    if not len(ds.y_train):
        raise DataError(f"{where}: no training images")
    low = min(int(ds.y_train.min()), int(ds.y_test.min()) if len(ds.y_test) else 0)
    high = max(int(ds.y_train.max()), int(ds.y_test.max()) if len(ds.y_test) else 0)
    n_classes = len(ds.class_names) if ds.class_names else high + 1
    if low < 0 or high >= n_classes:
        raise DataError(f"{where}: labels must be in [0, {n_classes}), found values in "
                        f"[{low}, {high}]")
    if ds.class_names is None:
        ds.class_names = [str(i) for i in range(n_classes)]
    return ds
