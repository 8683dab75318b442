"""Image files: a folder of class folders as a data set, and single images for
`pyconv predict`. Decoding is Pillow's (pip install 'pyconv[images]')."""
import os

import numpy as np

from ..errors import DataError
from ..extras import require
from .dataset import Dataset, checked

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp")


def _pil():
    Image = require("images", "reading PNG/JPEG images")[0]
    return Image, Image.UnidentifiedImageError


def read_image(path, size=None, channels=None):
    """One image as uint8 (H, W, C): C = 1 for greyscale, 3 for colour, or as
    `channels` asks (converting); resized to size = (H, W) when given."""
    Image, Unidentified = _pil()
    try:
        with Image.open(path) as im:
            im.load()
            mode = {1: "L", 3: "RGB"}.get(channels) or ("L" if im.mode in ("1", "L", "I;16",
                                                                               "I", "F") else "RGB")
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
    except (Unidentified, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: not a readable image ({e})") from None
    return a[..., None] if a.ndim == 2 else a


def _class_folders(folder):
    classes = sorted(d for d in os.listdir(folder)
                     if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))
    if not classes:
        raise DataError(f"{folder}: no class folders (expected one subfolder per class, "
                        "each holding that class's images)")
    return classes


def _files(folder, classes):
    """[(path, class index)] in class, then file-name order; an empty class is an error."""
    out = []
    for i, name in enumerate(classes):
        sub = os.path.join(folder, name)
        files = sorted(f for f in os.listdir(sub) if f.lower().endswith(EXTENSIONS)) \
            if os.path.isdir(sub) else []
        if not files:
            raise DataError(f"{sub}: class folder {name!r} holds no images "
                            f"({', '.join(EXTENSIONS)})")
        out += [(os.path.join(sub, f), i) for f in files]
    return out


def _read_all(files, size, channels):
    images = []
    for path, _ in files:
        a = read_image(path, size, channels)
        if images and a.shape != images[0].shape:
            raise DataError(f"{path}: image of shape {a.shape[:2]}, but {files[0][0]} is "
                            f"{images[0].shape[:2]}: give an image size (--image-size H W) "
                            "to resize them all")
        images.append(a)
    return np.stack(images), np.array([c for _, c in files], np.int64)


def load_image_folder(folder, image_size=None, test_split=None, seed=0):
    """A Dataset from folder/CLASS/*.png (classes sorted by name, as torchvision's
    ImageFolder), or from folder/train/CLASS/ and folder/test/CLASS/. Without a
    test/ folder, test_split (default 0.2) of each class's images, drawn with
    the seed, are held out for the test set."""
    train_dir, test_dir = os.path.join(folder, "train"), os.path.join(folder, "test")
    has_split = os.path.isdir(train_dir) and os.path.isdir(test_dir)
    classes = _class_folders(train_dir if has_split else folder)
    size = None if image_size is None else tuple(image_size)
    first = _files(train_dir if has_split else folder, classes)
    channels = read_image(first[0][0]).shape[2]      # the first image decides grey or colour
    if has_split:
        if _class_folders(test_dir) != classes:
            raise DataError(f"{test_dir}: class folders {_class_folders(test_dir)} differ from "
                            f"{train_dir}'s {classes}")
        x_train, y_train = _read_all(first, size, channels)
        x_test, y_test = _read_all(_files(test_dir, classes), size, channels)
    else:
        x, y = _read_all(first, size, channels)
        test_split = 0.2 if test_split is None else test_split
        if not 0 < test_split < 1:
            raise DataError(f"test_split must be in (0, 1), got {test_split!r}")
        rng = np.random.default_rng(seed)
        test = np.zeros(len(y), bool)
        for c in range(len(classes)):
            members = np.flatnonzero(y == c)
            k = max(1, int(round(len(members) * test_split))) if len(members) > 1 else 0
            test[rng.choice(members, k, replace=False)] = True
        x_train, y_train, x_test, y_test = x[~test], y[~test], x[test], y[test]
    return checked(Dataset(os.path.basename(os.path.normpath(folder)), x_train, y_train,
                            x_test, y_test, classes), folder)
