/* Max-pool's kernels, forward and backward, for _pool.pyx and the fused
 * convolution + max-pool of _conv.pyx.
 *
 * forward (cc_pool_row): one output row. backward (cc_unpool_tiled,
 * cc_unpool_scatter): one image's dy sent to the winners, by a gather where
 * the windows do not overlap, else by a scatter. The first two are compiled
 * once per kernel set (_kernel_set_body.h: the baseline, AVX2, AVX-512, NEON)
 * and their channel loops are branch-free, so that the compiler vectorises
 * them for each (16 channels a step on AVX-512; a window inside the image
 * keeps its running max in a vector register, _simd.h's cc_vf); the same
 * bits on every set, since max and select do not round. The scatter serves
 * _pool.pyx as it is.
 */
#ifndef CONVCORE_POOL_KERNELS_H
#define CONVCORE_POOL_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#ifdef CC_KERNEL_SET   /* --------------------------- the kernels, once per kernel set */

/* Max-pool forward's one body, for its three uses (cc_pool_row): keep_am,
 * the argmax written to am; else the max alone, of the inputs through ReLU
 * where relu. The flags are constants where it is inlined, so that each use
 * compiles to its own branch-free loops. The ReLU is applied to a window's
 * first cell only: max(relu(a), b, ...) = max(relu(a), relu(b), ...), the
 * sign of a zero and NaN included, since a cell the ReLU would change (one
 * below 0, made +0) wins against a running max of relu(a) or more (or NaN)
 * neither before the ReLU nor after it (v > best fails either way). */
#define CC_POOL_BODY static inline __attribute__((always_inline)) void

/* v, or max(v, 0) where relu (-0 and NaN kept, as cc_put_row's and cc_relu) */
static inline float cc_pool_in(float v, int relu) { return relu && v < 0.0f ? 0.0f : v; }

/* One window wholly inside the image, its first cell x0 (index idx0): the
 * max (and argmax) into y, am (C). In the vector sets (_simd.h) CC_W
 * channels at a time, their running max and argmax held in registers across
 * the window's cells; the channels left one at a time. */
CC_POOL_BODY cc_pool_window(const float* restrict x0, int idx0, ptrdiff_t W, ptrdiff_t C,
                            ptrdiff_t KH, ptrdiff_t KW, float* restrict y, int* restrict am,
                            const int keep_am, const int relu)
{
    ptrdiff_t c0 = 0;
#ifdef CC_W
    for (; c0 + CC_W <= C; c0 += CC_W) {
        cc_vf best = cc_load(x0 + c0);
        best = relu ? cc_relu(best) : best;
        cc_vi arg = (cc_vi){0} + idx0;
        for (ptrdiff_t i = 0; i < KH; i++)
            for (ptrdiff_t j = i == 0; j < KW; j++) {
                cc_vf v = cc_load(x0 + (i * W + j) * C + c0);
                cc_vi take = (v > best) | ((v != v) & (best == best));
                best = (cc_vf)(((cc_vi)v & take) | ((cc_vi)best & ~take));
                if (keep_am)
                    arg = (((cc_vi){0} + (idx0 + (int)(i * W + j))) & take) | (arg & ~take);
            }
        cc_store(y + c0, best);
        if (keep_am)
            memcpy(am + c0, &arg, sizeof arg);
    }
#endif
    for (ptrdiff_t c = c0; c < C; c++) {   /* the rest: cell by cell, y and am in memory */
        y[c] = cc_pool_in(x0[c], relu);
        if (keep_am)
            am[c] = idx0;
    }
    for (ptrdiff_t i = 0; i < KH && c0 < C; i++)
        for (ptrdiff_t j = i == 0; j < KW; j++) {
            const float* restrict xp = x0 + (i * W + j) * C;
            int idx = idx0 + (int)(i * W + j);
            for (ptrdiff_t c = c0; c < C; c++) {
                float v = xp[c], best = y[c];
                int take = (v > best) | ((v != v) & (best == best));
                y[c] = take ? v : best;
                if (keep_am)
                    am[c] = take ? idx : am[c];
            }
        }
}

