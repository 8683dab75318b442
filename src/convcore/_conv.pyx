"""Convolution, forward and backward = image sections + gemm (after Darknet).

Shapes (NHWC, row-major, float32):
  x (N, H, W, C)   w (KH*KW*C, F) = w4.reshape(-1, F)   y, dy (N, OH, OW, F)
  forward:   cols = im2col(x);  y = cols @ w + b
  backward:  dw = cols^T @ dy;  db = sum(dy);  dx = col2im(dy @ w^T)

The batch is cut into work items of `group` images, a number fixed by the
shapes alone (never by the thread count). Each item runs im2col into its
thread's scratch and one single-threaded sgemm. In the backward pass,
consecutive items are gathered into at most `max_slots` slots; one thread
runs a slot's items in order, accumulating their weight gradient in the
slot, and the slots are then summed in slot order. So the same inputs give
the same bits on any number of threads, with small cache-friendly items and
bounded slot memory at any batch size.
"""
from cython.parallel cimport parallel, prange
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memset

from convcore._memory cimport alloc64
from convcore._blas cimport gemm
from convcore._geometry cimport Window
from convcore._im2col cimport col2im_image, im2col_image
from convcore._pool cimport pool_row, unpool_image


cdef inline void _add_into(float* acc, const float* part, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t e
    for e in range(n):
        acc[e] += part[e]


cdef inline void _relu(float* y, Py_ssize_t n) noexcept nogil:
    """y = max(y, 0) in place, branch-free so that it vectorises; NaN stays NaN."""
    cdef Py_ssize_t e
    cdef float v
    for e in range(n):
        v = y[e]
        y[e] = 0 if v < 0 else v


cdef inline void _relu_mask(float* out, const float* dy, const float* y,
                            Py_ssize_t n) noexcept nogil:
    """out = dy where y > 0, else 0: the gradient through a fused ReLU.

    A bitwise AND with an all-ones/all-zeros mask: branch-free (a branch on
    random signs mispredicts half the time) and exact (a masked NaN gives 0).
    """
    cdef Py_ssize_t e
    cdef const unsigned int* d = <const unsigned int*>dy
    cdef unsigned int* o = <unsigned int*>out
    for e in range(n):
        o[e] = d[e] & (0u - <unsigned int>(y[e] > 0))


cdef void _sum_slots(const float* parts, Py_ssize_t n_slots, Py_ssize_t KF, Py_ssize_t F,
                     float* dw, float* db, int n_threads) noexcept nogil:
    """dw (KF) and db (F) += the slots (n_slots x (KF + F)), in slot order, in
    parallel over blocks of gradient entries (the order of each sum is fixed)."""
    cdef Py_ssize_t blk, sl, e0, e1, BLOCK = 4096
    for blk in prange((KF + BLOCK - 1) // BLOCK, schedule='static', num_threads=n_threads):
        e0 = blk * BLOCK
        e1 = min(KF, e0 + BLOCK)
        for sl in range(n_slots):
            _add_into(dw + e0, parts + sl * (KF + F) + e0, e1 - e0)
    for sl in range(n_slots):
        _add_into(db, parts + sl * (KF + F) + KF, F)


def conv2d_forward(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                   const float[:, ::1] w,          # IN  (KH*KW*C, F)
                   const float[::1] b,             # IN  (F,) or None
                   float[:, :, :, ::1] y,          # OUT (N, OH, OW, F)
                   Window g, Py_ssize_t group, int n_threads, bint relu=False):
    """y = im2col(x) @ w (+ b) (then max(y, 0) if relu), item by item."""
    cdef Py_ssize_t N = x.shape[0], F = w.shape[1], K = w.shape[0]
    cdef Py_ssize_t P = g.OH * g.OW, xs = g.H * g.W * g.C
    cdef Py_ssize_t n_items = (N + group - 1) // group
    cdef Py_ssize_t it, n0, n1, n, r, rows
    cdef float* cols
    cdef float* yp
    cdef float beta
    cdef bint has_b = b is not None
    cdef int n_failed = 0
    if N == 0:
        return
    cdef const float* xptr = &x[0, 0, 0, 0]
    cdef const float* wptr = &w[0, 0]
    cdef const float* bptr = &b[0] if has_b else NULL
    cdef float* yptr = &y[0, 0, 0, 0]
    with nogil, parallel(num_threads=n_threads):
        cols = <float*>malloc(group * P * K * sizeof(float))
        for it in prange(n_items, schedule='dynamic'):
            if cols == NULL:
                n_failed += 1
                continue
            n0 = it * group
            n1 = min(N, n0 + group)
            rows = (n1 - n0) * P
            for n in range(n0, n1):
                im2col_image(xptr + n * xs, g, cols + (n - n0) * P * K)
            yp = yptr + n0 * P * F
            beta = 0.0
            if has_b:
                beta = 1.0
                for r in range(rows):
                    memcpy(yp + r * F, bptr, F * sizeof(float))
            gemm(False, False, <int>rows, <int>F, <int>K, 1.0, cols, <int>K,
                 wptr, <int>F, beta, yp, <int>F)
            if relu:
                _relu(yp, rows * F)
        free(cols)
    if n_failed:
        raise MemoryError("conv2d_forward: could not allocate the im2col scratch")


def conv2d_backward(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                    const float[:, ::1] w,          # IN  (KH*KW*C, F)
                    const float[:, :, :, ::1] dy,   # IN  (N, OH, OW, F)
                    float[:, :, :, ::1] dx,         # OUT (N, H, W, C) or None
                    float[:, ::1] dw,               # OUT (KH*KW*C, F)
                    float[::1] db,                  # OUT (F,)
                    Window g, Py_ssize_t group, Py_ssize_t max_slots, int n_threads,
                    const float[:, :, :, ::1] relu_y=None):  # IN (N, OH, OW, F) or None
    """dw = sum over items of cols^T @ dy, db = sum dy, dx = col2im(dy @ w^T).

    With relu_y (the output of a relu=True forward), dy is first masked by
    relu_y > 0, item by item, in the thread's scratch.
    """
    cdef Py_ssize_t N = x.shape[0], F = w.shape[1], K = w.shape[0]
    cdef Py_ssize_t P = g.OH * g.OW, xs = g.H * g.W * g.C
    cdef Py_ssize_t n_items = (N + group - 1) // group
    # >= 1 even for an empty batch (n_items = 0), so that n_slots never divides by zero
    cdef Py_ssize_t per_slot = max(1, (n_items + max_slots - 1) // max_slots)
    cdef Py_ssize_t n_slots = (n_items + per_slot - 1) // per_slot
    cdef Py_ssize_t it, sl, n0, n1, n, r, rows
    cdef Py_ssize_t KF = K * F
    cdef float beta
    cdef float* cols
    cdef float* dcols
    cdef float* dym
    cdef const float* yp
    cdef bint masked = relu_y is not None
    cdef float* dwp
    cdef float* dbp
    cdef const float* dyp
    cdef bint want_dx = dx is not None
    cdef int n_failed = 0
    dw[:, :] = 0
    db[:] = 0
    if N == 0:
        return
    cdef const float* xptr = &x[0, 0, 0, 0]
    cdef const float* wptr = &w[0, 0]
    cdef const float* dyptr = &dy[0, 0, 0, 0]
    cdef float* dxptr = &dx[0, 0, 0, 0] if want_dx else NULL
    cdef const float* yptr = &relu_y[0, 0, 0, 0] if masked else NULL
    # one slot per group of consecutive items for the partial weight and bias gradients
    cdef float* parts = <float*>malloc(n_slots * (KF + F) * sizeof(float))
    if parts == NULL:
        raise MemoryError("conv2d_backward: could not allocate the gradient slots")
    with nogil, parallel(num_threads=n_threads):
        cols = <float*>malloc(group * P * K * sizeof(float))
        dcols = <float*>malloc(group * P * K * sizeof(float)) if want_dx else NULL
        dym = <float*>malloc(group * P * F * sizeof(float)) if masked else NULL
        for sl in prange(n_slots, schedule='dynamic'):
            if cols == NULL or (want_dx and dcols == NULL) or (masked and dym == NULL):
                n_failed += 1
                continue
            dwp = parts + sl * (KF + F)
            dbp = dwp + KF
            memset(dbp, 0, F * sizeof(float))
            for it in range(sl * per_slot, min(n_items, (sl + 1) * per_slot)):
                n0 = it * group
                n1 = min(N, n0 + group)
                rows = (n1 - n0) * P
                dyp = dyptr + n0 * P * F
                if masked:
                    _relu_mask(dym, dyp, yptr + n0 * P * F, rows * F)
                    dyp = dym
                for n in range(n0, n1):
                    im2col_image(xptr + n * xs, g, cols + (n - n0) * P * K)
                beta = 0.0 if it == sl * per_slot else 1.0
                gemm(True, False, <int>K, <int>F, <int>rows, 1.0, cols, <int>K,
                     dyp, <int>F, beta, dwp, <int>F)
                for r in range(rows):
                    _add_into(dbp, dyp + r * F, F)
                if want_dx:
                    gemm(False, True, <int>rows, <int>K, <int>F, 1.0, dyp, <int>F,
                         wptr, <int>F, 0.0, dcols, <int>K)
                    memset(dxptr + n0 * xs, 0, (n1 - n0) * xs * sizeof(float))
                    for n in range(n0, n1):
                        col2im_image(dcols + (n - n0) * P * K, g, dxptr + n * xs)
        free(cols)
        free(dcols)
        free(dym)
    if n_failed:
        free(parts)
        raise MemoryError("conv2d_backward: could not allocate the im2col scratch")
    _sum_slots(parts, n_slots, KF, F, &dw[0, 0], &db[0], n_threads)
    free(parts)


# ------------------------------------------------------------ direct kernels
# The fast path where the CPU has AVX-512 and the channel counts are multiples
# of 16 (_conv_direct.h): no column matrix, each image padded once into the
# thread's scratch and convolved by register-blocked tiles.

cdef extern from "_conv_direct.h" nogil:
    int cc_simd_supported()
    void cc_pad_image(const float* src, int H, int W, int C, int top, int left,
                      int Hp, int Wp, float* dst)
    void cc_flip_kernels(const float* w, int KH, int KW, int C, int F, float* wt)
    void cc_conv_forward_image(const float* xp, int Wp, int C, int KH, int KW, int SH,
                               int SW, int OH, int OW, const float* w, int F,
                               const float* b, float* y, int relu)
    void cc_conv_dw_image(const float* xp, int Wp, int C, int KH, int KW, int SH, int SW,
                          int OH, int OW, const float* dy, int F, float* dw)
    void cc_mask_sum(const float* dy, const float* y, int P, int F, float* out, float* db)


cdef extern from "_conv_winograd.h" nogil:
    size_t cc_wino_scratch_floats(int C, int F)
    void cc_wino_dw_image(const float* xp, int Wp, int C, const float* dy, int OH, int OW,
                          int F, float* M, int first, float* scratch)
    void cc_wino_dw_finish(const float* M, int C, int F, float* dw)
    void cc_wino_filter(const float* w, int C, int F, float* U)
    void cc_wino_forward_image(const float* xp, int Wp, int C, int OH, int OW,
                               const float* U, int F, const float* b, float* y, int relu,
                               float* scratch)


cdef inline int _padded(Py_ssize_t out, Py_ssize_t stride, Py_ssize_t k, bint winograd) noexcept nogil:
    """Rows (or columns) of the padded image: the direct kernel reads
    (out - 1) * stride + k; Winograd reads whole 2x2 tiles."""
    if winograd:
        return <int>(2 * ((out + 1) // 2) + 4)
    return <int>((out - 1) * stride + k)


cdef inline void _forward_image(const float* xp, int Wp, int C, Window g, int OH, int OW,
                                const float* w, const float* U, int F, const float* b,
                                float* y, bint relu, float* scratch) noexcept nogil:
    """One image's convolution from its padded copy: Winograd F(2x2, 5x5) if U
    (its transformed kernels) is given, else the direct kernel."""
    if U != NULL:
        cc_wino_forward_image(xp, Wp, C, OH, OW, U, F, b, y, relu, scratch)
    else:
        cc_conv_forward_image(xp, Wp, C, <int>g.KH, <int>g.KW, <int>g.SH, <int>g.SW, OH, OW,
                              w, F, b, y, relu)


cdef float* _wino_kernels(const float* w, int C, int F) noexcept nogil:
    """U (36, C, F): the Winograd transform of w (5, 5, C, F); NULL if out of memory."""
    cdef float* U = alloc64(36 * C * F)
    if U != NULL:
        cc_wino_filter(w, C, F, U)
    return U


def simd_supported():
    """True if the AVX-512 kernels (_simd.h) were compiled in and this CPU runs them."""
    return bool(cc_simd_supported())


def conv2d_forward_direct(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                          const float[:, ::1] w,          # IN  (KH*KW*C, F), F % 16 == 0
                          const float[::1] b,             # IN  (F,) or None
                          float[:, :, :, ::1] y,          # OUT (N, OH, OW, F)
                          Window g, int n_threads, bint relu=False, bint winograd=False):
    """y = conv(x, w) (+ b) (then max(y, 0) if relu), image by image; with
    winograd (5x5 kernels, stride 1, C % 16 == 0), by Winograd F(2x2, 5x5)."""
    cdef Py_ssize_t N = x.shape[0], F = w.shape[1], n
    cdef int Hp = _padded(g.OH, g.SH, g.KH, winograd), Wp = _padded(g.OW, g.SW, g.KW, winograd)
    cdef Py_ssize_t xs = g.H * g.W * g.C, ys = g.OH * g.OW * F
    cdef float* xp
    cdef float* scratch
    cdef float* U = NULL
    cdef int n_failed = 0
    if N == 0:
        return
    cdef const float* xptr = &x[0, 0, 0, 0]
    cdef const float* wptr = &w[0, 0]
    cdef const float* bptr = &b[0] if b is not None else NULL
    cdef float* yptr = &y[0, 0, 0, 0]
    if winograd:
        U = _wino_kernels(wptr, <int>g.C, <int>F)
        if U == NULL:
            raise MemoryError("conv2d_forward: could not allocate the Winograd kernels")
    with nogil, parallel(num_threads=n_threads):
        xp = alloc64(<Py_ssize_t>Hp * Wp * g.C)
        scratch = alloc64(cc_wino_scratch_floats(<int>g.C, <int>F)) if winograd else NULL
        for n in prange(N, schedule='dynamic'):
            if xp == NULL or (winograd and scratch == NULL):
                n_failed += 1
                continue
            cc_pad_image(xptr + n * xs, g.H, g.W, g.C, g.PT, g.PL, Hp, Wp, xp)
            _forward_image(xp, Wp, <int>g.C, g, <int>g.OH, <int>g.OW, wptr, U, <int>F, bptr,
                           yptr + n * ys, relu, scratch)
        free(xp)
        free(scratch)
    free(U)
    if n_failed:
        raise MemoryError("conv2d_forward: could not allocate the padded-image scratch")


def conv2d_maxpool_forward_direct(const float[:, :, :, ::1] x,   # IN  (N, H, W, C)
                                  const float[:, ::1] w,         # IN  (KH*KW*C, F), F % 16 == 0
                                  const float[::1] b,            # IN  (F,) or None
                                  float[:, :, :, ::1] y,         # OUT (N, PH, PW, F)
                                  Window g, Window pg, int n_threads, bint relu=False,
                                  bint winograd=False,
                                  int[:, :, :, ::1] argmax=None):  # OUT (N, PH, PW, F) or None
    """y = maxpool(conv(x, w) (+ b) (relu)), image by image: each image's
    convolution output stays in the thread's scratch (in cache) and only the
    pooled result (and the pool's argmax, if asked for: training) is written.
    pg: the pool window over the (OH, OW, F) output. winograd: as in
    conv2d_forward_direct."""
    cdef Py_ssize_t N = x.shape[0], F = w.shape[1], n, oh
    cdef int Hp = _padded(g.OH, g.SH, g.KH, winograd), Wp = _padded(g.OW, g.SW, g.KW, winograd)
    cdef Py_ssize_t xs = g.H * g.W * g.C, ps = pg.OH * pg.OW * F
    cdef float* xp
    cdef float* yc
    cdef float* scratch
    cdef float* U = NULL
    cdef int* am
    cdef int n_failed = 0
    if N == 0 or pg.OH == 0 or pg.OW == 0:
        return
    cdef const float* xptr = &x[0, 0, 0, 0]
    cdef const float* wptr = &w[0, 0]
    cdef const float* bptr = &b[0] if b is not None else NULL
    cdef float* yptr = &y[0, 0, 0, 0]
    cdef int* amptr = &argmax[0, 0, 0, 0] if argmax is not None else NULL
    if winograd:
        U = _wino_kernels(wptr, <int>g.C, <int>F)
        if U == NULL:
            raise MemoryError("conv2d_maxpool_forward: could not allocate the Winograd kernels")
    with nogil, parallel(num_threads=n_threads):
        xp = alloc64(<Py_ssize_t>Hp * Wp * g.C)
        yc = alloc64(g.OH * g.OW * F)
        am = <int*>malloc(pg.OW * F * sizeof(int))
        scratch = alloc64(cc_wino_scratch_floats(<int>g.C, <int>F)) if winograd else NULL
        for n in prange(N, schedule='dynamic'):
            if xp == NULL or yc == NULL or am == NULL or (winograd and scratch == NULL):
                n_failed += 1
                continue
            cc_pad_image(xptr + n * xs, g.H, g.W, g.C, g.PT, g.PL, Hp, Wp, xp)
            _forward_image(xp, Wp, <int>g.C, g, <int>g.OH, <int>g.OW, wptr, U, <int>F, bptr,
                           yc, relu, scratch)
            for oh in range(pg.OH):
                pool_row(yc, pg, oh, yptr + n * ps + oh * pg.OW * F,
                         amptr + n * ps + oh * pg.OW * F if amptr != NULL else am)
        free(xp)
        free(yc)
        free(am)
        free(scratch)
    free(U)
    if n_failed:
        raise MemoryError("conv2d_maxpool_forward: could not allocate the image scratch")


def conv2d_backward_direct(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                           const float[:, ::1] w,          # IN  (KH*KW*C, F), F % 16 == 0
                           const float[:, :, :, ::1] dy,   # IN  (N, OH, OW, F)
                           float[:, :, :, ::1] dx,         # OUT (N, H, W, C) or None;
                                                           #     needs stride 1, C % 16 == 0
                           float[:, ::1] dw,               # OUT (KH*KW*C, F)
                           float[::1] db,                  # OUT (F,)
                           Window g, Py_ssize_t max_slots, int n_threads,
                           const float[:, :, :, ::1] relu_y=None,  # IN (N, OH, OW, F) or None
                           bint winograd=False,
                           const int[:, :, :, ::1] argmax=None,    # IN (N, PH, PW, F) or None
                           pool_window=None):                      # the pool's Window (argmax)
    """dw, db and dx of conv2d_forward_direct, image by image.

    With argmax (the fused convolution + max-pool): dy, relu_y and argmax are
    the pool's (N, PH, PW, F), and each image's dy of the convolution is first
    sent from them into the thread's scratch (unpool_image: a gather where
    the pool's window, pool_window, is given and does not overlap), never
    stored. Returns how many argmax entries were outside their own window (0
    without argmax).

    Consecutive images are gathered into at most max_slots slots; one thread
    runs a slot's images in order, adding their weight and bias gradients into
    the slot, and the slots are summed in slot order (as in conv2d_backward).
    dx of an image is the forward kernel run on its (masked) dy, padded by
    (KH-1-PT, KW-1-PL), with the flipped kernels. With winograd (5x5 kernels,
    stride 1, C % 16 == 0) both run as Winograd F(2x2, 5x5): dx as the
    forward, dw as its transpose, the slots holding the transformed gradient
    M (36, C, F), transformed to dw once after the slots are summed.
    """
    cdef Py_ssize_t N = x.shape[0], F = w.shape[1], K = w.shape[0], C = g.C
    cdef Py_ssize_t P = g.OH * g.OW, xs = g.H * g.W * C
    cdef Py_ssize_t per_slot = max(1, (N + max_slots - 1) // max_slots)
    cdef Py_ssize_t n_slots = (N + per_slot - 1) // per_slot
    cdef Py_ssize_t KF = 36 * C * F if winograd else K * F    # a slot's weight-gradient part
    cdef Py_ssize_t sl, n
    cdef int Hp = _padded(g.OH, g.SH, g.KH, winograd), Wp = _padded(g.OW, g.SW, g.KW, winograd)
    cdef int Hd = _padded(g.H, 1, g.KH, winograd), Wd = _padded(g.W, 1, g.KW, winograd)  # dy, for dx
    cdef Py_ssize_t n_scratch = max(cc_wino_scratch_floats(<int>C, <int>F),
                                    cc_wino_scratch_floats(<int>F, <int>C))
    cdef bint masked = relu_y is not None
    cdef bint pooled = argmax is not None
    cdef Py_ssize_t Q = dy.shape[1] * dy.shape[2] * F    # a dy image's entries
    cdef Py_ssize_t n_bad = 0
    cdef bint want_dx = dx is not None
    cdef float* xp
    cdef float* dym
    cdef float* dyp_pad
    cdef const float* dyp
    cdef float* dwp
    cdef float* dbp
    cdef float* scratch
    cdef float* U = NULL
    cdef float* msum = NULL
    cdef int n_failed = 0
    dw[:, :] = 0
    db[:] = 0
    if N == 0:
        return 0
    cdef const float* xptr = &x[0, 0, 0, 0]
    cdef const float* dyptr = &dy[0, 0, 0, 0]
    cdef const int* amptr = &argmax[0, 0, 0, 0] if pooled else NULL
    cdef Window pg
    if pooled:
        pg = pool_window
    cdef float* dxptr = &dx[0, 0, 0, 0] if want_dx else NULL
    cdef const float* yptr = &relu_y[0, 0, 0, 0] if masked else NULL
    cdef float* parts = alloc64(n_slots * (KF + F))
    cdef float* wt = alloc64(K * F) if want_dx else NULL
    if parts == NULL or (want_dx and wt == NULL):
        free(parts)
        free(wt)
        raise MemoryError("conv2d_backward: could not allocate the gradient slots")
    if want_dx:
        cc_flip_kernels(&w[0, 0], g.KH, g.KW, <int>C, <int>F, wt)
        if winograd:
            U = _wino_kernels(wt, <int>F, <int>C)
            if U == NULL:
                free(parts)
                free(wt)
                raise MemoryError("conv2d_backward: could not allocate the Winograd kernels")
    with nogil, parallel(num_threads=n_threads):
        xp = alloc64(<Py_ssize_t>Hp * Wp * C)
        dym = alloc64(P * F) if masked or pooled else NULL
        dyp_pad = alloc64(<Py_ssize_t>Hd * Wd * F) if want_dx else NULL
        scratch = alloc64(n_scratch) if winograd else NULL
        for sl in prange(n_slots, schedule='dynamic'):
            if xp == NULL or ((masked or pooled) and dym == NULL) \
                    or (want_dx and dyp_pad == NULL) \
                    or (winograd and scratch == NULL):
                n_failed += 1
                continue
            dwp = parts + sl * (KF + F)
            dbp = dwp + KF
            if winograd:   # the slot's first image sets its M
                memset(dbp, 0, F * sizeof(float))
            else:
                memset(dwp, 0, (KF + F) * sizeof(float))
            for n in range(sl * per_slot, min(N, (sl + 1) * per_slot)):
                if pooled:   # dy through the pool and the ReLU into dym; then db
                    n_bad += unpool_image(dyptr + n * Q, amptr + n * Q,
                                          yptr + n * Q if masked else NULL, pg, dym)
                    cc_mask_sum(dym, NULL, <int>P, <int>F, NULL, dbp)
                    dyp = dym
                else:        # db, and dy through the ReLU (into dym), in one pass
                    cc_mask_sum(dyptr + n * P * F, yptr + n * P * F if masked else NULL,
                                <int>P, <int>F, dym, dbp)
                    dyp = dym if masked else dyptr + n * P * F
                cc_pad_image(xptr + n * xs, g.H, g.W, <int>C, g.PT, g.PL, Hp, Wp, xp)
                if winograd:
                    cc_wino_dw_image(xp, Wp, <int>C, dyp, <int>g.OH, <int>g.OW, <int>F, dwp,
                                     n == sl * per_slot, scratch)
                else:
                    cc_conv_dw_image(xp, Wp, <int>C, g.KH, g.KW, g.SH, g.SW, g.OH, g.OW,
                                     dyp, <int>F, dwp)
                if want_dx:
                    cc_pad_image(dyp, g.OH, g.OW, <int>F, g.KH - 1 - g.PT, g.KW - 1 - g.PL,
                                 Hd, Wd, dyp_pad)
                    # g's kernel size and stride (1: dx needs it) serve the dx convolution
                    _forward_image(dyp_pad, Wd, <int>F, g, <int>g.H, <int>g.W, wt, U, <int>C,
                                   NULL, dxptr + n * xs, 0, scratch)
        free(xp)
        free(dym)
        free(dyp_pad)
        free(scratch)
    free(wt)
    free(U)
    if n_failed:
        free(parts)
        raise MemoryError("conv2d_backward: could not allocate the padded-image scratch")
    if winograd:
        msum = alloc64(KF)
        if msum == NULL:
            free(parts)
            raise MemoryError("conv2d_backward: could not allocate the Winograd gradient")
        memset(msum, 0, KF * sizeof(float))
        _sum_slots(parts, n_slots, KF, F, msum, &db[0], n_threads)
        cc_wino_dw_finish(msum, <int>C, <int>F, &dw[0, 0])
        free(msum)
    else:
        _sum_slots(parts, n_slots, KF, F, &dw[0, 0], &db[0], n_threads)
    free(parts)
    return n_bad
