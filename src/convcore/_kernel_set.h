/* A kernel set: convcore's vector kernels compiled for one instruction set,
 * as a table of functions. Every set is built from the same source, the
 * width-generic kernel headers (_simd.h), by one small file each:
 *
 *   _set_avx512.c   AVX-512F + FMA: 16 floats a vector, 32 registers
 *   _set_avx2.c     AVX2 + FMA: 8 floats, 16 registers
 *   _set_neon.c     ARM64 Advanced SIMD (NEON): 4 floats, 32 registers
 *   _set_baseline.c the compiler's default target: max-pool, dropout, batch
 *                   normalisation and Adam only
 *
 * so one build serves every CPU of its architecture: cc_kernel_set_get
 * (_set_baseline.c) returns a set only where it was compiled in and the CPU
 * runs it, and convcore._isa picks the best (AVX-512 -> AVX2 -> baseline),
 * unless set_kernels names one.
 */
#ifndef CONVCORE_KERNEL_SET_H
#define CONVCORE_KERNEL_SET_H

#include <stddef.h>
#include <stdint.h>

enum { CC_SET_BASELINE = 0, CC_SET_AVX2 = 1, CC_SET_AVX512 = 2, CC_SET_NEON = 3, CC_N_SETS = 4 };

/* The vector sets need GCC >= 9 or clang >= 12 (vector conversions, target pragmas). */
#if !defined(CONVCORE_NO_SIMD) \
    && (defined(__clang__) ? __clang_major__ >= 12 : defined(__GNUC__) && __GNUC__ >= 9)
#define CC_VECTOR_SETS 1
#else
#define CC_VECTOR_SETS 0
#endif
#if CC_VECTOR_SETS && defined(__x86_64__)
#define CC_HAVE_X86 1
#else
#define CC_HAVE_X86 0
#endif
#if CC_VECTOR_SETS && defined(__aarch64__)
#define CC_HAVE_NEON 1
#else
#define CC_HAVE_NEON 0
#endif

typedef struct {
    const char* name;
    int lanes;                  /* floats a vector; 1: the baseline */
    /* _conv_direct.h (NULL in the baseline set, as are all but the last seven) */
    void (*conv_forward_image)(const float* xp, int Wp, int C, int KH, int KW, int SH,
                               int SW, int OH, int OW, const float* w, int F,
                               const float* b, float* y, int relu);
    void (*conv_dw_image)(const float* xp, int Wp, int C, int KH, int KW, int SH, int SW,
                          int OH, int OW, const float* dy, int F, float* dw);
    void (*mask_sum)(const float* dy, const float* y, int P, int F, float* out, float* db);
    /* _conv_winograd.h */
    void (*wino_filter)(const float* w, int r, int C, int F, float* U);
    void (*wino_forward_images)(const float* const* xps, int G, int Wp, int C, int r,
                                int OH, int OW, const float* U, int F, const float* b,
                                float* const* ys, int relu, float* scratch);
    void (*wino_dw_image)(const float* xp, int Wp, int C, int r, const float* dy, int OH,
                          int OW, int F, float* M, int* q, float* scratch);
    void (*wino_dw_flush)(int C, int F, float* M, int* q, float* scratch);
    void (*wino_dw_finish)(const float* M, int r, int C, int F, float* dw);
    /* _linear_tiles.h */
    void (*linear_forward_block)(const float* x, int D, const float* w, int F,
                                 const float* b, float* y, int n0, int n1, int c0, int c1,
                                 int relu);
    void (*linear_dw_block)(const float* x, const int* bounds, int n_slices, int D,
                            const float* dy, int F, float* dwr, int d0, int d1);
    void (*linear_dx_block)(const float* w, int F, const float* dyT, int NP, float* dx,
                            int D, int N, int d0, int d1);
    /* _pool_kernels.h */
    void (*pool_row)(const float* x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH,
                     ptrdiff_t KW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t PT, ptrdiff_t PL,
                     ptrdiff_t OW, ptrdiff_t oh, int relu, float* y, int* am);
    ptrdiff_t (*unpool_tiled)(const float* dy, const int* am, const float* relu_y,
                              ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH,
                              ptrdiff_t KW, ptrdiff_t PT, ptrdiff_t PL, ptrdiff_t OH,
                              ptrdiff_t OW, float* dx);
    /* _dropout_kernels.h */
    void (*philox_batch)(uint64_t q, const uint32_t k[2], uint32_t* words);
    /* _norm_kernels.h */
    void (*bn_sums)(const float* x, const uint16_t* xh, const float* dy, const float* relu_scale,
                    const float* relu_beta, const double* centre, ptrdiff_t r0, ptrdiff_t r1,
                    ptrdiff_t C, double* s1, double* s2);
    void (*bn_affine)(const float* x, const uint16_t* xh, const float* mean, const float* scale,
                      const float* beta, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t C, int relu,
                      float* y, uint16_t* yb);
    void (*bn_dx)(const float* x, const uint16_t* xh, const float* dy, const float* relu_scale,
                  const float* relu_beta, const float* mean, const float* k, const float* inv,
                  const float* cb, const float* cg, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t C,
                  float* dx, uint16_t* dxb);
    /* _adam.h */
    void (*adam)(float* p, const float* g, float* m, float* v, ptrdiff_t n, float lr_t,
                 float a1, float a2, float eps);
} cc_kernel_set;

/* The set with that number (CC_SET_*), or NULL where it was not compiled in
 * or this CPU does not run it. */
const cc_kernel_set* cc_kernel_set_get(int set);

#endif
