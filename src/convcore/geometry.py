"""Window geometry and the argument checks every caller of convcore needs:
public, and pure Python (importable without the compiled extension).

- same_pads, window_pads: TensorFlow's "same" padding, and the padding of
  each accepted form ('valid', 'same', an int, an (h, w) pair);
- window: a sliding window (kernel or pool) over (N, H, W, C) images,
  resolved and checked: the kernels' Window dict, with the output size
  (OH, OW);
- integer, pair: an int or an (h, w) pair from what a user gave, checked.

Every error names the function and the argument, what was expected and what
was given.
"""
import operator

import numpy as np

INT_MAX = 2**31 - 1          # BLAS (LP64) dimensions and argmax entries are C ints


def _hw(v):
    return (v, v) if np.isscalar(v) else tuple(v)


def same_pads(n, k, s):
    """TensorFlow's "same" padding of one axis of n cells, window k, stride s:
    output ceil(n / s), (before, after) with the odd cell after. The one
    definition: convcore's argument checks use it too."""
    total = max((-(-n // s) - 1) * s + k - n, 0)
    return (total // 2, total - total // 2)


def window_pads(in_hw, k_hw, s_hw, padding):
    """((top, bottom), (left, right)) padding of an (H, W) input for one of the
    accepted forms: 'valid', 'same' (TensorFlow's), an int or an (h, w) pair."""
    if isinstance(padding, str):
        padding = padding.lower()
    if padding == "valid":
        return ((0, 0), (0, 0))
    if padding == "same":
        return tuple(same_pads(n, k, s) for n, k, s in zip(in_hw, k_hw, s_hw))
    ph, pw = _hw(padding)
    return ((ph, ph), (pw, pw))


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
