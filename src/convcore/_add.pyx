"""The residual add, forward and backward side by side (memory-bound work).

  forward:   y = a + b, then (relu) y = max(y, 0) as NumPy's maximum: NaN kept,
             -0 made +0
  backward:  every input's gradient is dy; through the ReLU, dy * (y > 0) as
             NumPy's multiply by the mask: NaN * 0 is NaN, -dy * 0 is -0

Element-wise, so any split over threads gives the same bits, and the same
bits as the NumPy expressions above.
"""
from cython.parallel cimport prange

DEF CHUNK = 16384   # elements per work item


def add_forward(const float[::1] a, const float[::1] b, float[::1] y, bint relu, int n_threads):
    cdef Py_ssize_t c, i, n = y.shape[0]
    cdef float v
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        if relu:
            for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
                v = a[i] + b[i]
                y[i] = v if (v > 0 or v != v) else 0
        else:
            for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
                y[i] = a[i] + b[i]


def add_backward(const float[::1] dy, const float[::1] relu_y, float[::1] dx, int n_threads):
    cdef Py_ssize_t c, i, n = dx.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            dx[i] = dy[i] * (<float>1 if relu_y[i] > 0 else <float>0)
