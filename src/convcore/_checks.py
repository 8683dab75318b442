"""Input checks for the public functions: run before any pointer is touched.

Every error names the function and the argument, what was expected and what
was given: ``conv2d_forward: w must be float32 with shape (kh, kw, C_in,
C_out), got float64 (3, 3, 1)``.
"""
import math

import numpy as np

from .geometry import INT_MAX, integer, pair, window  # noqa: F401 (the checks' one home)

MAX_ELEMENTS = 2**62 // 4    # float32 elements whose byte size fits in int64


def array(fn, name, a, ndim, layout, dtype=np.float32):
    """`a` as a C-contiguous array of `dtype` with `ndim` dims (copied if needed)."""
    if not isinstance(a, np.ndarray):
        raise TypeError(f"{fn}: {name} must be a numpy array of {np.dtype(dtype)} with shape "
                        f"{layout}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise TypeError(f"{fn}: {name} must be {np.dtype(dtype)} with shape {layout}, "
                        f"got {a.dtype} {a.shape}")
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-d with shape {layout}, "
                         f"got {a.ndim}-d {a.shape}")
    return a if a.flags.c_contiguous else np.array(a, order="C")   # (ascontiguousarray: 0-d -> 1-d)


def size(fn, what, *dims, limit=MAX_ELEMENTS):
    """Refuse an output whose element count overflows (or exceeds `limit`)."""
    total = math.prod(int(d) for d in dims)
    if total > limit:
        raise ValueError(f"{fn}: {what} would have {total} elements "
                         f"(shape {tuple(int(d) for d in dims)}), more than {limit}")
    return total


def blas_dims(fn, **dims):
    """sgemm takes 32-bit ints: refuse any matrix dimension above 2**31 - 1."""
    for name, d in dims.items():
        if d > INT_MAX:
            raise ValueError(f"{fn}: {name} = {d} exceeds the 32-bit BLAS limit {INT_MAX}")


def shape_tuple(fn, name, shape, ndim):
    """A user-given shape: a tuple of `ndim` non-negative ints."""
    if not isinstance(shape, (tuple, list)):
        raise TypeError(f"{fn}: {name} must be a tuple of {ndim} ints, "
                        f"got {type(shape).__name__}")
    if len(shape) != ndim:
        raise ValueError(f"{fn}: {name} must have {ndim} entries, got {tuple(shape)}")
    return tuple(integer(fn, name, d, 0) for d in shape)


def integers(fn, name, a, ndim, layout):
    """a as a C-contiguous int64 array of ndim dims (any integer dtype)."""
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.integer)):
        got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
        raise TypeError(f"{fn}: {name} must be a numpy array of integers with shape {layout}, "
                        f"got {got}")
    if a.ndim != ndim:
        raise ValueError(f"{fn}: {name} must be {ndim}-d with shape {layout}, "
                         f"got {a.ndim}-d {a.shape}")
    if a.dtype == np.uint64 and a.size and a.max() > np.iinfo(np.int64).max:
        raise ValueError(f"{fn}: {name} holds {a.max()}, beyond int64")
    return np.ascontiguousarray(a, dtype=np.int64)
