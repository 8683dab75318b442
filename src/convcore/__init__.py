"""convcore: the compiled core of pyconv.

The public functions (in _api.py) check their inputs, choose the thread count
and call the Cython kernels. Layouts: images NHWC (N, H, W, C), convolution
kernels (kh, kw, C_in, C_out), dense weights (D_in, D_out), everything
float32. `convcore.reference` holds the same functions in plain NumPy and
works without the compiled extension.
"""
from ._threads import get_num_threads, set_num_threads

__all__ = [
    "im2col", "col2im", "conv2d_forward", "conv2d_backward", "conv2d_maxpool_forward",
    "conv2d_maxpool_backward", "maxpool2d_forward", "dropout_forward", "dropout_backward", "maxpool2d_backward", "linear_forward", "linear_backward",
    "linear_backward_adam",
    "adam_update", "sgd_update", "set_num_threads", "get_num_threads", "openmp_enabled",
    "set_kernels", "get_kernels", "winograd_enabled", "simd_supported", "empty", "zeros",
]

try:
    from ._api import (adam_update, col2im, conv2d_backward, conv2d_forward,
                       conv2d_maxpool_backward, conv2d_maxpool_forward, dropout_backward,
                       dropout_forward, empty, im2col, linear_backward_adam,
                       linear_backward, linear_forward, maxpool2d_backward,
                       maxpool2d_forward, sgd_update, set_kernels, get_kernels, winograd_enabled,
                       zeros)
    from ._conv import simd_supported
    from ._openmp_info import openmp_enabled
except ImportError as _err:  # not built: say so on first use; reference still works
    _IMPORT_ERROR = _err

    def __getattr__(name):
        if name in __all__:
            raise ImportError(
                f"convcore.{name} needs the compiled extension, which failed to import "
                f"({_IMPORT_ERROR}). Build it with `pip install .` from the repository root; "
                "convcore.reference works without it.")
        raise AttributeError(f"module 'convcore' has no attribute {name!r}")
