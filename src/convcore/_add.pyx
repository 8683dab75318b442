"""The residual add, forward and backward side by side (memory-bound work).

  forward:   y = a + b, then (relu) y = max(y, 0) as NumPy's maximum: NaN kept,
             -0 made +0
  backward:  every input's gradient is dy; through the ReLU, dy * (y > 0) as
             NumPy's multiply by the mask: NaN * 0 is NaN, -dy * 0 is -0

The forward's output may be asked in bfloat16 (for layers that multiply in
bf16: the bits of round_bf16(y), cc_bf16_bits), and the backward then reads
the ReLU's mask from those bits: y > 0 is their value > 0, except for a sum
in (0, 2^-134], which rounds to +0; add_forward_bits counts those (the caller
then asks for float32).

Element-wise, so any split over threads gives the same bits, and the same
bits as the NumPy expressions above.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint16_t


cdef extern from "_bf16_gemm.h" nogil:
    Py_ssize_t cc_add_bf16(const float* a, const float* b, uint16_t* y, Py_ssize_t n, int relu)
    Py_ssize_t cc_add_bf16_wide(const float* a, const float* b, uint16_t* y, Py_ssize_t n,
                                int relu)

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


def add_forward_bits(const float[::1] a, const float[::1] b, uint16_t[::1] y, bint relu,
                     int n_threads, bint wide):
    """y = add_forward's output as bfloat16 bits (wide: in AVX-512's vectors,
    on a CPU that runs the bf16 kernels); returns how many values of it are
    > 0 with bits 0 (their ReLU mask would be lost)."""
    cdef Py_ssize_t c, n = y.shape[0], lost = 0, m
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        m = min(n, (c + 1) * CHUNK) - c * CHUNK
        if wide:
            lost += cc_add_bf16_wide(&a[c * CHUNK], &b[c * CHUNK], &y[c * CHUNK], m, relu)
        else:
            lost += cc_add_bf16(&a[c * CHUNK], &b[c * CHUNK], &y[c * CHUNK], m, relu)
    return lost


def add_backward_bits(const float[::1] dy, const uint16_t[::1] relu_y, float[::1] dx,
                      int n_threads):
    """add_backward with the ReLU's output as bfloat16 bits: its value > 0
    where 0 < bits <= 0x7f80 (sign clear, not zero, not NaN)."""
    cdef Py_ssize_t c, i, n = dx.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            dx[i] = dy[i] * (<float>1 if 0 < relu_y[i] <= 0x7f80 else <float>0)
