"""The IDX format (MNIST's): read and check it.

Where a data set comes from (the `data_dir` argument, $PYCONV_DATA_DIR, the
cache, a checked download) and its checksums are the registry's business
(pyconv.data.datasets).
"""
import gzip
import os
import struct
import zlib

import numpy as np

from ..errors import DataError

NAMES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")   # MNIST's, and any IDX set's
MAGIC = {3: 0x00000803, 1: 0x00000801}   # uint8 images (3-d), uint8 labels (1-d)


# ---------------------------------------------------------------- reading IDX

def _open_bytes(path):
    """The decompressed bytes of an IDX file (.gz or raw)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise DataError(f"{path}: cannot read: {e.strerror}") from None
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: broken gzip data ({e})") from None
    return raw


def read_idx(path, ndim):
    """A uint8 IDX array of `ndim` dimensions, every header field checked."""
    data = _open_bytes(path)
    if len(data) < 4 + 4 * ndim:
        raise DataError(f"{path}: too short for an IDX header ({len(data)} bytes)")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != MAGIC[ndim]:
        raise DataError(f"{path}: wrong magic number 0x{magic:08x}, expected "
                        f"0x{MAGIC[ndim]:08x} (uint8, {ndim}-d)")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    expected = 4 + 4 * ndim + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(f"{path}: {len(data)} bytes, but its header {dims} says {expected} "
                        f"({'truncated' if len(data) < expected else 'trailing data'})")
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find_file(folder, name):
    """name (.gz) or its decompressed twin in folder, or None."""
    for candidate in (name, name[:-3]):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def read_idx_dir(folder):
    """((train_images, train_labels), (test_images, test_labels)) from the four
    IDX files of a folder (MNIST's names, gzip or raw): any size and count."""
    missing = [n for n in NAMES if find_file(folder, n) is None]
    if missing:
        raise DataError(f"{folder}: missing IDX file(s) {', '.join(missing)} "
                        "(gzip or uncompressed)")
    out = []
    for prefix in ("train", "t10k"):
        ipath = find_file(folder, f"{prefix}-images-idx3-ubyte.gz")
        lpath = find_file(folder, f"{prefix}-labels-idx1-ubyte.gz")
        images, labels = read_idx(ipath, 3), read_idx(lpath, 1)
        if len(images) != len(labels):
            raise DataError(f"{ipath} has {len(images)} images but {lpath} has "
                            f"{len(labels)} labels")
        if len(images) == 0:
            raise DataError(f"{ipath}: holds no images")
        out.append((images, labels))
    return tuple(out)


def read_mnist_dir(folder):
    """read_idx_dir for MNIST-shaped files: 28x28 images, labels 0-9 (MNIST
    itself, or the tests' sample of it)."""
    out = read_idx_dir(folder)
    for prefix, (images, labels) in zip(("train", "t10k"), out):
        ipath = find_file(folder, f"{prefix}-images-idx3-ubyte.gz")
        if images.shape[1:] != (28, 28):
            raise DataError(f"{ipath}: images are {images.shape[1:]}, expected (28, 28)")
        if labels.max(initial=0) > 9:
            lpath = find_file(folder, f"{prefix}-labels-idx1-ubyte.gz")
            raise DataError(f"{lpath}: labels must be 0-9, found {labels.max()}")
    return out


def to_float(images):
    """uint8 (N, H, W) -> float32 (N, H, W, 1) in [0, 1] (as a model with
    input_divisor 255 scales them one batch at a time)."""
    return (images.astype(np.float32) / np.float32(255))[..., None]
