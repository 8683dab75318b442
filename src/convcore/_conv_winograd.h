/* Winograd convolution (NHWC), the fast path of _conv.pyx for 5x5 and 3x3
 * kernels at stride 1: F(2x2, 5x5) and F(4x4, 3x3), forward, input gradient
 * and weight gradient. Both take 6x6 tiles of the padded image, through the
 * same input transform B^T; they differ in the kernel transform G (6 x r,
 * r = 5 or 3 taps) and the output transform A^T (m x 6, m = 7 - r outputs a
 * tile side), which every function below takes r to choose.
 *
 * A 6x6 patch d of the padded image gives a 2x2 block of outputs of the 5x5
 * kernel g as
 *
 *     Y = A^T [ (G g G^T) (.) (B^T d B) ] A            ((.) elementwise)
 *
 * with the interpolation points 0, 1, -1, 2, -2 and infinity (Lavin & Gray,
 * "Fast Algorithms for Convolutional Neural Networks", 2016):
 *
 *   B^T = [4  0 -5  0  1  0]   G = [ 1/4     0     0     0     0  ]   A^T = [1 1  1 1  1 0]
 *         [0 -4 -4  1  1  0]       [-1/6  -1/6  -1/6  -1/6  -1/6  ]         [0 1 -1 2 -2 1]
 *         [0  4 -4 -1  1  0]       [-1/6   1/6  -1/6   1/6  -1/6  ]
 *         [0 -2 -1  2  1  0]       [1/24  1/12   1/6   1/3   2/3  ]
 *         [0  2 -1 -2  1  0]       [1/24 -1/12   1/6  -1/3   2/3  ]
 *         [0  4  0 -5  0  1]       [ 0      0     0     0     1   ]
 *
 * and for F(4x4, 3x3), with the same points and so the same B^T:
 *
 *   G = [ 1/4    0     0  ]   A^T = [1 1  1 1  1 0]
 *       [-1/6  -1/6  -1/6 ]         [0 1 -1 2 -2 0]
 *       [-1/6   1/6  -1/6 ]         [0 1  1 4  4 0]
 *       [1/24  1/12   1/6 ]         [0 1 -1 8 -8 1]
 *       [1/24 -1/12   1/6 ]
 *       [ 0      0     1  ]
 *
 * Summed over input channels, the elementwise products become 36 matrix
 * products, one per point (k = 0..35) of the 6x6 transform:
 *
 *     M[k] (tiles, F) = V[k] (tiles, C) @ U[k] (C, F)
 *
 * 36 products of C multiply-adds per 2x2 outputs instead of 4 * 25: 2.8x
 * fewer; per 4x4 outputs of a 3x3 kernel instead of 16 * 9: 4x fewer. The
 * transforms are additions along memory (CC_W channels a vector).
 * The tiles (of one image, or of a few where each has few) go in blocks of
 * CC_WINO_TB: the block's V is
 * transformed into the thread's scratch, then for each k the block's
 * products run with U[k] (C x 64 floats) held in L1, and the block's
 * outputs are transformed back, with bias and ReLU. The sums are in a fixed
 * order per output, so the bits do not depend on the thread count; they
 * differ from the direct kernels' by float32 rounding (the transforms
 * scale values by up to 100 and back).
 *
 * The weight gradient is the same algorithm transposed (the gradient of
 * sum(dY * Y) with respect to g):
 *
 *     dW = G^T [ sum over tiles and images of (A dY A^T) (.) (B^T d B) ] G
 *
 * where dY is a tile's m x m output gradient: per k, M[k] (C, F) += V[k]^T
 * DY[k], a product whose reduction runs over the tiles; the 6x6 -> r x r
 * transform G^T M G is applied once, after the per-slot sums are added.
 *
 * Needs C % 16 == 0 and F % 16 == 0 (vectors run along the channels). The
 * scratch size serves _conv.pyx; the kernels are compiled once per kernel
 * set (_kernel_set_body.h).
 */
#ifndef CONVCORE_CONV_WINOGRAD_H
#define CONVCORE_CONV_WINOGRAD_H

