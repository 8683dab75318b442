/* The vector type of convcore's register-tiled kernels (_conv_direct.h,
 * _linear_tiles.h): 16 float32 lanes, GCC vector extensions (which clang
 * has too), compiled for AVX-512F by a function-target pragma (GCC's, or
 * clang's attribute pragma), so the rest of the extension keeps the baseline
 * x86-64 ISA and the kernels are called only on CPUs that have AVX-512F
 * (cc_simd_supported, checked at run time).
 */
#ifndef CONVCORE_SIMD_H
#define CONVCORE_SIMD_H

#include <string.h>

#if defined(__x86_64__) && !defined(CONVCORE_NO_SIMD) \
    && (defined(__clang__) ? __clang_major__ >= 12 : defined(__GNUC__) && __GNUC__ >= 8)
#define CC_SIMD_COMPILED 1

static inline int cc_simd_supported(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
}

/* Everything between CC_SIMD_BEGIN and CC_SIMD_END is compiled for AVX-512F. */
#if defined(__clang__)
#define CC_SIMD_BEGIN _Pragma("clang attribute push (__attribute__((target(\"avx512f,fma\"))), apply_to = function)")
#define CC_SIMD_END _Pragma("clang attribute pop")
#else
#define CC_SIMD_BEGIN _Pragma("GCC push_options") _Pragma("GCC target(\"avx512f,fma\")")
#define CC_SIMD_END _Pragma("GCC pop_options")
#endif

CC_SIMD_BEGIN
typedef float cc_v16 __attribute__((vector_size(64)));
typedef int cc_v16i __attribute__((vector_size(64)));

static inline cc_v16 cc_load(const float* p) { cc_v16 v; memcpy(&v, p, sizeof v); return v; }
static inline void cc_store(float* p, cc_v16 v) { memcpy(p, &v, sizeof v); }

/* max(a, 0) as a mask: NaN and -0 pass through, as in the scalar kernels */
static inline cc_v16 cc_relu(cc_v16 a) { return (cc_v16)((cc_v16i)a & ~(a < 0)); }

/* a[0] + ... + a[15] in a fixed order */
static inline float cc_hsum(cc_v16 a)
{
    float s[16];
    memcpy(s, &a, sizeof s);
    for (int h = 8; h >= 1; h /= 2)
        for (int i = 0; i < h; i++)
            s[i] += s[i + h];
    return s[0];
}
CC_SIMD_END

#else
#define CC_SIMD_COMPILED 0
static inline int cc_simd_supported(void) { return 0; }
#endif

#endif
