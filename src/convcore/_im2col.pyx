"""Image sections (im2col) and their adjoint (col2im), written as twins.

One NHWC image x (H, W, C) becomes cols (OH, OW, KH*KW*C): row (oh, ow) holds
the window at that position, ordered (kh, kw, C), zeros where the window hangs
over the padding. In NHWC a window row x[ih, iw0:iw0+KW, :] is contiguous, so
each (oh, ow, i) is one run of KW*C floats, clipped at the left/right border.
col2im is the same loop nest with the copy turned into an add.
"""
from cython.parallel cimport prange
from libc.string cimport memcpy, memset

from convcore._geometry cimport Window


cdef inline void _clip(Window g, Py_ssize_t ow, Py_ssize_t* j0, Py_ssize_t* j1) noexcept nogil:
    """The kernel columns [j0, j1) of window column ow that fall inside the image."""
    cdef Py_ssize_t iw0 = ow * g.SW - g.PL
    j0[0] = -iw0 if iw0 < 0 else 0
    j1[0] = g.W - iw0 if iw0 + g.KW > g.W else g.KW


cdef void im2col_image(const float* x,            # IN  (H, W, C)
                       Window g,
                       float* cols) noexcept nogil:  # OUT (OH, OW, KH*KW*C)
    cdef Py_ssize_t oh, ow, i, ih, j0, j1, iw0
    cdef Py_ssize_t run = g.KW * g.C
    cdef float* row
    for oh in range(g.OH):
        for ow in range(g.OW):
            _clip(g, ow, &j0, &j1)
            iw0 = ow * g.SW - g.PL
            row = cols + (oh * g.OW + ow) * g.KH * run
            for i in range(g.KH):
                ih = oh * g.SH - g.PT + i
                if ih < 0 or ih >= g.H or j0 >= j1:
                    memset(row + i * run, 0, run * sizeof(float))
                    continue
                if j0 > 0:
                    memset(row + i * run, 0, j0 * g.C * sizeof(float))
                memcpy(row + i * run + j0 * g.C,
                       x + (ih * g.W + iw0 + j0) * g.C,
                       (j1 - j0) * g.C * sizeof(float))
                if j1 < g.KW:
                    memset(row + i * run + j1 * g.C, 0, (g.KW - j1) * g.C * sizeof(float))


cdef void col2im_image(const float* cols,          # IN    (OH, OW, KH*KW*C)
                       Window g,
                       float* dx) noexcept nogil:   # INOUT (H, W, C), added to
    cdef Py_ssize_t oh, ow, i, ih, j0, j1, iw0, e
    cdef Py_ssize_t run = g.KW * g.C
    cdef const float* row
    cdef float* dst
    for oh in range(g.OH):
        for ow in range(g.OW):
            _clip(g, ow, &j0, &j1)
            iw0 = ow * g.SW - g.PL
            row = cols + (oh * g.OW + ow) * g.KH * run
            for i in range(g.KH):
                ih = oh * g.SH - g.PT + i
                if ih < 0 or ih >= g.H or j0 >= j1:
                    continue
                dst = dx + (ih * g.W + iw0 + j0) * g.C
                for e in range((j1 - j0) * g.C):
                    dst[e] += row[i * run + j0 * g.C + e]


def im2col(const float[:, :, :, ::1] x, float[:, :, :, ::1] cols, Window g, int n_threads):
    """cols[n] = im2col(x[n]) for every image, in parallel over the batch."""
    cdef Py_ssize_t n, N = x.shape[0]
    cdef Py_ssize_t xs = g.H * g.W * g.C, cs = g.OH * g.OW * g.KH * g.KW * g.C
    if N == 0:
        return
    cdef const float* xp = &x[0, 0, 0, 0]
    cdef float* cp = &cols[0, 0, 0, 0]
    for n in prange(N, nogil=True, schedule='static', num_threads=n_threads):
        im2col_image(xp + n * xs, g, cp + n * cs)


def col2im(const float[:, :, :, ::1] cols, float[:, :, :, ::1] dx, Window g, int n_threads):
    """dx[n] = col2im(cols[n]) for every image (dx zeroed here), parallel over the batch."""
    cdef Py_ssize_t n, N = dx.shape[0]
    cdef Py_ssize_t xs = g.H * g.W * g.C, cs = g.OH * g.OW * g.KH * g.KW * g.C
    if N == 0:
        return
    cdef const float* cp = &cols[0, 0, 0, 0]
    cdef float* dp = &dx[0, 0, 0, 0]
    for n in prange(N, nogil=True, schedule='static', num_threads=n_threads):
        memset(dp + n * xs, 0, xs * sizeof(float))
        col2im_image(cp + n * cs, g, dp + n * xs)