#include <stddef.h>
#include <string.h>
#define CC_WINO_TB 24   /* tiles per block: a multiple of the register tiles' 6 and 12 */

#define CC_WINO_TBW 64  /* tiles per block of the weight gradient, gathered across images */

#define CC_WINO_CB 64   /* channels a tile's transform is gathered by (36 x 64 floats) */

#ifndef CC_KERNEL_SET   /* ---------------------------------- the drivers' helpers */

/* Scratch floats per thread: the forward's V (36, TB, C) and M (36, TB, 64) */
static size_t cc_wino_scratch_floats(int C)
{
    return (size_t)36 * CC_WINO_TB * ((size_t)C + 64);
}

/* and the weight gradient's block, V (36, TBW, C) and DY (36, TBW, F) */
static size_t cc_wino_dw_scratch_floats(int C, int F)
{
    return (size_t)36 * CC_WINO_TBW * ((size_t)C + (size_t)F);
}

#else   /* ------------------------------ the kernels, once per kernel set */

#include "_simd.h"

/* Every function below that takes r (or mo = 7 - r) is inlined into the
 * four entry points (cc_wino_filter, cc_wino_forward_images, cc_wino_dw_image,
 * cc_wino_dw_finish), each of which calls it twice, with r = 5 and r = 3 as
 * constants: each tile size compiles to its own fully unrolled loops, and
 * F(2x2, 5x5)'s arithmetic to the instructions (and bits) it had alone. */
#define CC_WINO_INLINE static inline __attribute__((always_inline))

