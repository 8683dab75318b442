"""Which build of the core this is: with OpenMP threads, or serial."""
from convcore._openmp cimport CONVCORE_OPENMP


def openmp_enabled():
    """True if convcore was compiled with OpenMP (parallel kernels)."""
    return bool(CONVCORE_OPENMP)
