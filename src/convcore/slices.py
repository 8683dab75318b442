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


def tree_sum(parts):
    """The pairwise tree's sum of a list of arrays: neighbours (0, 1), (2, 3),
    ... first, then pairs of pairs; an odd one out waits for the next level."""
    parts, step = list(parts), 1
    while step < len(parts):
        for i in range(0, len(parts) - step, 2 * step):
            parts[i] = parts[i] + parts[i + step]
        step *= 2
    return parts[0]
