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
from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy, memmove, memset

from convcore._memory cimport aligned_alloc, alloc64
from convcore._bits cimport keep_where_positive
from convcore._blas cimport gemm_prec
from convcore._geometry cimport Window
from convcore._im2col cimport col2im_image, im2col_image
from convcore._isa cimport cc_kernel_set, kernel_set
from convcore._pool cimport pool_row, unpool_image, unpool_images
from convcore._slices cimport tree_sum


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
    """out = dy where y > 0, else 0: the gradient through a fused ReLU."""
    cdef Py_ssize_t e
    for e in range(n):
        out[e] = keep_where_positive(dy[e], y[e])


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


cdef struct Images:             # what every image's pass reads and writes
    const cc_kernel_set* k      # the kernel set (direct drivers), or NULL
    const float* x              # IN  (N, H, W, C), or NULL: xh
    const uint16_t* xh          # IN  x's bfloat16 bits (the bf16 backward), or NULL
    const float* w              # IN  (KH*KW*C, F): the forward's kernels
    const float* U              # IN  Winograd transform of the kernels in use, or NULL
    const float* b              # IN  (F,) or NULL
    const float* dy             # IN  (N, OH, OW, F), or the pool's (N, PH, PW, F); or NULL:
    const uint16_t* dyh         # IN  dy's bfloat16 bits (the bf16 backward: no ReLU, no db)
    const int* argmax           # IN  the pool's argmax (backward), or NULL: no pool
    const float* relu_y         # IN  the ReLU's output (of dy's shape), or NULL
    float* y                    # OUT the forward's (N, OH, OW, F), or pooled (N, PH, PW, F)
    int* argmax_out             # OUT the pool's argmax (forward, training), or NULL
    float* dx                   # OUT (N, H, W, C), or NULL: no input gradient
    const float* wt             # IN  the flipped kernels (dx), or NULL
    Window g                    # the convolution's window
    Window pg                   # the pool's window over (OH, OW, F) (fused variants)
    int F, Hp, Wp, Hd, Wd       # channels out; padded image; padded dy (dx)
    int group                   # images a Winograd call (forward or dx; _wino_group), else 1
    bint winograd, relu
    bint round_dy               # dy rounded to bfloat16 as it is read (direct backward)
    uint16_t* dy_narrow         # bf16 pooled backward: dy's padded copy, made item by item
    Window gt                   # ... over the window of the dx convolution (_grown(gt))
    int bf16                    # the im2col path's product: 0 float32, else gemm_prec's kernel
    bint no_db                  # bf16 backward: no bias, its gradient not summed (db stays 0)


