"""Dense layer, forward and backward: the kernel matmul, tiled over the output.

  x (N, D), w (D, F), y, dy (N, F)
  forward:   y = x @ w + b
  backward:  dx = dy @ w^T;  dw = x^T @ dy;  db = sum over N of dy

Two implementations: gemm_tiled (tiles of the output fixed by the shapes,
each one single-threaded sgemm) and, for small batches, the register tiles of
_linear_tiles.h, which also come fused with the Adam update of w and b
(linear_backward_adam_tiles). Either way no sum is ever split across threads.
"""
from cython.parallel cimport parallel, prange
from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport free
from libc.string cimport memcpy, memset

from convcore._memory cimport aligned_alloc, alloc64
from convcore._bits cimport keep_where_positive
from convcore._blas cimport gemm_tiled, gemm_tiled_bf16_a
from convcore._isa cimport cc_kernel_set, kernel_set
from convcore._slices cimport tree_sum


def linear_forward(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b,
                   float[:, ::1] y, int n_tiles, int n_threads, const int[::1] bounds,
                   bint relu=False, int bf16=0, const uint16_t[:, ::1] xh=None):
    """y = x @ w (+ b), one gemm_tiled a slice of rows (bounds: [0, N] for one),
    in float32 or (bf16: _blas.gemm_prec's kernel) bf16; xh (x None): x's
    bfloat16 bits (gemm_tiled_bf16_a: the bits of x widened)."""
    cdef Py_ssize_t N = y.shape[0], D = w.shape[0], F = w.shape[1], r, sl, n0, n1
    cdef float beta = 0.0
    cdef int failed = 0
    if N == 0:
        return
    cdef float* yp = &y[0, 0]
    if b is not None:
        beta = 1.0
        for r in range(N):
            memcpy(yp + r * F, &b[0], F * sizeof(float))
    for sl in range(bounds.shape[0] - 1):
        n0, n1 = bounds[sl], bounds[sl + 1]
        if xh is not None:
            failed += gemm_tiled_bf16_a(<int>(n1 - n0), <int>F, <int>D,
                                        &xh[n0, 0] if n1 > n0 else NULL, <int>D, &w[0, 0],
                                        <int>F, beta, yp + n0 * F, <int>F, n_tiles, n_threads,
                                        bf16)
            continue
        failed += gemm_tiled(False, False, <int>(n1 - n0), <int>F, <int>D,
                             &x[n0, 0] if n1 > n0 else NULL, <int>D, &w[0, 0], <int>F, beta,
                             yp + n0 * F, <int>F, n_tiles, n_threads, bf16)
    if failed:
        raise MemoryError("linear_forward: could not allocate the bf16 packing")
    cdef float v
    if relu:
        for r in prange(N * F, nogil=True, schedule='static', num_threads=n_threads):
            v = yp[r]
            yp[r] = 0 if v < 0 else v    # branch-free (vectorises); NaN stays NaN


