"""bfloat16: rounding float32 to bfloat16's values (or to their bits),
widening bfloat16 bits to float32 (element-wise: any split over threads
gives the same bits), and which bf16 instructions the CPU has
(_bf16_kernels.h)."""
from cython.parallel cimport prange
from libc.stdint cimport uint16_t, uint32_t

cdef extern from "_bf16_kernels.h" nogil:
    void cc_round_bf16(const float* x, float* y, Py_ssize_t n)
    void cc_narrow_bits(const float* x, uint16_t* y, Py_ssize_t n)
    int cc_bf16_features()
    int CC_BF16_AVX512, CC_BF16_AMX

cdef extern from "_bf16_gemm.h" nogil:    # (AVX-512's vectors, where the bf16 kernels run)
    void cc_narrow_bits_wide(const float* x, uint16_t* y, Py_ssize_t n)

DEF CHUNK = 16384   # elements per work item


def widen_bits(const uint16_t[::1] h, uint32_t[::1] y, int n_threads):
    """y = h << 16: bfloat16 bits as float32's (y viewed as float32)."""
    cdef Py_ssize_t c, i, n = y.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        for i in range(c * CHUNK, min(n, (c + 1) * CHUNK)):
            y[i] = (<uint32_t>h[i]) << 16


def round_bf16(const float[::1] x, float[::1] y, int n_threads):
    cdef Py_ssize_t c, n = y.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        cc_round_bf16(&x[c * CHUNK], &y[c * CHUNK], min(n, (c + 1) * CHUNK) - c * CHUNK)


def narrow_bits(const float[::1] x, uint16_t[::1] y, int n_threads, bint wide):
    """y = the bfloat16 bits of round_bf16(x), in one pass (wide: in
    AVX-512's vectors, on a CPU that runs the bf16 kernels)."""
    cdef Py_ssize_t c, n = y.shape[0], m
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        m = min(n, (c + 1) * CHUNK) - c * CHUNK
        if wide:
            cc_narrow_bits_wide(&x[c * CHUNK], &y[c * CHUNK], m)
        else:
            cc_narrow_bits(&x[c * CHUNK], &y[c * CHUNK], m)


KERNELS = {"amx": CC_BF16_AMX, "avx512_bf16": CC_BF16_AVX512}   # _bf16_gemm.h's numbers


def features():
    """The bf16 instruction sets this CPU (and OS) run: a tuple of
    "amx" (AMX-BF16 tiles, Linux's permission for the tile state granted) and
    "avx512_bf16" (vdpbf16ps), best first."""
    cdef int have = cc_bf16_features()
    return tuple(name for name, bit in (("amx", CC_BF16_AMX), ("avx512_bf16", CC_BF16_AVX512))
                 if have & bit)
