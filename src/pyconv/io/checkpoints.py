"""Save and load models and checkpoints: plain .npz, loaded with allow_pickle=False.

A file holds the format version, the architecture (JSON), every parameter and
buffer (non-trainable state, Layer.buffers),
and a SHA-256 digest over all of it; checkpoints add the optimiser state and
the training state. Files are written atomically (pyconv.io.files).
"""
import hashlib
import json
import os
import zipfile

import numpy as np

from ..errors import ModelFileError
from ..model import Model
from ..optim import OPTIMIZERS
from . import onnx
from .files import atomic_write

FORMAT_VERSION = 2   # 2: layers say only what a person would (filters, units), plus the
                     # input shape, divisor and class names; version 1 files still load


def _digest(arrays):
    h = hashlib.sha256()
    for key in sorted(arrays):
        a = np.ascontiguousarray(arrays[key])
        h.update(f"{key}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _json(obj):
    return np.array(json.dumps(obj))


def _model_arrays(model):
    arrays = {"pyconv_format": np.array(FORMAT_VERSION),
              "architecture": _json(model.architecture())}
    for kind, name, a in _named_arrays(model):
        arrays[f"{kind}/{name}"] = a
    return arrays


def _named_arrays(model):
    """("param" | "buffer", name, array) for every array a model file holds."""
    return ([("param", name, p.value) for name, p in model.named_parameters()]
            + [("buffer", name, b) for name, b in model.named_buffers()])


def _write(path, arrays):
    arrays = dict(arrays)
    arrays["digest"] = np.array(_digest(arrays))
    atomic_write(path, lambda f: np.savez(f, **arrays))


def save(model, path):
    """Save a model's architecture and weights to `path` (.npz), atomically."""
    _write(path, _model_arrays(model))


def save_checkpoint(path, model, optimizer, train_state):
    """A model plus its optimiser state and a JSON-able training state."""
    arrays = _model_arrays(model)
    arrays["optimizer"] = _json({"type": type(optimizer).__name__, "t": optimizer.t,
                                 "lr": optimizer.lr, "config": optimizer.config()})
    for name, a in optimizer.state_arrays().items():
        arrays[f"opt/{name}"] = a
    arrays["train_state"] = _json(train_state)
    _write(path, arrays)


def _read(path):
    path = os.fspath(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise ModelFileError(f"{path}: not a readable pyconv model file (truncated or "
                             f"corrupted?): {e}") from None
    if "pyconv_format" not in arrays or "digest" not in arrays:
        raise ModelFileError(f"{path}: not a pyconv model file (no format version or digest)")
    version = int(arrays["pyconv_format"])
    if version > FORMAT_VERSION:
        raise ModelFileError(f"{path}: written in pyconv format version {version}, newer "
                             f"than this pyconv reads ({FORMAT_VERSION}); upgrade pyconv")
    digest = str(arrays.pop("digest"))
    if _digest(arrays) != digest:
        raise ModelFileError(f"{path}: content does not match its digest (tampered with or "
                             "corrupted)")
    return arrays


def _upgrade_v1(arch):
    """A version-1 architecture (in_channels/out_channels, in/out_features; MNIST
    input) as version 2."""
    layers = []
    for spec in arch["layers"]:
        spec = dict(spec)
        if spec["type"] == "Conv2D":
            spec.pop("in_channels")
            spec["filters"] = spec.pop("out_channels")
        elif spec["type"] == "Dense":
            spec.pop("in_features")
            spec["units"] = spec.pop("out_features")
        layers.append(spec)
    return {"name": arch.get("name", "sequential"), "input_shape": [28, 28, 1],
            "layers": layers}


def _build(path, arrays):
    try:
        arch = json.loads(str(arrays["architecture"]))
        if int(arrays["pyconv_format"]) == 1:
            arch = _upgrade_v1(arch)
        model = Model.from_architecture(arch, where=str(path))
    except (KeyError, TypeError, ValueError) as e:
        raise ModelFileError(f"{path}: bad architecture record: {e}") from None
    for kind, name, a in _named_arrays(model):
        key = f"{kind}/{name}"
        if key not in arrays or arrays[key].shape != a.shape:
            raise ModelFileError(f"{path}: {dict(param='parameter').get(kind, kind)} {name} "
                                 "missing or of the wrong shape")
        a[...] = arrays[key]
    return model


def load(path):
    """Load a model saved by save() (or the model inside a checkpoint), or an
    ONNX file (.onnx: pyconv.onnx.load, with the onnx extra)."""
    if os.fspath(path).endswith(".onnx"):
        return onnx.load(path)
    return _build(path, _read(path))


def load_checkpoint(path, lr=None):
    """(model, optimizer, train_state) from a checkpoint written by save_checkpoint."""
    arrays = _read(path)
    model = _build(path, arrays)
    if "optimizer" not in arrays or "train_state" not in arrays:
        raise ModelFileError(f"{path}: a model file, not a training checkpoint")
    meta = json.loads(str(arrays["optimizer"]))
    opt = OPTIMIZERS[meta["type"]](model.parameters(), **meta.get("config", {}),
                                   lr=meta["lr"] if lr is None else lr)
    opt.load_state(meta["t"], {k[4:]: v for k, v in arrays.items() if k.startswith("opt/")})
    return model, opt, json.loads(str(arrays["train_state"]))
