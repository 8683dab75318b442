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


cdef inline void _row(const pixel* src, float* dst, Py_ssize_t W, Py_ssize_t C, int dx,
                      bint mirror, float divisor) noexcept nogil:
    """One output row: dst[w] = src[v + dx] / divisor (v = W-1-w if mirror, else
    w), 0 where v + dx is outside [0, W): the columns inside are one run, a
    straight loop (vectorised) where not mirrored."""
    cdef Py_ssize_t w, e, c, w0, w1
    cdef const pixel* s
    if mirror:   # 0 <= W-1-w+dx < W
        w0, w1 = max(0, dx), min(W, W + dx)
    else:        # 0 <= w+dx < W
        w0, w1 = max(0, -dx), min(W, W - dx)
    if w0 >= w1:
        memset(dst, 0, W * C * sizeof(float))
        return
    memset(dst, 0, w0 * C * sizeof(float))
    memset(dst + w1 * C, 0, (W - w1) * C * sizeof(float))
    if not mirror:
        s = src + (w0 + dx) * C
        for e in range((w1 - w0) * C):
            dst[w0 * C + e] = <float>s[e] / divisor
        return
    for w in range(w0, w1):
        s = src + (W - 1 - w + dx) * C
        for c in range(C):
            dst[w * C + c] = <float>s[c] / divisor


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
