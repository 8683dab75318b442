/* Dense-layer kernels (the fast path of _linear.pyx for a small batch):
 * register tiles as in _conv_direct.h, for the skinny products where sgemm
 * spends much of its time packing the weight matrix.
 *
 *   forward:  y[n, f]  = sum_d x[n, d] w[d, f]      R rows x V*CC_W columns per tile
 *   dw:       dw[d, f] = sum_n x[n, d] dy[n, f]     6 rows x V*CC_W columns per tile
 *   dx:       dx[n, d] = sum_f w[d, f] dy[n, f]     6 rows of w x V*CC_W batch entries,
 *                                                   from dy transposed (F, N padded)
 *
 * Every output entry
 * is one sum in a fixed order inside one call: the bits do not depend on how
 * the calls are spread over threads. F must be a multiple of 16; _api.py
 * checks and otherwise uses sgemm. The block sizes serve _linear.pyx; the
 * kernels are compiled once per kernel set (_kernel_set_body.h).
 */
#ifndef CONVCORE_LINEAR_TILES_H
#define CONVCORE_LINEAR_TILES_H

#include <stddef.h>

#define CC_KC 256   /* k-block: a 256 x 64 weight panel (64 KB) stays near the core */
#define CC_NC 64    /* the most columns of one forward block (_linear.pyx's work items) */
#define CC_MC 96    /* the largest batch for the backward tiles */
#define CC_MC_FWD 256  /* the largest batch for the forward tiles (one row block: w read once) */
#define CC_TREE_LEVELS 13   /* at most 2^13 - 1 slices of a batch (_api.py checks) */
#define CC_PD 48    /* prefetch distance (rows of w) in the first pass over a panel */

#ifdef CC_KERNEL_SET   /* --------------------------- the kernels, once per kernel set */

#include "_simd.h"

/* ---------------------------------------------------------------- forward */

/* y[r][0 : W V] (+)= sum_{k0 <= k < k1} xr[r][k] w[k - k0, 0 : W V] for R = CC_ROWS(V)
 * rows r; w: row k0 of the tile's columns, rows F floats apart.
 * first: start from the bias (or 0), else from y; relu on the last k-block.
 * pf_end: prefetch row k + CC_PD of w while that is < pf_end (0: none), into
 * the next k-block too. Reading w's rows from memory, F floats apart (4 KB
 * for dense1), a stride the hardware prefetchers do not follow: a training
 * step at batch 50 on 1 thread, 926 -> 1037 images/s. */
#define CC_DEF_LINEAR_TILE(V)                                                          \
static void cc_linear_tile_##V(const float* const* xr, const float* w, ptrdiff_t F,    \
                               int k0, int k1, const float* bias, float* const* y,     \
                               int nvalid, int first, int relu, int pf_end)            \
{                                                                                      \
    enum { R = CC_ROWS(V) };                                                           \
    cc_vf acc[R][V];                                                                   \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                               \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            acc[r][v] = !first ? cc_load(y[r] + CC_W * v)                              \
                      : bias ? cc_load(bias + CC_W * v) : (cc_vf){0};                  \
    for (int k = k0; k < k1; k++) {                                                    \
        cc_vf wv[V];                                                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            wv[v] = cc_load(w + (ptrdiff_t)(k - k0) * F + CC_W * v);                   \
        if (k + CC_PD < pf_end)                                                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                __builtin_prefetch(w + (ptrdiff_t)(k - k0 + CC_PD) * F + CC_W * v);    \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                         \
            float xs = xr[r][k];                                                       \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                acc[r][v] += xs * wv[v];                                               \
        }                                                                              \
    }                                                                                  \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                               \
        if (r < nvalid) {                                                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                cc_store(y[r] + CC_W * v, relu ? cc_relu(acc[r][v]) : acc[r][v]);      \
        }                                                                              \
}
CC_FOR_V(CC_DEF_LINEAR_TILE)

/* Whether the forward packs each k-block of w before its row tiles read it:
 * where the widest tile spans one 64-byte line (AVX2's 16 columns, NEON's),
 * since rows of w F floats apart, F a multiple of 1024, all fall into one
 * set of the L1 cache, and such a tile reads every row from L2 again (dense1
 * forward, batch 96, 1 thread: 65 -> 86 GFLOP/s). Wider tiles touch 4 sets a
 * row and gain nothing from the copy. */
#define CC_PACK (CC_VMAX * CC_W < 32)

/* Rows k0..k1 of w[:, c0:c1] packed tile by tile: the tile at column f0
 * (cc_pick_v wide) at panel + (f0 - c0) (k1 - k0), its rows W V floats
 * apart; rows prefetched CC_PD ahead, as the tiles do. */
static void cc_pack_panel(const float* w, int D, ptrdiff_t F, int k0, int k1, int c0, int c1,
                          float* panel)
{
    for (int k = k0; k < k1; k++) {
        const float* row = w + (ptrdiff_t)k * F;
        for (int f = c0; f < c1 && k + CC_PD < D; f += 16)
            __builtin_prefetch(row + (ptrdiff_t)CC_PD * F + f);
        for (int f0 = c0; f0 < c1; ) {
            int V = cc_pick_v(c1 - f0);
            float* dst = panel + (ptrdiff_t)(f0 - c0) * (k1 - k0) + (ptrdiff_t)(k - k0) * CC_W * V;
            for (int v = 0; v < V; v++)
                cc_store(dst + CC_W * v, cc_load(row + f0 + CC_W * v));
            f0 += CC_W * V;
        }
    }
}

