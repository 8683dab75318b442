"""Batch normalisation over NHWC, seen as x (M, C) with M = N H W rows: per
channel statistics over the rows, forward and backward side by side.

x may come as the bfloat16 bits of its values (xh, uint16; x None: a bf16
network's batch norm reads its input so): the kernels widen them as they
load them, the same bits as their values given as float32.

Sums over the rows run in a fixed order whatever the thread count: the rows
are cut into blocks of ROWS (a constant), each block's per-channel partial sum
is accumulated in float in row order by one thread, and the partial sums are
added in double in block order. So 1 and N threads give the same bits. The
passes over a block are the kernel set's (_norm_kernels.h: the same bits on
every set); what is left here is per channel.

  forward (training):  mean = sum x / M,  var = sum (x - mean)^2 / M (biased),
                       y = (x - mean) scale + beta (relu: max(., 0)),
                       scale = gamma / sqrt(var + eps)
  inference:           the same y from given mean and var (running statistics)
  backward:            dy' = dy (where the forward's ReLU passed it, if relu_beta is given:
                       (x - mean) scale + beta > 0, made again from x),
                       xhat = (x - mean) / sqrt(var + eps),
                       dbeta = sum dy',  dgamma = sum dy' xhat,
                       dx = scale (dy' - dbeta / M - xhat dgamma / M)
"""
from cython.parallel cimport prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from libc.stdint cimport uint16_t, uint32_t
from libc.string cimport memcpy, memset

from convcore._isa cimport cc_kernel_set, kernel_set

DEF ROWS = 64   # rows per block of a sum: fixed, so the order of every sum is too


cdef int sums(const cc_kernel_set* k, const float* x, const uint16_t* xh, const float* dy,
              const float* relu_scale, const float* relu_beta, const double* centre,
              Py_ssize_t M, Py_ssize_t C, double* s1, double* s2, int n_threads) except -1:
    """s1, s2 (C,): the blocks' sums (k.bn_sums, _norm_kernels.h) over all M
    rows, blocks in parallel, added in double in block order."""
    cdef Py_ssize_t nb = (M + ROWS - 1) // ROWS, b, c
    cdef double* part = <double*>malloc(sizeof(double) * 2 * C * max(nb, 1))
    if part == NULL:
        raise MemoryError()
    for b in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        k.bn_sums(x, xh, dy, relu_scale, relu_beta, centre, b * ROWS, min(M, (b + 1) * ROWS),
                  C, part + 2 * b * C, part + (2 * b + 1) * C)
    memset(s1, 0, sizeof(double) * C)
    memset(s2, 0, sizeof(double) * C)
    for b in range(nb):
        for c in range(C):
            s1[c] += part[2 * b * C + c]
            s2[c] += part[(2 * b + 1) * C + c]
    free(part)
    return 0


cdef void affine(const cc_kernel_set* k, const float* x, const uint16_t* xh, const float* mean,
                 const float* scale, const float* beta, Py_ssize_t M, Py_ssize_t C, bint relu,
                 float* y, uint16_t* yb, int n_threads) noexcept nogil:
    """y = (x - mean) scale + beta per channel (then max(., 0) if relu), or
    its bfloat16 bits into yb where given (y NULL), row blocks in parallel
    (k.bn_affine)."""
    cdef Py_ssize_t nb = (M + ROWS - 1) // ROWS, b
    for b in prange(nb, schedule='static', num_threads=n_threads):
        k.bn_affine(x, xh, mean, scale, beta, b * ROWS, min(M, (b + 1) * ROWS), C, relu, y, yb)


cdef inline float* _or_null(float[:, ::1] y):
    return &y[0, 0] if y is not None else NULL


cdef inline const float* _in_or_null(const float[:, ::1] x):
    return &x[0, 0] if x is not None and x.shape[0] else NULL


cdef inline const uint16_t* _in_bits_or_null(const uint16_t[:, ::1] xh):
    return &xh[0, 0] if xh is not None and xh.shape[0] else NULL


cdef inline Py_ssize_t _rows(const float[:, ::1] x, const uint16_t[:, ::1] xh):
    return x.shape[0] if x is not None else xh.shape[0]


cdef inline Py_ssize_t _cols(const float[:, ::1] x, const uint16_t[:, ::1] xh):
    return x.shape[1] if x is not None else xh.shape[1]


cdef inline uint16_t* _bits_or_null(uint16_t[:, ::1] yb):
    return &yb[0, 0] if yb is not None else NULL


cdef inline float _widened(uint16_t h) noexcept nogil:
    """The value of bfloat16 bits h."""
    cdef uint32_t u = (<uint32_t>h) << 16
    cdef float f
    memcpy(&f, &u, 4)
    return f


cdef inline float _scale(float gamma, float var, double eps) noexcept nogil:
    """gamma / sqrt(var + eps) in float: the forward's, and the backward's where
    it makes the forward's ReLU mask again (the same bits)."""
    return <float>(gamma / sqrt(<double>var + eps))


