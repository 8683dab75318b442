"""MNIST in its original IDX format: find it, check it, read it.

Where the four files come from, in this order: the `data_dir` argument (the
CLI's --data-dir); the environment variable PYCONV_DATA_DIR; the per-user
cache (~/.cache/pyconv/mnist, or $XDG_CACHE_HOME/pyconv/mnist); else they are
downloaded into that cache from the public mirrors that torchvision and
TensorFlow use, each file checked against its published MD5 (or the SHA-256 of
its decompressed payload) before it is renamed into place.
"""
import gzip
import hashlib
import http.client
import os
import struct
import tempfile
import urllib.request
import zlib

import numpy as np

from .errors import DataError

FILES = {
    # name: (published MD5 of the .gz, SHA-256 of the decompressed IDX payload)
    "train-images-idx3-ubyte.gz": ("f68b3c2dcbeaaa9fbdd348bbdeb94873",
                                   "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"),
    "train-labels-idx1-ubyte.gz": ("d53e105ee54ea40749a09fcbcd1e9432",
                                   "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"),
    "t10k-images-idx3-ubyte.gz": ("9fb629c4189551a2d022fa330f9573f3",
                                  "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"),
    "t10k-labels-idx1-ubyte.gz": ("ec29112dd5afa0611ce80d1b7f02629c",
                                  "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"),
}
MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",   # torchvision
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's read_data_sets
]
MAGIC = {3: 0x00000803, 1: 0x00000801}   # uint8 images (3-d), uint8 labels (1-d)


def cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pyconv", "mnist")


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


def _find(folder, name):
    """name (.gz) or its decompressed twin in folder, or None."""
    for candidate in (name, name[:-3]):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def read_mnist_dir(folder):
    """((train_images, train_labels), (test_images, test_labels)) from a folder:
    MNIST's four files, or any number of 28x28 images in the same form (the
    tests' sample of MNIST)."""
    missing = [n for n in FILES if _find(folder, n) is None]
    if missing:
        raise DataError(f"{folder}: missing MNIST file(s) {', '.join(missing)} "
                        "(gzip or uncompressed)")
    out = []
    for prefix in ("train", "t10k"):
        ipath = _find(folder, f"{prefix}-images-idx3-ubyte.gz")
        lpath = _find(folder, f"{prefix}-labels-idx1-ubyte.gz")
        images, labels = read_idx(ipath, 3), read_idx(lpath, 1)
        if images.shape[1:] != (28, 28):
            raise DataError(f"{ipath}: images are {images.shape[1:]}, expected (28, 28)")
        if len(images) != len(labels):
            raise DataError(f"{ipath} has {len(images)} images but {lpath} has "
                            f"{len(labels)} labels")
        if len(images) == 0:
            raise DataError(f"{ipath}: holds no images")
        if labels.max(initial=0) > 9:
            raise DataError(f"{lpath}: labels must be 0-9, found {labels.max()}")
        out.append((images, labels))
    return tuple(out)


# ---------------------------------------------------------------- finding/downloading

def _checksum_ok(name, payload_gz):
    md5, sha = FILES[name]
    if hashlib.md5(payload_gz).hexdigest() == md5:
        return True
    try:
        return hashlib.sha256(gzip.decompress(payload_gz)).hexdigest() == sha
    except (OSError, EOFError, zlib.error):
        return False


def _fetch(url, progress):
    """The bytes at url, with a progress bar."""
    from tqdm.auto import tqdm
    with urllib.request.urlopen(url, timeout=60) as r:
        total = int(r.headers.get("Content-Length") or 0) or None
        chunks = []
        with tqdm(total=total, unit="B", unit_scale=True, desc=os.path.basename(url),
                  disable=not progress, leave=False) as bar:
            while chunk := r.read(1 << 16):
                chunks.append(chunk)
                bar.update(len(chunk))
    payload = b"".join(chunks)
    if total is not None and len(payload) != total:
        raise http.client.IncompleteRead(payload, total - len(payload))
    return payload


def download(folder, mirrors=None, progress=True):
    """Download the files missing from folder, each checked before it lands."""
    mirrors = mirrors or _env_mirrors() or MIRRORS
    os.makedirs(folder, exist_ok=True)
    for name in FILES:
        if _find(folder, name):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                payload = _fetch(url, progress)
            except (OSError, http.client.HTTPException) as e:   # incl. a cut-off transfer
                errors.append(f"{url}: {type(e).__name__}: {e}")
                continue
            if not _checksum_ok(name, payload):
                errors.append(f"{url}: checksum mismatch (rejected)")
                continue
            fd, tmp = tempfile.mkstemp(prefix=".part-", dir=folder)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(payload)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, os.path.join(folder, name))
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            break
        else:
            raise DataError(f"could not download {name} into {folder}:\n  " + "\n  ".join(errors)
                            + "\nProvide the four MNIST IDX files yourself: put them in that "
                            "folder, or pass --data-dir / set PYCONV_DATA_DIR.")


def _env_mirrors():
    value = os.environ.get("PYCONV_MNIST_MIRRORS", "")
    return [m for m in value.split(",") if m.strip()]


def load_mnist(data_dir=None, download_missing=True, mirrors=None, progress=True):
    """MNIST as uint8 arrays: ((x_train, y_train), (x_test, y_test)).

    x: (N, 28, 28) uint8, y: (N,) uint8; 60,000 training and 10,000 test images
    in the original order. The training code scales them to [0, 1].
    """
    if data_dir is not None:
        return read_mnist_dir(os.fspath(data_dir))
    env = os.environ.get("PYCONV_DATA_DIR")
    if env:
        return read_mnist_dir(env)
    cache = cache_dir()
    if all(_find(cache, n) for n in FILES):
        return read_mnist_dir(cache)
    if not download_missing:
        raise DataError(f"MNIST not found: no data_dir given, PYCONV_DATA_DIR unset, and the "
                        f"cache {cache} is incomplete")
    try:
        download(cache, mirrors, progress)
    except DataError as e:
        raise DataError(f"MNIST not found: no --data-dir given, PYCONV_DATA_DIR unset, the "
                        f"cache {cache} incomplete, and the download failed.\n{e}") from None
    return read_mnist_dir(cache)


def to_float(images):
    """uint8 (N, 28, 28) -> float32 (N, 28, 28, 1) in [0, 1]."""
    return (images.astype(np.float32) / np.float32(255))[..., None]
