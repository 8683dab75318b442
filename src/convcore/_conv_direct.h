/* Direct convolution kernels (NHWC), the fast path of _conv.pyx.
 *
 * The same sum as im2col + sgemm, without the column matrix: the kernel reads
 * each image section straight from a zero-padded copy of the image. In NHWC,
 * the section's row kh is KW*C consecutive floats, so the reduction over
 * (kw, c) runs along memory. Register blocking as in a BLAS micro-kernel: a
 * tile of R output positions x V vectors of CC_W output channels stays in the
 * vector registers for the whole reduction (CC_ROWS, _simd.h: 6 x 4 and
 * 14 x 2 vectors of 16 in AVX-512's 32 registers, 6 x 2 and 12 x 1 vectors
 * of 8 in AVX2's 16), and each step broadcasts one input value per position
 * and loads V vectors of kernel weights.
 *
 *   forward:  y[p, f]  = sum_{kh, j} xpad[row(p) + kh, col(p) * C + j] w[kh, j, f]   (j = kw*C + c)
 *   dw:       dw[kh, j, f] += sum_p  xpad[row(p) + kh, col(p) * C + j] dy[p, f]
 *   dx:       the forward kernel run on dy padded by (KH-1-PT, KW-1-PL) with the
 *             kernels flipped and their channel axes swapped (stride 1)
 *
 * Each output entry is one sum in a fixed order, computed by one call, so
 * the bits do not depend on the thread count (nor on the kernel set: every
 * lane runs the same chain of fused multiply-adds). The helpers (padding,
 * flipping) serve _conv.pyx; the kernels, below, are compiled once per
 * kernel set (_kernel_set_body.h) and used where the channel counts are
 * multiples of 16; otherwise _conv.pyx takes the im2col path.
 */
#ifndef CONVCORE_CONV_DIRECT_H
#define CONVCORE_CONV_DIRECT_H

#include <stddef.h>
#include <string.h>

/* dst (Hp, Wp, C) = src (H, W, C) shifted down by top rows and right by left
 * columns (either may be negative: then src is cropped), zeros elsewhere. */
#ifndef CC_KERNEL_SET   /* ---------------------------------- the drivers' helpers */

static void cc_pad_image(const float* src, int H, int W, int C, int top, int left,
                         int Hp, int Wp, float* dst)
{
    int w0 = left > 0 ? left : 0;                 /* first dst column with data */
    int w1 = left + W < Wp ? left + W : Wp;       /* one past the last */
    for (int hp = 0; hp < Hp; hp++) {
        float* d = dst + (ptrdiff_t)hp * Wp * C;
        int h = hp - top;
        if (h < 0 || h >= H || w1 <= w0) {
            memset(d, 0, sizeof(float) * (size_t)Wp * C);
            continue;
        }
        memset(d, 0, sizeof(float) * (size_t)w0 * C);
        memcpy(d + (ptrdiff_t)w0 * C, src + ((ptrdiff_t)h * W + (w0 - left)) * C,
               sizeof(float) * (size_t)(w1 - w0) * C);
        memset(d + (ptrdiff_t)w1 * C, 0, sizeof(float) * (size_t)(Wp - w1) * C);
    }
}

/* wt (KH, KW, F, C) = w (KH, KW, C, F) flipped in kh and kw: the dx kernels. */
static void cc_flip_kernels(const float* w, int KH, int KW, int C, int F, float* wt)
{
    for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++) {
            const float* s = w + ((ptrdiff_t)(KH - 1 - kh) * KW + (KW - 1 - kw)) * C * F;
            float* d = wt + ((ptrdiff_t)kh * KW + kw) * F * C;
            for (int c = 0; c < C; c++)
                for (int f = 0; f < F; f++)
                    d[(ptrdiff_t)f * C + c] = s[(ptrdiff_t)c * F + f];
        }
}

#else   /* ------------------------------ the kernels, once per kernel set */

#include "_simd.h"

/* ---------------------------------------------------------------- forward */