def batchnorm_forward(const float[:, ::1] x,        # IN  (M, C), or None: xh
                      const float[::1] gamma, const float[::1] beta,   # IN (C,)
                      double eps, bint relu,
                      float[:, ::1] y,              # OUT (M, C), or None: yb
                      float[::1] mean, float[::1] var,   # OUT (C,): batch statistics
                      int n_threads, int kernels,
                      uint16_t[:, ::1] yb=None,     # OUT (M, C): y's bfloat16 bits (y None)
                      const uint16_t[:, ::1] xh=None):   # IN (M, C): x's bfloat16 bits
    """kernels: the kernel set's number (_isa.pxd), as for every function here."""
    cdef const cc_kernel_set* k = kernel_set(kernels)
    cdef Py_ssize_t M = _rows(x, xh), C = _cols(x, xh), c
    cdef const float* xp = _in_or_null(x)
    cdef const uint16_t* xhp = _in_bits_or_null(xh)
    cdef double* s = <double*>malloc(sizeof(double) * 3 * C)
    if s == NULL:
        raise MemoryError()
    cdef float[::1] scale = var.copy()
    try:
        for c in range(C):                  # centred on the first row: float sums of the
            s[c] = xp[c] if xp != NULL else _widened(xhp[c])   # differences stay exact
        sums(k, xp, xhp, NULL, NULL, NULL, s, M, C, s + C, s + 2 * C, n_threads)
        for c in range(C):
            s[c] = s[c] + s[C + c] / M                          # the mean, the new centre
        sums(k, xp, xhp, NULL, NULL, NULL, s, M, C, s + C, s + 2 * C, n_threads)
        for c in range(C):
            mean[c] = <float>s[c]
            var[c] = <float>(s[2 * C + c] / M)
            scale[c] = _scale(gamma[c], var[c], eps)
    finally:
        free(s)
    affine(k, xp, xhp, &mean[0], &scale[0], &beta[0], M, C, relu, _or_null(y), _bits_or_null(yb),
           n_threads)


def batchnorm_inference(const float[:, ::1] x, const float[::1] mean, const float[::1] scale,
                        const float[::1] beta, bint relu, float[:, ::1] y, int n_threads,
                        int kernels, uint16_t[:, ::1] yb=None,
                        const uint16_t[:, ::1] xh=None):
    """y = (x - mean) scale + beta (then ReLU), from given (running) statistics;
    or its bfloat16 bits into yb (y None); x or (None) its bits xh."""
    affine(kernel_set(kernels), _in_or_null(x), _in_bits_or_null(xh), &mean[0], &scale[0],
           &beta[0], _rows(x, xh), _cols(x, xh), relu, _or_null(y), _bits_or_null(yb), n_threads)


def batchnorm_backward(const float[:, ::1] x, const float[::1] gamma,   # x or None: xh
                       const float[::1] mean, const float[::1] var, double eps,
                       const float[:, ::1] dy,
                       const float[::1] relu_beta,  # IN  (C,): the forward's beta (ReLU), or None
                       float[:, ::1] dx,            # OUT (M, C) or None
                       float[::1] dgamma, float[::1] dbeta,   # OUT (C,)
                       int n_threads, int kernels,
                       const double[::1] totals=None,   # IN (1 + 2C,): M, dgamma, dbeta
                       uint16_t[:, ::1] dxb=None,       # OUT (M, C): dx's bfloat16 bits
                       const uint16_t[:, ::1] xh=None):  # IN (M, C): x's bfloat16 bits
    """totals: the whole batch's count and sums, where x is one process's slice
    of it (dgamma and dbeta are still this slice's). dxb (dx None): dx as
    bfloat16 bits."""
    cdef const cc_kernel_set* ks = kernel_set(kernels)
    cdef Py_ssize_t M = _rows(x, xh), C = _cols(x, xh), nb = (M + ROWS - 1) // ROWS, b, c
    cdef const float* xp = _in_or_null(x)
    cdef const uint16_t* xhp = _in_bits_or_null(xh)
    cdef double count = M
    cdef double* s = <double*>malloc(sizeof(double) * 3 * C)
    if s == NULL:
        raise MemoryError()
    cdef float[::1] inv = dgamma.copy(), k = dgamma.copy(), cb = dgamma.copy()
    cdef float[::1] cg = dgamma.copy(), scale = dgamma.copy()
    cdef const float* rb = &relu_beta[0] if relu_beta is not None else NULL
    cdef const float* rs = &scale[0] if relu_beta is not None else NULL
    try:
        for c in range(C):
            s[c] = mean[c]                          # (the centre: the mask's mean too)
            scale[c] = _scale(gamma[c], var[c], eps)
        if M:
            sums(ks, xp, xhp, &dy[0, 0], rs, rb, s, M, C, s + C, s + 2 * C, n_threads)
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
    if (dx is None and dxb is None) or M == 0:
        return
    cdef float* dxp = _or_null(dx)
    cdef uint16_t* dxh = _bits_or_null(dxb)
    # dx = k (dy' - dbeta / M - xhat dgamma / M), xhat = (x - mean) inv
    for b in prange(nb, nogil=True, schedule='static', num_threads=n_threads):
        ks.bn_dx(xp, xhp, &dy[0, 0], rs, rb, &mean[0], &k[0], &inv[0], &cb[0], &cg[0],
                 b * ROWS, min(M, (b + 1) * ROWS), C, dxp, dxh)
