/* Max-pool's kernels, forward and backward, for _pool.pyx and the fused
 * convolution + max-pool of _conv.pyx.
 *
 * forward (cc_pool_row): one output row, in C so that GCC can compile it
 * twice, for the baseline ISA and for AVX-512F, and pick one at load time
 * (function multi-versioning: target_clones). The channel loop is branch-free
 * so that it vectorises; on AVX-512 it runs 16 channels a step.
 * backward (cc_unpool_scatter, cc_unpool_tiled): one image's dy sent to the
 * winners, by a scatter, or a gather where the windows do not overlap.
 */
#ifndef CONVCORE_POOL_KERNELS_H
#define CONVCORE_POOL_KERNELS_H

#include <stddef.h>
#include <string.h>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 8 \
    && !defined(CONVCORE_NO_SIMD)
#define CC_CLONES __attribute__((target_clones("avx512f", "default")))
#else
#define CC_CLONES
#endif

/* y (OW, C), am (OW, C) = the max and argmax (ih * W + iw) of each window of
 * row oh over the image x (H, W, C). The winner is the first maximum in
 * row-major window order; padded cells never win; NaN counts as larger than
 * any number and the first NaN wins (like np.argmax). */
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

/* dx (H W, C) = 0, then dx[am[o, c], c] += dy[o, c] for the OH OW outputs (o, c)
 * of one image in row-major order (overlapping windows add in that order);
 * the pool geometry as in cc_pool_row, H, W the input's.
 * relu_y: if not NULL, the pooled output of a fused ReLU (y = relu_y at the
 * winner, bit for bit): an entry with relu_y <= 0 (or NaN) is skipped, leaving
 * the +0 that masking dx by the ReLU afterwards would give, since every window
 * that a cell wins holds the same value. An index outside its own window (so
 * not from this pool's forward) is skipped and counted: the return value. */
static ptrdiff_t cc_unpool_scatter(const float* dy, const int* am, const float* relu_y,
                                   ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH,
                                   ptrdiff_t KW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t PT,
                                   ptrdiff_t PL, ptrdiff_t OH, ptrdiff_t OW, float* dx)
{
    ptrdiff_t n_bad = 0;
    memset(dx, 0, sizeof(float) * (size_t)(H * W * C));
    for (ptrdiff_t o = 0; o < OH * OW; o++) {
        ptrdiff_t top = (o / OW) * SH - PT, left = (o % OW) * SW - PL;
        for (ptrdiff_t c = 0; c < C; c++) {
            ptrdiff_t e = o * C + c;
            int idx = am[e];
            ptrdiff_t ih = idx / W, iw = idx % W;    /* (idx >= 0 checked first) */
            if (idx < 0 || ih >= H || ih < top || ih >= top + KH || iw < left
                    || iw >= left + KW) {
                n_bad++;
                continue;
            }
            if (relu_y && !(relu_y[e] > 0))
                continue;
            dx[idx * C + c] += dy[e];
        }
    }
    return n_bad;
}

/* The same for windows that do not overlap (stride = size; the pool geometry
 * as in cc_pool_row, H, W the input's), as a gather that writes each cell once:
 * dy where the cell is its window's winner (0 + dy, the scatter's one add: -0
 * gives +0 there too), else 0; cells that no window covers are zeroed first.
 * Branch-free over the channels, so that it vectorises. Returns how many of the
 * (OH OW) C entries found their winner inside their window: all of them for an
 * argmax from this pool's forward; fewer and dx is not the scatter's (the
 * caller must scatter instead). */
CC_CLONES
ptrdiff_t cc_unpool_tiled(const float* dy, const int* am, const float* relu_y, ptrdiff_t H,
                          ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t PT,
                          ptrdiff_t PL, ptrdiff_t OH, ptrdiff_t OW, float* dx)
{
    if (PT || PL || OH * KH != H || OW * KW != W)
        memset(dx, 0, sizeof(float) * (size_t)(H * W * C));
    ptrdiff_t found = 0;
    for (ptrdiff_t oh = 0; oh < OH; oh++)
        for (ptrdiff_t ow = 0; ow < OW; ow++) {
            ptrdiff_t o = (oh * OW + ow) * C;
            const int* a = am + o;
            const float* g = dy + o;
            const float* y = relu_y ? relu_y + o : NULL;
            for (ptrdiff_t i = 0; i < KH; i++) {
                ptrdiff_t ih = oh * KH - PT + i;
                if (ih < 0 || ih >= H)
                    continue;
                for (ptrdiff_t j = 0; j < KW; j++) {
                    ptrdiff_t iw = ow * KW - PL + j;
                    if (iw < 0 || iw >= W)
                        continue;
                    int cell = (int)(ih * W + iw), hits = 0;
                    float* d = dx + (ih * W + iw) * C;
                    if (y)
                        for (ptrdiff_t c = 0; c < C; c++) {
                            int hit = a[c] == cell;
                            hits += hit;
                            d[c] = hit & (y[c] > 0) ? 0.0f + g[c] : 0.0f;
                        }
                    else
                        for (ptrdiff_t c = 0; c < C; c++) {
                            int hit = a[c] == cell;
                            hits += hit;
                            d[c] = hit ? 0.0f + g[c] : 0.0f;
                        }
                    found += hits;
                }
            }
        }
    return found;
}

#endif