/* One tile: R = CC_ROWS(V) positions x V*CC_W output channels.
 *   xr[r]  the padded input at the top-left of position r's section
 *   xrs    the padded image's row stride (Wp * C)
 *   w      kernels (KH, J, F) at column f0;  J = KW * C
 *   bias   at f0, or NULL;  y[r] the output of position r at f0
 *   nvalid positions r < nvalid are stored (the rest repeat the last one)  */
#define CC_DEF_FORWARD_TILE(V)                                                         \
static void cc_forward_tile_##V(const float* const* xr, ptrdiff_t xrs, const float* w, \
                                ptrdiff_t F, int KH, int J, const float* bias,         \
                                float* const* y, int nvalid, int relu)                 \
{                                                                                      \
    enum { R = CC_ROWS(V) };                                                           \
    cc_vf acc[R][V];                                                                   \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                               \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            acc[r][v] = bias ? cc_load(bias + CC_W * v) : (cc_vf){0};                  \
    for (int kh = 0; kh < KH; kh++) {                                                  \
        const float* wk = w + (ptrdiff_t)kh * J * F;                                   \
        ptrdiff_t xo = kh * xrs;                                                       \
        for (int j = 0; j < J; j++) {                                                  \
            cc_vf wv[V];                                                               \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                wv[v] = cc_load(wk + j * F + CC_W * v);                                \
            _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                     \
                float xs = xr[r][xo + j];                                              \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                    \
                    acc[r][v] += xs * wv[v];                                           \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++) {                             \
        if (r < nvalid) {                                                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++) {                      \
                cc_vf a = acc[r][v];                                                   \
                if (relu)                                                              \
                    a = cc_relu(a);                                                    \
                cc_store(y[r] + CC_W * v, a);                                          \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
}
CC_FOR_V(CC_DEF_FORWARD_TILE)

/* y (OH, OW, F) of one image from its padded copy xp (Hp, Wp, C); F % 16 == 0. */
static void cc_conv_forward_image(const float* xp, int Wp, int C, int KH, int KW, int SH,
                                  int SW, int OH, int OW, const float* w, int F,
                                  const float* b, float* y, int relu)
{
    int P = OH * OW, J = KW * C;
    ptrdiff_t xrs = (ptrdiff_t)Wp * C;
    const float* xr[CC_TILE_R];
    float* yr[CC_TILE_R];
    for (int f0 = 0; f0 < F; ) {
        int V = cc_pick_v(F - f0), R = CC_ROWS(V);
        for (int p0 = 0, oh = 0, ow = 0; p0 < P; p0 += R) {   /* (oh, ow): p0's */
            int nv = P - p0 < R ? P - p0 : R;
            for (int r = 0; r < nv; r++) {   /* no division a row: 1x1 and C_in 1 tiles are short */
                xr[r] = xp + ((ptrdiff_t)oh * SH * Wp + (ptrdiff_t)ow * SW) * C;
                yr[r] = y + (ptrdiff_t)(p0 + r) * F + f0;
                if (++ow == OW)
                    ow = 0, oh++;
            }
            for (int r = nv; r < R; r++)
                xr[r] = xr[nv - 1], yr[r] = yr[nv - 1];
            const float* bb = b ? b + f0 : NULL;
            CC_BY_V(V, cc_forward_tile_, (xr, xrs, w + f0, F, KH, J, bb, yr, nv, relu));
        }
        f0 += CC_W * V;
    }
}

/* --------------------------------------------------------------- backward */

/* db (F) += the P rows of dy (P, F), in row order; with y, dy is first masked
 * by y > 0 into out (the gradient through a fused ReLU: a bitwise AND, so a
 * masked NaN gives 0) and out is summed. One pass instead of two. */
static void cc_mask_sum(const float* dy, const float* y, int P, int F, float* out, float* db)
{
    for (int p = 0; p < P; p++)
        for (int f = 0; f < F; f += CC_W) {
            ptrdiff_t e = (ptrdiff_t)p * F + f;
            cc_vf d = cc_load(dy + e);
            if (y) {
                d = (cc_vf)((cc_vi)d & (cc_load(y + e) > 0));
                cc_store(out + e, d);
            }
            cc_store(db + f, cc_load(db + f) + d);
        }
}

/* One tile of dw: RJ section entries j0.. x V*CC_W output channels, summed over
 * the P positions of one image and added to dw (KH, J, F) at (kh, j0, f0).
 * Entries past J repeat the last one and are not stored. */
#define CC_DEF_DW_TILE(RJ, V)                                                          \
static void cc_dw_tile_##RJ##x##V(const float* xp, int Wp, int C, int SH, int SW,      \
                                  int OH, int OW, int kh, int j0, int J,               \
                                  const float* dy, ptrdiff_t F, float* dw)             \
{                                                                                      \
    cc_vf acc[RJ][V];                                                                  \
    int jj[RJ];                                                                        \
    _Pragma("GCC unroll 16") for (int i = 0; i < RJ; i++)                              \
        jj[i] = j0 + i < J ? j0 + i : J - 1;                                           \
    _Pragma("GCC unroll 16") for (int i = 0; i < RJ; i++)                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            acc[i][v] = cc_load(dw + ((ptrdiff_t)kh * J + jj[i]) * F + CC_W * v);      \
    for (int oh = 0; oh < OH; oh++) {                                                  \
        const float* xrow = xp + ((ptrdiff_t)(oh * SH + kh) * Wp) * C + j0;            \
        const float* d = dy + (ptrdiff_t)oh * OW * F;                                  \
        for (int ow = 0; ow < OW; ow++) {                                              \
            const float* xs = xrow + (ptrdiff_t)ow * SW * C;                           \
            cc_vf dv[V];                                                               \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                dv[v] = cc_load(d + (ptrdiff_t)ow * F + CC_W * v);                     \
            _Pragma("GCC unroll 16") for (int i = 0; i < RJ; i++) {                    \
                float s = xs[jj[i] - j0];                                              \
                _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                    \
                    acc[i][v] += s * dv[v];                                            \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
    _Pragma("GCC unroll 16") for (int i = 0; i < RJ; i++)                              \
        if (j0 + i < J) {                                                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                cc_store(dw + ((ptrdiff_t)kh * J + j0 + i) * F + CC_W * v, acc[i][v]); \
        }                                                                              \
}
#define CC_DEF_DW_TILE6(V) CC_DEF_DW_TILE(6, V)
CC_FOR_V(CC_DEF_DW_TILE6)       /* 6 entries x V vectors, and 12 x each V < CC_VMAX */
CC_DEF_DW_TILE(12, 1)
#if CC_VMAX == 4
CC_DEF_DW_TILE(12, 2)
#endif

/* dw (KH, KW*C, F) += the weight gradient of one image: xp its padded copy,
 * dy (OH, OW, F) its output gradient; F % 16 == 0. */
static void cc_conv_dw_image(const float* xp, int Wp, int C, int KH, int KW, int SH, int SW,
                             int OH, int OW, const float* dy, int F, float* dw)
{
    int J = KW * C;
    for (int f0 = 0; f0 < F; ) {
        int V = cc_pick_v(F - f0);
        int RJ = V == CC_VMAX || J <= 6 ? 6 : 12;
        for (int kh = 0; kh < KH; kh++)
            for (int j0 = 0; j0 < J; j0 += RJ) {
#define CC_DW_ARGS (xp, Wp, C, SH, SW, OH, OW, kh, j0, J, dy + f0, F, dw + f0)
                if (RJ == 6)
                    CC_BY_V(V, cc_dw_tile_6x, CC_DW_ARGS);
                else if (V == 1)
                    cc_dw_tile_12x1 CC_DW_ARGS;
#if CC_VMAX == 4
                else
                    cc_dw_tile_12x2 CC_DW_ARGS;
#endif
#undef CC_DW_ARGS
            }
        f0 += CC_W * V;
    }
}

#endif

#endif
