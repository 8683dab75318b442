"""The one place that talks to BLAS (scipy.linalg.cython_blas), and to the
bf16 products (_bf16_gemm.h) that stand in for it in precision="bf16".

Everything in convcore is row-major; BLAS is column-major. A row-major
C = op(A) @ op(B) is the column-major C^T = op(B)^T @ op(A)^T, so the wrapper
swaps the operands and passes each one's row length as its leading dimension.
"""
from cython.parallel cimport parallel, prange
from libc.stdint cimport uint16_t, uint32_t
from libc.stdlib cimport free
from libc.string cimport memset
from scipy.linalg.cython_blas cimport sgemm

from convcore._memory cimport aligned_alloc

cdef extern from "_bf16_gemm.h" nogil:
    int cc_gemm_bf16(int kernel, int trans_a, int trans_b, int m, int n, int k,
                     const float* a, int lda, const float* b, int ldb, float beta,
                     float* c, int ldc)
    int CC_HAVE_BF16_GEMM
    void cc_pack_a_block(int trans, int m, int k, const float* a, int lda, size_t i0,
                         size_t size, uint16_t* blk, size_t kp)
    void cc_pack_a_bf16_block(int m, int k, const uint16_t* a, int lda, size_t i0,
                              size_t size, uint16_t* blk, size_t kp)
    void cc_gemm_bf16_shared_a(int kernel, int m, int n, int k, const uint16_t* pa,
                               const float* b, int ldb, float beta, float* c, int ldc,
                               uint32_t* pb)
    size_t cc_up32(size_t v)
    enum: CC_STREAM

DEF SHARED_A = 128   # rows of A from which bf16 tiles of C's columns share its packing


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k,
               float alpha, const float* a, int lda,      # IN  op(A): (m, k)
               const float* b, int ldb,                   # IN  op(B): (k, n)
               float beta, float* c, int ldc) noexcept nogil:   # INOUT C: (m, n)
    """C := alpha * op(A) @ op(B) + beta * C, row-major, single call to sgemm."""
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    if m <= 0 or n <= 0:
        return
    sgemm(&tb, &ta, &n, &m, &k, &alpha, <float*>b, &ldb, <float*>a, &lda,
          &beta, c, &ldc)


cdef int gemm_prec(int bf16, bint trans_a, bint trans_b, int m, int n, int k,
                   const float* a, int lda,      # IN  op(A): (m, k)
                   const float* b, int ldb,      # IN  op(B): (k, n)
                   float beta, float* c, int ldc) noexcept nogil:   # INOUT C: (m, n)
    """C := op(A) @ op(B) + beta * C: sgemm (bf16 = 0), or the bf16 kernel
    bf16 (CC_BF16_AMX, CC_BF16_AVX512: the operands rounded to bfloat16, the
    sums float32). 0, or -1 where the bf16 packing's memory was not there."""
    if bf16 == 0:
        gemm(trans_a, trans_b, m, n, k, 1.0, a, lda, b, ldb, beta, c, ldc)
        return 0
    return cc_gemm_bf16(bf16, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)


def bf16_compiled():
    """Whether this build has the bf16 products (an x86-64 compiler new enough)."""
    return bool(CC_HAVE_BF16_GEMM)


