/* The rows of convcore.gather_batch (_gather.pyx): dst[i] = src[i] / divisor,
 * or from the mirrored row, for uint8 and float32 sources. In C for
 * `restrict`: a uint8 pointer may alias anything, so without it the compiler
 * could not vectorise the conversion and the division (IEEE division is
 * correctly rounded in vectors as in scalars: the same bits either way). */
#ifndef CONVCORE_GATHER_KERNELS_H
#define CONVCORE_GATHER_KERNELS_H

#include <stddef.h>
#include <stdint.h>

/* dst[i] = src[i] / divisor for i < n */
static inline void cc_gather_run_u8(const uint8_t* restrict src, float* restrict dst,
                                    ptrdiff_t n, float divisor)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = (float)src[i] / divisor;
}

static inline void cc_gather_run_f32(const float* restrict src, float* restrict dst,
                                     ptrdiff_t n, float divisor)
{
    for (ptrdiff_t i = 0; i < n; i++)
        dst[i] = src[i] / divisor;
}

/* dst pixel w (C channels) = src pixel (last - w) / divisor for w < n: a mirrored run */
static inline void cc_gather_mirror_u8(const uint8_t* restrict src, float* restrict dst,
                                       ptrdiff_t n, ptrdiff_t last, ptrdiff_t C, float divisor)
{
    for (ptrdiff_t w = 0; w < n; w++)
        for (ptrdiff_t c = 0; c < C; c++)
            dst[w * C + c] = (float)src[(last - w) * C + c] / divisor;
}

static inline void cc_gather_mirror_f32(const float* restrict src, float* restrict dst,
                                        ptrdiff_t n, ptrdiff_t last, ptrdiff_t C, float divisor)
{
    for (ptrdiff_t w = 0; w < n; w++)
        for (ptrdiff_t c = 0; c < C; c++)
            dst[w * C + c] = src[(last - w) * C + c] / divisor;
}

#endif
