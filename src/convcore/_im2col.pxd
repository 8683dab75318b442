from convcore._geometry cimport Window

cdef void im2col_image(const float* x, Window g, float* cols) noexcept nogil
cdef void col2im_image(const float* cols, Window g, float* dx) noexcept nogil
