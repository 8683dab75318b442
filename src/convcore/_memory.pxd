cdef extern from "stdlib.h" nogil:
    void* aligned_alloc(size_t alignment, size_t size)


cdef inline float* alloc64(Py_ssize_t n) noexcept nogil:
    """n floats on a 64-byte boundary (vector loads and stores stay in one cache
    line); release with free(). NULL if out of memory."""
    return <float*>aligned_alloc(64, ((n * sizeof(float) + 63) // 64) * 64)
