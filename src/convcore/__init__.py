"""convcore: the compiled core of pyconv.

The public functions (in _api.py) check their inputs, choose the thread count
and call the Cython kernels. Layouts: images NHWC (N, H, W, C), convolution
kernels (kh, kw, C_in, C_out), dense weights (D_in, D_out), everything
float32. `convcore.reference` holds the same functions in plain NumPy and
works without the compiled extension; `convcore.geometry` (pure Python too)
holds the window geometry and argument checks that callers need.
"""
from . import (
    geometry,  # noqa: F401 (public: window geometry and argument checks)
    slices,  # noqa: F401 (public: the canonical order of a sum over a batch)
)
from ._ops import CONTROLS, OPERATIONS, PRECISIONS  # noqa: F401 (PRECISIONS: public)
from ._threads import get_num_threads, set_num_threads  # noqa: F401 (in __all__)

__all__ = list(OPERATIONS + CONTROLS)   # (a list of strings: documentation tools read it)

try:
    # re-exported: __all__ is built from the registry
    from . import _api
    from ._alloc import empty, zeros  # noqa: F401
    from ._api import BF16_MIN_DEPTH  # noqa: F401 (public: the bf16 kernels' shortest sums)
    from ._kernels import (  # noqa: F401
        bf16_supported,
        get_kernels,
        kernel_counts,
        set_kernels,
        simd_supported,
        winograd_enabled,
    )
    from ._openmp_info import openmp_enabled  # noqa: F401
    globals().update({name: getattr(_api, name) for name in OPERATIONS})
except ImportError as _err:  # not built: say so on first use; reference still works
    _IMPORT_ERROR = _err

    def __getattr__(name):
        if name in __all__:
            raise ImportError(
                f"convcore.{name} needs the compiled extension, which failed to import "
                f"({_IMPORT_ERROR}). Build it with `pip install .` from the repository root; "
                "convcore.reference works without it.")
        raise AttributeError(f"module 'convcore' has no attribute {name!r}")