/* y[n0:n1, c0:c1] of y = x @ w (+ b) (relu); c0, c1 multiples of 16, c1 - c0
 * at most CC_NC. The k-blocks outermost: each block's rows of w are read
 * across c0..c1 at once, packed first (CC_PACK) where more than one row
 * tile reads them. */
static void cc_linear_forward_block(const float* x, int D, const float* w, int F,
                                    const float* b, float* y, int n0, int n1,
                                    int c0, int c1, int relu)
{
    float panel[CC_PACK ? CC_KC * CC_NC : 1] __attribute__((aligned(64)));
    const float* xr[CC_TILE_R];
    float* yr[CC_TILE_R];
    int pack = CC_PACK && n1 - n0 > CC_ROWS(CC_VMAX);
    for (int k0 = 0; k0 < D || k0 == 0; k0 += CC_KC) {
        int k1 = k0 + CC_KC < D ? k0 + CC_KC : D;
        if (pack)
            cc_pack_panel(w, D, F, k0, k1, c0, c1, panel);
        for (int f0 = c0; f0 < c1; ) {
            int V = cc_pick_v(c1 - f0), R = CC_ROWS(V);
            const float* wt = pack ? panel + (ptrdiff_t)(f0 - c0) * (k1 - k0)
                                   : w + (ptrdiff_t)k0 * F + f0;
            ptrdiff_t ldw = pack ? CC_W * V : F;
            for (int r0 = n0; r0 < n1; r0 += R) {
                int nv = n1 - r0 < R ? n1 - r0 : R;
                for (int r = 0; r < R; r++) {
                    int n = r0 + (r < nv ? r : nv - 1);
                    xr[r] = x + (ptrdiff_t)n * D;
                    yr[r] = y + (ptrdiff_t)n * F + f0;
                }
                int first = k0 == 0, last = relu && k1 == D;
                int pf = !pack && r0 == n0 ? D : 0;
                const float* bb = b ? b + f0 : NULL;
                CC_BY_V(V, cc_linear_tile_, (xr, wt, ldw, k0, k1, bb, yr, nv, first, last, pf));
            }
            f0 += CC_W * V;
        }
    }
}

/* --------------------------------------------------------------- backward */

/* dw[i, 0 : W V] = sum_n x[n, d0 + i] dy[n, 0 : W V] for i < 6 (dw: the tile's
 * first row); rows past ni repeat the last one and are not stored. The sum
 * over n is cut into n_slices slices, rows bounds[s] .. bounds[s + 1] - 1:
 * each slice summed in row order from zero, the slices' sums added in the
 * pairwise tree (_slices.pxd: neighbours first, an odd one out waits for the
 * next level), here as a binary counter: a slice's sum is carried up the
 * levels its index's trailing ones name. One slice: the plain sum. */
#define CC_DW_ROWS(V, n0, n1)                      /* acc += rows n0 .. n1 - 1 */      \
    for (int n = (n0); n < (n1); n++) {                                                \
        const float* xs = x + (ptrdiff_t)n * D + d0;                                   \
        cc_vf dv[V];                                                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            dv[v] = cc_load(dy + (ptrdiff_t)n * F + CC_W * v);                         \
        _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++) {                          \
            float xv = xs[di[i]];                                                      \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                acc[i][v] += xv * dv[v];                                               \
        }                                                                              \
    }
#define CC_DW_EACH(V, stmt)                         /* stmt for every accumulator */   \
    _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)                                \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            stmt;
