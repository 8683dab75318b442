"""Max-pool: forward keeps the argmax, backward is a scatter (after Chainer, Darknet).

x (N, H, W, C) -> y, argmax (N, OH, OW, C). argmax[n, oh, ow, c] is the flat
index ih * W + iw of the winning input cell in image n, channel c. The winner
is the first maximum in row-major window order; padded cells never win (every
window holds at least one real cell: padding < pool size is checked before).
NaN counts as larger than any number, and the first NaN wins, like np.argmax.
The backward pass sends each dy to its window's winner: a scatter-add in
general, a gather (each cell written once) where the windows do not overlap
and the forward's window is given (the fused convolution + max-pool).
"""
from cython.parallel cimport prange

from convcore._geometry cimport Window
from convcore._isa cimport cc_kernel_set, kernel_set


cdef extern from "_pool_kernels.h" nogil:
    Py_ssize_t cc_unpool_scatter(const float* dy, const int* am, const float* relu_y,
                                 Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t KH,
                                 Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW, Py_ssize_t PT,
                                 Py_ssize_t PL, Py_ssize_t OH, Py_ssize_t OW, float* dx)


cdef void pool_row(const cc_kernel_set* k,                      # the kernel set
                   const float* x, Window g, Py_ssize_t oh,     # IN  image (H, W, C)
                   float* y, int* am,                           # OUT row (OW, C), or am NULL
                   bint relu=False) noexcept nogil:             # (without am) x through ReLU
    """Output row oh of one image: the max and argmax of each window; am
    NULL: the max alone, of max(x, 0) where relu (_pool_kernels.h)."""
    k.pool_row(x, g.H, g.W, g.C, g.KH, g.KW, g.SH, g.SW, g.PT, g.PL, g.OW, oh, relu, y, am)


cdef Py_ssize_t unpool_image(const cc_kernel_set* k,               # the kernel set
                             const float* dy, const int* am,       # IN  (OH, OW, C)
                             const float* relu_y,                   # IN  (OH, OW, C) or NULL
                             Window g,                              # the pool's window
                             float* dx) noexcept nogil:             # OUT image (H, W, C)
    """One image's backward: dy sent to the winners, through a fused ReLU if
    relu_y is given (_pool_kernels.h): gathered where the windows do not
    overlap, else (or if an argmax entry is not in its window) scattered.
    Returns how many argmax entries lie outside their own window."""
    if g.SH == g.KH and g.SW == g.KW:
        if k.unpool_tiled(dy, am, relu_y, g.H, g.W, g.C, g.KH, g.KW, g.PT, g.PL, g.OH, g.OW,
                          dx) == g.OH * g.OW * g.C:
            return 0
    return cc_unpool_scatter(dy, am, relu_y, g.H, g.W, g.C, g.KH, g.KW, g.SH, g.SW, g.PT,
                             g.PL, g.OH, g.OW, dx)


def maxpool2d_forward(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                      float[:, :, :, ::1] y,          # OUT (N, OH, OW, C)
                      int[:, :, :, ::1] argmax,       # OUT (N, OH, OW, C)
                      Window g, int n_threads, int kernels):
    """y, argmax = max-pool of x, by the kernel set numbered kernels."""
    cdef Py_ssize_t N = x.shape[0], t, n, oh
    if N == 0 or g.OH == 0 or g.OW == 0:
        return
    cdef const cc_kernel_set* k = kernel_set(kernels)
    cdef const float* xp = &x[0, 0, 0, 0]
    cdef float* yp = &y[0, 0, 0, 0]
    cdef int* ap = &argmax[0, 0, 0, 0]
    cdef Py_ssize_t xs = g.H * g.W * g.C, rs = g.OW * g.C
    for t in prange(N * g.OH, nogil=True, schedule='static', num_threads=n_threads):
        n = t // g.OH
        oh = t % g.OH
        pool_row(k, xp + n * xs, g, oh, yp + t * rs, ap + t * rs)


def maxpool2d_backward(const float[:, :, :, ::1] dy,    # IN  (N, OH, OW, C)
                       const int[:, :, :, ::1] argmax,  # IN  (N, OH, OW, C)
                       float[:, :, :, ::1] dx,          # OUT (N, H, W, C)
                       Window g, int n_threads,         # g: the forward's window
                       int kernels,                     # the kernel set's number
                       const float[:, :, :, ::1] relu_y=None):  # IN (N, OH, OW, C) or None
    """dx[n, argmax[n, o, c], c] += dy[n, o, c] (where relu_y > 0, if given: the
    pooled output of a fused ReLU); returns how many argmax entries lie
    outside their own window. Non-overlapping windows run as a gather."""
    if dx.shape[0] == 0:
        return 0
    return unpool_images(kernel_set(kernels), &dy[0, 0, 0, 0], &argmax[0, 0, 0, 0],
                         &relu_y[0, 0, 0, 0] if relu_y is not None else NULL, g, dx.shape[0],
                         n_threads, &dx[0, 0, 0, 0])


