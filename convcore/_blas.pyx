"""The one place that talks to BLAS (scipy.linalg.cython_blas).

Everything in convcore is row-major; BLAS is column-major. A row-major
C = op(A) @ op(B) is the column-major C^T = op(B)^T @ op(A)^T, so the wrapper
swaps the operands and passes each one's row length as its leading dimension.
"""
from cython.parallel cimport prange
from scipy.linalg.cython_blas cimport sgemm


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


cdef inline int _tile(int size, int n_tiles) noexcept nogil:
    """Tile length that cuts `size` into about n_tiles pieces, a multiple of 16."""
    cdef int t = (size + n_tiles - 1) // n_tiles
    t = ((t + 15) // 16) * 16
    return t if t > 0 else 16


cdef void gemm_tiled(bint trans_a, bint trans_b, int m, int n, int k,
                     const float* a, int lda,      # IN  op(A): (m, k)
                     const float* b, int ldb,      # IN  op(B): (k, n)
                     float beta, float* c, int ldc,   # INOUT C: (m, n)
                     int n_threads) noexcept nogil:
    """C := op(A) @ op(B) + beta * C in tiles of C, one sgemm per tile.

    The tiling depends on (m, n) alone, never on n_threads: every element of C
    is computed by the same single-threaded sgemm call whatever the thread
    count, so the result has the same bits on 1 and on many threads. The
    caller keeps BLAS itself single-threaded (threadpoolctl).
    """
    cdef int target = 16                      # tiles wanted, enough for load balance
    cdef int tm, tn, n_tm, n_tn, t, i0, j0, mm, nn
    if m <= 0 or n <= 0:
        return
    tm = _tile(m, target) if m >= 64 else m
    n_tm = (m + tm - 1) // tm
    if n_tm >= target or n < 64:
        tn = n
    else:
        tn = _tile(n, (target + n_tm - 1) // n_tm)
        if tn < 32:
            tn = 32
    n_tn = (n + tn - 1) // tn
    for t in prange(n_tm * n_tn, nogil=True, schedule='dynamic', num_threads=n_threads):
        i0 = (t // n_tn) * tm
        j0 = (t % n_tn) * tn
        mm = min(tm, m - i0)
        nn = min(tn, n - j0)
        gemm(trans_a, trans_b, mm, nn, k, 1.0,
             a + (<Py_ssize_t>i0 if trans_a else <Py_ssize_t>i0 * lda), lda,
             b + (<Py_ssize_t>j0 * ldb if trans_b else <Py_ssize_t>j0), ldb,
             beta, c + <Py_ssize_t>i0 * ldc + j0, ldc)
