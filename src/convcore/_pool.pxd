from convcore._geometry cimport Window
from convcore._isa cimport cc_kernel_set

cdef void pool_row(const cc_kernel_set* k, const float* x, Window g, Py_ssize_t oh, float* y,
                   int* am, bint relu=*) noexcept nogil
cdef Py_ssize_t unpool_image(const cc_kernel_set* k, const float* dy, const int* am,
                             const float* relu_y, Window g, float* dx) noexcept nogil
cdef Py_ssize_t unpool_images(const cc_kernel_set* k, const float* dy, const int* am,
                              const float* relu_y, Window g, Py_ssize_t N,
                              int n_threads, float* dx) noexcept nogil