cdef Py_ssize_t unpool_images(const cc_kernel_set* k, const float* dy, const int* am,
                              const float* relu_y, Window g, Py_ssize_t N,
                              int n_threads, float* dx) noexcept nogil:
    """unpool_image of N images (dy, am, relu_y: (N, OH, OW, C); dx: (N, H,
    W, C)), in parallel; the argmax entries out of place."""
    cdef Py_ssize_t xs = g.H * g.W * g.C, ys = g.OH * g.OW * g.C, n, n_bad = 0
    for n in prange(N, schedule='static', num_threads=n_threads):
        n_bad += unpool_image(k, dy + n * ys, am + n * ys,
                              relu_y + n * ys if relu_y != NULL else NULL, g, dx + n * xs)
    return n_bad


# Average pool: the mean of each window's cells inside the image (padding does
# not count, as ONNX's AveragePool by default and Keras' "same"). Forward sums
# each window in row-major order; backward hands each cell dy / count of every
# window holding it, windows in row-major order: one image per work item, so
# any thread count gives the same bits. A global average pool is the window
# of the whole image.

cdef void avg_row(const float* x, Window g, Py_ssize_t oh, float* y) noexcept nogil:
    cdef Py_ssize_t ow, i, j, c, ih, iw, count
    cdef float inv
    for ow in range(g.OW):
        for c in range(g.C):
            y[ow * g.C + c] = 0
        count = 0
        for i in range(g.KH):
            ih = oh * g.SH - g.PT + i
            if ih < 0 or ih >= g.H:
                continue
            for j in range(g.KW):
                iw = ow * g.SW - g.PL + j
                if iw < 0 or iw >= g.W:
                    continue
                count = count + 1
                for c in range(g.C):
                    y[ow * g.C + c] += x[(ih * g.W + iw) * g.C + c]
        inv = 1.0 / count
        for c in range(g.C):
            y[ow * g.C + c] *= inv


cdef void unavg_image(const float* dy, Window g, float* dx) noexcept nogil:
    cdef Py_ssize_t oh, ow, i, c, ih, iw, i0, i1, j0, j1
    cdef float inv
    for i in range(g.H * g.W * g.C):
        dx[i] = 0
    for oh in range(g.OH):
        i0 = max(oh * g.SH - g.PT, 0)
        i1 = min(oh * g.SH - g.PT + g.KH, g.H)
        for ow in range(g.OW):
            j0 = max(ow * g.SW - g.PL, 0)
            j1 = min(ow * g.SW - g.PL + g.KW, g.W)
            inv = 1.0 / ((i1 - i0) * (j1 - j0))
            for ih in range(i0, i1):
                for iw in range(j0, j1):
                    for c in range(g.C):
                        dx[(ih * g.W + iw) * g.C + c] += dy[(oh * g.OW + ow) * g.C + c] * inv


def avgpool2d_forward(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                      float[:, :, :, ::1] y,          # OUT (N, OH, OW, C)
                      Window g, int n_threads):
    cdef Py_ssize_t N = x.shape[0], t
    if N == 0 or g.OH == 0 or g.OW == 0:
        return
    cdef const float* xp = &x[0, 0, 0, 0]
    cdef float* yp = &y[0, 0, 0, 0]
    cdef Py_ssize_t xs = g.H * g.W * g.C, rs = g.OW * g.C
    for t in prange(N * g.OH, nogil=True, schedule='static', num_threads=n_threads):
        avg_row(xp + (t // g.OH) * xs, g, t % g.OH, yp + t * rs)


def avgpool2d_backward(const float[:, :, :, ::1] dy,   # IN  (N, OH, OW, C)
                       float[:, :, :, ::1] dx,         # OUT (N, H, W, C)
                       Window g, int n_threads):
    cdef Py_ssize_t N = dx.shape[0], n
    if N == 0 or dx.size == 0:
        return
    cdef const float* dyp = &dy[0, 0, 0, 0] if dy.size else NULL
    cdef float* dxp = &dx[0, 0, 0, 0]
    cdef Py_ssize_t xs = g.H * g.W * g.C, ys = g.OH * g.OW * g.C
    for n in prange(N, nogil=True, schedule='static', num_threads=n_threads):
        unavg_image(dyp + n * ys, g, dxp + n * xs)
