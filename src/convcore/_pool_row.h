/* One output row of max-pool (the forward pass of _pool.pyx), in C so that GCC
 * can compile it twice, for the baseline ISA and for AVX-512F, and pick one at
 * load time (function multi-versioning: target_clones). The channel loop is
 * branch-free so that it vectorises; on AVX-512 it runs 16 channels a step.
 *
 * y (OW, C), am (OW, C) = the max and argmax (ih * W + iw) of each window of
 * row oh over the image x (H, W, C). The winner is the first maximum in
 * row-major window order; padded cells never win; NaN counts as larger than
 * any number and the first NaN wins (like np.argmax).
 */
#ifndef CONVCORE_POOL_ROW_H
#define CONVCORE_POOL_ROW_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 8 \
    && !defined(CONVCORE_NO_SIMD)
#define CC_CLONES __attribute__((target_clones("avx512f", "default")))
#else
#define CC_CLONES
#endif

CC_CLONES
void cc_pool_row(const float* x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH,
                 ptrdiff_t KW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t PT, ptrdiff_t PL,
                 ptrdiff_t OW, ptrdiff_t oh, float* y, int* am)
{
    for (ptrdiff_t ow = 0; ow < OW; ow++) {
        float* yr = y + ow * C;
        int* ar = am + ow * C;
        int first = 1;
        for (ptrdiff_t i = 0; i < KH; i++) {
            ptrdiff_t ih = oh * SH - PT + i;
            if (ih < 0 || ih >= H)
                continue;
            for (ptrdiff_t j = 0; j < KW; j++) {
                ptrdiff_t iw = ow * SW - PL + j;
                if (iw < 0 || iw >= W)
                    continue;
                const float* xp = x + (ih * W + iw) * C;
                int idx = (int)(ih * W + iw);
                if (first) {
                    memcpy(yr, xp, sizeof(float) * (size_t)C);
                    for (ptrdiff_t c = 0; c < C; c++)
                        ar[c] = idx;
                    first = 0;
                    continue;
                }
                for (ptrdiff_t c = 0; c < C; c++) {
                    float v = xp[c], best = yr[c];
                    int take = (v > best) | ((v != v) & (best == best));
                    yr[c] = take ? v : best;
                    ar[c] = take ? idx : ar[c];
                }
            }
        }
    }
}

#endif
