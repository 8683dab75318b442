"""Batch normalisation over NHWC, seen as x (M, C) with M = N H W rows: per
channel statistics over the rows, forward and backward side by side.

Sums over the rows run in a fixed order whatever the thread count: the rows
are cut into blocks of ROWS (a constant), each block's per-channel partial sum
is accumulated in float in row order by one thread, and the partial sums are
added in double in block order. So 1 and N threads give the same bits.

  forward (training):  mean = sum x / M,  var = sum (x - mean)^2 / M (biased),
                       y = (x - mean) scale + beta (relu: max(., 0)),
                       scale = gamma / sqrt(var + eps)
  inference:           the same y from given mean and var (running statistics)
  backward:            dy' = dy (where relu_y > 0, if given), xhat = (x - mean) / sqrt(var + eps),
                       dbeta = sum dy',  dgamma = sum dy' xhat,
                       dx = scale (dy' - dbeta / M - xhat dgamma / M)
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memset

DEF ROWS = 64   # rows per block of a sum: fixed, so the order of every sum is too


cdef void block_sums(const float* x, const float* dy, const float* relu_y, const double* centre,
                     Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C,
                     double* s1, double* s2) noexcept nogil:
    """Rows r0..r1 of one block, in order, in float (at most ROWS terms: vector
    adds; the blocks are added in double): s1 = sum x - centre (or dy' with dy
    given), s2 = sum (x - centre)^2 (or dy' (x - centre))."""
    cdef Py_ssize_t r, c
    cdef float a1[256]
    cdef float a2[256]
    cdef float cf[256]
    cdef Py_ssize_t c0, cn
    cdef float d, g
    for c0 in range(0, C, 256):                 # channels in chunks that fit the stack
        cn = min(256, C - c0)
        for c in range(cn):
            a1[c] = 0
            a2[c] = 0
            cf[c] = <float>centre[c0 + c]
        if dy == NULL:
            for r in range(r0, r1):
                for c in range(cn):
                    d = x[r * C + c0 + c] - cf[c]
                    a1[c] += d
                    a2[c] += d * d
        else:
            for r in range(r0, r1):
                for c in range(cn):
                    g = dy[r * C + c0 + c]
                    if relu_y != NULL:
                        g = g if relu_y[r * C + c0 + c] > 0 else 0
                    a1[c] += g
                    a2[c] += g * (x[r * C + c0 + c] - cf[c])
        for c in range(cn):
            s1[c0 + c] = a1[c]
            s2[c0 + c] = a2[c]


cdef int sums(const float* x, const float* dy, const float* relu_y, const double* centre,
              Py_ssize_t M, Py_ssize_t C, double* s1, double* s2, int n_threads) except -1:
    """s1, s2 (C,) = block_sums over all M rows: blocks in parallel, added in block order."""
    cdef Py_ssize_t nb = (M + ROWS - 1) // ROWS, b, c
    cdef double* part = <double*>malloc(sizeof(double) * 2 * C * max(nb, 1))
    if part == NULL:
        raise MemoryError()
    for b in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        block_sums(x, dy, relu_y, centre, b * ROWS, min(M, (b + 1) * ROWS), C,
                   part + 2 * b * C, part + (2 * b + 1) * C)
    memset(s1, 0, sizeof(double) * C)
    memset(s2, 0, sizeof(double) * C)
    for b in range(nb):
        for c in range(C):
            s1[c] += part[2 * b * C + c]
            s2[c] += part[(2 * b + 1) * C + c]
    free(part)
    return 0


cdef void affine(const float* x, const float* mean, const float* scale, const float* beta,
                 Py_ssize_t M, Py_ssize_t C, bint relu, float* y, int n_threads) noexcept nogil:
    """y = (x - mean) scale + beta per channel (then max(., 0) if relu), row blocks in
    parallel."""
    cdef Py_ssize_t nb = (M + ROWS - 1) // ROWS, b, r, c
    cdef float v
    for b in prange(nb, schedule='static', num_threads=n_threads):
        for r in range(b * ROWS, min(M, (b + 1) * ROWS)):
            for c in range(C):
                v = (x[r * C + c] - mean[c]) * scale[c] + beta[c]
                if relu and not v > 0:
                    v = 0
                y[r * C + c] = v


def batchnorm_forward(const float[:, ::1] x,        # IN  (M, C)
                      const float[::1] gamma, const float[::1] beta,   # IN (C,)
                      double eps, bint relu,
                      float[:, ::1] y,              # OUT (M, C)
                      float[::1] mean, float[::1] var,   # OUT (C,): batch statistics
                      int n_threads):
    cdef Py_ssize_t M = x.shape[0], C = x.shape[1], c
    cdef double* s = <double*>malloc(sizeof(double) * 3 * C)
    if s == NULL:
        raise MemoryError()
    cdef float[::1] scale = var.copy()
    try:
        for c in range(C):                  # centred on the first row: float sums of the
            s[c] = x[0, c]                  # differences stay exact for a constant channel
        sums(&x[0, 0], NULL, NULL, s, M, C, s + C, s + 2 * C, n_threads)
        for c in range(C):
            s[c] = s[c] + s[C + c] / M                          # the mean, the new centre
        sums(&x[0, 0], NULL, NULL, s, M, C, s + C, s + 2 * C, n_threads)
        for c in range(C):
            mean[c] = <float>s[c]
            var[c] = <float>(s[2 * C + c] / M)
            scale[c] = <float>(gamma[c] / sqrt(<double>var[c] + eps))
    finally:
        free(s)
    affine(&x[0, 0], &mean[0], &scale[0], &beta[0], M, C, relu, &y[0, 0], n_threads)


def batchnorm_inference(const float[:, ::1] x, const float[::1] mean, const float[::1] scale,
                        const float[::1] beta, bint relu, float[:, ::1] y, int n_threads):
    """y = (x - mean) scale + beta (then ReLU), from given (running) statistics."""
    affine(&x[0, 0], &mean[0], &scale[0], &beta[0], x.shape[0], x.shape[1], relu, &y[0, 0],
           n_threads)


def batchnorm_backward(const float[:, ::1] x, const float[::1] gamma,
                       const float[::1] mean, const float[::1] var, double eps,
                       const float[:, ::1] dy, const float[:, ::1] relu_y,   # relu_y or None
                       float[:, ::1] dx,            # OUT (M, C) or None
                       float[::1] dgamma, float[::1] dbeta,   # OUT (C,)
                       int n_threads,
                       const double[::1] totals=None):   # IN (1 + 2C,): M, dgamma, dbeta
    """totals: the whole batch's count and sums, where x is one process's slice
    of it (dgamma and dbeta are still this slice's)."""
    cdef Py_ssize_t M = x.shape[0], C = x.shape[1], nb = (M + ROWS - 1) // ROWS, b, r, c
    cdef double count = M
    cdef double* s = <double*>malloc(sizeof(double) * 3 * C)
    if s == NULL:
        raise MemoryError()
    cdef float[::1] inv = dgamma.copy(), k = dgamma.copy(), cb = dgamma.copy()
    cdef float[::1] cg = dgamma.copy()
    cdef const float* ry = &relu_y[0, 0] if relu_y is not None else NULL
    cdef float g
    try:
        for c in range(C):
            s[c] = mean[c]
        if M:
            sums(&x[0, 0], &dy[0, 0], ry, s, M, C, s + C, s + 2 * C, n_threads)
        else:
            memset(s + C, 0, sizeof(double) * 2 * C)
        for c in range(C):
            inv[c] = <float>(1.0 / sqrt(<double>var[c] + eps))
            dbeta[c] = <float>s[C + c]
            dgamma[c] = <float>(s[2 * C + c] * inv[c])
            k[c] = gamma[c] * inv[c]
        if totals is not None:     # the whole batch's: dgamma's sum is of dy' xhat
            count = totals[0]
            for c in range(C):
                s[C + c] = totals[1 + C + c]
                s[2 * C + c] = totals[1 + c] / inv[c]
        for c in range(C):
            cb[c] = <float>(s[C + c] / count)
            cg[c] = <float>(s[2 * C + c] * inv[c] / count)
    finally:
        free(s)
    if dx is None or M == 0:
        return
    # dx = k (dy' - dbeta / M - xhat dgamma / M), xhat = (x - mean) inv
    for b in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        for r in range(b * ROWS, min(M, (b + 1) * ROWS)):
            for c in range(C):
                g = dy[r, c]
                if ry != NULL and not ry[r * C + c] > 0:
                    g = 0
                dx[r, c] = k[c] * (g - cb[c] - (x[r, c] - mean[c]) * inv[c] * cg[c])