/* t = B^T d */
CC_WINO_INLINE void cc_wino_bt(const cc_vf d[6], cc_vf t[6])
{
    cc_vf d42 = d[4] - d[2], d31 = d[3] - d[1];
    t[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
    t[1] = (d[3] + d[4]) - 4.0f * (d[1] + d[2]);
    t[2] = (d[4] - d[3]) + 4.0f * (d[1] - d[2]);
    t[3] = d42 + 2.0f * d31;
    t[4] = d42 - 2.0f * d31;
    t[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}

/* u = G g, g of r taps (g[r..4] zero) */
CC_WINO_INLINE void cc_wino_g(const cc_vf g[5], int r, cc_vf u[6])
{
    cc_vf even = g[0] + g[2] + g[4], odd = g[1] + g[3];
    cc_vf even4 = g[0] + 4.0f * g[2] + 16.0f * g[4], odd4 = 2.0f * g[1] + 8.0f * g[3];
    u[0] = g[0] * 0.25f;
    u[1] = (even + odd) * (-1.0f / 6);
    u[2] = (even - odd) * (-1.0f / 6);
    u[3] = (even4 + odd4) * (1.0f / 24);
    u[4] = (even4 - odd4) * (1.0f / 24);
    u[5] = g[r - 1];
}

/* y = A^T m: the tile's mo = 2 or 4 outputs along one side */
CC_WINO_INLINE void cc_wino_at(const cc_vf m[6], int mo, cc_vf y[4])
{
    cc_vf s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
    y[0] = m[0] + s12 + s34;
    if (mo == 2) {
        y[1] = d12 + 2.0f * d34 + m[5];
        return;
    }
    y[1] = d12 + 2.0f * d34;
    y[2] = s12 + 4.0f * s34;
    y[3] = d12 + 8.0f * d34 + m[5];
}

/* U (36, C, F) = G g G^T for every (c, f) of w (r, r, C, F). */
CC_WINO_INLINE void
cc_wino_filter_r(const float* w, int r, int C, int F, float* U)
{
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f += CC_W) {
            cc_vf g[5] = {0}, t[6][5], u[6], row[5] = {0};
            for (int kw = 0; kw < r; kw++) {
                for (int kh = 0; kh < r; kh++)
                    g[kh] = cc_load(w + (((ptrdiff_t)kh * r + kw) * C + c) * F + f);
                cc_wino_g(g, r, u);
                for (int i = 0; i < 6; i++)
                    t[i][kw] = u[i];
            }
            for (int i = 0; i < 6; i++) {
                for (int kw = 0; kw < r; kw++)
                    row[kw] = t[i][kw];
                cc_wino_g(row, r, u);
                for (int j = 0; j < 6; j++)
                    cc_store(U + ((ptrdiff_t)(i * 6 + j) * C + c) * F + f, u[j]);
            }
        }
}

static void cc_wino_filter(const float* w, int r, int C, int F, float* U)
{
    if (r == 5)
        cc_wino_filter_r(w, 5, C, F, U);
    else
        cc_wino_filter_r(w, 3, C, F, U);
}

/* dst[k ks + c] = buf[k][c] for the 36 points k and c < n: a tile's
 * transform, gathered in buf, written out a whole run of channels at a
 * time. The 36 runs lie a multiple of 4 KB apart (the planes of V and DY),
 * in one set of the L1 cache: written vector by vector in the transform's
 * order, a line left half-written by one vector of AVX2 is evicted before
 * its other half comes (conv2's backward at batch 50, 1 thread: AVX2 16.2
 * -> 11.2 ms, AVX-512 11.5 -> 10.4 ms). */
static inline void cc_wino_put(const float* buf, int n, float* dst, ptrdiff_t ks)
{
    for (int k = 0; k < 36; k++)
        for (int c = 0; c < n; c += CC_W)
            cc_store(dst + k * ks + c, cc_load(buf + k * CC_WINO_CB + c));
}

/* V (36, TBp, C) of tiles t0 .. t0+nb-1 (rows past nb are zeros if pad): tile
 * t covers xp rows mo*(t / tw) .. +5 and columns mo*(t % tw) .. +5. */
CC_WINO_INLINE void cc_wino_input(const float* xp, int Wp, int C, int tw, int mo, int t0,
                                  int nb, int TBp, float* Vs, int pad)
{
    float buf[36 * CC_WINO_CB] __attribute__((aligned(64)));
    for (int k = 0; k < 36 && pad; k++)
        memset(Vs + ((ptrdiff_t)k * TBp + nb) * C, 0, sizeof(float) * (size_t)(TBp - nb) * C);
    for (int i = 0; i < nb; i++) {
        int t = t0 + i;
        const float* base = xp + ((ptrdiff_t)(mo * (t / tw)) * Wp + mo * (t % tw)) * C;
        for (int c0 = 0; c0 < C; c0 += CC_WINO_CB) {
            int n = C - c0 < CC_WINO_CB ? C - c0 : CC_WINO_CB;
            for (int c = c0; c < c0 + n; c += CC_W) {
                cc_vf col[6], tmp[6][6], out[6];
                for (int j = 0; j < 6; j++) {
                    for (int r = 0; r < 6; r++)
                        col[r] = cc_load(base + ((ptrdiff_t)r * Wp + j) * C + c);
                    cc_wino_bt(col, out);
                    for (int r = 0; r < 6; r++)
                        tmp[r][j] = out[r];
                }
                for (int r = 0; r < 6; r++) {
                    cc_wino_bt(tmp[r], out);
                    for (int j = 0; j < 6; j++)
                        cc_store(buf + (r * 6 + j) * CC_WINO_CB + c - c0, out[j]);
                }
            }
            cc_wino_put(buf, n, Vs + (ptrdiff_t)i * C + c0, (ptrdiff_t)TBp * C);
        }
    }
}

/* The register tile of both products: R rows x V vectors of CC_W columns,
 *   M[r, Wv + l] = (first ? 0 : M[r, Wv + l]) + sum_{k < K} A[r * ar + k * ak] B[k * ldb + Wv + l]
 * forward (per point k): A = V[k] rows of tiles (ar = C, ak = 1), B = U[k], M row stride 64;
 * weight gradient: A = V[k] transposed (ar = 1, ak = C), B = DY[k], K = the tiles.
 * Two sets, by use: the forward's (R = 12 for one vector, else 6: 6 x 4,
 * 6 x 2, 12 x 1 vectors of 16 in AVX-512's registers; 6 x 2, 12 x 1 of 8 in
 * AVX2's) and the weight gradient's (R = CC_WDW_ROWS(V), below). */
#define CC_DEF_WINO_TILE(NAME, R, V)                                                   \
static void NAME##V(const float* A, ptrdiff_t ar, ptrdiff_t ak, const float* B,        \
                    ptrdiff_t ldb, int K, float* M, ptrdiff_t ldm, int first)          \
{                                                                                      \
    cc_vf acc[R][V];                                                                   \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                               \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            acc[r][v] = first ? (cc_vf){0} : cc_load(M + r * ldm + CC_W * v);          \
    for (int k = 0; k < K; k++) {                                                      \
        cc_vf b[V];                                                                    \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            b[v] = cc_load(B + k * ldb + CC_W * v);                                    \
        _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                         \
            float s = A[r * ar + k * ak];                                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                acc[r][v] += s * b[v];                                                 \
        }                                                                              \
    }                                                                                  \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                               \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            cc_store(M + r * ldm + CC_W * v, acc[r][v]);                               \
}
/* the weight gradient's rows: 4 x 4, 8 x 2, 16 x 1 vectors with 32 registers,
 * 4 x 2, 8 x 1 with 16; a whole number of them in 16 channels */