cdef int _tile_step(int m, int n, int n_tiles, int* count) noexcept nogil:
    """gemm_tiled's tiles of C (m, n): cut along its longer side (rows where m
    >= n) into *count tiles of the step returned (a multiple of 16)."""
    cdef int size = m if m >= n else n
    cdef int step = (size + n_tiles - 1) // n_tiles
    step = max(16, ((step + 15) // 16) * 16)
    count[0] = (size + step - 1) // step
    return step


cdef int gemm_tiled(bint trans_a, bint trans_b, int m, int n, int k,
                    const float* a, int lda,      # IN  op(A): (m, k)
                    const float* b, int ldb,      # IN  op(B): (k, n)
                    float beta, float* c, int ldc,   # INOUT C: (m, n)
                    int n_tiles, int n_threads, int bf16) noexcept nogil:
    """C := op(A) @ op(B) + beta * C in n_tiles tiles of C, one gemm_prec per
    tile; the number of tiles whose memory was not there (0: all done).

    C is cut along its longer side, so that each tile re-reads (re-packs) only
    the smaller operand. The tiling depends on the shapes and n_tiles alone,
    never on n_threads: every element of C is computed by the same
    single-threaded sgemm call whatever the thread count, so the result has
    the same bits on 1 and on many threads. The caller keeps BLAS itself
    single-threaded (threadpoolctl).
    """
    cdef int t, step, count, i0, j0, mm, nn, failed = 0
    cdef bint along_m = m >= n
    if m <= 0 or n <= 0:
        return 0
    step = _tile_step(m, n, n_tiles, &count)
    if bf16 and not along_m and not trans_a and not trans_b and count > 1 and m >= SHARED_A \
            and k > 0:
        return _gemm_tiled_shared_a(bf16, m, n, k, a, lda, b, ldb, beta, c, ldc, step, count,
                                    n_threads)
    for t in prange(count, nogil=True, schedule='dynamic', num_threads=n_threads):
        i0 = t * step if along_m else 0
        j0 = 0 if along_m else t * step
        mm = min(step, m - i0) if along_m else m
        nn = n if along_m else min(step, n - j0)
        failed += gemm_prec(bf16, trans_a, trans_b, mm, nn, k,
                            a + (<Py_ssize_t>i0 if trans_a else <Py_ssize_t>i0 * lda), lda,
                            b + (<Py_ssize_t>j0 * ldb if trans_b else <Py_ssize_t>j0), ldb,
                            beta, c + <Py_ssize_t>i0 * ldc + j0, ldc) != 0
    return failed


cdef int _gemm_tiled_shared_a(int bf16, int m, int n, int k, const float* a, int lda,
                              const float* b, int ldb, float beta, float* c, int ldc,
                              int step, int count, int n_threads) noexcept nogil:
    """gemm_tiled's bf16 tiles of C's columns (step wide, count of them) with
    A packed once, in parallel, for all of them (each tile would pack the
    whole of A); the same blocks from the same packed operands: the same
    bits. The number of tiles whose memory was not there, as gemm_tiled's."""
    cdef size_t kp = cc_up32(k)
    cdef uint16_t* pa = <uint16_t*>aligned_alloc(64, cc_up32(m) * kp * 2)
    cdef int t, failed
    if pa == NULL:
        return count
    for t in prange((m + CC_STREAM - 1) // CC_STREAM, schedule='static',
                    num_threads=n_threads):
        cc_pack_a_block(0, m, k, a, lda, <size_t>t * CC_STREAM, CC_STREAM,
                        pa + <size_t>t * CC_STREAM * kp, kp)
    failed = _tiles_of_packed_a(bf16, m, n, k, pa, b, ldb, beta, c, ldc, step, count, False,
                                n_threads)
    free(pa)
    return failed


cdef int _tiles_of_packed_a(int bf16, int m, int n, int k, const uint16_t* pa,
                            const float* b, int ldb, float beta, float* c, int ldc, int step,
                            int count, bint along_m, int n_threads) noexcept nogil:
    """gemm_tiled's tiles of C (count of them, step rows where along_m, else
    step columns), in parallel, each from its rows of A packed already (pa:
    up32(k) long rows, zero past m to a whole 32-row block of every tile) by
    cc_gemm_bf16_shared_a. The number of tiles whose memory was not there."""
    cdef size_t kp = cc_up32(k)
    cdef uint32_t* pb = NULL   # (firstprivate in the parallel block: a tile's B)
    cdef int t, i0, j0, failed = 0
    with parallel(num_threads=n_threads):
        pb = <uint32_t*>aligned_alloc(64, max(cc_up32(n if along_m else step), CC_STREAM)
                                      * kp * 2)
        for t in prange(count, schedule='dynamic'):
            if pb == NULL:
                failed += 1
                continue
            i0 = t * step if along_m else 0
            j0 = 0 if along_m else t * step
            cc_gemm_bf16_shared_a(bf16, min(step, m - i0) if along_m else m,
                                  n if along_m else min(step, n - j0), k,
                                  pa + <size_t>i0 * kp, b + j0, ldb, beta,
                                  c + <size_t>i0 * ldc + j0, ldc, pb)
        free(pb)
    return failed


cdef int gemm_tiled_bf16_a(int m, int n, int k, const uint16_t* a, int lda,
                           const float* b, int ldb, float beta, float* c, int ldc,
                           int n_tiles, int n_threads, int bf16) noexcept nogil:
    """gemm_tiled (neither operand transposed) in bf16 for an A given in
    bfloat16 already (a: its bits; a layer's bf16 input): A packed once, in
    parallel, then gemm_tiled's tiles of C, each from its rows of the packed A
    (cc_gemm_bf16_shared_a). Each block of C the same sums in the same order
    as gemm_tiled's on A widened to float32: the same bits. The number of
    tiles whose memory was not there, as gemm_tiled's."""
    cdef size_t kp = cc_up32(k)
    cdef int t, step, count, failed
    cdef uint16_t* pa
    if m <= 0 or n <= 0:
        return 0
    step = _tile_step(m, n, n_tiles, &count)
    pa = <uint16_t*>aligned_alloc(64, (cc_up32(m) + 32) * kp * 2)   # (a tile's rows past m)
    if pa == NULL:
        return count
    memset(pa + cc_up32(m) * kp, 0, 32 * kp * 2)
    for t in prange((m + CC_STREAM - 1) // CC_STREAM, schedule='static',
                    num_threads=n_threads):
        cc_pack_a_bf16_block(m, k, a, lda, <size_t>t * CC_STREAM, CC_STREAM,
                             pa + <size_t>t * CC_STREAM * kp, kp)
    failed = _tiles_of_packed_a(bf16, m, n, k, pa, b, ldb, beta, c, ldc, step, count, m >= n,
                                n_threads)
    free(pa)
    return failed
