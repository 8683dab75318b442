# OpenMP behind one #ifdef, so that the core also builds (serially) without it.
# Kernels never `cimport openmp`; they use cython.parallel, which Cython guards
# with #ifdef _OPENMP itself, and this flag to report which build a user has.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CONVCORE_OPENMP 1
    static int convcore_omp_max_threads(void) { return omp_get_max_threads(); }
    #else
    #define CONVCORE_OPENMP 0
    static int convcore_omp_max_threads(void) { return 1; }
    #endif
    """
    int CONVCORE_OPENMP
    int convcore_omp_max_threads() noexcept nogil
