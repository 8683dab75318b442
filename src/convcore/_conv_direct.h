/* Direct convolution kernels (NHWC), the fast path of _conv.pyx.
 *
 * The same sum as im2col + sgemm, without the column matrix: the kernel reads
 * each image section straight from a zero-padded copy of the image. In NHWC,
 * the section's row kh is KW*C consecutive floats, so the reduction over
 * (kw, c) runs along memory. Register blocking as in a BLAS micro-kernel: a
 * tile of R output positions x V vectors of 16 output channels stays in the
 * 32 AVX-512 registers for the whole reduction, and each step broadcasts one
 * input value per position and loads V vectors of kernel weights.
 *
 *   forward:  y[p, f]  = sum_{kh, j} xpad[row(p) + kh, col(p) * C + j] w[kh, j, f]   (j = kw*C + c)
 *   dw:       dw[kh, j, f] += sum_p  xpad[row(p) + kh, col(p) * C + j] dy[p, f]
 *   dx:       the forward kernel run on dy padded by (KH-1-PT, KW-1-PL) with the
 *             kernels flipped and their channel axes swapped (stride 1)
 *
 * Each output entry is one sum in a fixed order, computed by one call, so
 * the bits do not depend on the thread count. Compiled for AVX-512F (_simd.h)
 * and used only where the CPU has it (cc_simd_supported) and the blocked
 * channel count is a multiple of 16; otherwise _conv.pyx takes the im2col path.
 */
#ifndef CONVCORE_CONV_DIRECT_H
#define CONVCORE_CONV_DIRECT_H

#include <stddef.h>
#include <string.h>

/* dst (Hp, Wp, C) = src (H, W, C) shifted down by top rows and right by left
 * columns (either may be negative: then src is cropped), zeros elsewhere. */
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

#include "_simd.h"

#if CC_SIMD_COMPILED
CC_SIMD_BEGIN

/* ---------------------------------------------------------------- forward */

/* One tile: R positions x V*16 output channels.
 *   xr[r]  the padded input at the top-left of position r's section
 *   xrs    the padded image's row stride (Wp * C)
 *   w      kernels (KH, J, F) at column f0;  J = KW * C
 *   bias   at f0, or NULL;  y[r] the output of position r at f0
 *   nvalid positions r < nvalid are stored (the rest repeat the last one)  */
#define CC_DEF_FORWARD_TILE(R, V)                                                      \
static void cc_forward_tile_##R##x##V(const float* const* xr, ptrdiff_t xrs,           \
                                      const float* w, ptrdiff_t F, int KH, int J,      \
                                      const float* bias, float* const* y, int nvalid,  \
                                      int relu)                                        \
{                                                                                      \
    cc_v16 acc[R][V];                                                                  \
    _Pragma("GCC unroll 16") for (int r = 0; r < R; r++)                               \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            acc[r][v] = bias ? cc_load(bias + 16 * v) : (cc_v16){0};                   \
    for (int kh = 0; kh < KH; kh++) {                                                  \
        const float* wk = w + (ptrdiff_t)kh * J * F;                                   \
        ptrdiff_t xo = kh * xrs;                                                       \
        for (int j = 0; j < J; j++) {                                                  \
            cc_v16 wv[V];                                                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                wv[v] = cc_load(wk + j * F + 16 * v);                                  \
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
                cc_v16 a = acc[r][v];                                                  \
                if (relu)                                                      \
                    a = cc_relu(a);                                            \
                cc_store(y[r] + 16 * v, a);                                            \
            }                                                                          \
        }                                                                              \
    }                                                                                  \
}
CC_DEF_FORWARD_TILE(6, 4)
CC_DEF_FORWARD_TILE(14, 2)
CC_DEF_FORWARD_TILE(14, 1)

/* y (OH, OW, F) of one image from its padded copy xp (Hp, Wp, C); F % 16 == 0. */
static void cc_conv_forward_image(const float* xp, int Wp, int C, int KH, int KW, int SH,
                                  int SW, int OH, int OW, const float* w, int F,
                                  const float* b, float* y, int relu)
{
    int P = OH * OW, J = KW * C;
    ptrdiff_t xrs = (ptrdiff_t)Wp * C;
    const float* xr[14];
    float* yr[14];
    for (int f0 = 0; f0 < F; ) {
        int V = F - f0 >= 64 ? 4 : F - f0 >= 32 ? 2 : 1;
        int R = V == 4 ? 6 : 14;
        for (int p0 = 0; p0 < P; p0 += R) {
            int nv = P - p0 < R ? P - p0 : R;
            for (int r = 0; r < R; r++) {
                int p = p0 + (r < nv ? r : nv - 1);
                int oh = p / OW, ow = p % OW;
                xr[r] = xp + ((ptrdiff_t)oh * SH * Wp + (ptrdiff_t)ow * SW) * C;
                yr[r] = y + (ptrdiff_t)p * F + f0;
            }
            const float* bb = b ? b + f0 : NULL;
            if (V == 4)
                cc_forward_tile_6x4(xr, xrs, w + f0, F, KH, J, bb, yr, nv, relu);
            else if (V == 2)
                cc_forward_tile_14x2(xr, xrs, w + f0, F, KH, J, bb, yr, nv, relu);
            else
                cc_forward_tile_14x1(xr, xrs, w + f0, F, KH, J, bb, yr, nv, relu);
        }
        f0 += 16 * V;
    }
}

