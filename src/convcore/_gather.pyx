"""A training batch from a data set in memory: images gathered by row, each
moved by its own shift (a zero border where it uncovers nothing) after an
optional left-right mirror, and converted to float32 divided by a divisor,
in one pass (augmentation, data loading and the uint8 -> float scaling of
the step, fused). Each output entry is one read and one division, so the
bits do not depend on the threads: the images go to threads in any order.
"""
from cython.parallel cimport prange
from libc.stdint cimport int32_t, int64_t, uint8_t
from libc.string cimport memset

ctypedef fused pixel:
    uint8_t
    float


cdef extern from "_gather_kernels.h" nogil:
    void cc_gather_run_u8(const uint8_t* src, float* dst, Py_ssize_t n, float divisor)
    void cc_gather_run_f32(const float* src, float* dst, Py_ssize_t n, float divisor)
    void cc_gather_mirror_u8(const uint8_t* src, float* dst, Py_ssize_t n, Py_ssize_t last,
                             Py_ssize_t C, float divisor)
    void cc_gather_mirror_f32(const float* src, float* dst, Py_ssize_t n, Py_ssize_t last,
                              Py_ssize_t C, float divisor)


cdef inline void _row(const pixel* src, float* dst, Py_ssize_t W, Py_ssize_t C, int dx,
                      bint mirror, float divisor) noexcept nogil:
    """One output row: dst[w] = src[v + dx] / divisor (v = W-1-w if mirror, else
    w), 0 where v + dx is outside [0, W): the columns inside are one run."""
    cdef Py_ssize_t w0, w1
    if mirror:   # 0 <= W-1-w+dx < W
        w0, w1 = max(0, dx), min(W, W + dx)
    else:        # 0 <= w+dx < W
        w0, w1 = max(0, -dx), min(W, W - dx)
    if w0 >= w1:
        memset(dst, 0, W * C * sizeof(float))
        return
    memset(dst, 0, w0 * C * sizeof(float))
    memset(dst + w1 * C, 0, (W - w1) * C * sizeof(float))
    if pixel is uint8_t:
        if mirror:
            cc_gather_mirror_u8(src, dst + w0 * C, w1 - w0, W - 1 - w0 + dx, C, divisor)
        else:
            cc_gather_run_u8(src + (w0 + dx) * C, dst + w0 * C, (w1 - w0) * C, divisor)
    else:
        if mirror:
            cc_gather_mirror_f32(src, dst + w0 * C, w1 - w0, W - 1 - w0 + dx, C, divisor)
        else:
            cc_gather_run_f32(src + (w0 + dx) * C, dst + w0 * C, (w1 - w0) * C, divisor)


def gather_batch(const pixel[:, :, :, ::1] x,         # IN  (N, H, W, C) the data set
                 const int64_t[::1] rows,              # IN  (B,) images, each in [0, N)
                 const int32_t[:, ::1] shift,          # IN  (B, 2) (dy, dx), or None
                 const uint8_t[::1] flip,              # IN  (B,) 0 / 1, or None
                 float divisor,
                 float[:, :, :, ::1] out,              # OUT (B, H, W, C)
                 int n_threads):
    """out[b, h, w] = x[rows[b], h + dy, v + dx] / divisor, v = W - 1 - w where
    flip[b], else w; 0 where that pixel lies outside the image."""
    cdef Py_ssize_t B = rows.shape[0], H = x.shape[1], W = x.shape[2], C = x.shape[3]
    cdef Py_ssize_t b, h, sh, image = H * W * C
    if B == 0 or image == 0:
        return
    cdef const pixel* xp = &x[0, 0, 0, 0]
    cdef const int64_t* rp = &rows[0]
    cdef const int32_t* sp = &shift[0, 0] if shift is not None else NULL
    cdef const uint8_t* fp = &flip[0] if flip is not None else NULL
    cdef float* op = &out[0, 0, 0, 0]
    for b in prange(B, nogil=True, schedule='static', num_threads=n_threads):
        for h in range(H):
            sh = h + (sp[2 * b] if sp != NULL else 0)
            if sh < 0 or sh >= H:
                memset(op + b * image + h * W * C, 0, W * C * sizeof(float))
            else:
                _row(xp + rp[b] * image + sh * W * C, op + b * image + h * W * C, W, C,
                     sp[2 * b + 1] if sp != NULL else 0, fp != NULL and fp[b] != 0, divisor)