#define CC_WDW_ROWS(V) (4 * CC_VMAX / (V))
#define CC_DEF_WINO_FWD_TILE(V) CC_DEF_WINO_TILE(cc_wino_fwd_tile_, ((V) == 1 ? 12 : 6), V)
#define CC_DEF_WINO_DW_TILE(V) CC_DEF_WINO_TILE(cc_wino_dw_tile_, CC_WDW_ROWS(V), V)
CC_FOR_V(CC_DEF_WINO_FWD_TILE)
CC_FOR_V(CC_DEF_WINO_DW_TILE)

/* The outputs of tiles t0 .. t0+nb-1, V vectors at f0, from M (36, TBp, 64):
 * Y = A^T M A (+ bias) (ReLU), stored where inside (OH, OW). */
CC_WINO_INLINE void cc_wino_output(const float* Ms, int TBp, int V, int t0, int nb, int tw,
                                   int mo, int OH, int OW, const float* bias, float* y, int F,
                                   int relu)
{
    for (int i = 0; i < nb; i++) {
        int t = t0 + i, oh = mo * (t / tw), ow = mo * (t % tw);
        for (int v = 0; v < V; v++) {
            cc_vf col[6], tmp[4][6], row[6], out[4];
            for (int j = 0; j < 6; j++) {
                for (int r = 0; r < 6; r++)
                    col[r] = cc_load(Ms + ((ptrdiff_t)(r * 6 + j) * TBp + i) * 64 + CC_W * v);
                cc_wino_at(col, mo, out);
                for (int a = 0; a < mo; a++)
                    tmp[a][j] = out[a];
            }
            for (int a = 0; a < mo && oh + a < OH; a++) {
                for (int j = 0; j < 6; j++)
                    row[j] = tmp[a][j];
                cc_wino_at(row, mo, out);
                for (int b = 0; b < mo && ow + b < OW; b++) {
                    cc_vf o = out[b];
                    if (bias)
                        o += cc_load(bias + CC_W * v);
                    if (relu)
                        o = cc_relu(o);
                    cc_store(y + ((ptrdiff_t)(oh + a) * OW + ow + b) * F + CC_W * v, o);
                }
            }
        }
    }
}

/* y (OH, OW, F) of G images, stride 1, r x r kernels (mo = 7 - r outputs a
 * tile side), image g from its padded copy xps[g], which has at least
 * mo * ceil(OH / mo) + r - 1 rows and Wp >= mo * ceil(OW / mo) + r - 1
 * columns of C channels, into ys[g]; U (36, C, F) from cc_wino_filter;
 * scratch of cc_wino_scratch_floats(C) floats, 64-byte aligned. The images'
 * tiles, one image after another, go in blocks of CC_WINO_TB: where an image
 * has few (a 7x7 map of F(4x4, 3x3): 4) a block holds several images', and
 * each slice of U[k] read from memory serves the whole block. Every output
 * is the same sum whatever the block: the same bits for any G. */
