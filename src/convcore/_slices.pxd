"""The canonical order of a sum over a batch (pyconv's same bits on any number
of processes, docs/several-machines.md).

A batch of n examples is cut into S slices, slice s being examples
bounds[s] .. bounds[s + 1] - 1 (pyconv.distributed.slice_bounds: S fixed,
never the number of processes). A kernel sums each slice on its own, in
example order from zero, and adds the slices' sums in the pairwise tree:
neighbours (0, 1), (2, 3), ... first, then pairs of pairs, an odd one out
waiting for the next level. With S a power of two, K processes holding S / K
slices each compute whole subtrees, and the K subtrees' sums added pairwise
across the processes (pyconv.distributed, recursive halving) complete the
very tree one process computes: the same bits on 1, 2, 4, ... processes.
One slice is the plain sum in example order.
"""
cdef inline void tree_sum(float* parts, Py_ssize_t n_parts, Py_ssize_t stride,
                          Py_ssize_t e0, Py_ssize_t e1) noexcept nogil:
    """parts[e0 : e1] = the pairwise tree's sum of entries e0 .. e1 - 1 of
    the n_parts arrays parts[i * stride :], in place (callers split the
    entries among threads)."""
    cdef Py_ssize_t step = 1, i, e
    cdef float* a
    cdef const float* b
    while step < n_parts:
        i = 0
        while i + step < n_parts:
            a = parts + i * stride
            b = parts + (i + step) * stride
            for e in range(e0, e1):
                a[e] = a[e] + b[e]
            i += 2 * step
        step *= 2
