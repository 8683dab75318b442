"""Dense layer, forward and backward: the kernel matmul, tiled over the output.

  x (N, D), w (D, F), y, dy (N, F)
  forward:   y = x @ w + b
  backward:  dx = dy @ w^T;  dw = x^T @ dy;  db = sum over N of dy

Every product is gemm_tiled: tiles of the output fixed by the shapes, each
one single-threaded sgemm, so no sum is ever split across threads.
"""
from cython.parallel cimport prange
from libc.string cimport memcpy

from convcore._blas cimport gemm_tiled


def linear_forward(const float[:, ::1] x, const float[:, ::1] w, const float[::1] b,
                   float[:, ::1] y, int n_tiles, int n_threads,
                   bint relu=False):
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], F = w.shape[1], r
    cdef float beta = 0.0
    if N == 0:
        return
    cdef float* yp = &y[0, 0]
    if b is not None:
        beta = 1.0
        for r in range(N):
            memcpy(yp + r * F, &b[0], F * sizeof(float))
    gemm_tiled(False, False, <int>N, <int>F, <int>D, &x[0, 0], <int>D, &w[0, 0], <int>F,
               beta, yp, <int>F, n_tiles, n_threads)
    cdef float v
    if relu:
        for r in prange(N * F, nogil=True, schedule='static', num_threads=n_threads):
            v = yp[r]
            yp[r] = 0 if v < 0 else v    # branch-free (vectorises); NaN stays NaN


def linear_backward(const float[:, ::1] x, const float[:, ::1] w, const float[:, ::1] dy,
                    float[:, ::1] dx, float[:, ::1] dw, float[::1] db,
                    int n_tiles, int n_threads, const float[:, ::1] relu_y=None,
                    float[:, ::1] scratch=None):
    """With relu_y (the output of a relu=True forward), dy is first masked by
    relu_y > 0 into scratch (N, F)."""
    cdef Py_ssize_t N = x.shape[0], D = x.shape[1], F = w.shape[1], f, r
    cdef float s
    if N == 0:
        dw[:, :] = 0
        db[:] = 0
        return
    cdef const float* dyp = &dy[0, 0]
    cdef const float* yp
    cdef float* sp
    if relu_y is not None:   # dy masked by y > 0, branch-free (see _conv._relu_mask)
        yp = &relu_y[0, 0]
        sp = &scratch[0, 0]
        for r in prange(N * F, nogil=True, schedule='static', num_threads=n_threads):
            (<unsigned int*>sp)[r] = ((<const unsigned int*>dyp)[r]
                                      & (0u - <unsigned int>(yp[r] > 0)))
        dyp = sp
    if dx is not None:
        gemm_tiled(False, True, <int>N, <int>D, <int>F, dyp, <int>F, &w[0, 0], <int>F,
                   0.0, &dx[0, 0], <int>D, n_tiles, n_threads)
    gemm_tiled(True, False, <int>D, <int>F, <int>N, &x[0, 0], <int>D, dyp, <int>F,
               0.0, &dw[0, 0], <int>F, n_tiles, n_threads)
    for f in prange(F, nogil=True, schedule='static', num_threads=n_threads):
        s = 0
        for r in range(N):
            s = s + dyp[r * F + f]
        db[f] = s