CC_WINO_INLINE void
cc_wino_forward_images_r(const float* const* xps, int G, int Wp, int C, int r, int OH,
                         int OW, const float* U, int F, const float* b, float* const* ys,
                         int relu, float* scratch)
{
    int mo = 7 - r, tw = (OW + mo - 1) / mo, nt = ((OH + mo - 1) / mo) * tw, total = G * nt;
    float* Vs = scratch;
    float* Ms = scratch + (ptrdiff_t)36 * CC_WINO_TB * C;
    /* the block is a whole number of register tiles (12 rows where some V is 1) */
    int RB = F % (2 * CC_W) ? 12 : 6;
    for (int t0 = 0; t0 < total; t0 += CC_WINO_TB) {
        int nb = total - t0 < CC_WINO_TB ? total - t0 : CC_WINO_TB;
        int TBp = (nb + RB - 1) / RB * RB;
        for (int k = 0; k < 36; k++)     /* the rows past the tiles: zeros */
            memset(Vs + ((ptrdiff_t)k * TBp + nb) * C, 0,
                   sizeof(float) * (size_t)(TBp - nb) * C);
        /* each image's run of tiles in the block: rows i.., its tiles t.. */
        for (int i = 0, n; i < nb; i += n) {
            int g = (t0 + i) / nt, t = (t0 + i) % nt;
            n = nt - t < nb - i ? nt - t : nb - i;
            cc_wino_input(xps[g], Wp, C, tw, mo, t, n, TBp, Vs + (ptrdiff_t)i * C, 0);
        }
        for (int f0 = 0; f0 < F; ) {
            int V = cc_pick_v(F - f0), R = V == 1 ? 12 : 6;
            for (int k = 0; k < 36; k++) {
                const float* Uk = U + (ptrdiff_t)k * C * F + f0;
                const float* Vk = Vs + (ptrdiff_t)k * TBp * C;
                float* Mk = Ms + (ptrdiff_t)k * TBp * 64;
                for (int s = 0; s < TBp; s += R) {
                    const float* Vr = Vk + (ptrdiff_t)s * C;
                    float* Mr = Mk + s * 64;
                    CC_BY_V(V, cc_wino_fwd_tile_, (Vr, C, 1, Uk, F, C, Mr, 64, 1));
                }
            }
            for (int i = 0, n; i < nb; i += n) {
                int g = (t0 + i) / nt, t = (t0 + i) % nt;
                n = nt - t < nb - i ? nt - t : nb - i;
                cc_wino_output(Ms + (ptrdiff_t)i * 64, TBp, V, t, n, tw, mo, OH, OW,
                               b ? b + f0 : NULL, ys[g] + f0, F, relu);
            }
            f0 += CC_W * V;
        }
    }
}

static void cc_wino_forward_images(const float* const* xps, int G, int Wp, int C, int r,
                                   int OH, int OW, const float* U, int F, const float* b,
                                   float* const* ys, int relu, float* scratch)
{
    if (r == 5)
        cc_wino_forward_images_r(xps, G, Wp, C, 5, OH, OW, U, F, b, ys, relu, scratch);
    else
        cc_wino_forward_images_r(xps, G, Wp, C, 3, OH, OW, U, F, b, ys, relu, scratch);
}

/* ------------------------------------------------------ weight gradient */

/* z = A y: an mo-point (2 or 4) output gradient to the 6 points */
CC_WINO_INLINE void cc_wino_a(const cc_vf y[4], int mo, cc_vf z[6])
{
    if (mo == 2) {
        cc_vf y2 = 2.0f * y[1];
        z[0] = y[0];
        z[1] = y[0] + y[1];
        z[2] = y[0] - y[1];
        z[3] = y[0] + y2;
        z[4] = y[0] - y2;
        z[5] = y[1];
        return;
    }
    cc_vf e = y[0] + y[2], o = y[1] + y[3];
    cc_vf e4 = y[0] + 4.0f * y[2], o8 = 2.0f * y[1] + 8.0f * y[3];
    z[0] = y[0];
    z[1] = e + o;
    z[2] = e - o;
    z[3] = e4 + o8;
    z[4] = e4 - o8;
    z[5] = y[3];
}

