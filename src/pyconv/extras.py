"""Optional features and the extras that bring their packages.

The core install is numpy, scipy, threadpoolctl, tqdm and pooch; a feature
that needs more imports it through require(), so that without the extra the
user reads which one to install, and nothing else is affected."""
import importlib

from .errors import MissingExtra

EXTRAS = {
    "images": ("PIL.Image",),            # Pillow: image folders, `pyconv predict` on PNG/JPEG
    "onnx": ("onnx",),                   # export and import; onnxruntime to run the files
    "plot": ("matplotlib",),
    "tensorboard": ("tensorboardX",),    # (in the plot extra)
    "mpi": ("mpi4py.MPI",),              # mpi4py, and an MPI: MPICH's wheels or the system's
}
_WHICH = {"tensorboard": "plot"}


def require(feature, what):
    """The modules of `feature` (imported), or MissingExtra saying that `what`
    needs them and which extra to install."""
    try:
        return [importlib.import_module(name) for name in EXTRAS[feature]]
    except ImportError as e:
        extra = _WHICH.get(feature, feature)
        missing = e.name or str(e)
        raise MissingExtra(f"{what} needs the {extra!r} extra ({missing} is not installed): "
                           f"pip install 'pyconv[{extra}]'") from None
