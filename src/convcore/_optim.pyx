"""Optimiser updates in one fused pass over the parameters (memory-bound work).

Element-wise, so any split over threads gives the same bits.
  adam:  p *= 1 - decay (AdamW's decoupled weight decay, decay = lr wd; none if 0), then
         m += (g - m)(1 - b1);  v += (g^2 - v)(1 - b2);  p -= lr_t m / (sqrt(v) + eps)
         (TensorFlow's ApplyAdam; lr_t = lr sqrt(1 - b2^t) / (1 - b1^t) is computed by the caller)
  sgd:   g' = g + wd p;  buf = momentum buf + g';  p -= lr buf, or with nesterov
         p -= lr (g' + momentum buf)  (PyTorch's SGD; buf unused when momentum == 0)
"""
from cython.parallel cimport prange

from convcore._isa cimport cc_kernel_set, kernel_set

DEF CHUNK = 4096   # parameters per work item


def adam_update(float[::1] p, const float[::1] g, float[::1] m, float[::1] v,
                float lr_t, double beta1, double beta2, float eps, float decay, int n_threads,
                int kernels):
    """Adam on kernel set number kernels (_adam.h: the same bits on every set)."""
    cdef Py_ssize_t c, i0, i, n = p.shape[0]
    cdef float keep = 1 - decay
    # 1 - beta in double: float32(0.999) alone is off by 1.3e-5 relative in 1 - beta2
    cdef float a1 = <float>(1.0 - beta1), a2 = <float>(1.0 - beta2)
    cdef const cc_kernel_set* k = kernel_set(kernels)
    if n == 0:
        return
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        i0 = c * CHUNK
        if decay != 0:
            for i in range(i0, min(n, i0 + CHUNK)):
                p[i] = p[i] * keep
        k.adam(&p[i0], &g[i0], &m[i0], &v[i0], min(CHUNK, n - i0), lr_t, a1, a2, eps)


def sgd_update(float[::1] p, const float[::1] g, float[::1] buf, float lr, float momentum,
               bint nesterov, float wd, int n_threads):
    cdef Py_ssize_t i, n = p.shape[0]
    cdef float b, d
    if momentum == 0:
        for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
            p[i] = p[i] - lr * (g[i] + wd * p[i])
        return
    for i in prange(n, nogil=True, schedule='static', num_threads=n_threads):
        d = g[i] + wd * p[i]
        b = momentum * buf[i] + d
        buf[i] = b
        if nesterov:
            b = d + momentum * b
        p[i] = p[i] - lr * b