/* DY (36, TBW, F) = A dy A^T of tiles t0 .. t0+nb-1 (outputs past OH, OW: 0) */
CC_WINO_INLINE void cc_wino_dy(const float* dy, int OH, int OW, int F, int tw, int mo,
                               int t0, int nb, float* Ds)
{
    float buf[36 * CC_WINO_CB] __attribute__((aligned(64)));
    for (int i = 0; i < nb; i++) {
        int t = t0 + i, oh = mo * (t / tw), ow = mo * (t % tw);
        for (int f0 = 0; f0 < F; f0 += CC_WINO_CB) {
            int n = F - f0 < CC_WINO_CB ? F - f0 : CC_WINO_CB;
            for (int f = f0; f < f0 + n; f += CC_W) {
                cc_vf g[4][4], rows[4][6], col[6], side[4];
                for (int a = 0; a < mo; a++)
                    for (int b = 0; b < mo; b++)
                        g[a][b] = oh + a < OH && ow + b < OW
                            ? cc_load(dy + ((ptrdiff_t)(oh + a) * OW + ow + b) * F + f)
                            : (cc_vf){0};
                for (int a = 0; a < mo; a++)
                    cc_wino_a(g[a], mo, rows[a]);
                for (int j = 0; j < 6; j++) {
                    for (int a = 0; a < mo; a++)
                        side[a] = rows[a][j];
                    cc_wino_a(side, mo, col);
                    for (int r = 0; r < 6; r++)
                        cc_store(buf + (r * 6 + j) * CC_WINO_CB + f - f0, col[r]);
                }
            }
            cc_wino_put(buf, n, Ds + (ptrdiff_t)i * F + f0, (ptrdiff_t)CC_WINO_TBW * F);
        }
    }
}

/* The weight gradient's products of the tiles in the block (q[0] of them):
 * M (36, C, F) += (or, if M holds no sum yet, q[1] == 0, =) V[k]^T DY[k];
 * the block is empty after. */
static void cc_wino_dw_flush(int C, int F, float* M, int* q, float* scratch)
{
    const float* Vs = scratch;
    const float* Ds = scratch + (ptrdiff_t)36 * CC_WINO_TBW * C;
    int nb = q[0], fst = !q[1];
    if (nb == 0)
        return;
    for (int k = 0; k < 36; k++) {
        const float* Vk = Vs + (ptrdiff_t)k * CC_WINO_TBW * C;
        const float* Dk = Ds + (ptrdiff_t)k * CC_WINO_TBW * F;
        float* Mk = M + (ptrdiff_t)k * C * F;
        for (int f0 = 0; f0 < F; ) {
            int V = cc_pick_v(F - f0);
            for (int c0 = 0; c0 < C; c0 += CC_WDW_ROWS(V)) {
                float* Mr = Mk + (ptrdiff_t)c0 * F + f0;
                CC_BY_V(V, cc_wino_dw_tile_, (Vk + c0, 1, C, Dk + f0, F, nb, Mr, F, fst));
            }
            f0 += CC_W * V;
        }
    }
    q[0] = 0;
    q[1] = 1;
}

/* The transformed weight gradient M (36, C, F) of a run of images (a slot),
 * one image a call: xp its padded copy (as for cc_wino_forward_images), dy
 * (OH, OW, F) its output gradient. Its tiles are transformed into the block
 * (V and DY of CC_WINO_TBW tiles, in scratch of cc_wino_dw_scratch_floats(C,
 * F) floats, 64-byte aligned) after those of the images before it, and a
 * full block's products are added into M (cc_wino_dw_flush); q (tiles in the
 * block, whether M holds a sum) is {0, 0} at the run's start, and the run
 * ends with a cc_wino_dw_flush. Each entry of M is the sum over the run's
 * tiles in order, one at a time (the register tile starts from M as
 * stored), however they fall into blocks: the same bits as a block an
 * image, and a 7x7 map's 4 tiles of F(4x4, 3x3) fill a block from 16 images
 * instead of adding 4-tile products into all of M. */
