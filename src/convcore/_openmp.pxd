# OpenMP behind one #ifdef, so that the core also builds (serially) without it.
# Kernels never `cimport openmp`; they use cython.parallel, which Cython guards
# with #ifdef _OPENMP itself, and this flag to report which build a user has.
cdef extern from *:
    """
    #ifdef _OPENMP
    #include <omp.h>
    #define CONVCORE_OPENMP 1
    #else
    #define CONVCORE_OPENMP 0
    #endif
    """
    int CONVCORE_OPENMP
