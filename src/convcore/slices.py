"""The canonical order of a sum over a batch, in pure Python (works without
the compiled extension): where the slices lie and how their sums are added.

A batch of n examples is cut into S slices, slice s holding examples
floor(s n / S) .. floor((s + 1) n / S) - 1 (slice_bounds). Every sum over the
batch (a weight's or bias's gradient) is each slice's sum in example order,
the slices' sums then added in the pairwise tree (tree_sum; the kernels'
twin is _slices.pxd). With S a power of two and K a power of two dividing
it, process k of K holds examples floor(k n / K) .. floor((k + 1) n / K) - 1,
exactly slices k S / K .. (k + 1) S / K - 1: it computes a whole subtree, and
the K subtrees' sums added pairwise complete the tree one process computes.
"""
import numpy as np

MAX_SLICES = 1024   # the most slices of a batch (the dense tiles' tree holds 2^13 - 1)


def slice_bounds(n, slices):
    """The bounds [0, ..., n] (int32, slices + 1 of them) of a batch of n
    examples cut into `slices` slices as evenly as they go."""
    s = np.arange(int(slices) + 1, dtype=np.int64)
    return (s * int(n) // int(slices)).astype(np.int32)


def checked_bounds(fn, slices, n):
    """slices as int32 bounds [0, ..., n] of at most MAX_SLICES slices of a
    batch of n (None: one slice, [0, n]), or ValueError naming fn."""
    if slices is None:
        return np.array([0, n], np.int32)
    b = np.asarray(slices)
    if b.ndim != 1 or b.dtype.kind not in "iu" or not 2 <= len(b) <= MAX_SLICES + 1:
        raise ValueError(f"{fn}: slices must be the bounds [0, ..., N] of at most {MAX_SLICES} "
                         f"slices of the batch, a 1-D sequence of integers; got "
                         f"{_shown(slices)}")
    if b[0] != 0 or b[-1] != n or np.any(np.diff(b) < 0):
        raise ValueError(f"{fn}: slices must rise from 0 to the batch size N = {n}, got "
                         f"{_shown(slices)}")
    return np.ascontiguousarray(b, np.int32)


def pairs(bounds):
    """[(first, end)] of each slice."""
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))


def _shown(v, limit=80):
    text = repr(v.tolist() if isinstance(v, np.ndarray) else v)
    return text if len(text) <= limit else text[:limit - 4] + " ..."


def tree_sum(parts):
    """The pairwise tree's sum of a list of arrays: neighbours (0, 1), (2, 3),
    ... first, then pairs of pairs; an odd one out waits for the next level."""
    parts, step = list(parts), 1
    while step < len(parts):
        for i in range(0, len(parts) - step, 2 * step):
            parts[i] = parts[i] + parts[i + step]
        step *= 2
    return parts[0]
