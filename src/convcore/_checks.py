"""Input checks for the public functions: run before any pointer is touched.

Every error names the function and the argument, what was expected and what
was given: ``conv2d_forward: w must be float32 with shape (kh, kw, C_in,
C_out), got float64 (3, 3, 1)``.
"""
import math
import operator

import numpy as np

from .reference import same_pads

INT_MAX = 2**31 - 1          # BLAS (LP64) dimensions and argmax entries are C ints
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


def integer(fn, name, v, minimum):
    """A Python int >= minimum from an int-like `v` (bools and floats refused)."""
    if isinstance(v, (bool, np.bool_)):
        raise TypeError(f"{fn}: {name} must be an int, got bool {v!r}")
    try:
        i = operator.index(v)
    except TypeError:
        raise TypeError(f"{fn}: {name} must be an int, got {type(v).__name__} {v!r}") from None
    if i < minimum:
        raise ValueError(f"{fn}: {name} must be >= {minimum}, got {i}")
    return i


def pair(fn, name, v, minimum=1):
    """(h, w) from an int or a pair of ints, each >= minimum."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError(f"{fn}: {name} must be an int or an (h, w) pair, "
                             f"got {type(v).__name__} of length {len(v)}")
        return (integer(fn, name, v[0], minimum), integer(fn, name, v[1], minimum))
    i = integer(fn, name, v, minimum)
    return (i, i)


def window(fn, x_shape, size, stride, padding, size_name, pool=False, stride_name="stride",
           padding_name="padding"):
    """Resolve a sliding window over (N, H, W, C) into the kernels' Window dict.

    padding: an int or (h, w) pair (both sides), 'valid' (0) or 'same'
    (TensorFlow: output ceil(in / stride), the odd pixel at the bottom/right).
    """
    _, H, W, C = x_shape
    kh, kw = _bounded(fn, size_name, pair(fn, size_name, size))
    sh, sw = _bounded(fn, stride_name, pair(fn, stride_name, stride))
    if H < 1 or W < 1:
        raise ValueError(f"{fn}: x must have height and width >= 1, got shape {tuple(x_shape)}")
    if isinstance(padding, str):
        if padding.lower() == "valid":
            pads = ((0, 0), (0, 0))
        elif padding.lower() == "same":
            pads = tuple(same_pads(n, k, s) for n, k, s in ((H, kh, sh), (W, kw, sw)))
        else:
            raise ValueError(f"{fn}: {padding_name} must be an int, an (h, w) pair, 'valid' "
                             f"or 'same', got {padding!r}")
    else:
        ph, pw = _bounded(fn, padding_name, pair(fn, padding_name, padding, minimum=0))
        pads = ((ph, ph), (pw, pw))
        if pool and (ph >= kh or pw >= kw):
            raise ValueError(f"{fn}: {padding_name} must be smaller than {size_name} "
                             f"({kh}, {kw}) so that every window holds a real cell, "
                             f"got ({ph}, {pw})")
    (pt, pb), (pl, pr) = pads
    _bounded(fn, f"the padded input of {padding_name}={padding!r}",
             (H + pt + pb, W + pl + pr))
    if H + pt + pb < kh or W + pl + pr < kw:
        raise ValueError(f"{fn}: {size_name} ({kh}, {kw}) is larger than the padded input "
                         f"({H + pt + pb}, {W + pl + pr})")
    oh = (H + pt + pb - kh) // sh + 1
    ow = (W + pl + pr - kw) // sw + 1
    return dict(H=H, W=W, C=C, KH=kh, KW=kw, SH=sh, SW=sw, PT=pt, PL=pl, OH=oh, OW=ow)


def _bounded(fn, name, values):
    """The kernels index with C ints: refuse window sizes above 2**31 - 1."""
    for v in values:
        if v > INT_MAX:
            raise ValueError(f"{fn}: {name} must be at most {INT_MAX} (the kernels' 32-bit "
                             f"sizes), got {tuple(values)}")
    return values


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
