"""Dropout, forward and backward: y = x * mask, the mask (0 or 1 / keep per
entry, kept with probability keep = 1 - rate) drawn from Philox4x32-10 with a
64-bit key (_dropout_kernels.h). The backward pass makes the same mask again
from the key: nothing is stored between the two. Entry i's draw depends on the
key and i alone, so blocks of entries go to threads in any order with the same
bits.
"""
from cython.parallel cimport prange
from libc.stdint cimport uint32_t, uint64_t

from convcore._isa cimport PhiloxBatch, cc_kernel_set, kernel_set

cdef extern from "_dropout_kernels.h" nogil:
    void cc_philox4x32_10(uint32_t* c, const uint32_t* k)
    void cc_dropout(const float* x, float* y, Py_ssize_t i0, Py_ssize_t i1, Py_ssize_t offset,
                    uint32_t key0, uint32_t key1, float keep, float scale, PhiloxBatch batch)

DEF CHUNK = 16384   # entries per work item (a multiple of the 256-entry batch)


def dropout(const float[::1] x, float[::1] y, uint64_t key, float keep, float scale,
            int n_threads, int kernels, Py_ssize_t offset=0):
    """y = x * mask(key): y[i] = x[i] * (scale if entry offset + i is kept else 0),
    the generator from the kernel set numbered kernels (every set makes the
    same words)."""
    cdef Py_ssize_t n = x.shape[0], c, i0
    if n == 0:
        return
    cdef const cc_kernel_set* k = kernel_set(kernels)
    cdef const float* xp = &x[0]
    cdef float* yp = &y[0]
    cdef uint32_t k0 = <uint32_t>(key & 0xFFFFFFFFu), k1 = <uint32_t>(key >> 32)
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        i0 = c * CHUNK
        cc_dropout(xp, yp, i0, min(n, i0 + CHUNK), offset, k0, k1, keep, scale,
                   k.philox_batch)


def philox4x32_10(counter, key):
    """The generator itself, for the known-answer tests: 4 uint32 words from a
    counter of 4 and a key of 2."""
    cdef uint32_t c[4]
    cdef uint32_t k[2]
    for i in range(4):
        c[i] = counter[i]
    k[0], k[1] = key[0], key[1]
    cc_philox4x32_10(c, k)
    return [c[0], c[1], c[2], c[3]]
