# The kernel sets (_kernel_set.h): one table of vector kernels per instruction
# set; the drivers (_conv, _linear, _pool, _dropout, _norm) take a set's number and
# call through kernel_set(number).
from libc.stdint cimport uint16_t, uint32_t, uint64_t

# a kernel set's Philox generator (_dropout_kernels.h), which cc_dropout takes
ctypedef void (*PhiloxBatch)(uint64_t q, const uint32_t* k, uint32_t* words) noexcept nogil


cdef extern from "_kernel_set.h" nogil:
    ctypedef struct cc_kernel_set:
        const char* name
        int lanes
        void (*conv_forward_image)(const float* xp, int Wp, int C, int KH, int KW, int SH,
                                   int SW, int OH, int OW, const float* w, int F,
                                   const float* b, float* y, int relu) noexcept nogil
        void (*conv_dw_image)(const float* xp, int Wp, int C, int KH, int KW, int SH,
                              int SW, int OH, int OW, const float* dy, int F,
                              float* dw) noexcept nogil
        void (*mask_sum)(const float* dy, const float* y, int P, int F, float* out,
                         float* db) noexcept nogil
        void (*wino_filter)(const float* w, int r, int C, int F, float* U) noexcept nogil
        void (*wino_forward_images)(const float* const* xps, int G, int Wp, int C, int r,
                                    int OH, int OW, const float* U, int F, const float* b,
                                    float* const* ys, int relu,
                                    float* scratch) noexcept nogil
        void (*wino_dw_image)(const float* xp, int Wp, int C, int r, const float* dy,
                              int OH, int OW, int F, float* M, int* q,
                              float* scratch) noexcept nogil
        void (*wino_dw_flush)(int C, int F, float* M, int* q, float* scratch) noexcept nogil
        void (*wino_dw_finish)(const float* M, int r, int C, int F,
                               float* dw) noexcept nogil
        void (*linear_forward_block)(const float* x, int D, const float* w, int F,
                                     const float* b, float* y, int n0, int n1, int c0,
                                     int c1, int relu) noexcept nogil
        void (*linear_dw_block)(const float* x, const int* bounds, int n_slices, int D,
                                const float* dy, int F, float* dwr, int d0,
                                int d1) noexcept nogil
        void (*linear_dx_block)(const float* w, int F, const float* dyT, int NP, float* dx,
                                int D, int N, int d0, int d1) noexcept nogil
        void (*pool_row)(const float* x, Py_ssize_t H, Py_ssize_t W, Py_ssize_t C,
                         Py_ssize_t KH, Py_ssize_t KW, Py_ssize_t SH, Py_ssize_t SW,
                         Py_ssize_t PT, Py_ssize_t PL, Py_ssize_t OW, Py_ssize_t oh,
                         int relu, float* y, int* am) noexcept nogil
        Py_ssize_t (*unpool_tiled)(const float* dy, const int* am, const float* relu_y,
                                   Py_ssize_t H, Py_ssize_t W, Py_ssize_t C, Py_ssize_t KH,
                                   Py_ssize_t KW, Py_ssize_t PT, Py_ssize_t PL,
                                   Py_ssize_t OH, Py_ssize_t OW, float* dx) noexcept nogil
        PhiloxBatch philox_batch
        void (*bn_sums)(const float* x, const uint16_t* xh, const float* dy,
                        const float* relu_scale,
                        const float* relu_beta, const double* centre, Py_ssize_t r0,
                        Py_ssize_t r1, Py_ssize_t C, double* s1, double* s2) noexcept nogil
        void (*bn_affine)(const float* x, const uint16_t* xh, const float* mean,
                          const float* scale,
                          const float* beta, Py_ssize_t r0, Py_ssize_t r1, Py_ssize_t C,
                          int relu, float* y, uint16_t* yb) noexcept nogil
        void (*bn_dx)(const float* x, const uint16_t* xh, const float* dy,
                      const float* relu_scale,
                      const float* relu_beta, const float* mean, const float* k,
                      const float* inv, const float* cb, const float* cg, Py_ssize_t r0,
                      Py_ssize_t r1, Py_ssize_t C, float* dx, uint16_t* dxb) noexcept nogil
        void (*adam)(float* p, const float* g, float* m, float* v, Py_ssize_t n, float lr_t,
                     float a1, float a2, float eps) noexcept nogil


cdef const cc_kernel_set* kernel_set(int number) except NULL
