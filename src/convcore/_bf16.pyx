"""bfloat16: rounding float32 to bfloat16's values (element-wise: any split
over threads gives the same bits), and which bf16 instructions the CPU has
(_bf16_kernels.h)."""
from cython.parallel cimport prange

cdef extern from "_bf16_kernels.h" nogil:
    void cc_round_bf16(const float* x, float* y, Py_ssize_t n)
    int cc_bf16_features()
    int CC_BF16_AVX512, CC_BF16_AMX

DEF CHUNK = 16384   # elements per work item


def round_bf16(const float[::1] x, float[::1] y, int n_threads):
    cdef Py_ssize_t c, n = y.shape[0]
    for c in prange((n + CHUNK - 1) // CHUNK, nogil=True, schedule='static',
                    num_threads=n_threads):
        cc_round_bf16(&x[c * CHUNK], &y[c * CHUNK], min(n, (c + 1) * CHUNK) - c * CHUNK)


KERNELS = {"amx": CC_BF16_AMX, "avx512_bf16": CC_BF16_AVX512}   # _bf16_gemm.h's numbers


def features():
    """The bf16 instruction sets this CPU (and OS) run: a tuple of
    "amx" (AMX-BF16 tiles, Linux's permission for the tile state granted) and
    "avx512_bf16" (vdpbf16ps), best first."""
    cdef int have = cc_bf16_features()
    return tuple(name for name, bit in (("amx", CC_BF16_AMX), ("avx512_bf16", CC_BF16_AVX512))
                 if have & bit)