/* --------------------------------------------------------------- backward */

/* db (F) += the P rows of dy (P, F), in row order; with y, dy is first masked
 * by y > 0 into out (the gradient through a fused ReLU: a bitwise AND, so a
 * masked NaN gives 0) and out is summed. One pass instead of two. */
static void cc_mask_sum(const float* dy, const float* y, int P, int F, float* out, float* db)
{
    for (int p = 0; p < P; p++)
        for (int f = 0; f < F; f += 16) {
            ptrdiff_t e = (ptrdiff_t)p * F + f;
            cc_v16 d = cc_load(dy + e);
            if (y) {
                d = (cc_v16)((cc_v16i)d & (cc_load(y + e) > 0));
                cc_store(out + e, d);
            }
            cc_store(db + f, cc_load(db + f) + d);
        }
}

/* One tile of dw: RJ section entries j0.. x V*16 output channels, summed over
 * the P positions of one image and added to dw (KH, J, F) at (kh, j0, f0).
 * Entries past J repeat the last one and are not stored. */
#define CC_DEF_DW_TILE(RJ, V)                                                          \
static void cc_dw_tile_##RJ##x##V(const float* xp, int Wp, int C, int SH, int SW,      \
                                  int OH, int OW, int kh, int j0, int J,               \
                                  const float* dy, ptrdiff_t F, float* dw)             \
{                                                                                      \
    cc_v16 acc[RJ][V];                                                                 \
    int jj[RJ];                                                                        \
    _Pragma("GCC unroll 16") for (int i = 0; i < RJ; i++)                              \
        jj[i] = j0 + i < J ? j0 + i : J - 1;                                           \
    _Pragma("GCC unroll 16") for (int i = 0; i < RJ; i++)                              \
        _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                            \
            acc[i][v] = cc_load(dw + ((ptrdiff_t)kh * J + jj[i]) * F + 16 * v);        \
    for (int oh = 0; oh < OH; oh++) {                                                  \
        const float* xrow = xp + ((ptrdiff_t)(oh * SH + kh) * Wp) * C + j0;            \
        const float* d = dy + (ptrdiff_t)oh * OW * F;                                  \
        for (int ow = 0; ow < OW; ow++) {                                              \
            const float* xs = xrow + (ptrdiff_t)ow * SW * C;                           \
            cc_v16 dv[V];                                                              \
            _Pragma("GCC unroll 4") for (int v = 0; v < V; v++)                        \
                dv[v] = cc_load(d + (ptrdiff_t)ow * F + 16 * v);                       \
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
                cc_store(dw + ((ptrdiff_t)kh * J + j0 + i) * F + 16 * v, acc[i][v]);   \
        }                                                                              \
}
CC_DEF_DW_TILE(6, 4)
CC_DEF_DW_TILE(12, 2)
CC_DEF_DW_TILE(6, 2)
CC_DEF_DW_TILE(12, 1)
CC_DEF_DW_TILE(6, 1)

/* dw (KH, KW*C, F) += the weight gradient of one image: xp its padded copy,
 * dy (OH, OW, F) its output gradient; F % 16 == 0. */
static void cc_conv_dw_image(const float* xp, int Wp, int C, int KH, int KW, int SH, int SW,
                             int OH, int OW, const float* dy, int F, float* dw)
{
    int J = KW * C;
    for (int f0 = 0; f0 < F; ) {
        int V = F - f0 >= 64 ? 4 : F - f0 >= 32 ? 2 : 1;
        int RJ = V == 4 || J <= 6 ? 6 : 12;
        for (int kh = 0; kh < KH; kh++)
            for (int j0 = 0; j0 < J; j0 += RJ) {
                if (V == 4)
                    cc_dw_tile_6x4(xp, Wp, C, SH, SW, OH, OW, kh, j0, J, dy + f0, F, dw + f0);
                else if (V == 2 && RJ == 12)
                    cc_dw_tile_12x2(xp, Wp, C, SH, SW, OH, OW, kh, j0, J, dy + f0, F, dw + f0);
                else if (V == 2)
                    cc_dw_tile_6x2(xp, Wp, C, SH, SW, OH, OW, kh, j0, J, dy + f0, F, dw + f0);
                else if (RJ == 12)
                    cc_dw_tile_12x1(xp, Wp, C, SH, SW, OH, OW, kh, j0, J, dy + f0, F, dw + f0);
                else
                    cc_dw_tile_6x1(xp, Wp, C, SH, SW, OH, OW, kh, j0, J, dy + f0, F, dw + f0);
            }
        f0 += 16 * V;
    }
}

CC_SIMD_END

#else   /* no GCC x86-64 AVX-512 target: the im2col path only */
static void cc_conv_forward_image(const float* xp, int Wp, int C, int KH, int KW, int SH,
                                  int SW, int OH, int OW, const float* w, int F,
                                  const float* b, float* y, int relu) {}
static void cc_conv_dw_image(const float* xp, int Wp, int C, int KH, int KW, int SH, int SW,
                             int OH, int OW, const float* dy, int F, float* dw) {}
static void cc_mask_sum(const float* dy, const float* y, int P, int F, float* out,
                        float* db) {}
#endif

#endif
