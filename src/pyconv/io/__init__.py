"""Files: saved models and checkpoints (.npz), network files (JSON, TOML),
ONNX (the onnx extra), and atomic writes."""
from .checkpoints import load, load_checkpoint, save, save_checkpoint
from .files import atomic_write, write_file
from .network_files import load_network

__all__ = ["atomic_write", "load", "load_checkpoint", "load_network", "save",
           "save_checkpoint", "write_file"]
