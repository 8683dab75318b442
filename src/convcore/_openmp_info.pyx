"""Which build of the core this is: with OpenMP threads, or serial."""
from convcore._openmp cimport CONVCORE_OPENMP, convcore_omp_max_threads


def openmp_enabled():
    """True if convcore was compiled with OpenMP (parallel kernels)."""
    return bool(CONVCORE_OPENMP)


def omp_max_threads():
    """omp_get_max_threads() of the runtime (1 in a serial build)."""
    return convcore_omp_max_threads()
