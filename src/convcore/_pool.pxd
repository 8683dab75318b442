from convcore._geometry cimport Window

cdef void pool_row(const float* x, Window g, Py_ssize_t oh, float* y, int* am) noexcept nogil