CC_WINO_INLINE void
cc_wino_dw_image_r(const float* xp, int Wp, int C, int r, const float* dy, int OH, int OW,
                   int F, float* M, int* q, float* scratch)
{
    int mo = 7 - r, tw = (OW + mo - 1) / mo, nt = ((OH + mo - 1) / mo) * tw;
    float* Vs = scratch;
    float* Ds = scratch + (ptrdiff_t)36 * CC_WINO_TBW * C;
    for (int t0 = 0; t0 < nt; ) {
        int nb = nt - t0 < CC_WINO_TBW - q[0] ? nt - t0 : CC_WINO_TBW - q[0];
        cc_wino_input(xp, Wp, C, tw, mo, t0, nb, CC_WINO_TBW, Vs + (ptrdiff_t)q[0] * C, 0);
        cc_wino_dy(dy, OH, OW, F, tw, mo, t0, nb, Ds + (ptrdiff_t)q[0] * F);
        q[0] += nb;
        t0 += nb;
        if (q[0] == CC_WINO_TBW)
            cc_wino_dw_flush(C, F, M, q, scratch);
    }
}

static void cc_wino_dw_image(const float* xp, int Wp, int C, int r, const float* dy, int OH,
                             int OW, int F, float* M, int* q, float* scratch)
{
    if (r == 5)
        cc_wino_dw_image_r(xp, Wp, C, 5, dy, OH, OW, F, M, q, scratch);
    else
        cc_wino_dw_image_r(xp, Wp, C, 3, dy, OH, OW, F, M, q, scratch);
}

/* dw (r, r, C, F) = G^T M G for every (c, f) of M (36, C, F). */
CC_WINO_INLINE void
cc_wino_dw_finish_r(const float* M, int r, int C, int F, float* dw)
{
    const float s6 = 1.0f / 6, s24 = 1.0f / 24, s12 = 1.0f / 12, s3 = 1.0f / 3;
    for (int c = 0; c < C; c++)
        for (int f = 0; f < F; f += CC_W) {
            cc_vf m[6][6], t[5][6];
            for (int k = 0; k < 36; k++)
                m[k / 6][k % 6] = cc_load(M + ((ptrdiff_t)k * C + c) * F + f);
            for (int pass = 0; pass < 2; pass++)
                for (int j = 0; j < 6; j++) {
                    if (pass == 1 && j == r)
                        break;
                    /* pass 0: column j of m -> column j of t (rows 0..r-1 of G^T m);
                     * pass 1: row j of t -> the r outputs of dw row j */
                    cc_vf v[6], o[5];
                    for (int i = 0; i < 6; i++)
                        v[i] = pass == 0 ? m[i][j] : t[j][i];
                    cc_vf sum12 = v[1] + v[2], dif12 = v[2] - v[1];
                    cc_vf sum34 = v[3] + v[4], dif34 = v[3] - v[4];
                    o[0] = 0.25f * v[0] - s6 * sum12 + s24 * sum34;
                    o[1] = s6 * dif12 + s12 * dif34;
                    o[2] = s6 * (sum34 - sum12);
                    o[3] = s6 * dif12 + s3 * dif34;
                    o[4] = (2.0f * s3) * sum34 - s6 * sum12 + v[5];
                    if (r == 3)
                        o[2] = o[2] + v[5];
                    for (int kk = 0; kk < r; kk++) {
                        if (pass == 0)
                            t[kk][j] = o[kk];
                        else
                            cc_store(dw + (((ptrdiff_t)j * r + kk) * C + c) * F + f, o[kk]);
                    }
                }
        }
}

static void cc_wino_dw_finish(const float* M, int r, int C, int F, float* dw)
{
    if (r == 5)
        cc_wino_dw_finish_r(M, 5, C, F, dw);
    else
        cc_wino_dw_finish_r(M, 3, C, F, dw);
}

#endif

#endif
