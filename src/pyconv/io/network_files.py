"""Network files: a model's architecture record as JSON or TOML, written by
hand (see pyconv.model.Model.from_architecture for what a record holds)."""
import json
import os

from ..model import Model


def load_network(path, seed=0, input_shape=None):
    """A model from a network file (JSON, or TOML): {"input_shape": [H, W, C],
    "layers": [{"type": "Conv2D", "filters": 6, "kernel_size": 5}, ...]}; the
    input shape may be left out and given (from the data) instead."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
        if path.endswith(".toml"):
            import tomllib  # (Python 3.11 and later)
            arch = tomllib.loads(raw.decode())
        else:
            arch = json.loads(raw)
    except OSError as e:
        raise ValueError(f"{path}: cannot read the network file ({e.strerror})") from None
    except ValueError as e:
        raise ValueError(f"{path}: not a valid network file ({e})") from None
    if isinstance(arch, dict) and arch.get("input_shape") is None and input_shape is not None:
        arch = {**arch, "input_shape": list(input_shape)}
    arch = {**arch, "name": arch.get("name") or os.path.splitext(os.path.basename(path))[0]}
    return Model.from_architecture(arch, seed=seed, where=path)