/* A window that reaches past the image: its cells inside, bounds checked */
CC_POOL_BODY cc_pool_edge(const float* x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH,
                          ptrdiff_t KW, ptrdiff_t ih0, ptrdiff_t iw0, float* yr, int* ar,
                          const int keep_am, const int relu)
{
    int first = 1;
    for (ptrdiff_t i = 0; i < KH; i++) {
        ptrdiff_t ih = ih0 + i;
        if (ih < 0 || ih >= H)
            continue;
        for (ptrdiff_t j = 0; j < KW; j++) {
            ptrdiff_t iw = iw0 + j;
            if (iw < 0 || iw >= W)
                continue;
            const float* xp = x + (ih * W + iw) * C;
            int idx = (int)(ih * W + iw);
            for (ptrdiff_t c = 0; c < C; c++) {
                float v = first ? cc_pool_in(xp[c], relu) : xp[c], best = first ? v : yr[c];
                int take = first | (v > best) | ((v != v) & (best == best));
                yr[c] = take ? v : best;
                if (keep_am)
                    ar[c] = take ? idx : ar[c];
            }
            first = 0;
        }
    }
}

CC_POOL_BODY cc_pool_row_body(const float* x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C,
                              ptrdiff_t KH, ptrdiff_t KW, ptrdiff_t SH, ptrdiff_t SW,
                              ptrdiff_t PT, ptrdiff_t PL, ptrdiff_t OW, ptrdiff_t oh, float* y,
                              int* am, const int keep_am, const int relu)
{
    const ptrdiff_t ih0 = oh * SH - PT;
    const int rows_inside = ih0 >= 0 && ih0 + KH <= H;
    for (ptrdiff_t ow = 0; ow < OW; ow++) {
        const ptrdiff_t iw0 = ow * SW - PL;
        int* ar = keep_am ? am + ow * C : NULL;
        if (rows_inside && iw0 >= 0 && iw0 + KW <= W)
            cc_pool_window(x + (ih0 * W + iw0) * C, (int)(ih0 * W + iw0), W, C, KH, KW,
                           y + ow * C, ar, keep_am, relu);
        else
            cc_pool_edge(x, H, W, C, KH, KW, ih0, iw0, y + ow * C, ar, keep_am, relu);
    }
}

/* y (OW, C), am (OW, C) = the max and argmax (ih * W + iw) of each window of
 * row oh over the image x (H, W, C); am NULL: the max alone, of the inputs
 * through ReLU (max(v, 0), -0 and NaN kept) where relu (inference: the
 * convolution's output is then never stored through its ReLU); with am,
 * relu must be 0. The winner is the first maximum in row-major window
 * order; padded cells never win; NaN counts as larger than any number and
 * the first NaN wins (like np.argmax). Windows wholly inside the image (all
 * of a pool that tiles it) run without bounds checks. */
static void cc_pool_row(const float* x, ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH,
                        ptrdiff_t KW, ptrdiff_t SH, ptrdiff_t SW, ptrdiff_t PT, ptrdiff_t PL,
                        ptrdiff_t OW, ptrdiff_t oh, int relu, float* y, int* am)
{
    if (am != NULL)
        cc_pool_row_body(x, H, W, C, KH, KW, SH, SW, PT, PL, OW, oh, y, am, 1, 0);
    else if (relu)
        cc_pool_row_body(x, H, W, C, KH, KW, SH, SW, PT, PL, OW, oh, y, NULL, 0, 1);
    else
        cc_pool_row_body(x, H, W, C, KH, KW, SH, SW, PT, PL, OW, oh, y, NULL, 0, 0);
}

/* dy sent to the winners where windows do not overlap (stride = size; the
 * pool geometry as in cc_pool_row, H, W the input's), as a gather that
 * writes each cell once: dy where the cell is its window's winner (0 + dy,
 * the scatter's one add: -0 gives +0 there too), else 0; cells that no
 * window covers are zeroed first. Branch-free over the channels, so that it
 * vectorises. Returns how many of the (OH OW) C entries found their winner
 * inside their window: all of them for an argmax from this pool's forward;
 * fewer and dx is not the scatter's (the caller must scatter instead,
 * cc_unpool_scatter). */
static ptrdiff_t cc_unpool_tiled(const float* dy, const int* am, const float* relu_y,
                                 ptrdiff_t H, ptrdiff_t W, ptrdiff_t C, ptrdiff_t KH,
                                 ptrdiff_t KW, ptrdiff_t PT, ptrdiff_t PL, ptrdiff_t OH,
                                 ptrdiff_t OW, float* dx)
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
                    /* the select as a mask of the bits, so that it vectorises on any target */
                    for (ptrdiff_t c = 0; c < C; c++) {
                        int hit = a[c] == cell;
                        int32_t keep = -(int32_t)(hit & (!y || y[c] > 0)), bits;
                        float v = 0.0f + g[c];
                        memcpy(&bits, &v, sizeof bits);
                        bits &= keep;
                        memcpy(d + c, &bits, sizeof bits);
                        hits += hit;
                    }
                    found += hits;
                }
            }
        }
    return found;
}

#else   /* ---------------------------------------------------- _pool.pyx's */

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

#endif

#endif
