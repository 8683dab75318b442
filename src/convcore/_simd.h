/* The vector type of convcore's register-tiled kernels, written once for
 * every instruction set: GCC vector extensions (which clang has too) of CC_W
 * float32 lanes. A kernel-set file (_set_avx512.c, _set_avx2.c, _set_neon.c)
 * defines CC_W, switches the compiler's target for the whole file, and
 * includes the kernels (_kernel_set_body.h); this header then gives them
 *
 *   cc_vf          CC_W floats;  cc_load, cc_store, cc_relu
 *   CC_VMAX        the widest register tile, in vectors: 4 where there are 32
 *                  vector registers (AVX-512, NEON), 2 where there are 16 (AVX2)
 *   CC_ROWS(V)     rows of a BLAS-style tile of V vectors: 6 at CC_VMAX, else
 *                  CC_TILE_R (14, or 12 with 16 registers): the accumulators,
 *                  V loaded vectors and a broadcast fill the registers
 *   cc_pick_v(n)   vectors per tile for n columns left (a multiple of 16)
 *   CC_FOR_V(DEF)  DEF(V) for each tile width V this set has, widest first
 *   CC_BY_V(V, f, args)  calls f##V args for the tile width V
 *   cc_vu64, cc_mul32    CC_W / 2 uint64 lanes, and their low words' products
 *
 * Channel counts stay multiples of 16 for every set: a block of 16 channels
 * is one AVX-512 vector, two AVX2 vectors or four NEON vectors.
 */
#ifndef CONVCORE_SIMD_H
#define CONVCORE_SIMD_H

#include <stdint.h>
#include <string.h>

#ifndef CC_W
#error "_simd.h: a kernel-set file defines CC_W (the vector width in floats) first"
#endif

typedef float cc_vf __attribute__((vector_size(4 * CC_W)));
typedef int cc_vi __attribute__((vector_size(4 * CC_W)));
typedef uint64_t cc_vu64 __attribute__((vector_size(4 * CC_W)));
typedef uint32_t cc_vu32h __attribute__((vector_size(2 * CC_W)));   /* CC_W / 2 words */

static inline cc_vf cc_load(const float* p) { cc_vf v; memcpy(&v, p, sizeof v); return v; }
static inline void cc_store(float* p, cc_vf v) { memcpy(p, &v, sizeof v); }

/* max(a, 0) as a mask: NaN and -0 pass through, as in the scalar kernels */
static inline cc_vf cc_relu(cc_vf a) { return (cc_vf)((cc_vi)a & ~(a < 0)); }

#if CC_W == 8           /* AVX2: 16 registers of 8 floats */
#define CC_VMAX 2
#define CC_TILE_R 12
#define CC_FOR_V(DEF) DEF(2) DEF(1)
#define CC_BY_V(V, f, args) ((V) == 2 ? f##2 args : f##1 args)
#else                   /* AVX-512 (16 floats), NEON (4): 32 registers */
#define CC_VMAX 4
#define CC_TILE_R 14
#define CC_FOR_V(DEF) DEF(4) DEF(2) DEF(1)
#define CC_BY_V(V, f, args) ((V) == 4 ? f##4 args : (V) == 2 ? f##2 args : f##1 args)
#endif

#define CC_ROWS(V) ((V) == CC_VMAX ? 6 : CC_TILE_R)

/* The tile width for n columns left: the widest of CC_VMAX, 2, 1 vectors that fits. */
static inline int cc_pick_v(int n)
{
    return n >= CC_VMAX * CC_W ? CC_VMAX : n >= 2 * CC_W ? 2 : 1;
}

/* The 64-bit products of the low 32-bit words of a and b, lane by lane. */
#if CC_W == 16
#include <immintrin.h>
static inline cc_vu64 cc_mul32(cc_vu64 a, cc_vu64 b)
{
    return (cc_vu64)_mm512_mul_epu32((__m512i)a, (__m512i)b);
}
#elif CC_W == 8
#include <immintrin.h>
static inline cc_vu64 cc_mul32(cc_vu64 a, cc_vu64 b)
{
    return (cc_vu64)_mm256_mul_epu32((__m256i)a, (__m256i)b);
}
#else   /* NEON (_kernel_set.h compiles the 4-float set only on ARM64) */
#include <arm_neon.h>
static inline cc_vu64 cc_mul32(cc_vu64 a, cc_vu64 b)
{
    return (cc_vu64)vmull_u32(vmovn_u64((uint64x2_t)a), vmovn_u64((uint64x2_t)b));
}
#endif

#endif
