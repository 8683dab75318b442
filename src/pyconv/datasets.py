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

from . import data as idx
from .errors import DataError

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
    "mnist": Registered("mnist", idx.FILES, tuple(idx.MIRRORS), DIGITS),
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
    from .images import load_image_folder
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
    return _checked(Dataset(name, xtr, ytr, xte, yte, class_names), folder)


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
    return _checked(Dataset(os.path.basename(path), arrays["x_train"], arrays["y_train"],
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
    return _checked(Dataset(os.path.basename(os.path.normpath(folder)), **arrays,
                            class_names=None), folder)


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


def _checked(ds, where):
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
