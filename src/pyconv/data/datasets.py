"""Data sets: the registered ones (found, or fetched, cached and checked) and a
user's own, in the forms people have them.

    ds = pyconv.datasets.load("fashion-mnist")        # a registered name
    ds = pyconv.datasets.load("my_images/")           # a folder of class folders
    ds.x_train, ds.y_train, ds.x_test, ds.y_test, ds.class_names, ds.input_shape

Images stay as stored (uint8, or float) and become float32 one batch at a
time (the model divides integer images by its input_divisor). The forms:

- a registered name (REGISTRY: mnist, fashion-mnist): looked for in the data_dir
  argument, then $PYCONV_DATA_DIR (the set's files, or a folder per set), then
  the cache (~/.cache/pyconv/<name>); else downloaded there with pooch from
  the published mirrors, each file checked against its published MD5 (or
  the SHA-256 of its decompressed payload) before it is used;
- a folder of IDX files (train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte,
  t10k-images-..., t10k-labels-...), any height, width and count;
- an .npz with x_train, y_train, x_test, y_test;
- a folder of .npy files x_train, y_train, x_test, y_test, the images read a
  batch at a time from disk (NpyRows): a set larger than memory trains;
- a folder of images with one subfolder per class (PNG/JPEG, greyscale or
  colour; as torchvision's ImageFolder: classes sorted by name), either with
  train/ and test/ subfolders or split by test_split; decoded with Pillow
  (pip install 'pyconv[images]'), resized to image_size when asked.
"""
import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from . import idx
from .dataset import Dataset, NpyRows, checked
from .images import load_image_folder

MNIST_FILES = {
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
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",   # torchvision
    "https://storage.googleapis.com/cvdf-datasets/mnist/",  # TensorFlow's read_data_sets
]
DIGITS = [str(i) for i in range(10)]
FASHION = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
           "Bag", "Ankle boot"]


@dataclass(frozen=True)
class Registered:
    """A named IDX data set: its four files with (published MD5 of the .gz,
    SHA-256 of the decompressed payload), its mirrors and class names."""
    name: str
    files: dict
    mirrors: tuple
    class_names: list


REGISTRY = {
    "mnist": Registered("mnist", MNIST_FILES, tuple(MNIST_MIRRORS), DIGITS),
    "fashion-mnist": Registered("fashion-mnist", {
        "train-images-idx3-ubyte.gz": (
            "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"),
        "train-labels-idx1-ubyte.gz": (
            "25c81989df183df01b3e8a0aad5dffbe",
            "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"),
        "t10k-images-idx3-ubyte.gz": (
            "bef4ecab320f06d8554ea6380940ec79",
            "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"),
        "t10k-labels-idx1-ubyte.gz": (
            "bb300cfdad3c16e7a12a480ee83cd310",
            "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"),
    }, ("https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"), FASHION),
}


def names():
    return sorted(REGISTRY)


def load(spec, data_dir=None, progress=True, image_size=None, test_split=None, seed=0):
    """A Dataset from a registered name or a path (see the module's docstring)."""
    if spec in REGISTRY:
        return _registered(REGISTRY[spec], data_dir, progress)
    path = os.fspath(spec)
    if not os.path.exists(path):
        raise DataError(f"--dataset {spec!r}: neither a registered data set ({', '.join(names())}) "
                        "nor an existing file or folder")
    if os.path.isfile(path):
        if path.endswith(".npz"):
            return load_npz(path)
        raise DataError(f"{path}: a data set file must be an .npz with x_train, y_train, "
                        "x_test, y_test (or give a folder)")
    if _idx_files(path):
        return load_idx_folder(path)
    if os.path.exists(os.path.join(path, "x_train.npy")):
        return load_npy_folder(path)
    return load_image_folder(path, image_size=image_size, test_split=test_split, seed=seed)


# ---------------------------------------------------------------- registered sets

def _registered(reg, data_dir, progress):
    if data_dir is not None:                   # given: there, or an error (never a download)
        folder = os.fspath(data_dir)
        missing = [f for f in reg.files if not idx.find_file(folder, f)]
        if missing:
            raise DataError(f"{folder}: missing {reg.name} file(s) {', '.join(missing)} "
                            "(gzip or uncompressed)")
        return _idx_dataset(reg.name, folder, reg.class_names)
    for folder in _candidates(reg):
        if all(idx.find_file(folder, f) for f in reg.files):
            return _idx_dataset(reg.name, folder, reg.class_names)
    cache = cache_dir(reg.name)
    try:
        fetch(reg, cache, progress=progress)
    except DataError as e:
        raise DataError(f"{reg.name} not found: no --data-dir given, PYCONV_DATA_DIR has no "
                        f"{reg.name} files, the cache {cache} is incomplete, and the download "
                        f"failed.\n{e}") from None
    return _idx_dataset(reg.name, cache, reg.class_names)