def linear_backward(const float[:, ::1] x, const float[:, ::1] w, const float[:, ::1] dy,
                    float[:, ::1] dx, float[:, ::1] dw, float[::1] db,
                    int n_tiles, int n_threads, const int[::1] bounds,
                    const float[:, ::1] relu_y=None, float[:, ::1] scratch=None, int bf16=0):
    """With relu_y (the output of a relu=True forward), dy is first masked by
    relu_y > 0 into scratch (N, F). One gemm_tiled a slice of rows (bounds);
    with more than one, each slice's dw and db on their own, then added in the
    pairwise tree (_slices.pxd)."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], F = w.shape[1], f, r, sl, n0, n1, blk, e0
    cdef Py_ssize_t n_slices = bounds.shape[0] - 1, part = D * F + F, BLOCK = 4096
    cdef float s
    cdef int failed = 0
    if N == 0:
        dw[:, :] = 0
        db[:] = 0
        return
    cdef const float* dyp = &dy[0, 0]
    cdef const float* yp
    cdef float* sp
    if relu_y is not None:   # dy masked by y > 0, branch-free
        yp = &relu_y[0, 0]
        sp = &scratch[0, 0]
        for r in prange(N * F, nogil=True, schedule='static', num_threads=n_threads):
            sp[r] = keep_where_positive(dyp[r], yp[r])
        dyp = sp
    cdef float* parts = &dw[0, 0] if n_slices == 1 else alloc64(n_slices * part)
    if parts == NULL:
        raise MemoryError("linear_backward: could not allocate the slices' gradients")
    for sl in range(n_slices):
        n0, n1 = bounds[sl], bounds[sl + 1]
        if dx is not None and n1 > n0:
            failed += gemm_tiled(False, True, <int>(n1 - n0), <int>D, <int>F, dyp + n0 * F,
                                 <int>F, &w[0, 0], <int>F, 0.0, &dx[n0, 0], <int>D, n_tiles,
                                 n_threads, bf16)
        if n1 > n0:
            failed += gemm_tiled(True, False, <int>D, <int>F, <int>(n1 - n0), &x[n0, 0], <int>D,
                                 dyp + n0 * F, <int>F, 0.0, parts + sl * part, <int>F, n_tiles,
                                 n_threads, bf16)
        else:
            memset(parts + sl * part, 0, D * F * sizeof(float))
        sp = &db[0] if n_slices == 1 else parts + sl * part + D * F
        for f in prange(F, nogil=True, schedule='static', num_threads=n_threads):
            s = 0
            for r in range(n0, n1):
                s = s + dyp[r * F + f]
            sp[f] = s
    if n_slices > 1:
        for blk in prange((part + BLOCK - 1) // BLOCK, nogil=True, schedule='static',
                          num_threads=n_threads):
            e0 = blk * BLOCK
            tree_sum(parts, n_slices, part, e0, min(part, e0 + BLOCK))
        memcpy(&dw[0, 0], parts, D * F * sizeof(float))
        memcpy(&db[0], parts + D * F, F * sizeof(float))
        free(parts)
    if failed:
        raise MemoryError("linear_backward: could not allocate the bf16 packing")


# -------------------------------------------------------------- tile kernels
# The fast path for a small batch (N <= CC_MC_FWD forward, CC_MC backward)
# where D_out is a multiple of 16, in a vector kernel set (_linear_tiles.h,
# _isa.pxd): no packing, the weight panel read straight from w.

cdef extern from "_linear_tiles.h" nogil:
    int CC_MC
    int CC_MC_FWD


def simd_max_batch(forward=False):
    """The largest batch the dense tiles take (forward: one row block, w is read
    once; sgemm's packing pays for itself above), in the backward pass or the forward."""
    return CC_MC_FWD if forward else CC_MC


DEF COLS = 64    # output columns per forward work item (CC_NC)
DEF ROWS = 48    # rows of w (entries of D_in) per backward work item


def linear_forward_tiles(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b,
                         float[:, ::1] y, int n_threads, int kernels, bint relu=False):
    """y = x @ w (+ b) (then max(y, 0) if relu), by the kernel set numbered
    kernels (_linear_tiles.h); D_out % 16 == 0.

    Work items: blocks of CC_MC_FWD rows x 64 columns of y, fixed by the shapes."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], F = w.shape[1]
    cdef Py_ssize_t n_cb = (F + COLS - 1) // COLS, n_rb = (N + CC_MC_FWD - 1) // CC_MC_FWD, it
    cdef int n0, c0
    if N == 0:
        return
    cdef const cc_kernel_set* k = kernel_set(kernels)
    cdef const float* bp = &b[0] if b is not None else NULL
    cdef const float* xp = &x[0, 0]
    cdef const float* wp = &w[0, 0]
    cdef float* yp = &y[0, 0]
    for it in prange(n_rb * n_cb, nogil=True, schedule='dynamic', num_threads=n_threads):
        n0 = <int>((it // n_cb) * CC_MC_FWD)
        c0 = <int>((it % n_cb) * COLS)
        k.linear_forward_block(xp, <int>D, wp, <int>F, bp, yp, n0,
                               <int>min(N, n0 + CC_MC_FWD), c0, <int>min(F, c0 + COLS), relu)


cdef int _prepare_dy(const float* dyp, const float* yp, Py_ssize_t N, Py_ssize_t F,
                     Py_ssize_t NP, float* mp, float* tp, float* db, const int* bounds,
                     Py_ssize_t n_slices, int n_threads) noexcept nogil:
    """mp (N, F) = dy, masked by yp > 0 when yp is not NULL (branch-free:
    keep_where_positive); tp (F, NP) = mp^T, zero past N; db = sum over N of
    mp, each slice of rows bounds[s] .. bounds[s + 1] - 1 summed on its own
    and the slices added in the pairwise tree (_slices.pxd). -1: no memory."""
    cdef Py_ssize_t f, r, sl
    cdef float s, v
    cdef float* parts = alloc64(n_slices * F)
    if parts == NULL:
        return -1
    for f in prange(F, schedule='static', num_threads=n_threads):
        for sl in range(n_slices):
            s = 0
            for r in range(bounds[sl], bounds[sl + 1]):
                v = dyp[r * F + f]
                if yp != NULL:
                    v = keep_where_positive(v, yp[r * F + f])
                mp[r * F + f] = v
                tp[f * NP + r] = v
                s = s + v
            parts[sl * F + f] = s
        for r in range(N, NP):
            tp[f * NP + r] = 0
    tree_sum(parts, n_slices, F, 0, F)
    memcpy(db, parts, F * sizeof(float))
    free(parts)
    return 0


def linear_backward_tiles(const float[:, ::1] x, const float[:, ::1] w, const float[:, ::1] dy,
                          float[:, ::1] dx, float[:, ::1] dw, float[::1] db, int n_threads,
                          int kernels, float[:, ::1] dym, float[:, ::1] dyT,
                          const int[::1] bounds, const float[:, ::1] relu_y=None):
    """dw = x^T @ dy, dx = dy @ w^T, db = sum dy, by tiles of the kernel set
    numbered kernels; D_out % 16 == 0.

    Scratch: dym (N, F) for dy masked by relu_y > 0 (if relu_y is given), and
    dyT (F, NP) for the same transposed, NP = N rounded up to a multiple of 16.
    Work items: blocks of 48 rows of w (entries of D_in), fixed by the shapes.
    bounds: the batch's slices (_slices.pxd; [0, N]: one), by which dw and db
    are summed."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], F = w.shape[1], NP = dyT.shape[1]
    cdef Py_ssize_t it, n_items = (D + ROWS - 1) // ROWS
    cdef int d0
    if N == 0:
        dw[:, :] = 0
        db[:] = 0
        return
    cdef const cc_kernel_set* k = kernel_set(kernels)
    cdef float* mp = &dym[0, 0]
    cdef float* tp = &dyT[0, 0]
    cdef const int* bp = &bounds[0]
    cdef int n_slices = <int>bounds.shape[0] - 1
    if _prepare_dy(&dy[0, 0], &relu_y[0, 0] if relu_y is not None else NULL, N, F, NP, mp,
                   tp, &db[0], bp, n_slices, n_threads):
        raise MemoryError("linear_backward: could not allocate the bias gradient's slices")
    cdef const float* xp = &x[0, 0]
    cdef const float* wp = &w[0, 0]
    cdef float* dxp = &dx[0, 0] if dx is not None else NULL
    cdef float* dwp = &dw[0, 0]
    for it in prange(n_items, nogil=True, schedule='dynamic', num_threads=n_threads):
        d0 = <int>(it * ROWS)
        if dxp != NULL:
            k.linear_dx_block(wp, <int>F, tp, <int>NP, dxp, <int>D, <int>N, d0,
                              <int>min(D, d0 + ROWS))
        k.linear_dw_block(xp, bp, n_slices, <int>D, mp, <int>F, dwp + d0 * F, d0,
                          <int>min(D, d0 + ROWS))


def linear_backward_adam_tiles(const float[:, ::1] x, float[:, ::1] w, const float[:, ::1] dy,
                               float[:, ::1] dx, float[::1] b, float[:, ::1] m_w,
                               float[:, ::1] v_w, float[::1] m_b, float[::1] v_b,
                               float lr_t, double beta1, double beta2, float eps,
                               int n_threads, int kernels, float[:, ::1] dym, float[:, ::1] dyT,
                               const int[::1] bounds, const float[:, ::1] relu_y=None):
    """linear_backward_tiles, then Adam on w and b, fused: per block of 48 rows
    of w, dx uses the old rows, their gradient goes to a cache-sized scratch
    and the set's adam (_adam.h, the code of adam_update) updates the rows at once.
    The gradient of w never reaches memory and w is read once. b may be None."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], F = w.shape[1], NP = dyT.shape[1]
    cdef Py_ssize_t it, n_items = (D + ROWS - 1) // ROWS
    cdef int d0, d1
    cdef float a1 = <float>(1.0 - beta1), a2 = <float>(1.0 - beta2)
    cdef float* g = NULL   # (firstprivate in the parallel block)
    cdef int n_failed = 0
    cdef const cc_kernel_set* k = kernel_set(kernels)
    cdef float* db = alloc64(F)
    if db == NULL:
        raise MemoryError("linear_backward_adam: could not allocate the bias gradient")
    cdef float* mp = &dym[0, 0] if N > 0 else NULL
    cdef float* tp = &dyT[0, 0] if N > 0 else NULL
    cdef const int* bp = &bounds[0]
    cdef int n_slices = <int>bounds.shape[0] - 1
    if N == 0:
        memset(db, 0, F * sizeof(float))
    elif _prepare_dy(&dy[0, 0], &relu_y[0, 0] if relu_y is not None else NULL, N, F, NP, mp,
                     tp, db, bp, n_slices, n_threads):
        free(db)
        raise MemoryError("linear_backward_adam: could not allocate the bias gradient's slices")
    cdef const float* xp = &x[0, 0] if N > 0 else NULL
    cdef float* wp = &w[0, 0]
    cdef float* mwp = &m_w[0, 0]
    cdef float* vwp = &v_w[0, 0]
    cdef float* dxp = &dx[0, 0] if dx is not None and N > 0 else NULL
    with nogil, parallel(num_threads=n_threads):
        g = alloc64(ROWS * F)
        for it in prange(n_items, schedule='dynamic'):
            if g == NULL:
                n_failed += 1
                continue
            d0 = <int>(it * ROWS)
            d1 = <int>min(D, d0 + ROWS)
            if dxp != NULL:
                k.linear_dx_block(wp, <int>F, tp, <int>NP, dxp, <int>D, <int>N, d0, d1)
            if N > 0:
                k.linear_dw_block(xp, bp, n_slices, <int>D, mp, <int>F, g, d0, d1)
            else:
                memset(g, 0, (d1 - d0) * F * sizeof(float))
            k.adam(wp + d0 * F, g, mwp + d0 * F, vwp + d0 * F, (d1 - d0) * F, lr_t, a1, a2,
                   eps)
        free(g)
    if n_failed == 0 and b is not None:
        k.adam(&b[0], db, &m_b[0], &v_b[0], F, lr_t, a1, a2, eps)
    free(db)
    if n_failed:
        raise MemoryError("linear_backward_adam: could not allocate the gradient scratch")


# -------------------------------------------------------------- bf16 + Adam
# precision="bf16" (_bf16_gemm.h): a strip of rows of w at a time, in the
# thread's scratch, makes its columns of dx (from w as it was), its rows of
# the weight gradient, never stored whole, and applies Adam (_adam.h): w is
# read from memory once. Each strip's sums are those of the whole products
# (the same packing of dy, blocks of 32x32 of C, one order a sum): the same
# bits as linear_backward(..., bf16) then adam_update.

cdef extern from "_bf16_gemm.h" nogil:
    size_t cc_up32(size_t v)
    void cc_pack_a(int trans, int m, int k, const float* a, int lda, uint16_t* pa, size_t kp)
    void cc_pack_b(int trans, int n, int k, const float* b, int ldb, uint32_t* pb, size_t kp)
    void cc_pack_a_block(int trans, int m, int k, const float* a, int lda, size_t i0,
                         size_t size, uint16_t* blk, size_t kp)
    void cc_gemm_bf16_whole_k(int kernel, size_t m, size_t n, size_t kp, const uint16_t* pa,
                              const uint32_t* pb, float beta, float* c, size_t ldc, int tc)
    ctypedef struct cc_epilogue:
        const float* bias   # NULL, or C's first value: a row, n long
        int relu            # C := max(C, 0) after
    void cc_gemm_bf16_packed(int kernel, size_t m, size_t n, size_t kp, const uint16_t* pa,
                             const uint32_t* pb, float beta, float* c, size_t ldc, int tc,
                             const cc_epilogue* ep)

DEF STRIP = 32   # rows of w a work item of the fused update


cdef struct Strips:          # what the fused update's strips of w read and write
    const float* x           # IN  (N, D)
    float* w                 # INOUT (D, F), and Adam's state m, v (D, F)
    float* m
    float* v
    float* dx                # OUT (N, D), or NULL: no input gradient
    const uint32_t* pdy      # dy packed as the B of dw = x^T @ dy (k = N)
    const uint32_t* pdyt     # dy^T packed as the B of dx^T = w @ dy^T (k = F), or NULL
    Py_ssize_t N, D, F
    float lr_t, a1, a2, eps
    int kernel               # the bf16 product's (_blas.gemm_prec's number)
    const cc_kernel_set* k   # Adam's kernel set


cdef void _strip(const Strips* s, Py_ssize_t d0, Py_ssize_t rows, uint16_t* pa, uint16_t* pw,
                 float* g) noexcept nogil:
    """Rows d0..d0+rows of w: their columns of dx (w as it was) while they are
    in cache, their gradient into g, then Adam. Scratch: pa (STRIP, up32(N)),
    pw (STRIP, up32(F)) bf16."""
    cdef size_t kp = cc_up32(s.N), fp = cc_up32(s.F)
    if s.dx != NULL:
        cc_pack_a_block(0, <int>rows, <int>s.F, s.w + d0 * s.F, <int>s.F, 0, rows, pw, fp)
        cc_gemm_bf16_whole_k(s.kernel, rows, s.N, fp, pw, s.pdyt, 0.0, s.dx + d0, s.D, 1)
    memset(pa, 0, STRIP * kp * 2)
    cc_pack_a(1, <int>rows, <int>s.N, s.x + d0, <int>s.D, pa, kp)
    cc_gemm_bf16_packed(s.kernel, rows, s.F, kp, pa, s.pdy, 0.0, g, s.F, 0, NULL)
    s.k.adam(s.w + d0 * s.F, g, s.m + d0 * s.F, s.v + d0 * s.F, rows * s.F, s.lr_t, s.a1,
             s.a2, s.eps)


cdef int _dw_adam_bf16(const Strips* s, int n_threads) noexcept nogil:
    """w, m, v updated by Adam with dw = x^T @ dy, and dx = dy @ w^T (of w
    before the update), a strip of STRIP rows of w at a time (_strip): w read
    from memory once for both. The same blocks of 32x32, each summed over the
    whole k, as linear_backward's products: the same bits. The strips that
    had no scratch."""
    cdef Py_ssize_t it, d0
    cdef uint16_t* pa = NULL   # (firstprivate in the parallel block, as the next two)
    cdef uint16_t* pw = NULL
    cdef float* g = NULL
    cdef int n_failed = 0
    with parallel(num_threads=n_threads):
        pa = <uint16_t*>aligned_alloc(64, STRIP * cc_up32(s.N) * 2)
        pw = <uint16_t*>aligned_alloc(64, STRIP * cc_up32(s.F) * 2) if s.dx != NULL else NULL
        g = alloc64(STRIP * s.F)
        for it in prange((s.D + STRIP - 1) // STRIP, schedule='static'):
            if pa == NULL or g == NULL or (s.dx != NULL and pw == NULL):
                n_failed += 1
                continue
            d0 = it * STRIP
            _strip(s, d0, min(STRIP, s.D - d0), pa, pw, g)
        free(pa)
        free(pw)
        free(g)
    return n_failed


cdef uint32_t* _packed_b(bint trans, const float* b, Py_ssize_t n, Py_ssize_t k) noexcept nogil:
    """op(B) (k, n) of the float32 b (trans: b is (n, k), else (k, n)) packed
    (cc_pack_b, zeros past it), or NULL: no memory."""
    cdef size_t size = cc_up32(n) * cc_up32(k) * 2
    cdef uint32_t* pb = <uint32_t*>aligned_alloc(64, size)
    if pb != NULL:
        memset(pb, 0, size)
        cc_pack_b(trans, <int>n, <int>k, b, <int>(k if trans else n), pb, cc_up32(k))
    return pb


def linear_backward_adam_bf16(const float[:, ::1] x, float[:, ::1] w, const float[:, ::1] dy,
                              float[:, ::1] dx, float[::1] b, float[:, ::1] m_w,
                              float[:, ::1] v_w, float[::1] m_b, float[::1] v_b, float lr_t,
                              double beta1, double beta2, float eps,
                              int n_threads, const float[:, ::1] relu_y,
                              float[:, ::1] scratch, int kernel, int kernels):
    """dx = dy @ w^T (w before the update) and Adam (kernel set number
    kernels) on w (dw = x^T @ dy), strip by strip (_dw_adam_bf16), and b (db
    = sum dy), in bf16; dy masked by relu_y > 0 first where given."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], F = w.shape[1], r, f
    cdef const float* dyp = &dy[0, 0]
    cdef float* sp
    cdef int n_failed = 0
    cdef Strips s
    if N == 0:
        return
    if relu_y is not None:
        sp = &scratch[0, 0]
        for r in prange(N * F, nogil=True, schedule='static', num_threads=n_threads):
            sp[r] = keep_where_positive(dyp[r], relu_y[r // F, r % F])
        dyp = sp
    s.x, s.w, s.m, s.v = &x[0, 0], &w[0, 0], &m_w[0, 0], &v_w[0, 0]
    s.dx = &dx[0, 0] if dx is not None else NULL
    s.N, s.D, s.F, s.kernel, s.k = N, D, F, kernel, kernel_set(kernels)
    s.lr_t, s.a1, s.a2, s.eps = lr_t, <float>(1.0 - beta1), <float>(1.0 - beta2), eps
    s.pdy = _packed_b(False, dyp, F, N)
    s.pdyt = _packed_b(True, dyp, N, F) if dx is not None else NULL
    cdef float* db = alloc64(F)
    if s.pdy != NULL and db != NULL and (dx is None or s.pdyt != NULL):
        n_failed = _dw_adam_bf16(&s, n_threads)
        if b is not None:
            for f in prange(F, nogil=True, schedule='static', num_threads=n_threads):
                db[f] = 0
                for r in range(N):
                    db[f] = db[f] + dyp[r * F + f]
            s.k.adam(&b[0], db, &m_b[0], &v_b[0], F, lr_t, s.a1, s.a2, eps)
    else:
        n_failed += 1
    free(<uint32_t*>s.pdy)
    free(<uint32_t*>s.pdyt)
    free(db)
    if n_failed:
        raise MemoryError("linear_backward_adam: could not allocate the bf16 scratch")