cdef inline int _padded(Py_ssize_t out, Py_ssize_t stride, Py_ssize_t k,
                        bint winograd) noexcept nogil:
    """Rows (or columns) of the padded image: the direct kernel reads
    (out - 1) * stride + k; Winograd reads whole tiles of m = 7 - k outputs
    a side (2x2 for 5x5 kernels, 4x4 for 3x3), each from k - 1 more inputs."""
    cdef Py_ssize_t m = 7 - k
    if winograd:
        return <int>(m * ((out + m - 1) // m) + k - 1)
    return <int>((out - 1) * stride + k)


cdef int _wino_group(Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t r) noexcept nogil:
    """Images a Winograd call where an image has fewer tiles (of OH x OW
    outputs) than a block (CC_WINO_TB): the fewest whose tiles fill whole
    blocks, if 8 or fewer do, else enough to fill one; 1 where one image does."""
    cdef Py_ssize_t m = 7 - r, nt = ((OH + m - 1) // m) * ((OW + m - 1) // m), k
    if nt >= CC_WINO_TB:
        return 1
    for k in range(1, 9):
        if k * nt % CC_WINO_TB == 0:
            return <int>k
    return <int>((CC_WINO_TB + nt - 1) // nt)


cdef Images _images(const float[:, :, :, ::1] x, const float[:, ::1] w, Window g,
                    int kernels, bint winograd):
    """The shared part of every driver's Images; pointers not given are NULL,
    a.k among them where kernels (the kernel set's number) is -1: BLAS."""
    cdef Images a
    memset(&a, 0, sizeof(Images))
    if kernels >= 0:
        a.k = kernel_set(kernels)
    a.x = &x[0, 0, 0, 0] if x is not None else NULL
    a.w = &w[0, 0]
    a.g = g
    a.F = <int>w.shape[1]
    a.Hp = _padded(g.OH, g.SH, g.KH, winograd)
    a.Wp = _padded(g.OW, g.SW, g.KW, winograd)
    a.winograd = winograd
    a.group = 1
    return a


def conv2d_forward(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                   const float[:, ::1] w,          # IN  (KH*KW*C, F)
                   const float[::1] b,             # IN  (F,) or None
                   float[:, :, :, ::1] y,          # OUT (N, OH, OW, F)
                   Window g, Py_ssize_t group, int n_threads, bint relu=False, int bf16=0):
    """y = im2col(x) @ w (+ b) (then max(y, 0) if relu), item by item; the
    product in float32 or (bf16: _blas.gemm_prec's kernel) bf16."""
    cdef Py_ssize_t N = x.shape[0], F = w.shape[1], K = w.shape[0]
    cdef Py_ssize_t P = g.OH * g.OW, xs = g.H * g.W * g.C
    cdef Py_ssize_t n_items = (N + group - 1) // group
    cdef Py_ssize_t it, n0, n1, n, r, rows
    cdef float* cols = NULL   # (firstprivate in the parallel block)
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
            if gemm_prec(bf16, False, False, <int>rows, <int>F, <int>K, cols, <int>K,
                         wptr, <int>F, beta, yp, <int>F):
                n_failed += 1
                continue
            if relu:
                _relu(yp, rows * F)
        free(cols)
    if n_failed:
        raise MemoryError("conv2d_forward: could not allocate the im2col scratch "
                          "(or the bf16 packing)")


cdef int _backward_item(const Images* a, Py_ssize_t n0, Py_ssize_t n1, bint first,
                        float* cols, float* dcols, float* dym,       # the thread's scratch
                        float* dw, float* db) noexcept nogil:       # the slot's gradients
    """Images n0..n1 (one work item): dw (+)= cols^T @ dy (set by the slot's
    first item), db += sum dy, dx = col2im(dy @ w^T) where a.dx is given; dy
    masked by a.relu_y > 0 first where it is given. 0, or the number of
    products whose bf16 packing's memory was not there."""
    cdef Window g = a.g
    cdef Py_ssize_t F = a.F, K = g.KH * g.KW * g.C, P = g.OH * g.OW, xs = g.H * g.W * g.C
    cdef Py_ssize_t rows = (n1 - n0) * P, n, r
    cdef const float* dyp = a.dy + n0 * P * F
    if a.relu_y != NULL:
        _relu_mask(dym, dyp, a.relu_y + n0 * P * F, rows * F)
        dyp = dym
    for n in range(n0, n1):
        im2col_image(a.x + n * xs, g, cols + (n - n0) * P * K)
    cdef int failed = gemm_prec(a.bf16, True, False, <int>K, <int>F, <int>rows, cols, <int>K,
                                dyp, <int>F, 0.0 if first else 1.0, dw, <int>F)
    for r in range(rows):
        _add_into(db, dyp + r * F, F)
    if a.dx != NULL:
        failed += gemm_prec(a.bf16, False, True, <int>rows, <int>K, <int>F, dyp, <int>F, a.w,
                            <int>F, 0.0, dcols, <int>K)
        memset(a.dx + n0 * xs, 0, (n1 - n0) * xs * sizeof(float))
        for n in range(n0, n1):
            col2im_image(dcols + (n - n0) * P * K, g, a.dx + n * xs)
    return failed


def conv2d_backward(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                    const float[:, ::1] w,          # IN  (KH*KW*C, F)
                    const float[:, :, :, ::1] dy,   # IN  (N, OH, OW, F)
                    float[:, :, :, ::1] dx,         # OUT (N, H, W, C) or None
                    float[:, ::1] dw,               # OUT (KH*KW*C, F)
                    float[::1] db,                  # OUT (F,)
                    Window g, Py_ssize_t group, Py_ssize_t max_slots, int n_threads,
                    const float[:, :, :, ::1] relu_y=None,   # IN (N, OH, OW, F) or None
                    int bf16=0):
    """dw = sum over items of cols^T @ dy, db = sum dy, dx = col2im(dy @ w^T),
    the products in float32 or (bf16: _blas.gemm_prec's kernel) bf16. With
    relu_y (the output of a relu=True forward), dy is first masked by
    relu_y > 0, item by item, in the thread's scratch."""
    cdef Py_ssize_t N = x.shape[0], F = w.shape[1], K = w.shape[0], P = g.OH * g.OW
    cdef Py_ssize_t n_items = (N + group - 1) // group, it, sl
    # >= 1 even for an empty batch (n_items = 0), so that n_slots never divides by zero
    cdef Py_ssize_t per_slot = max(1, (n_items + max_slots - 1) // max_slots)
    cdef Py_ssize_t n_slots = (n_items + per_slot - 1) // per_slot
    cdef float* cols = NULL   # (firstprivate in the parallel block)
    cdef float* dcols = NULL   # (firstprivate in the parallel block)
    cdef float* dym = NULL   # (firstprivate in the parallel block)
    cdef float* part
    cdef int n_failed = 0
    dw[:, :] = 0
    db[:] = 0
    if N == 0:
        return
    cdef Images a = _images(x, w, g, -1, False)
    a.dy = &dy[0, 0, 0, 0]
    a.dx = &dx[0, 0, 0, 0] if dx is not None else NULL
    a.relu_y = &relu_y[0, 0, 0, 0] if relu_y is not None else NULL
    a.bf16 = bf16
    # one slot per group of consecutive items for the partial weight and bias gradients
    cdef float* parts = <float*>malloc(n_slots * (K * F + F) * sizeof(float))
    if parts == NULL:
        raise MemoryError("conv2d_backward: could not allocate the gradient slots")
    with nogil, parallel(num_threads=n_threads):
        cols = <float*>malloc(group * P * K * sizeof(float))
        dcols = <float*>malloc(group * P * K * sizeof(float)) if a.dx != NULL else NULL
        dym = <float*>malloc(group * P * F * sizeof(float)) if a.relu_y != NULL else NULL
        for sl in prange(n_slots, schedule='dynamic'):
            if cols == NULL or (a.dx != NULL and dcols == NULL) \
                    or (a.relu_y != NULL and dym == NULL):
                n_failed += 1
                continue
            part = parts + sl * (K * F + F)
            memset(part + K * F, 0, F * sizeof(float))
            for it in range(sl * per_slot, min(n_items, (sl + 1) * per_slot)):
                if _backward_item(&a, it * group, min(N, (it + 1) * group),
                                  it == sl * per_slot, cols, dcols, dym, part, part + K * F):
                    n_failed += 1
        free(cols)
        free(dcols)
        free(dym)
    if n_failed:
        free(parts)
        raise MemoryError("conv2d_backward: could not allocate the im2col scratch "
                          "(or the bf16 packing)")
    _sum_slots(parts, n_slots, K * F, F, &dw[0, 0], &db[0], n_threads)
    free(parts)


# ------------------------------------------------------------ direct kernels
# The fast path where the channel counts are multiples of 16 (_conv_direct.h,
# _conv_winograd.h), in a kernel set (_isa.pxd): no column matrix, each image
# padded once into the thread's scratch and convolved by register-blocked tiles.

cdef extern from "_conv_direct.h" nogil:
    void cc_pad_image(const float* src, int H, int W, int C, int top, int left,
                      int Hp, int Wp, float* dst)
    void cc_flip_kernels(const float* w, int KH, int KW, int C, int F, float* wt)


cdef extern from "_bf16_kernels.h" nogil:
    void cc_round_bf16(const float* x, float* y, Py_ssize_t n)


cdef extern from "_conv_winograd.h" nogil:
    size_t cc_wino_scratch_floats(int C)
    size_t cc_wino_dw_scratch_floats(int C, int F)
    enum: CC_WINO_TBW
    enum: CC_WINO_TB


# The direct drivers' work items are single images. The forward pads each
# image into the thread's scratch and convolves it (then pools it, in the
# fused variant); the backward sends dy through the pool and the ReLU,
# accumulates dw into the item's slot, and convolves dy into dx. Per-image
# steps are small nogil helpers over one struct of what every image shares.

cdef struct Scratch:            # one thread's
    float* xp                   # a padded image (Hp, Wp, C)
    float* yc                   # one image's convolution output (fused forward)
    float* dym                  # one image's dy through the pool and ReLU
    float* dyr                  # one image's pooled dy rounded (round_dy), or NULL
    float* dy_pad               # dym padded for the dx convolution (Hd, Wd, F)
    float* wino                 # Winograd's tile scratch (the forward's, dx's)
    float* wino_dw              # Winograd's block of the weight gradient's tiles


cdef void _scratch_free(Scratch* s) noexcept nogil:
    free(s.xp)
    free(s.yc)
    free(s.dym)
    free(s.dyr)
    free(s.dy_pad)
    free(s.wino)
    free(s.wino_dw)


cdef Scratch _scratch_new(const Images* a, bint backward) noexcept nogil:
    """A thread's scratch for a forward or backward pass (see _scratch_ok)."""
    cdef Scratch s
    cdef Py_ssize_t C = a.g.C, F = a.F, P = a.g.OH * a.g.OW
    cdef bint pooled = a.pg.OH > 0
    s.xp = alloc64(<Py_ssize_t>a.Hp * a.Wp * C * (1 if backward else a.group))
    s.yc = alloc64(P * F) if pooled and not backward else NULL
    s.dym = alloc64(P * F) if backward and (pooled or a.relu_y != NULL or a.round_dy) else NULL
    s.dyr = (alloc64(a.pg.OH * a.pg.OW * F) if backward and pooled and a.round_dy
             else NULL)
    s.dy_pad = (alloc64(<Py_ssize_t>a.Hd * a.Wd * F * a.group) if backward and a.dx != NULL
                else NULL)
    s.wino = s.wino_dw = NULL
    if a.winograd and not backward:
        s.wino = alloc64(cc_wino_scratch_floats(<int>C))
    if a.winograd and backward:
        s.wino = alloc64(cc_wino_scratch_floats(<int>F)) if a.dx != NULL else NULL
        s.wino_dw = alloc64(cc_wino_dw_scratch_floats(<int>C, <int>F))
    return s


cdef bint _scratch_ok(const Scratch* s, const Images* a, bint backward) noexcept nogil:
    """Whether every buffer the pass needs was allocated."""
    cdef bint pooled = a.pg.OH > 0
    return not (s.xp == NULL or (pooled and not backward and s.yc == NULL)
                or (s.dym == NULL and backward and (pooled or a.relu_y != NULL or a.round_dy))
                or (s.dyr == NULL and backward and pooled and a.round_dy)
                or (s.dy_pad == NULL and backward and a.dx != NULL)
                or (s.wino == NULL and a.winograd and (not backward or a.dx != NULL))
                or (s.wino_dw == NULL and a.winograd and backward))


cdef float* _wino_kernels(const cc_kernel_set* k, const float* w, int r, int C,
                          int F) noexcept nogil:
    """U (36, C, F): the Winograd transform of w (r, r, C, F); NULL if out of memory."""
    cdef float* U = alloc64(36 * C * F)
    if U != NULL:
        k.wino_filter(w, r, C, F, U)
    return U


cdef inline void _convolve(const Images* a, const float* xp, Py_ssize_t x_step, int Wp, int C,
                           int OH, int OW, const float* w, int F, const float* b, float* y,
                           Py_ssize_t y_step, int G, bint relu, float* scratch) noexcept nogil:
    """The convolutions of G images (a.group at most) from their padded copies,
    image i's at xp + i x_step, its output at y + i y_step: Winograd
    (F(2x2, 5x5) or F(4x4, 3x3), by the kernel size) in one call if a.U (the
    transformed kernels) is given, else the direct kernel of a.g, image by image."""
    cdef Window g = a.g
    cdef const float* xps[CC_WINO_TB]
    cdef float* ys[CC_WINO_TB]
    cdef int i
    for i in range(G):
        xps[i], ys[i] = xp + i * x_step, y + i * y_step
    if a.U != NULL:
        a.k.wino_forward_images(xps, G, Wp, C, <int>g.KH, OH, OW, a.U, F, b, ys, relu, scratch)
        return
    for i in range(G):
        a.k.conv_forward_image(xps[i], Wp, C, <int>g.KH, <int>g.KW, <int>g.SH, <int>g.SW, OH,
                               OW, w, F, b, ys[i], relu)


# ---------------------------------------------------------------- forward

cdef void _forward_pooled(const Images* a, Scratch* s, Py_ssize_t n) noexcept nogil:
    """Image n: padded, convolved (through the ReLU) into the scratch, and pooled."""
    cdef Window g = a.g, pg = a.pg
    cdef Py_ssize_t F = a.F, oh, ps = pg.OH * pg.OW * F, rs = pg.OW * F
    cc_pad_image(a.x + n * g.H * g.W * g.C, g.H, g.W, g.C, g.PT, g.PL, a.Hp, a.Wp, s.xp)
    _convolve(a, s.xp, 0, a.Wp, <int>g.C, <int>g.OH, <int>g.OW, a.w, a.F, a.b, s.yc, 0, 1,
              a.relu, s.wino)
    for oh in range(pg.OH):
        pool_row(a.k, s.yc, pg, oh, a.y + n * ps + oh * rs,
                 a.argmax_out + n * ps + oh * rs if a.argmax_out != NULL else NULL)


cdef void _forward_group(const Images* a, Scratch* s, Py_ssize_t n0,
                         Py_ssize_t n1) noexcept nogil:
    """Images n0..n1 (a.group at most), each padded into its part of the
    thread's scratch, then convolved (in one Winograd call)."""
    cdef Window g = a.g
    cdef Py_ssize_t n, hwc = <Py_ssize_t>a.Hp * a.Wp * g.C, yhw = g.OH * g.OW * a.F
    for n in range(n0, n1):
        cc_pad_image(a.x + n * g.H * g.W * g.C, g.H, g.W, g.C, g.PT, g.PL, a.Hp, a.Wp,
                     s.xp + (n - n0) * hwc)
    _convolve(a, s.xp, hwc, a.Wp, <int>g.C, <int>g.OH, <int>g.OW, a.w, a.F, a.b,
              a.y + n0 * yhw, yhw, <int>(n1 - n0), a.relu, s.wino)


cdef void _forward_images(Images* a, Py_ssize_t N, int n_threads, str fn) except *:
    """Every image of the batch, one work item each (a group of a.group
    images each, _wino_group), in parallel."""
    cdef Py_ssize_t n, G = a.group
    cdef Scratch s
    cdef int n_failed = 0
    cdef float* U = _wino_kernels(a.k, a.w, <int>a.g.KH, <int>a.g.C, a.F) if a.winograd else NULL
    if a.winograd and U == NULL:
        raise MemoryError(f"{fn}: could not allocate the Winograd kernels")
    a.U = U
    with nogil, parallel(num_threads=n_threads):
        s = _scratch_new(a, False)
        for n in prange((N + G - 1) // G, schedule='dynamic'):
            if not _scratch_ok(&s, a, False):
                n_failed += 1
                continue
            if a.pg.OH == 0:
                _forward_group(a, &s, n * G, min(N, (n + 1) * G))
            else:                       # (one image an item: a.group is 1)
                _forward_pooled(a, &s, n)
        _scratch_free(&s)
    free(U)
    if n_failed:
        raise MemoryError(f"{fn}: could not allocate the image scratch")


def conv2d_forward_direct(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                          const float[:, ::1] w,          # IN  (KH*KW*C, F), F % 16 == 0
                          const float[::1] b,             # IN  (F,) or None
                          float[:, :, :, ::1] y,          # OUT (N, OH, OW, F)
                          Window g, int n_threads, int kernels, bint relu=False,
                          bint winograd=False):
    """y = conv(x, w) (+ b) (then max(y, 0) if relu), image by image, by the
    kernel set numbered kernels; with winograd (5x5 or 3x3 kernels, stride 1,
    C % 16 == 0), by Winograd F(2x2, 5x5) or F(4x4, 3x3)."""
    if x.shape[0] == 0:
        return
    cdef Images a = _images(x, w, g, kernels, winograd)
    a.b = &b[0] if b is not None else NULL
    a.y, a.relu = &y[0, 0, 0, 0], relu
    if winograd:
        a.group = _wino_group(g.OH, g.OW, g.KH)
    _forward_images(&a, x.shape[0], n_threads, "conv2d_forward")


def conv2d_maxpool_forward_direct(const float[:, :, :, ::1] x,   # IN  (N, H, W, C)
                                  const float[:, ::1] w,         # IN  (KH*KW*C, F), F % 16 == 0
                                  const float[::1] b,            # IN  (F,) or None
                                  float[:, :, :, ::1] y,         # OUT (N, PH, PW, F)
                                  Window g, Window pg, int n_threads, int kernels,
                                  bint relu=False, bint winograd=False,
                                  int[:, :, :, ::1] argmax=None):  # OUT (N, PH, PW, F) or None
    """y = maxpool(conv(x, w) (+ b) (relu)), image by image: each image's
    convolution output stays in the thread's scratch (in cache) and only the
    pooled result (and the pool's argmax, if asked for: training) is written.
    pg: the pool window over the (OH, OW, F) output. winograd: as in
    conv2d_forward_direct."""
    if x.shape[0] == 0 or pg.OH == 0 or pg.OW == 0:
        return
    cdef Images a = _images(x, w, g, kernels, winograd)
    a.b = &b[0] if b is not None else NULL
    a.y, a.relu, a.pg = &y[0, 0, 0, 0], relu, pg
    a.argmax_out = &argmax[0, 0, 0, 0] if argmax is not None else NULL
    _forward_images(&a, x.shape[0], n_threads, "conv2d_maxpool_forward")


# ---------------------------------------------------------------- backward

cdef const float* _image_dy(const Images* a, Scratch* s, Py_ssize_t n, float* db,
                            Py_ssize_t* n_bad) noexcept nogil:
    """Image n's gradient of the convolution output: dy rounded to bfloat16
    (a.round_dy: the pool's dy, into s.dyr), sent through the pool (a.argmax)
    and the ReLU (a.relu_y) into s.dym (or dy itself, if none of them); db +=
    its sum. Counts argmax entries outside their windows into n_bad."""
    cdef Py_ssize_t F = a.F, P = a.g.OH * a.g.OW, Q = a.pg.OH * a.pg.OW * F
    cdef const float* dy = a.dy + n * P * F
    if a.argmax != NULL:
        dy = a.dy + n * Q
        if a.round_dy:
            cc_round_bf16(dy, s.dyr, Q)
            dy = s.dyr
        n_bad[0] += unpool_image(a.k, dy, a.argmax + n * Q,
                                 a.relu_y + n * Q if a.relu_y != NULL else NULL, a.pg, s.dym)
        a.k.mask_sum(s.dym, NULL, <int>P, <int>F, NULL, db)
        return s.dym
    if a.round_dy:
        cc_round_bf16(dy, s.dym, P * F)
        dy = s.dym
    if a.relu_y == NULL:
        a.k.mask_sum(dy, NULL, <int>P, <int>F, NULL, db)
        return dy
    a.k.mask_sum(dy, a.relu_y + n * P * F, <int>P, <int>F, s.dym, db)
    return s.dym


cdef void _image_dw(const Images* a, Scratch* s, Py_ssize_t n, const float* dyp, float* dw,
                    int* q) noexcept nogil:
    """dw += image n's weight gradient (Winograd: its tiles into the slot's
    block, q, whose products go into M, _conv_winograd.h)."""
    cdef Window g = a.g
    cc_pad_image(a.x + n * g.H * g.W * g.C, g.H, g.W, <int>g.C, g.PT, g.PL, a.Hp, a.Wp, s.xp)
    if a.winograd:
        a.k.wino_dw_image(s.xp, a.Wp, <int>g.C, <int>g.KH, dyp, <int>g.OH, <int>g.OW, a.F, dw,
                          q, s.wino_dw)
    else:
        a.k.conv_dw_image(s.xp, a.Wp, <int>g.C, <int>g.KH, <int>g.KW, <int>g.SH, <int>g.SW,
                          <int>g.OH, <int>g.OW, dyp, a.F, dw)


cdef void _image_dx(const Images* a, Scratch* s, Py_ssize_t n, const float* dyp,
                    Py_ssize_t n0, Py_ssize_t n1) noexcept nogil:
    """dx of image n (of the slot's n0..n1): the forward kernel on dy, padded by
    (KH-1-PT, KW-1-PL), with the flipped kernels (g's kernel size and stride 1
    serve it): dy padded into the image's part of the scratch, and the
    group's dx (a.group images, Winograd; else one) in one call at its last."""
    cdef Window g = a.g
    cdef Py_ssize_t G = a.group, j = (n - n0) % G, hwf = <Py_ssize_t>a.Hd * a.Wd * a.F
    cdef Py_ssize_t hwc = g.H * g.W * g.C
    cc_pad_image(dyp, g.OH, g.OW, a.F, g.KH - 1 - g.PT, g.KW - 1 - g.PL, a.Hd, a.Wd,
                 s.dy_pad + j * hwf)
    if j == G - 1 or n == n1 - 1:
        _convolve(a, s.dy_pad, hwf, a.Wd, a.F, <int>g.H, <int>g.W, a.wt, <int>g.C, NULL,
                  a.dx + (n - j) * hwc, hwc, <int>(j + 1), 0, s.wino)


cdef Py_ssize_t _backward_slot(const Images* a, Scratch* s, Py_ssize_t n0, Py_ssize_t n1,
                               float* dw, Py_ssize_t KF) noexcept nogil:
    """Images n0..n1 of one slot, in order, their gradients added into the
    slot's dw (KF) and db (F, after it); returns the argmax entries out of place."""
    cdef Py_ssize_t n, n_bad = 0
    cdef const float* dyp
    cdef int q[2]                # Winograd's block: tiles in it, whether M holds a sum
    q[0] = q[1] = 0
    if a.winograd and n1 > n0:   # the slot's first products set its M
        memset(dw + KF, 0, a.F * sizeof(float))
    else:
        memset(dw, 0, (KF + a.F) * sizeof(float))
    for n in range(n0, n1):
        dyp = _image_dy(a, s, n, dw + KF, &n_bad)
        _image_dw(a, s, n, dyp, dw, q)
        if a.dx != NULL:
            _image_dx(a, s, n, dyp, n0, n1)
    if a.winograd:
        a.k.wino_dw_flush(<int>a.g.C, a.F, dw, q, s.wino_dw)
    return n_bad


cdef struct Slots:             # the slots of a sliced batch: per_slice slots a slice
    Py_ssize_t n_slices, per_slice, KF, KW, F
    int* n0                     # each slot's first image and end (an empty slot: n0 == n1)
    int* n1
    float* parts                # each slot's dw (KF: Winograd's M) and db (F)
    float* dws                  # Winograd: each slice's dw (KW) and db (F); else NULL


cdef int _slots_new(Slots* t, const int* bounds, Py_ssize_t n_slices, Py_ssize_t max_slots,
                    Py_ssize_t KF, Py_ssize_t KW, Py_ssize_t F, bint winograd) noexcept nogil:
    """Cut each slice into per_slice = max_slots // n_slices slots of consecutive
    images (a number fixed by the slicing alone, never by the threads or the
    processes). -1: out of memory."""
    cdef Py_ssize_t sl, j, n_s, per, k
    t.n_slices, t.KF, t.KW, t.F = n_slices, KF, KW, F
    t.per_slice = max(1, max_slots // n_slices)
    k = n_slices * t.per_slice
    t.n0 = <int*>malloc(k * sizeof(int))
    t.n1 = <int*>malloc(k * sizeof(int))
    t.parts = alloc64(k * (KF + F))
    t.dws = alloc64(n_slices * (KW + F)) if winograd else NULL
    if t.n0 == NULL or t.n1 == NULL or t.parts == NULL or (winograd and t.dws == NULL):
        return -1
    for sl in range(n_slices):
        n_s = bounds[sl + 1] - bounds[sl]
        per = max(1, (n_s + t.per_slice - 1) // t.per_slice)
        for j in range(t.per_slice):
            t.n0[sl * t.per_slice + j] = <int>min(bounds[sl] + j * per, bounds[sl + 1])
            t.n1[sl * t.per_slice + j] = <int>min(bounds[sl] + (j + 1) * per, bounds[sl + 1])
    return 0


cdef void _slots_free(Slots* t) noexcept nogil:
    free(t.n0)
    free(t.n1)
    free(t.parts)
    free(t.dws)


cdef void _slots_sum(const Images* a, Slots* t, float* dw, float* db,
                     int n_threads) noexcept nogil:
    """dw and db from the slots: each slice's slots added in order (its first
    slot, then each one not empty), Winograd's M transformed then; the
    slices' sums added in the pairwise tree (_slices.pxd), in parallel over
    blocks of gradient entries."""
    cdef Py_ssize_t sl, j, blk, e0, e1, BLOCK = 4096, F = t.F, KF = t.KF, KW = t.KW
    cdef Py_ssize_t stride = t.per_slice * (KF + F), per = t.per_slice
    cdef float* sums = t.parts
    for blk in prange((KF + F + BLOCK - 1) // BLOCK, schedule='static', num_threads=n_threads):
        e0 = blk * BLOCK
        e1 = min(KF + F, e0 + BLOCK)
        for sl in range(t.n_slices):
            for j in range(1, per):
                if t.n1[sl * per + j] > t.n0[sl * per + j]:
                    _add_into(t.parts + sl * stride + e0,
                              t.parts + sl * stride + j * (KF + F) + e0, e1 - e0)
    if a.winograd:
        for sl in prange(t.n_slices, schedule='static', num_threads=n_threads):
            a.k.wino_dw_finish(t.parts + sl * stride, <int>a.g.KH, <int>a.g.C, <int>F,
                               t.dws + sl * (KW + F))
            memcpy(t.dws + sl * (KW + F) + KW, t.parts + sl * stride + KF, F * sizeof(float))
        sums, stride = t.dws, KW + F
    for blk in prange((KW + F + BLOCK - 1) // BLOCK, schedule='static', num_threads=n_threads):
        e0 = blk * BLOCK
        tree_sum(sums, t.n_slices, stride, e0, min(KW + F, e0 + BLOCK))
    memcpy(dw, sums, KW * sizeof(float))
    memcpy(db, sums + KW, F * sizeof(float))


cdef Py_ssize_t _backward_images(Images* a, const float[:, ::1] w, float[:, ::1] dw,
                                 float[::1] db, const int[::1] bounds, Py_ssize_t max_slots,
                                 int n_threads) except -1:
    """The images of each slice of the batch (bounds, _slices.pxd) in
    max_slots // slices slots of consecutive images (Winograd: fewer where a
    slot would have less than a block of tiles), one thread a slot; each
    slice's slots added in slot order (Winograd: its summed M transformed to
    dw), the slices in the pairwise tree: the same bits on any number of
    threads and, where processes hold whole slices, of processes. Returns
    the argmax entries out of place."""
    cdef Py_ssize_t C = a.g.C, F = a.F, KW = w.shape[0] * F, sl, n_bad = 0
    cdef Py_ssize_t KF = 36 * C * F if a.winograd else KW   # a slot's dw part
    cdef Py_ssize_t m = 7 - a.g.KH, tiles
    cdef Slots t
    if a.winograd:   # each slot's tiles fill a block at least: M (36, C, F) is large
        tiles = ((a.g.OH + m - 1) // m) * ((a.g.OW + m - 1) // m)
        max_slots = max(1, min(max_slots, bounds[bounds.shape[0] - 1] * tiles // CC_WINO_TBW))
    cdef Scratch s
    cdef int n_failed = 0
    cdef float* wt = alloc64(w.shape[0] * F) if a.dx != NULL else NULL
    memset(&t, 0, sizeof(Slots))
    try:
        if _slots_new(&t, &bounds[0], bounds.shape[0] - 1, max_slots, KF, KW, F,
                      a.winograd) or (a.dx != NULL and wt == NULL):
            raise MemoryError("conv2d_backward: could not allocate the gradient slots")
        if a.dx != NULL:
            cc_flip_kernels(a.w, a.g.KH, a.g.KW, <int>C, <int>F, wt)
            a.wt = wt
            if a.winograd:
                a.U = _wino_kernels(a.k, wt, <int>a.g.KH, <int>F, <int>C)
                if a.U == NULL:
                    raise MemoryError("conv2d_backward: could not allocate the Winograd kernels")
        with nogil, parallel(num_threads=n_threads):
            s = _scratch_new(a, True)
            for sl in prange(t.n_slices * t.per_slice, schedule='dynamic'):
                if not _scratch_ok(&s, a, True):
                    n_failed += 1
                    continue
                n_bad += _backward_slot(a, &s, t.n0[sl], t.n1[sl], t.parts + sl * (KF + F), KF)
            _scratch_free(&s)
        if n_failed:
            raise MemoryError("conv2d_backward: could not allocate the image scratch")
        _slots_sum(a, &t, &dw[0, 0], &db[0], n_threads)
    finally:
        _slots_free(&t)
        free(wt)
        free(<float*>a.U)
    return n_bad


cdef Images _backward_setup(const float[:, :, :, ::1] x, const float[:, ::1] w,
                            float[:, :, :, ::1] dx, Window g, int kernels, bint winograd,
                            const float[:, :, :, ::1] relu_y):
    cdef Images a = _images(x, w, g, kernels, winograd)
    a.dx = &dx[0, 0, 0, 0] if dx is not None else NULL
    a.relu_y = &relu_y[0, 0, 0, 0] if relu_y is not None else NULL
    a.Hd = _padded(g.H, 1, g.KH, winograd)        # dy, padded for the dx convolution
    a.Wd = _padded(g.W, 1, g.KW, winograd)
    if winograd and dx is not None:
        a.group = _wino_group(g.H, g.W, g.KH)
    return a


def conv2d_backward_direct(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                           const float[:, ::1] w,          # IN  (KH*KW*C, F), F % 16 == 0
                           const float[:, :, :, ::1] dy,   # IN  (N, OH, OW, F)
                           float[:, :, :, ::1] dx,         # OUT (N, H, W, C) or None;
                                                           #     needs stride 1, C % 16 == 0
                           float[:, ::1] dw,               # OUT (KH*KW*C, F)
                           float[::1] db,                  # OUT (F,)
                           Window g, Py_ssize_t max_slots, int n_threads, int kernels,
                           const int[::1] bounds,          # IN  the batch's slices (_slices.pxd)
                           const float[:, :, :, ::1] relu_y=None,  # IN (N, OH, OW, F) or None
                           bint winograd=False, bint round_dy=False):
    """dw, db and dx of conv2d_forward_direct, image by image, in the slots of
    each slice (_backward_images). dx of an image is the forward kernel run on its
    (masked) dy with the flipped kernels. With winograd (5x5 or 3x3 kernels,
    stride 1, C % 16 == 0) both run as Winograd F(2x2, 5x5) or F(4x4, 3x3):
    dx as the forward, dw as its transpose, the slots holding the transformed
    gradient M (36, C, F). round_dy: dy taken as rounded to bfloat16
    (_image_dy), as a bf16 product's operand on the float32 kernels."""
    dw[:, :] = 0
    db[:] = 0
    if x.shape[0] == 0:
        return
    cdef Images a = _backward_setup(x, w, dx, g, kernels, winograd, relu_y)
    a.dy, a.round_dy = &dy[0, 0, 0, 0], round_dy
    _backward_images(&a, w, dw, db, bounds, max_slots, n_threads)


def conv2d_maxpool_backward_direct(
        const float[:, :, :, ::1] x,         # IN  (N, H, W, C)
        const float[:, ::1] w,               # IN  (KH*KW*C, F), F % 16 == 0
        const float[:, :, :, ::1] dy,        # IN  the pool's (N, PH, PW, F)
        const int[:, :, :, ::1] argmax,      # IN  the pool's (N, PH, PW, F)
        float[:, :, :, ::1] dx,              # OUT (N, H, W, C) or None (as above)
        float[:, ::1] dw,                    # OUT (KH*KW*C, F)
        float[::1] db,                       # OUT (F,)
        Window g, Window pg, Py_ssize_t max_slots, int n_threads, int kernels,
        const int[::1] bounds,               # IN  the batch's slices (_slices.pxd)
        const float[:, :, :, ::1] relu_y=None,   # IN the pooled output (N, PH, PW, F) or None
        bint winograd=False, bint round_dy=False):
    """conv2d_backward_direct of the fused convolution + max-pool: each image's
    dy of the convolution is first sent from the pool's dy, argmax and (ReLU)
    relu_y into the thread's scratch (unpool_image: a gather where the pool
    window pg does not overlap), never stored. Returns how many argmax entries
    lie outside their own window. round_dy: as conv2d_backward_direct's."""
    dw[:, :] = 0
    db[:] = 0
    if x.shape[0] == 0:
        return 0
    cdef Images a = _backward_setup(x, w, dx, g, kernels, winograd, relu_y)
    a.dy, a.argmax, a.pg, a.round_dy = &dy[0, 0, 0, 0], &argmax[0, 0, 0, 0], pg, round_dy
    return _backward_images(&a, w, dw, db, bounds, max_slots, n_threads)


# ------------------------------------------------------------ bf16 kernels
# precision="bf16" on AMX or AVX512-BF16 (_bf16_gemm.h): the images rounded
# to bfloat16 once into a padded copy (no window reaches past its edge, so
# sections are whole-vector copies), packed straight into the kernels' layout.
#   forward:  y = sections(xb) @ w (+ b), items of `group` images; at stride
#             1 with kernel rows of whole 32-value slices, sections read in
#             place (_forward_in_place)
#   backward: dw^T = sum over items of dy^T @ sections(xb) (slots: as above),
#             or in place dw = S^T @ dy (stride 1, channels a multiple of 32);
#             db = sum dy in float32; dx = the forward of dy (stride 1) with
#             the flipped kernels wt over the window gt (_api.py makes both)

cdef extern from "_bf16_gemm.h" nogil:
    size_t cc_up32(size_t v)
    void cc_narrow_bf16(const float* x, const float* relu_y, uint16_t* y, Py_ssize_t n)
    void cc_pack_b(int trans, int n, int k, const float* b, int ldb, uint32_t* pb, size_t kp)
    ctypedef struct cc_epilogue:
        const float* bias   # NULL, or C's first value: a row, n long
        int relu            # C := max(C, 0) after
        float* to           # NULL, or where C's rows go (of a padded image's w columns:
        size_t w, ow_n, oh_n, row, col   # (oh, ow) to to + oh row + ow col, ow < ow_n)
        uint16_t* tob       # NULL, or where the bfloat16 bits of C's rows go so (not to)
    cc_epilogue cc_epilogue_of(const float* bias, int relu)
    void cc_gemm_bf16_packed(int kernel, size_t m, size_t n, size_t kp, const uint16_t* pa,
                             const uint32_t* pb, float beta, float* c, size_t ldc, int tc,
                             const cc_epilogue* ep)
    void cc_gemm_bf16_rows(int kernel, size_t m, size_t n, size_t kp, const uint16_t* a,
                           size_t lda, const size_t* aoff, const size_t* roff,
                           const uint32_t* pb, float beta, float* c, size_t ldc, int tc,
                           const cc_epilogue* ep)
    int cc_narrow_transposed_bf16(const float* x, int H, int W, int C, int PT, int PL, int Hp,
                                  int Wp, uint16_t* y)
    int cc_transposed_bits_bf16(const uint16_t* x, int H, int W, int C, int PT, int PL, int Hp,
                                int Wp, uint16_t* y)
    void cc_narrow_padded_bf16(const float* x, const float* relu_y, int H, int W, int C,
                               int PT, int PL, int Hp, int Wp, uint16_t* y)
    void cc_pad_bf16(const uint16_t* x, int H, int W, int C, int PT, int PL, int Hp, int Wp,
                     uint16_t* y)
    void cc_im2col_bf16(const uint16_t* xp, int Wp, int C, int KH, int KW, int SH, int SW,
                        int OW, int p0, int p1, uint16_t* rows, size_t kp)
    enum: CC_SLACK
    void cc_pair_vnni(const uint16_t* r0, const uint16_t* r1, size_t np, size_t p, size_t kp,
                      uint32_t* pb)
    void cc_rows_transposed(const uint16_t* rows, size_t ld, size_t m, size_t k, size_t kp,
                            uint16_t* pa)
    void cc_sum_rows(const float* x, const float* relu_y, size_t rows, size_t n, float* acc)

DEF NARROW_CHUNK = 16384   # elements a work item of _narrowed


cdef uint16_t* _narrowed(const float* x, const float* relu_y, Py_ssize_t n,
                         int n_threads, uint16_t* into=NULL) noexcept nogil:
    """x (masked by relu_y > 0 where given) in bfloat16, into `into` where
    given, else into new memory; NULL: no memory."""
    cdef uint16_t* y = into if into != NULL else \
        <uint16_t*>aligned_alloc(64, ((n * 2 + 63) // 64) * 64 + 64)
    cdef Py_ssize_t c
    if y == NULL:
        return NULL
    for c in prange((n + NARROW_CHUNK - 1) // NARROW_CHUNK, schedule='static',
                    num_threads=n_threads):
        cc_narrow_bf16(x + c * NARROW_CHUNK, relu_y + c * NARROW_CHUNK if relu_y else NULL,
                       y + c * NARROW_CHUNK, min(n, (c + 1) * NARROW_CHUNK) - c * NARROW_CHUNK)
    return y


cdef Window _grown(Window g) noexcept nogil:
    """g over its image padded (cc_narrow_padded_bf16): no padding, the image
    grown to hold every window."""
    cdef Window p = g
    p.H = max(g.H + g.PT, (g.OH - 1) * g.SH + g.KH)
    p.W = max(g.W + g.PL, (g.OW - 1) * g.SW + g.KW)
    p.PT = 0
    p.PL = 0
    return p


cdef uint16_t* _narrowed_padded(const float* x, const float* relu_y, Window g, Py_ssize_t N,
                                int n_threads, const uint16_t* xh=NULL) noexcept nogil:
    """N images x (window g's; masked by relu_y > 0 where given) in bfloat16,
    padded (window _grown(g)), zeros after (_padded_images); or NULL: no
    memory. xh (x NULL): the images' bfloat16 bits, padded as they are."""
    cdef Window p = _grown(g)
    cdef Py_ssize_t n, size = p.H * p.W * p.C, src = g.H * g.W * g.C
    cdef uint16_t* y = _padded_images(g, N)
    if y == NULL:
        return NULL
    for n in prange(N, schedule='static', num_threads=n_threads):
        if xh != NULL:
            cc_pad_bf16(xh + n * src, <int>g.H, <int>g.W, <int>g.C, <int>g.PT, <int>g.PL,
                        <int>p.H, <int>p.W, y + n * size)
        else:
            _narrow_image(x + n * src, relu_y + n * src if relu_y else NULL, g, y + n * size)
    return y


cdef inline void _narrow_image(const float* x, const float* relu_y, Window g,
                               uint16_t* y) noexcept nogil:
    """One image x (window g's) into its padded bf16 place y (cc_narrow_padded_bf16)."""
    cdef Window p = _grown(g)
    cc_narrow_padded_bf16(x, relu_y, <int>g.H, <int>g.W, <int>g.C, <int>g.PT, <int>g.PL,
                          <int>p.H, <int>p.W, y)


cdef inline Py_ssize_t _slack(Window g) noexcept nogil:
    """u16 past the last padded image (window _grown(g)) that the sections
    read (cc_im2col_bf16; _forward_in_place): zeros there."""
    return CC_SLACK + 32 * g.C + g.KW * g.C


cdef uint16_t* _padded_images(Window g, Py_ssize_t N) noexcept nogil:
    """Room for N padded bf16 images (window _grown(g)), and after them zeros
    (_slack); or NULL: no memory."""
    cdef Window p = _grown(g)
    cdef Py_ssize_t size = p.H * p.W * p.C, slack = _slack(g)
    cdef uint16_t* y = <uint16_t*>aligned_alloc(64, ((N * size + slack) * 2 + 63) // 64 * 64)
    if y != NULL:
        memset(y + N * size, 0, slack * 2)
    return y


cdef uint32_t* _packed_kernels(const float* w, Py_ssize_t K, Py_ssize_t F) noexcept nogil:
    """w (K, F) as the kernels' B operand, or NULL: no memory."""
    cdef size_t kp = cc_up32(K), np = cc_up32(F)
    cdef uint32_t* pw = <uint32_t*>aligned_alloc(64, np * kp * 2)
    if pw != NULL:
        memset(pw, 0, np * kp * 2)
        cc_pack_b(0, <int>F, <int>K, w, <int>F, pw, kp)
    return pw


cdef void _sections(const uint16_t* xp, Window g, Py_ssize_t n0, Py_ssize_t n1,
                    uint16_t* rows, size_t ld, Py_ssize_t p0=0, Py_ssize_t p1=-1) noexcept nogil:
    """Images n0..n1's sections (of rows p0..p1 of each; all by default), rows
    of length ld, one after another; xp padded (_narrowed_padded), g its
    window (_grown)."""
    cdef Py_ssize_t n, P = g.OH * g.OW
    if p1 < 0:
        p1 = P
    for n in range(n0, n1):
        cc_im2col_bf16(xp + n * g.H * g.W * g.C, <int>g.W, <int>g.C, <int>g.KH, <int>g.KW,
                       <int>g.SH, <int>g.SW, <int>g.OW, <int>p0, <int>p1,
                       rows + (n - n0) * (p1 - p0) * ld, ld)


cdef void _sections_vnni(const uint16_t* xb, Window g, Py_ssize_t n0, Py_ssize_t n1,
                         uint16_t* pair, size_t ld, size_t kr, uint32_t* pb) noexcept nogil:
    """Images n0..n1's sections (rows of length ld) as the kernels' B operand:
    rows 2p and 2p + 1 side by side (VNNI), zeros past the last up to kr; each
    pair made in `pair` (2 x ld, the thread's), in cache."""
    cdef Py_ssize_t P = g.OH * g.OW, rows = (n1 - n0) * P, q, n, i
    for q in range(0, kr, 2):
        for i in range(2):
            if q + i < rows:
                n = n0 + (q + i) // P
                _sections(xb, g, n, n + 1, pair + i * ld, ld, (q + i) % P, (q + i) % P + 1)
        cc_pair_vnni(pair if q < rows else NULL, pair + ld if q + 1 < rows else NULL, ld,
                     q // 2, kr, pb)


cdef bint _in_place = True   # _forward_in_place where it applies (off: for tests)


def use_sections_in_place(bint on):
    """Whether the bf16 forward reads sections in place where it can (the
    default) or always makes them; for the tests (the same bits either way)
    and benchmarks."""
    global _in_place
    _in_place = on


cdef size_t* _slices_in_place(Window g) noexcept nogil:
    """Where each 32-value slice of a section (k = (i, j, c)) starts, from the
    window's first cell, in the padded image (g: _grown) when kernel rows are
    whole slices (KW * C a multiple of 32); or NULL: not so, or no memory."""
    cdef size_t run = g.KW * g.C, t
    cdef size_t* aoff = NULL
    if not _in_place or g.SH != 1 or g.SW != 1 or run % 32 != 0:
        return NULL
    aoff = <size_t*>malloc(g.KH * (run // 32) * sizeof(size_t))
    if aoff != NULL:
        for t in range(g.KH * (run // 32)):
            aoff[t] = (t * 32 // run) * g.W * g.C + (t * 32) % run
    return aoff


cdef struct Source:     # where a bf16 forward's images are, padded (window _grown(g0))
    const uint16_t* xb  # all of them (_narrowed_padded), or NULL: each item narrows
    const float* x      # its own from x (window g0) into the thread's scratch
    Window g0           # (_padded_images(g0, its images)), in cache when read;
    const uint16_t* xh  # or, where not NULL, pads its own from xh (x in bfloat16)


cdef const uint16_t* _item_images(const Source* s, Py_ssize_t n0, Py_ssize_t n1,
                                  uint16_t* xs) noexcept nogil:
    """Images n0..n1 of s padded in bf16, one after another: where s.xb holds
    them, else narrowed now into xs."""
    cdef Window p = _grown(s.g0)
    cdef Py_ssize_t n, size = p.H * p.W * p.C, src = s.g0.H * s.g0.W * s.g0.C
    if s.xb != NULL:
        return s.xb + n0 * size
    for n in range(n0, n1):
        if s.xh != NULL:
            cc_pad_bf16(s.xh + n * src, <int>s.g0.H, <int>s.g0.W, <int>s.g0.C, <int>s.g0.PT,
                        <int>s.g0.PL, <int>p.H, <int>p.W, xs + (n - n0) * size)
        else:
            _narrow_image(s.x + n * src, NULL, s.g0, xs + (n - n0) * size)
    return xs


cdef struct Out:        # where a bf16 forward's output (unpooled) goes: position (n, oh, ow)'s
    float* y            # F values at y + n * image + oh * row + ow * col (dense: _dense;
    Py_ssize_t image, row, col   # a phase of a strided convolution's dx: _phase_dx),
    uint16_t* yb        # or where not NULL, their bfloat16 bits there in yb (dense)


cdef inline Out _dense(float* y, Py_ssize_t OH, Py_ssize_t OW, Py_ssize_t F) noexcept nogil:
    cdef Out o
    o.y, o.image, o.row, o.col, o.yb = y, OH * OW * F, OW * F, F, NULL
    return o


cdef inline void _put_row(const Out* o, const float* yr, Py_ssize_t n, Py_ssize_t oh,
                          Py_ssize_t OW, Py_ssize_t F) noexcept nogil:
    """Output row oh of image n (OW positions of F values at yr) to its place."""
    cdef float* dst = o.y + n * o.image + oh * o.row
    cdef Py_ssize_t ow
    if o.yb != NULL:
        cc_narrow_bf16(yr, NULL, o.yb + n * o.image + oh * o.row, OW * F)
        return
    if o.col == F:
        memcpy(dst, yr, OW * F * sizeof(float))
        return
    for ow in range(OW):
        memcpy(dst + ow * o.col, yr + ow * F, F * sizeof(float))


cdef inline void _pool_to(const cc_kernel_set* pk, const float* yc, Window pg, Py_ssize_t oh,
                          Py_ssize_t n, float* y, uint16_t* yb, float* pr, int* argmax,
                          bint pool_relu) noexcept nogil:
    """Pool row oh of image n's output yc (window pg) into y (and argmax), or
    where yb is given, its bfloat16 bits into yb (through pr, the thread's
    row of pg.OW x pg.C floats)."""
    cdef Py_ssize_t at = (n * pg.OH + oh) * pg.OW * pg.C
    if yb == NULL:
        pool_row(pk, yc, pg, oh, y + at, argmax + at if argmax != NULL else NULL, pool_relu)
        return
    pool_row(pk, yc, pg, oh, pr, NULL, pool_relu)
    cc_narrow_bf16(pr, NULL, yb + at, pg.OW * pg.C)


cdef inline cc_epilogue _to_places(cc_epilogue ep, const Out* o, Py_ssize_t n,
                                   Window g) noexcept nogil:
    """ep with image n's output (window g: _grown) written by the product
    straight to o's places (float32, or o.yb's bfloat16 bits), not kept in
    its scratch."""
    ep.to = o.y + n * o.image if o.yb == NULL else NULL
    ep.tob = o.yb + n * o.image if o.yb != NULL else NULL
    ep.w, ep.ow_n, ep.oh_n, ep.row, ep.col = g.W, g.OW, g.OH, o.row, o.col
    return ep


cdef inline void _image_in_place(int kernel, const uint16_t* image, Window g,
                                 const uint32_t* pw, const size_t* aoff, Py_ssize_t F,
                                 const cc_epilogue* ep, float* yc) noexcept nogil:
    """One padded image's outputs (window g: _grown) at every column of its
    rows into yc (up32(OH * W) rows of F; whole blocks), or to ep's places
    (_to_places; yc then carries the sums between slices of k), read in place
    (aoff: _slices_in_place)."""
    cc_gemm_bf16_rows(kernel, cc_up32(g.OH * g.W), F, cc_up32(g.KH * g.KW * g.C), image, g.C,
                      aoff, NULL, pw, 0.0, yc, F, 0, ep)


cdef int _forward_in_place(int kernel, const Source* src, Window g, const uint32_t* pw,
                           const size_t* aoff, Py_ssize_t N, Py_ssize_t F,
                           const cc_epilogue* ep, float* y, uint16_t* yb, const Out* o,
                           int n_threads, const cc_kernel_set* pk, Window* pg, int* argmax,
                           bint pool_relu) noexcept nogil:
    """_forward_bf16 at stride 1 with kernel rows of whole slices (aoff:
    _slices_in_place): no sections made; an image's outputs at every column of
    the padded image (the A rows at a uniform step there, cc_gemm_bf16_rows),
    the first OW of each row kept (unpooled float32: written there by the
    product, _to_places; else through yc to o's places). The same sums in
    the same order as _forward_bf16's: the same bits. Where no argmax is kept
    and no pool window reaches past column OW, the pool reads the rows where
    they are (its window over rows of W columns), else from the first OW of
    each row moved together; pool_relu: the pool applies the ReLU (ep has
    none); yb: the pooled output in bfloat16 instead of y. The images that
    had no scratch."""
    cdef Py_ssize_t rows = g.OH * g.W, n, oh
    cdef float* yc = NULL   # (firstprivate in the parallel block, as xs and pr)
    cdef uint16_t* xs = NULL
    cdef float* pr = NULL
    cdef int n_failed = 0
    cdef Window wide
    cdef cc_epilogue e
    cdef bint direct = pk == NULL   # unpooled: straight to o (float32 or bits)
    cdef bint pool_wide = pk != NULL and argmax == NULL \
        and (pg.OW - 1) * pg.SW - pg.PL + pg.KW <= g.OW
    if pool_wide:
        wide = pg[0]
        wide.W = g.W
    with parallel(num_threads=n_threads):
        yc = alloc64(cc_up32(rows) * F)
        xs = _padded_images(src.g0, 1) if src.xb == NULL else NULL
        pr = alloc64(pg.OW * F) if yb != NULL else NULL
        for n in prange(N, schedule='dynamic'):
            if yc == NULL or (src.xb == NULL and xs == NULL) or (yb != NULL and pr == NULL):
                n_failed += 1
                continue
            e = _to_places(ep[0], o, n, g) if direct else ep[0]
            _image_in_place(kernel, _item_images(src, n, n + 1, xs), g, pw, aoff, F, &e, yc)
            if direct:
                continue
            if pool_wide:
                for oh in range(pg.OH):
                    _pool_to(pk, yc, wide, oh, n, y, yb, pr, NULL, pool_relu)
                continue
            for oh in range(g.OH):
                if pk == NULL:
                    _put_row(o, yc + oh * g.W * F, n, oh, g.OW, F)
                else:
                    memmove(yc + oh * g.OW * F, yc + oh * g.W * F, g.OW * F * sizeof(float))
            if pk != NULL:
                for oh in range(pg.OH):
                    _pool_to(pk, yc, pg[0], oh, n, y, yb, pr, argmax, pool_relu)
        free(yc)
        free(xs)
        free(pr)
    return n_failed


cdef void _from_scratch(const float* yc, Py_ssize_t n0, Py_ssize_t n1, Window g, Py_ssize_t F,
                        const Out* o, const cc_kernel_set* pk, Window* pg, float* y,
                        uint16_t* yb, float* pr, int* argmax, bint pool_relu) noexcept nogil:
    """Images n0..n1's output in the thread's scratch yc (P rows each) to where
    it goes: pooled (pk, window pg) into y (and argmax; or yb: _pool_to), else
    to o's places."""
    cdef Py_ssize_t P = g.OH * g.OW, n, oh
    for n in range(n0, n1):
        if pk == NULL:
            for oh in range(g.OH):
                _put_row(o, yc + ((n - n0) * P + oh * g.OW) * F, n, oh, g.OW, F)
            continue
        for oh in range(pg.OH):
            _pool_to(pk, yc + (n - n0) * P * F, pg[0], oh, n, y, yb, pr, argmax, pool_relu)


cdef int _forward_bf16(int kernel, const Source* src, Window g, const uint32_t* pw,
                       Py_ssize_t N, Py_ssize_t F, const float* b, bint relu, float* y,
                       Py_ssize_t group, int n_threads, const cc_kernel_set* pk=NULL,
                       Window* pg=NULL, int* argmax=NULL, const Out* out=NULL,
                       uint16_t* yb=NULL) noexcept nogil:
    """y (N, OH, OW, F) = sections(src) @ w (+ b) (or to out's places where
    given: through the thread's scratch); with the pool kernels pk, y
    is the pooled (N, PH, PW, F) (window pg; and argmax where given; or, yb
    given, its bfloat16 bits there), the convolution's output staying in the
    thread's scratch (where no argmax is kept, stored before its ReLU, which
    the pool applies); _forward_in_place where it applies. The items that had
    no scratch."""
    cdef Py_ssize_t P = g.OH * g.OW, n_items = (N + group - 1) // group, it, n0, n1, rows
    cdef size_t kp = cc_up32(g.KH * g.KW * g.C)
    cdef uint16_t* pa = NULL   # (firstprivate in the parallel block, as yc and xs)
    cdef float* yc = NULL
    cdef uint16_t* xs = NULL
    cdef float* pr = NULL
    cdef float* yp
    cdef int n_failed = 0
    cdef bint pool_relu = relu and pk != NULL and argmax == NULL
    cdef Out o = out[0] if out != NULL else _dense(y, g.OH, g.OW, F)
    cdef bint scattered = out != NULL and pk == NULL   # the output through yc to o
    cdef cc_epilogue ep = cc_epilogue_of(b, relu and not pool_relu)
    cdef size_t* aoff = _slices_in_place(g)
    if aoff != NULL:
        n_failed = _forward_in_place(kernel, src, g, pw, aoff, N, F, &ep, y, yb, &o, n_threads,
                                     pk, pg, argmax, pool_relu)
        free(aoff)
        return n_failed
    with parallel(num_threads=n_threads):
        pa = <uint16_t*>aligned_alloc(64, (cc_up32(group * P) * kp + CC_SLACK) * 2)
        yc = alloc64(cc_up32(group * P) * F) if pk != NULL or scattered else NULL
        xs = _padded_images(src.g0, group) if src.xb == NULL else NULL
        pr = alloc64(pg.OW * F) if yb != NULL else NULL
        for it in prange(n_items, schedule='dynamic'):
            if pa == NULL or ((pk != NULL or scattered) and yc == NULL) \
                    or (src.xb == NULL and xs == NULL) or (yb != NULL and pr == NULL):
                n_failed += 1
                continue
            n0 = it * group
            n1 = min(N, n0 + group)
            rows = (n1 - n0) * P
            _sections(_item_images(src, n0, n1, xs), g, 0, n1 - n0, pa, kp)
            memset(pa + rows * kp, 0, (cc_up32(rows) - rows) * kp * 2)
            yp = yc if pk != NULL or scattered else y + n0 * P * F   # (yc: whole blocks)
            cc_gemm_bf16_packed(kernel, rows if yp != yc else cc_up32(rows), F, kp, pa, pw,
                                0.0, yp, F, 0, &ep)
            if yp == yc:
                _from_scratch(yc, n0, n1, g, F, &o, pk, pg, y, yb, pr, argmax, pool_relu)
        free(pa)
        free(yc)
        free(xs)
        free(pr)
    return n_failed


def conv2d_forward_bf16(const float[:, :, :, ::1] x,    # IN  (N, H, W, C)
                        const float[:, ::1] w,          # IN  (KH*KW*C, F)
                        const float[::1] b,             # IN  (F,) or None
                        float[:, :, :, ::1] y,          # OUT (N, OH, OW, F), or pooled
                        Window g, Py_ssize_t group, int n_threads, bint relu, int kernel,
                        Window pg, int pool_kernels=-1,
                        int[:, :, :, ::1] argmax=None,   # OUT (N, PH, PW, F) or None
                        tuple phase=None,
                        const uint16_t[:, :, :, ::1] xh=None,   # IN  x's bf16 bits (x None)
                        uint16_t[:, :, :, ::1] yb=None):        # OUT y's bf16 bits (y None)
    """y = sections(x) @ w (+ b) (then max(y, 0) if relu) in bf16 (kernel:
    _bf16_gemm.h's CC_BF16_AMX or CC_BF16_AVX512); with pool_kernels (a
    kernel set's number), y = its max-pool over the window pg (the argmax
    written where given: training), the convolution's output never stored;
    yb (y None) takes the output's bfloat16 bits (pooled: without argmax).
    xh (x None): the images' bfloat16 bits. phase (a, b, SH, SW): y is a
    strided convolution's input gradient (N, H, W, F), this output its rows
    a, a + SH, ... and columns b, b + SW, ... (the rest of y untouched)."""
    cdef Py_ssize_t N = xh.shape[0] if x is None else x.shape[0], K = w.shape[0], F = w.shape[1]
    cdef int n_failed = 1
    cdef Out o = _dense(NULL, g.OH, g.OW, F)   # (unused but for a phase, or bits unpooled)
    if N == 0:
        return
    if phase is not None:
        o.y = &y[0, phase[0], phase[1], 0]
        o.image, o.row = y.shape[1] * y.shape[2] * F, phase[2] * y.shape[2] * F
        o.col = phase[3] * F
    elif y is None and pool_kernels < 0:    # unpooled, in bfloat16
        o.yb = &yb[0, 0, 0, 0]
    cdef const cc_kernel_set* pk = kernel_set(pool_kernels) if pool_kernels >= 0 else NULL
    cdef const float* bp = &b[0] if b is not None else NULL
    cdef int* am = &argmax[0, 0, 0, 0] if argmax is not None else NULL
    cdef Source src
    src.xb = NULL   # (each item narrows, or pads, its images)
    src.x = &x[0, 0, 0, 0] if x is not None else NULL
    src.xh = &xh[0, 0, 0, 0] if x is None else NULL
    src.g0 = g
    cdef uint32_t* pw = _packed_kernels(&w[0, 0], K, F)
    if pw != NULL:
        n_failed = _forward_bf16(kernel, &src, _grown(g), pw, N, F, bp, relu,
                                 &y[0, 0, 0, 0] if y is not None else NULL, group, n_threads, pk,
                                 &pg, am, &o if phase is not None or o.yb != NULL else NULL,
                                 &yb[0, 0, 0, 0] if y is None and pk != NULL else NULL)
    free(pw)
    if n_failed:
        raise MemoryError("conv2d_forward: could not allocate the bf16 scratch")


# dw in place (stride 1, channels a multiple of 32): dw (K, F) = S^T @ dy with
# A = S^T read where it is in a channels-first padded copy xt (C, Hp, Wp) of
# each image: row k = (i, j, c) of S^T, over the positions p = oh * Wp + ow
# of the padded width, is plane c from cell (i, j) on, contiguous; dy's rows
# at those positions (zero at ow >= OW and past the image) are B's. Products
# at the zero rows vanish where x is finite (checked; else sections are made).

cdef uint16_t* _narrowed_transposed(const float* x, const uint16_t* xh, Window g, Py_ssize_t N,
                                    int n_threads) noexcept nogil:
    """The images x (or, x NULL, their bfloat16 bits xh) channels first in
    bfloat16 (N, C, Hp, Wp; window _grown(g)), zeros after; NULL where x is
    not all finite, g not of the kind, or no memory."""
    cdef Window p = _grown(g)
    cdef Py_ssize_t n, size = p.C * p.H * p.W, slack = 2 * CC_SLACK + g.KW
    cdef int bad = 0
    cdef uint16_t* y = NULL
    if not _in_place or g.SH != 1 or g.SW != 1 or g.C % 32 != 0:
        return NULL
    y = <uint16_t*>aligned_alloc(64, ((N * size + slack) * 2 + 63) // 64 * 64)
    if y == NULL:
        return NULL
    for n in prange(N, schedule='static', num_threads=n_threads):
        if xh != NULL:
            bad += cc_transposed_bits_bf16(xh + n * g.H * g.W * g.C, <int>g.H, <int>g.W,
                                           <int>g.C, <int>g.PT, <int>g.PL, <int>p.H, <int>p.W,
                                           y + n * size)
        else:
            bad += cc_narrow_transposed_bf16(x + n * g.H * g.W * g.C, <int>g.H, <int>g.W,
                                             <int>g.C, <int>g.PT, <int>g.PL, <int>p.H,
                                             <int>p.W, y + n * size)
    memset(y + N * size, 0, slack * 2)
    if bad:
        free(y)
        return NULL
    return y


cdef struct DyRows:     # dy in bfloat16: its row (n, oh, ow) of F values at
    const uint16_t* at  # at + (n - first) * image + (oh * row + ow) * F (as _narrowed
    Py_ssize_t image, row, first   # made it, or inside _narrowed_padded's border)


cdef void _dw_item_in_place(const Images* a, const uint16_t* xt, DyRows d,
                            Py_ssize_t n0, Py_ssize_t n1, bint first, uint32_t* pb,
                            const size_t* aoff, const size_t* roff, float* dw) noexcept nogil:
    """Images n0..n1: dw (K, F) (+)= S^T @ dy, S^T from xt
    (_narrowed_transposed), set by the slot's first item; aoff: the slices'
    places in xt (_dy_slices). Scratch: pb, dy's rows (d) as B (group *
    up32(OH * Wp) deep)."""
    cdef Window g = _grown(a.g)
    cdef Py_ssize_t F = a.F, K = g.KH * g.KW * g.C, plane = g.H * g.W
    cdef size_t per = cc_up32(g.OH * g.W), kr = (n1 - n0) * per, q, i
    cdef Py_ssize_t n = n0, pos = 0, oh = 0, ow = 0   # row q's place, counted along
    cdef const uint16_t* r[2]
    for q in range(0, kr, 2):
        for i in range(2):
            r[i] = d.at + (n - d.first) * d.image + (oh * d.row + ow) * F \
                if oh < a.g.OH and ow < a.g.OW else NULL
            pos += 1
            ow += 1
            if ow == g.W:
                ow = 0
                oh += 1
            if pos == per:
                n, pos, oh, ow = n + 1, 0, 0, 0
        cc_pair_vnni(r[0], r[1], F, q // 2, kr, pb)
    cc_gemm_bf16_rows(a.bf16, K, F, kr, xt + n0 * g.C * plane, plane, aoff, roff, pb,
                      0.0 if first else 1.0, dw, F, 0, NULL)


cdef size_t* _rows_in_place(Window g) noexcept nogil:
    """Where each 32-row block of S^T (k = (i, j, c), C a multiple of 32)
    starts in an image's xt (g: _grown); NULL: no memory."""
    cdef size_t* roff = <size_t*>malloc((g.KH * g.KW * g.C // 32) * sizeof(size_t))
    cdef size_t blk, k0
    if roff != NULL:
        for blk in range(g.KH * g.KW * g.C // 32):
            k0 = blk * 32
            roff[blk] = (k0 % g.C) * g.H * g.W + (k0 // g.C // g.KW) * g.W + (k0 // g.C) % g.KW
    return roff


cdef size_t* _dy_slices(Window g, size_t kr) noexcept nogil:
    """Where each 32-value slice of dy's kr rows (group images of up32(OH *
    W) rows each; g: _grown) is read in an item's xt, for _dw_item_in_place:
    the same for every item. NULL: no memory."""
    cdef size_t per = cc_up32(g.OH * g.W), plane = g.H * g.W, t
    cdef size_t* aoff = <size_t*>malloc((kr // 32 + 1) * sizeof(size_t))
    if aoff != NULL:
        for t in range(kr // 32):
            aoff[t] = (t * 32 // per) * g.C * plane + (t * 32) % per
    return aoff


cdef Py_ssize_t _unpool_item(const Images* a, Py_ssize_t n0, Py_ssize_t n1,
                             float* dym) noexcept nogil:
    """Images n0..n1's dy of the convolution sent from the pool's (a.dy,
    a.argmax, a.relu_y: unpool_image) into dym, n1 - n0 images, and narrowed
    into their places in a.dy_narrow (_narrowed_padded's over the window
    a.gt); the argmax entries out of place."""
    cdef Window p = _grown(a.gt)
    cdef Py_ssize_t P = a.g.OH * a.g.OW * a.F, Q = a.pg.OH * a.pg.OW * a.F
    cdef Py_ssize_t n, n_bad = 0, size = p.H * p.W * p.C
    for n in range(n0, n1):
        n_bad += unpool_image(a.k, a.dy + n * Q, a.argmax + n * Q,
                              a.relu_y + n * Q if a.relu_y != NULL else NULL, a.pg,
                              dym + (n - n0) * P)
        _narrow_image(dym + (n - n0) * P, NULL, a.gt, a.dy_narrow + n * size)
    return n_bad


cdef Py_ssize_t _dw_item_bf16(const Images* a, const uint16_t* xb, DyRows d,
                              const uint16_t* xt, const size_t* roff,
                              Py_ssize_t n0, Py_ssize_t n1, bint first,
                              uint16_t* rows_s, uint32_t* pb, uint16_t* pa,  # scratch
                              float* dym, const size_t* aoff, float* dwt,
                              float* db) noexcept nogil:
    """Images n0..n1: dw^T (F, K) (+)= dy^T @ sections(xb) (d: as _narrowed
    made it), or with xt (_narrowed_transposed) dw (K, F) (+)= S^T @ dy in place
    (_dw_item_in_place), set by the slot's first item; db += sum dy (through
    the ReLU where a.relu_y is given: cc_sum_rows; not a.no_db). The thread's scratch:
    rows_s (2, up32(K)), a pair of sections; pb, the item's sections (or dy)
    as the kernels' B operand; pa (up32(F), up32(rows)), dy^T as their A
    (rows_s and pa NULL in place); dym (group*OH*OW, F), dy through the pool
    (with a.argmax only). aoff: _dy_slices, in place.
    With a pool (a.argmax: in place only), the items' dy is first sent from
    the pool's into dym and its padded bf16 copy (_unpool_item). Returns the
    argmax entries out of place."""
    cdef Window g = a.g
    cdef Py_ssize_t F = a.F, K = g.KH * g.KW * g.C, P = g.OH * g.OW
    cdef Py_ssize_t rows = (n1 - n0) * P, n_bad = 0
    cdef size_t ld = cc_up32(K), kr = cc_up32(rows)
    cdef const float* dyp = a.dy + n0 * P * F if a.dy != NULL else NULL   # db's rows
    cdef const float* ry = a.relu_y + n0 * P * F if a.relu_y != NULL else NULL
    if a.argmax != NULL:   # (through the pool and its ReLU: in dym)
        n_bad = _unpool_item(a, n0, n1, dym)
        dyp, ry = dym, NULL
    if xt != NULL:
        _dw_item_in_place(a, xt, d, n0, n1, first, pb, aoff, roff, dwt)
    else:
        _sections_vnni(xb, _grown(g), n0, n1, rows_s, ld, kr, pb)
        cc_rows_transposed(d.at + n0 * P * F, F, F, rows, kr, pa)
        cc_gemm_bf16_packed(a.bf16, F, K, kr, pa, pb, 0.0 if first else 1.0, dwt, K, 0, NULL)
    if not a.no_db:
        cc_sum_rows(dyp, ry, rows, F, db)
    return n_bad


cdef int _dw_bf16(const Images* a, const uint16_t* xb, DyRows d, const uint16_t* xt,
                  const size_t* roff, Py_ssize_t N, Py_ssize_t group,
                  Py_ssize_t per_slot, Py_ssize_t n_slots, float* parts,
                  int n_threads, Py_ssize_t* n_bad) noexcept nogil:
    """Each slot's dw^T (or with xt, in place: dw) and db (parts: n_slots x
    (F*K + F)); the items that had no scratch. n_bad: the argmax entries out
    of place (with a pool)."""
    cdef Py_ssize_t F = a.F, K = a.g.KH * a.g.KW * a.g.C, P = a.g.OH * a.g.OW
    cdef Py_ssize_t n_items = (N + group - 1) // group, sl, it
    cdef size_t ld = cc_up32(K), kr = cc_up32(group * P)
    cdef size_t kr_in_place = group * cc_up32(a.g.OH * _grown(a.g).W)
    cdef bint in_place = xt != NULL
    cdef size_t* aoff = _dy_slices(_grown(a.g), kr_in_place) if in_place else NULL
    cdef uint16_t* rows_s = NULL   # (firstprivate in the parallel block, as the next three)
    cdef uint32_t* pb = NULL
    cdef uint16_t* pa = NULL
    cdef float* dym = NULL
    cdef float* part
    cdef int n_failed = 0
    cdef bint need_dym = a.argmax != NULL
    cdef Py_ssize_t bad = 0
    if in_place and aoff == NULL:
        return n_items
    with parallel(num_threads=n_threads):
        rows_s = NULL if in_place else <uint16_t*>aligned_alloc(64, (2 * ld + CC_SLACK) * 2)
        pb = <uint32_t*>aligned_alloc(64, (kr_in_place * cc_up32(F) if in_place
                                           else kr * ld) * 2)
        pa = NULL if in_place else <uint16_t*>aligned_alloc(64, cc_up32(F) * kr * 2)
        dym = alloc64(group * P * F) if need_dym else NULL
        for sl in prange(n_slots, schedule='dynamic'):
            if pb == NULL or (not in_place and (rows_s == NULL or pa == NULL)) \
                    or (need_dym and dym == NULL):
                n_failed += 1
                continue
            part = parts + sl * (K * F + F)
            memset(part + K * F, 0, F * sizeof(float))
            for it in range(sl * per_slot, min(n_items, (sl + 1) * per_slot)):
                bad += _dw_item_bf16(a, xb, d, xt, roff, it * group, min(N, (it + 1) * group),
                                     it == sl * per_slot, rows_s, pb, pa, dym, aoff, part,
                                     part + K * F)
        free(rows_s)
        free(pb)
        free(pa)
        free(dym)
    free(aoff)
    n_bad[0] = bad
    return n_failed


cdef void _item_in_place(const Images* a, const uint16_t* xt, const size_t* roff,
                         const size_t* aoff, const size_t* aofft, const uint32_t* pwt,
                         Py_ssize_t n0, Py_ssize_t n1, bint first, uint16_t* dyq, uint32_t* pb,
                         float* yc, float* dw, float* db, float* dx) noexcept nogil:
    """Images n0..n1 of _fused_in_place: their dy padded in bf16 into dyq (the
    thread's, in cache; zeros after), dw and db from it (_dw_item_bf16 in
    place), and each image's dx, the forward of its padded dy with the
    flipped kernels pwt (_image_in_place, aofft), written to its place by
    the product (_to_places)."""
    cdef Window gt = a.gt, p = _grown(a.gt)
    cdef Py_ssize_t C = a.g.C, n
    cdef Py_ssize_t size = p.H * p.W * p.C, src = gt.H * gt.W * gt.C
    cdef Out o = _dense(dx, p.OH, p.OW, C)
    cdef cc_epilogue ep
    cdef DyRows d
    for n in range(n0, n1):
        if a.dyh != NULL:
            cc_pad_bf16(a.dyh + n * src, <int>gt.H, <int>gt.W, <int>gt.C, <int>gt.PT,
                        <int>gt.PL, <int>p.H, <int>p.W, dyq + (n - n0) * size)
        else:
            _narrow_image(a.dy + n * src, a.relu_y + n * src if a.relu_y != NULL else NULL,
                          gt, dyq + (n - n0) * size)
    memset(dyq + (n1 - n0) * size, 0, _slack(gt) * 2)
    d.at, d.image, d.row, d.first = dyq + (gt.PT * p.W + gt.PL) * p.C, size, p.W, n0
    _dw_item_bf16(a, NULL, d, xt, roff, n0, n1, first, NULL, pb, NULL, NULL, aoff, dw, db)
    for n in range(n0, n1):
        ep = _to_places(cc_epilogue_of(NULL, 0), &o, n, p)
        _image_in_place(a.bf16, dyq + (n - n0) * size, p, pwt, aofft, C, &ep, yc)


cdef int _fused_in_place(const Images* a, const uint16_t* xt, const size_t* roff,
                         const uint32_t* pwt, Py_ssize_t N, Py_ssize_t group,
                         Py_ssize_t per_slot, Py_ssize_t n_slots, float* parts, float* dx,
                         int n_threads) noexcept nogil:
    """dw and db (each slot's, in parts, as _dw_bf16's in place) and dx of
    N images item by item (_item_in_place): each item's dy padded in bf16 in
    the thread's scratch, read there by dw and dx (not a whole-batch copy
    written out and read back twice); the same sums as unfused, the same
    bits. -1 where dx's forward cannot read dy in place (aofft), else the
    items that had no scratch."""
    cdef Window p = _grown(a.gt), g = _grown(a.g)
    cdef Py_ssize_t F = a.F, K = a.g.KH * a.g.KW * a.g.C, sl, it
    cdef Py_ssize_t n_items = (N + group - 1) // group
    cdef size_t kr = group * cc_up32(a.g.OH * g.W)
    cdef size_t* aofft = _slices_in_place(p)
    cdef size_t* aoff = _dy_slices(g, kr) if aofft != NULL else NULL
    cdef uint16_t* dyq = NULL   # (firstprivate in the parallel block, as pb and yc)
    cdef uint32_t* pb = NULL
    cdef float* yc = NULL
    cdef float* part
    cdef int n_failed = 0
    if aoff == NULL:
        free(aofft)
        return -1
    with parallel(num_threads=n_threads):
        dyq = _padded_images(a.gt, group)
        pb = <uint32_t*>aligned_alloc(64, kr * cc_up32(F) * 2)
        yc = alloc64(cc_up32(p.OH * p.W) * a.g.C)
        for sl in prange(n_slots, schedule='dynamic'):
            if dyq == NULL or pb == NULL or yc == NULL:
                n_failed += 1
                continue
            part = parts + sl * (K * F + F)
            memset(part + K * F, 0, F * sizeof(float))
            for it in range(sl * per_slot, min(n_items, (sl + 1) * per_slot)):
                _item_in_place(a, xt, roff, aoff, aofft, pwt, it * group,
                               min(N, (it + 1) * group), it == sl * per_slot, dyq, pb, yc,
                               part, part + K * F, dx)
        free(dyq)
        free(pb)
        free(yc)
    free(aoff)
    free(aofft)
    return n_failed


cdef DyRows _dy_rows(const uint16_t* dyb, const uint16_t* dyp, Window g, Window gt,
                     Py_ssize_t F) noexcept nogil:
    """dy's rows (F values each) in dyb (_narrowed) where it was made, else in
    dyp (_narrowed_padded over the window gt, whose image is dy: inside its
    border); g: the convolution's window."""
    cdef DyRows d
    cdef Window p = _grown(gt)
    d.first = 0
    if dyb != NULL or dyp == NULL:
        d.at, d.image, d.row = dyb, g.OH * g.OW * F, g.OW
    else:
        d.at, d.image, d.row = dyp + (gt.PT * p.W + gt.PL) * p.C, p.H * p.W * p.C, p.W
    return d


cdef void _slots_into(const float* parts, Py_ssize_t n_slots, float* dwt,
                      float[:, ::1] dw, float[::1] db, int n_threads) noexcept nogil:
    """dw (K, F) and db (+=; zero at first): the slots' sums (_dw_bf16's
    parts), each slot's dw (K, F), or with dwt (scratch, K * F) transposed
    (F, K), summed there and then turned."""
    cdef Py_ssize_t K = dw.shape[0], F = dw.shape[1], k, f
    cdef float* sums = dwt if dwt != NULL else &dw[0, 0]
    memset(sums, 0, K * F * sizeof(float))
    _sum_slots(parts, n_slots, K * F, F, sums, &db[0], n_threads)
    if dwt != NULL:
        for k in range(K):
            for f in range(F):
                dw[k, f] = dwt[f * K + k]


def conv2d_backward_bf16(const float[:, :, :, ::1] x,    # IN  (N, H, W, C), or None: xh
                         const float[:, ::1] w,          # IN  (KH*KW*C, F)
                         const float[:, ::1] wt,         # IN  (KH*KW*F, C): flipped, or None
                         const float[:, :, :, ::1] dy,   # IN  (N, OH, OW, F), or None: dyh
                         float[:, :, :, ::1] dx,         # OUT (N, H, W, C) or None
                         float[:, ::1] dw,               # OUT (KH*KW*C, F)
                         float[::1] db,                  # OUT (F,)
                         Window g, Window gt, Py_ssize_t group, Py_ssize_t group_t,
                         Py_ssize_t max_slots, int n_threads,
                         const float[:, :, :, ::1] relu_y, int kernel,
                         uint16_t[:, :, :, ::1] dy_bits=None,    # OUT dy's bits, or None
                         bint need_db=True,
                         const uint16_t[:, :, :, ::1] xh=None,   # IN  x's bf16 bits (x None)
                         const uint16_t[:, :, :, ::1] dyh=None):  # IN  dy's (dy None)
    """dw, db (zeros where not need_db: a convolution without bias) and (with
    wt: stride 1) dx of conv2d_forward_bf16; dy_bits (without wt): takes dy's
    bfloat16 bits (through the ReLU), as dw reads them, for a strided dx's
    phases to read (conv2d_forward_bf16's xh). xh (x None): the images'
    bfloat16 bits; dyh (dy None) dy's (then no relu_y, no db, no dy_bits)."""
    cdef Py_ssize_t N = xh.shape[0] if x is None else x.shape[0]
    db[:] = 0
    if N == 0:
        dw[:, :] = 0
        return
    cdef Images a = _images(x, w, g, -1, False)
    a.xh = &xh[0, 0, 0, 0] if x is None else NULL
    a.dy = &dy[0, 0, 0, 0] if dy is not None else NULL
    a.dyh = &dyh[0, 0, 0, 0] if dy is None else NULL
    a.relu_y = &relu_y[0, 0, 0, 0] if relu_y is not None else NULL
    a.bf16, a.gt, a.no_db = kernel, gt, not need_db
    _backward_bf16(&a, N, wt, dx, dw, db, group, group_t, max_slots, n_threads,
                   &dy_bits[0, 0, 0, 0] if dy_bits is not None and wt is None else NULL)


def conv2d_maxpool_backward_bf16(
        const float[:, :, :, ::1] x,         # IN  (N, H, W, C)
        const float[:, ::1] w,               # IN  (KH*KW*C, F)
        const float[:, ::1] wt,              # IN  (KH*KW*F, C): flipped
        const float[:, :, :, ::1] dy,        # IN  the pool's (N, PH, PW, F)
        const int[:, :, :, ::1] argmax,      # IN  the pool's (N, PH, PW, F)
        float[:, :, :, ::1] dx,              # OUT (N, H, W, C)
        float[:, ::1] dw,                    # OUT (KH*KW*C, F)
        float[::1] db,                       # OUT (F,)
        Window g, Window gt, Window pg, Py_ssize_t group, Py_ssize_t group_t,
        Py_ssize_t max_slots, int n_threads,
        const float[:, :, :, ::1] relu_y,    # IN  the pooled output (N, PH, PW, F) or None
        int kernel, int pool_kernels):
    """conv2d_backward_bf16 of the fused convolution + max-pool (stride 1):
    each work item's dy of the convolution is sent from the pool's dy, argmax
    and relu_y (unpool_image, by the kernel set pool_kernels) into the
    thread's scratch, where db sums it and from where it is narrowed into its
    place in the padded bf16 copy that dw and dx read (_unpool_item): the
    convolution-sized gradient is never stored whole (it is, first, where dw
    cannot run in place). The same bits as unpooling first. Returns the
    argmax entries out of place."""
    db[:] = 0
    if x.shape[0] == 0:
        dw[:, :] = 0
        return 0
    cdef Images a = _images(x, w, g, pool_kernels, False)
    a.dy, a.argmax, a.pg = &dy[0, 0, 0, 0], &argmax[0, 0, 0, 0], pg
    a.relu_y = &relu_y[0, 0, 0, 0] if relu_y is not None else NULL
    a.bf16, a.gt = kernel, gt
    return _backward_bf16(&a, x.shape[0], wt, dx, dw, db, group, group_t, max_slots,
                          n_threads)


cdef float* _unpooled(Images* a, Py_ssize_t N, int n_threads,
                      Py_ssize_t* n_bad) noexcept nogil:
    """The convolution's dy, whole (N, OH, OW, F), sent from the pool's (a.dy,
    a.argmax, through a.relu_y); a then reads it as dy, without a pool; NULL
    where there is no memory."""
    cdef float* dyc = alloc64(N * a.g.OH * a.g.OW * a.F)
    if dyc == NULL:
        return NULL
    n_bad[0] = unpool_images(a.k, a.dy, a.argmax, a.relu_y, a.pg, N, n_threads, dyc)
    a.dy, a.argmax, a.relu_y = dyc, NULL, NULL
    return dyc


cdef int _unfused(Images* a, Py_ssize_t N, const uint16_t* xt, const size_t* roff,
                  const uint32_t* pwt, float* dx, float* dwt, Py_ssize_t group,
                  Py_ssize_t group_t, Py_ssize_t per_slot, Py_ssize_t n_slots, float* parts,
                  uint16_t* dy_bits, int n_threads, Py_ssize_t* n_bad) noexcept nogil:
    """_backward_bf16's dw and db (_dw_bf16) then dx (with pwt: _forward_bf16
    of dy's padded copy), each from whole-batch copies: x's padded in bf16
    where xt is NULL (dw of made sections, into dwt), dy's (or, with a pool,
    made item by item, _unpool_item). The items that had no scratch."""
    cdef Window g = a.g, gt = a.gt
    cdef Py_ssize_t F = a.F, bad = 0
    cdef int n_failed = 1
    cdef float* dyc = NULL
    cdef uint16_t* dyp = NULL
    cdef Source src         # dx's: dy's padded copy
    if a.argmax != NULL and xt == NULL:   # _unpool_item serves dw in place only
        dyc = _unpooled(a, N, n_threads, n_bad)
    cdef uint16_t* xb = _narrowed_padded(a.x, NULL, g, N, n_threads, a.xh) \
        if xt == NULL else NULL
    if a.argmax != NULL:
        dyp = a.dy_narrow = _padded_images(gt, N)   # filled item by item (_unpool_item)
    elif pwt != NULL:
        dyp = _narrowed_padded(a.dy, a.relu_y, gt, N, n_threads, a.dyh)
    cdef bint whole = (xt == NULL or dyp == NULL or dy_bits != NULL) and a.argmax == NULL
    cdef uint16_t* dyb = NULL   # dy's bits whole (else in place: dy in dyp)
    if whole:
        dyb = <uint16_t*>a.dyh if a.dyh != NULL else \
            _narrowed(a.dy, a.relu_y, N * g.OH * g.OW * F, n_threads, dy_bits)
    cdef DyRows d = _dy_rows(dyb, dyp, g, gt, F)
    if (xt != NULL or (xb != NULL and dwt != NULL)) and d.at != NULL \
            and (pwt == NULL or dyp != NULL) and not (a.argmax != NULL and xt == NULL):
        n_failed = _dw_bf16(a, xb, d, xt, roff, N, group, per_slot, n_slots, parts,
                            n_threads, &bad)
        n_bad[0] += bad
        if pwt != NULL and not n_failed:
            src.xb, src.x, src.g0, src.xh = dyp, NULL, gt, NULL
            n_failed = _forward_bf16(a.bf16, &src, _grown(gt), pwt, N, g.C, NULL, False, dx,
                                     group_t, n_threads)
    free(dyc)
    free(xb)
    free(dyb if dyb != dy_bits and dyb != a.dyh else NULL)
    free(dyp)
    return n_failed


cdef Py_ssize_t _backward_bf16(Images* a, Py_ssize_t N, const float[:, ::1] wt,
                               float[:, :, :, ::1] dx, float[:, ::1] dw, float[::1] db,
                               Py_ssize_t group, Py_ssize_t group_t, Py_ssize_t max_slots,
                               int n_threads, uint16_t* dy_bits=NULL) except -1:
    """conv2d_backward_bf16 and conv2d_maxpool_backward_bf16 (a.argmax) of
    N images: dw and db made a slot at a time, dx with wt (the flipped
    kernels): item by item where dw and dx both read in place
    (_fused_in_place), else _unfused; dy's bits into dy_bits where given (no
    wt, no argmax); the argmax entries out of place."""
    cdef Window g = a.g
    cdef Py_ssize_t F = a.F, K = dw.shape[0], n_bad = 0
    cdef Py_ssize_t n_items = (N + group - 1) // group
    cdef Py_ssize_t per_slot = max(1, (n_items + max_slots - 1) // max_slots)
    cdef Py_ssize_t n_slots = (n_items + per_slot - 1) // per_slot
    cdef int n_failed = 1
    cdef float* parts = alloc64(n_slots * (K * F + F))
    cdef float* dwt = NULL   # dw^T's sums (no xt)
    cdef float* dxp = &dx[0, 0, 0, 0] if dx is not None else NULL
    cdef uint16_t* xt = _narrowed_transposed(a.x, a.xh, g, N, n_threads)   # dw in place, or NULL
    cdef size_t* roff = _rows_in_place(_grown(g)) if xt != NULL else NULL
    if roff == NULL:
        free(xt)
        xt = NULL
    cdef uint32_t* pwt = NULL if wt is None else _packed_kernels(&wt[0, 0], wt.shape[0], g.C)
    if parts != NULL and (wt is None or pwt != NULL):
        n_failed = _fused_in_place(a, xt, roff, pwt, N, group, per_slot, n_slots, parts, dxp,
                                   n_threads) \
            if xt != NULL and pwt != NULL and a.argmax == NULL and dy_bits == NULL else -1
        if n_failed < 0:
            dwt = alloc64(K * F) if xt == NULL else NULL
            n_failed = _unfused(a, N, xt, roff, pwt, dxp, dwt, group, group_t, per_slot,
                                n_slots, parts, dy_bits, n_threads, &n_bad)
    if not n_failed:
        _slots_into(parts, n_slots, dwt, dw, db, n_threads)
    free(parts)
    free(dwt)
    free(xt)
    free(roff)
    free(pwt)
    if n_failed:
        raise MemoryError("conv2d_backward: could not allocate the bf16 scratch")
    return n_bad