def _candidates(reg):
    env = os.environ.get("PYCONV_DATA_DIR")
    if env:
        yield env
        yield os.path.join(env, reg.name)
    yield cache_dir(reg.name)


def cache_dir(name):
    """~/.cache/pyconv/<name> (pooch's os_cache, honouring $XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pyconv", name)


def checksum_ok(reg, name, path):
    """The file matches its published MD5, or its decompressed payload the SHA-256."""
    md5, sha = reg.files[name]
    with open(path, "rb") as f:
        raw = f.read()
    if hashlib.md5(raw).hexdigest() == md5:
        return True
    try:
        return hashlib.sha256(gzip.decompress(raw)).hexdigest() == sha
    except (OSError, EOFError, zlib.error):
        return False


def fetch(reg, folder, mirrors=None, progress=True):
    """Download the files missing from folder with pooch, each checked before it
    is kept; the mirrors in order ($PYCONV_MIRRORS, comma-separated, first)."""
    try:
        import pooch
    except ImportError:
        raise DataError("downloading needs pooch (pip install pooch)") from None
    mirrors = mirrors or _env_mirrors() or reg.mirrors
    os.makedirs(folder, exist_ok=True)
    for name in reg.files:
        if idx.find_file(folder, name):
            continue
        errors = []
        for mirror in mirrors:
            url = mirror.rstrip("/") + "/" + name
            try:
                path = pooch.retrieve(url, known_hash=None, fname=name, path=folder,
                                      progressbar=progress)
            except Exception as e:  # noqa: BLE001 - any transfer failure: try the next mirror
                errors.append(f"{url}: {type(e).__name__}: {e}")
                _remove(os.path.join(folder, name))
                continue
            if checksum_ok(reg, name, path):
                break
            _remove(path)
            errors.append(f"{url}: checksum mismatch (rejected)")
        else:
            raise DataError(f"could not download {name} into {folder}:\n  " + "\n  ".join(errors)
                            + f"\nProvide the {reg.name} IDX files yourself: put them in that "
                            "folder, or pass --data-dir / set PYCONV_DATA_DIR.")


def _remove(path):
    if os.path.exists(path):
        os.unlink(path)


def _env_mirrors():
    value = os.environ.get("PYCONV_MIRRORS", "") or os.environ.get("PYCONV_MNIST_MIRRORS", "")
    return [m for m in value.split(",") if m.strip()]


# ---------------------------------------------------------------- the user's own

def _idx_files(folder):
    return all(idx.find_file(folder, f"{p}-{k}.gz") for p in ("train", "t10k")
               for k in ("images-idx3-ubyte", "labels-idx1-ubyte"))


def load_idx_folder(folder):
    """The four IDX files of a folder (MNIST's names), any size and count."""
    return _idx_dataset(os.path.basename(os.path.normpath(folder)), folder, None)


def _idx_dataset(name, folder, class_names):
    (xtr, ytr), (xte, yte) = idx.read_idx_dir(folder)
    return checked(Dataset(name, xtr, ytr, xte, yte, class_names), folder)


def load_npz(path):
    """An .npz with x_train, y_train, x_test, y_test (and optional class_names)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
            if missing:
                raise DataError(f"{path}: missing array(s) {', '.join(missing)} (an .npz data "
                                "set holds x_train, y_train, x_test, y_test)")
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, zlib.error) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(f"{path}: not a readable .npz ({e})") from None
    names_ = arrays.get("class_names")
    return checked(Dataset(os.path.basename(path), arrays["x_train"], arrays["y_train"],
                            arrays["x_test"], arrays["y_test"],
                            None if names_ is None else [str(c) for c in names_]), path)


def load_npy_folder(folder):
    """x_train.npy, y_train.npy, x_test.npy, y_test.npy: the images read a batch
    at a time (NpyRows), the labels loaded; nothing else is read."""
    arrays = {}
    for key in ("x_train", "y_train", "x_test", "y_test"):
        path = os.path.join(folder, f"{key}.npy")
        try:
            arrays[key] = NpyRows(path) if key.startswith("x") else np.load(path,
                                                                             allow_pickle=False)
        except (OSError, ValueError) as e:
            raise DataError(f"{path}: cannot read it as an .npy array ({e})") from None
    return checked(Dataset(os.path.basename(os.path.normpath(folder)), **arrays,
                            class_names=None), folder)


def load_mnist(data_dir=None, progress=True):
    """MNIST as uint8 arrays: ((x_train, y_train), (x_test, y_test)).

    x: (N, 28, 28) uint8, y: (N,) uint8; 60,000 training and 10,000 test images
    in the original order, found or fetched as pyconv.datasets.load("mnist")
    does. The model scales them to [0, 1] (or to_float does).
    """
    ds = load("mnist", data_dir=data_dir, progress=progress)
    if ds.x_train.shape[1:] != (28, 28):
        raise DataError(f"MNIST images must be (28, 28), got {ds.x_train.shape[1:]}")
    return (ds.x_train, ds.y_train), (ds.x_test, ds.y_test)