#define CC_DEF_LINEAR_DW_TILE(V)                                                       \
static void cc_linear_dw_tile_##V(const float* x, int n0, int n1, int D,               \
                                  const float* dy, ptrdiff_t F, float* dw, int d0,     \
                                  int ni)                                              \
{                                                                                      \
    cc_vf acc[6][V];                                                                   \
    int di[6];                                                                         \
    _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)                                \
        di[i] = i < ni ? i : ni - 1;                                                   \
    CC_DW_EACH(V, acc[i][v] = (cc_vf){0})                                              \
    CC_DW_ROWS(V, n0, n1)                                                              \
    for (int i = 0; i < ni; i++)                                                       \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            cc_store(dw + (ptrdiff_t)i * F + CC_W * v, acc[i][v]);                     \
}                                                                                      \
static void cc_linear_dw_sliced_tile_##V(const float* x, const int* bounds,            \
                                         int n_slices, int D, const float* dy,         \
                                         ptrdiff_t F, float* dw, int d0, int ni)       \
{                                                                                      \
    cc_vf acc[6][V], level[CC_TREE_LEVELS][6][V];                                      \
    int di[6];                                                                         \
    _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++)                                \
        di[i] = i < ni ? i : ni - 1;                                                   \
    for (int s = 0; s < n_slices; s++) {                                               \
        CC_DW_EACH(V, acc[i][v] = (cc_vf){0})                                          \
        CC_DW_ROWS(V, bounds[s], bounds[s + 1])                                        \
        int l = 0;                                                                     \
        for (; (s >> l) & 1; l++)                                                      \
            CC_DW_EACH(V, acc[i][v] = level[l][i][v] + acc[i][v])                      \
        CC_DW_EACH(V, level[l][i][v] = acc[i][v])                                      \
    }                                                                                  \
    int first = 1;  /* what is left: the levels n_slices's set bits name, lowest first */ \
    for (int l = 0; l < CC_TREE_LEVELS && n_slices >> l; l++)                          \
        if ((n_slices >> l) & 1) {                                                     \
            if (first)                                                                 \
                CC_DW_EACH(V, acc[i][v] = level[l][i][v])                              \
            else                                                                       \
                CC_DW_EACH(V, acc[i][v] = level[l][i][v] + acc[i][v])                  \
            first = 0;                                                                 \
        }                                                                              \
    for (int i = 0; i < ni; i++)                                                       \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            cc_store(dw + (ptrdiff_t)i * F + CC_W * v, acc[i][v]);                     \
}
CC_FOR_V(CC_DEF_LINEAR_DW_TILE)

/* rows d0:d1 of dw = x^T @ dy into dwr (d1 - d0, F), summed over the slices
 * of rows bounds[0 .. n_slices] (as the tile); F % 16 == 0. */
static void cc_linear_dw_block(const float* x, const int* bounds, int n_slices, int D,
                               const float* dy, int F, float* dwr, int d0, int d1)
{
    for (int i0 = d0; i0 < d1; i0 += 6) {
        int ni = d1 - i0 < 6 ? d1 - i0 : 6;
        float* t = dwr + (ptrdiff_t)(i0 - d0) * F;
        for (int f0 = 0; f0 < F; ) {
            int V = cc_pick_v(F - f0);
            if (n_slices == 1)
                CC_BY_V(V, cc_linear_dw_tile_, (x, bounds[0], bounds[1], D, dy + f0, F, t + f0,
                                                i0, ni));
            else
                CC_BY_V(V, cc_linear_dw_sliced_tile_, (x, bounds, n_slices, D, dy + f0, F,
                                                       t + f0, i0, ni));
            f0 += CC_W * V;
        }
    }
}

/* dx[n0 + Wv + l, d0 + i] = sum_f w[d0 + i, f] dyT[f, n0 + Wv + l] for i < 6,
 * l < W, v < V: dx^T by tiles of 6 rows of w (each streamed once, in order)
 * x V*W batch entries (W = CC_W); dyT (F, NP) is dy transposed and zero-padded to NP
 * columns. Rows past ni repeat the last one; entries past N are not stored. */
#define CC_DEF_LINEAR_DX_TILE(V)                                                       \
static void cc_linear_dx_tile_##V(const float* w, ptrdiff_t F, const float* dyT,       \
                                  ptrdiff_t NP, float* dx, ptrdiff_t D, int N,         \
                                  int d0, int ni, int n0)                              \
{                                                                                      \
    cc_vf acc[6][V];                                                                   \
    const float* wr[6];                                                                \
    _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++) {                              \
        wr[i] = w + (d0 + (i < ni ? i : ni - 1)) * F;                                  \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            acc[i][v] = (cc_vf){0};                                                    \
    }                                                                                  \
    for (ptrdiff_t f = 0; f < F; f++) {                                                \
        cc_vf dv[V];                                                                   \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            dv[v] = cc_load(dyT + f * NP + n0 + CC_W * v);                             \
        _Pragma("GCC unroll 6") for (int i = 0; i < 6; i++) {                          \
            float s = wr[i][f];                                                        \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                acc[i][v] += s * dv[v];                                                \
        }                                                                              \
    }                                                                                  \
    for (int i = 0; i < ni; i++)                                                       \
        for (int v = 0; v < V; v++) {                                                  \
            float t[CC_W];                                                             \
            memcpy(t, &acc[i][v], sizeof t);                                           \
            for (int l = 0; l < CC_W && n0 + CC_W * v + l < N; l++)                    \
                dx[(n0 + CC_W * v + l) * D + d0 + i] = t[l];                           \
        }                                                                              \
}
CC_FOR_V(CC_DEF_LINEAR_DX_TILE)

/* dx[:, d0:d1] = dy @ w[d0:d1, :]^T from dyT (F, NP), NP = N rounded up to 16. */
static void cc_linear_dx_block(const float* w, int F, const float* dyT, int NP, float* dx,
                               int D, int N, int d0, int d1)
{
    for (int i0 = d0; i0 < d1; i0 += 6) {
        int ni = d1 - i0 < 6 ? d1 - i0 : 6;
        for (int n0 = 0; n0 < NP; ) {
            int V = cc_pick_v(NP - n0);
            CC_BY_V(V, cc_linear_dx_tile_, (w, F, dyT, NP, dx, D, N, i0, ni, n0));
            n0 += CC_W * V;
        }
    }
}

#endif

#endif
