"""The kernel sets compiled into convcore and which of them this CPU runs.

A kernel set is convcore's vector kernels (direct convolution, Winograd, the
dense tiles, max-pool, dropout's generator, batch normalisation's passes,
Adam) compiled for one instruction set from the same width-generic source
(_kernel_set.h): "avx512", "avx2", "neon", and "baseline" (the compiler's
default target: max-pool, dropout, batch normalisation and Adam only). The
Python layer names a set by its number in SETS.
"""
from convcore._isa cimport cc_kernel_set

cdef extern from "_kernel_set.h" nogil:
    const cc_kernel_set* cc_kernel_set_get(int number)
    int CC_SET_BASELINE, CC_SET_AVX2, CC_SET_AVX512, CC_SET_NEON

SETS = {"avx512": CC_SET_AVX512, "avx2": CC_SET_AVX2, "neon": CC_SET_NEON,
        "baseline": CC_SET_BASELINE}
VECTOR_SETS = ("avx512", "avx2", "neon")   # the order of preference


# each set's table, or NULL: looked up once (the CPU does not change)
cdef const cc_kernel_set* _sets[4]
for _number in range(4):
    _sets[_number] = cc_kernel_set_get(_number)


cdef const cc_kernel_set* kernel_set(int number) except NULL:
    """The set with that number; ValueError where it is not compiled in or
    this CPU does not run it (the Python layer checks first: a bug otherwise)."""
    if not 0 <= number < 4 or _sets[number] == NULL:
        raise ValueError(f"convcore: kernel set {number} is not available on this machine")
    return _sets[number]


def available():
    """The vector kernel sets this build has and this CPU runs, best first."""
    return tuple(name for name in VECTOR_SETS if _sets[SETS[name]] != NULL)
