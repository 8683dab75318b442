/* Batch normalisation's passes over a block of rows of x (M, C) (NHWC seen as
 * M = N H W rows of C channels), for _norm.pyx, which cuts the rows into
 * blocks, runs the blocks in parallel and adds their sums in block order:
 *
 *   cc_bn_sums:    s1 = sum (x - centre), s2 = sum (x - centre)^2       (forward)
 *                  or, with dy, s1 = sum dy', s2 = sum dy' (x - centre) (backward;
 *                  centre the mean; dy' = dy where the forward's ReLU passed it,
 *                  else 0, if relu_scale and relu_beta are given: cc_bn_passes)
 *                  each in float, row after row, then stored as double
 *   cc_bn_affine:  y = (x - mean) scale + beta, then max(y, 0) if relu (NaN -> 0);
 *                  or, yb given, y's bfloat16 bits there (cc_bf16_bits: for
 *                  a bf16 product that would round y so anyway)
 *   cc_bn_dx:      dx = k ((dy' - cb) - ((x - mean) inv) cg); or, dxb given,
 *                  its bfloat16 bits there (for a bf16 convolution's dy)
 *
 * x may come as the bfloat16 bits of its values instead (xh, x NULL: a bf16
 * network's batch norm reads its input so, half the bytes): each is widened
 * as it is loaded (cc_bn_load_x), so the same arithmetic on the same values.
 *
 * The backward's ReLU mask is not read from the forward's output: it is made
 * again from x, as cc_bn_affine made y (cc_bn_passes: y > 0, the same
 * operations on the same values, so the same bits), one array fewer to read
 * in each backward pass.
 *
 * Compiled once per kernel set (_kernel_set_body.h) from this C: a channel's
 * arithmetic is the same IEEE operations in the same order on every set,
 * vector or not, and never a fused multiply-add (the compiler may not
 * contract here), so every set gives the bits of the scalar loop. The sets
 * differ only in how many channels an instruction takes: a group of up to
 * four vectors of channels stays in registers for the whole block (the
 * set's vectors; 4 floats in the baseline's), the channels past the last
 * whole vector one at a time.
 *
 * Each pass asks the cache for the rows about 4 KB ahead of the one it reads
 * (CC_BN_PREFETCH): a group's stream of x (and dy) alone, 64 bytes a row for
 * 32 channels of bits, kept too few misses in flight for the memory's
 * bandwidth (64x28x28x32, bits, 1 thread: the forward 1.09 -> 0.92 ms, the
 * backward 1.78 -> 1.05).
 */
#ifndef CONVCORE_NORM_KERNELS_H
#define CONVCORE_NORM_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "_bf16_kernels.h"

#ifdef CC_KERNEL_SET   /* --------------------------- the kernels, once per kernel set */

#if defined(__clang__)
#define CC_BN_FN static
#define CC_BN_INLINE static inline __attribute__((always_inline))
#define CC_BN_EXACT _Pragma("clang fp contract(off)")
#else
#define CC_BN_FN static __attribute__((optimize("fp-contract=off")))
#define CC_BN_INLINE static inline __attribute__((always_inline, optimize("fp-contract=off")))
#define CC_BN_EXACT
#endif

#ifdef CC_W
#define CC_BN_W CC_W                 /* channels a vector */
#else
#define CC_BN_W 4                    /* the baseline: SSE2's, NEON's or the compiler's */
#endif
typedef float cc_bn_v __attribute__((vector_size(4 * CC_BN_W)));
typedef int cc_bn_vi __attribute__((vector_size(4 * CC_BN_W)));
typedef unsigned cc_bn_vu __attribute__((vector_size(4 * CC_BN_W)));
typedef uint16_t cc_bn_vh __attribute__((vector_size(2 * CC_BN_W)));
enum { CC_BN_V = 4, CC_BN_CH = CC_BN_W * CC_BN_V };       /* a chunk: 4 vectors */

static inline cc_bn_v cc_bn_load(const float* p) { cc_bn_v v; memcpy(&v, p, sizeof v); return v; }
static inline void cc_bn_store(float* p, cc_bn_v v) { memcpy(p, &v, sizeof v); }
/* v's bfloat16 bits stored at p: cc_bf16_bits's masks on a whole vector */
static inline void cc_bn_store_bf16(uint16_t* p, cc_bn_v v)
{
    cc_bn_vu u = (cc_bn_vu)v;
    cc_bn_vu nan = (cc_bn_vu)((u & 0x7fffffffu) > 0x7f800000u);
    cc_bn_vu r = ((u | 0x00400000u) & nan) | ((u + 0x7fffu + ((u >> 16) & 1u)) & ~nan);
    cc_bn_vh h = __builtin_convertvector(r >> 16, cc_bn_vh);
    memcpy(p, &h, sizeof h);
}
/* x's vector at e: float32, or (bits, a constant in each inlined copy: CC_BN_X)
 * widened from xh's bfloat16 bits */
static inline cc_bn_v cc_bn_load_x(const float* x, const uint16_t* xh, ptrdiff_t e,
                                   const int bits)
{
    if (!bits)
        return cc_bn_load(x + e);
    cc_bn_vh h;
    memcpy(&h, xh + e, sizeof h);
    return (cc_bn_v)(__builtin_convertvector(h, cc_bn_vu) << 16);
}
/* x's value at e, either way */
static inline float cc_bn_x1(const float* x, const uint16_t* xh, ptrdiff_t e)
{
    if (xh == NULL)
        return x[e];
    uint32_t u = (uint32_t)xh[e] << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
/* one value's bfloat16 bits (cc_bf16_bits) */
static inline uint16_t cc_bn_bits1(float v)
{
    uint32_t u;
    memcpy(&u, &v, 4);
    return (uint16_t)(cc_bf16_bits(u) >> 16);
}
/* v where m holds, else +0 (a mask of a comparison: NaN compares false) */
static inline cc_bn_v cc_bn_keep(cc_bn_v v, cc_bn_vi m) { return (cc_bn_v)((cc_bn_vi)v & m); }

/* Where the forward's ReLU passed its input (d = x - mean): (d scale + beta) > 0,
 * cc_bn_affine's y before its max; NaN compares false, as NaN -> 0 there */
CC_BN_INLINE cc_bn_vi cc_bn_passes(cc_bn_v d, cc_bn_v scale, cc_bn_v beta)
{
    CC_BN_EXACT
    return d * scale + beta > 0;
}

/* The kernels below run each group of nv <= CC_BN_V whole vectors of channels
 * in registers over the block (cc_bn_groups: 4 at a time, then the rest of the
 * whole vectors, so that C = 32 on AVX-512 is two vectors, not 32 strided
 * channels), then the channels past the last whole vector one at a time. nv is
 * a constant in each inlined copy (CC_BN_NV), so the registers stay registers. */
#define CC_BN_NV(call) do {                                       \
        switch (nv) {                                             \
        case 4: { enum { NV = 4 }; call; break; }                 \
        case 3: { enum { NV = 3 }; call; break; }                 \
        case 2: { enum { NV = 2 }; call; break; }                 \
        default: { enum { NV = 1 }; call; break; }                \
        }                                                         \
    } while (0)

/* rows ahead to ask the cache for: about 4 KB of x */
#define CC_BN_AHEAD(C, bits) ((ptrdiff_t)(4096 / ((C) * ((bits) ? 2 : 4))) + 1)
#define CC_BN_PREFETCH(x, xh, e, nv, bits) do {                                  \
        for (int v_ = 0; v_ < (nv); v_++) {                                      \
            if (bits) __builtin_prefetch((xh) + (e) + CC_BN_W * v_);             \
            else __builtin_prefetch((x) + (e) + CC_BN_W * v_);                   \
        }                                                                        \
    } while (0)

/* call with BITS a constant: whether x comes as xh's bits (cc_bn_load_x) */
#define CC_BN_X(call) do {                                        \
        if (xh != NULL) { enum { BITS = 1 }; call; }              \
        else { enum { BITS = 0 }; call; }                         \
    } while (0)

/* the channel groups' (c0, nv) in order: nv vectors from c0 */
static inline int cc_bn_groups(ptrdiff_t C, ptrdiff_t* c0, int* nv)
{
    ptrdiff_t left = (C - *c0) / CC_BN_W;
    if (left <= 0)
        return 0;
    *nv = left < CC_BN_V ? (int)left : CC_BN_V;
    return 1;
}

CC_BN_INLINE void cc_bn_sums_group(const float* x, const uint16_t* xh, const float* dy,
                                   const float* relu_scale, const float* relu_beta,
                                   const double* centre, ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t C,
                                   ptrdiff_t c0, const int nv, const int bits, double* s1,
                                   double* s2)
{
    CC_BN_EXACT
    cc_bn_v a1[CC_BN_V], a2[CC_BN_V], cf[CC_BN_V], sc[CC_BN_V], bt[CC_BN_V];
    for (int v = 0; v < nv; v++) {
        a1[v] = a2[v] = (cc_bn_v){0};
        for (int l = 0; l < CC_BN_W; l++)
            cf[v][l] = (float)centre[c0 + CC_BN_W * v + l];
        if (relu_scale != NULL) {
            sc[v] = cc_bn_load(relu_scale + c0 + CC_BN_W * v);
            bt[v] = cc_bn_load(relu_beta + c0 + CC_BN_W * v);
        }
    }
    for (ptrdiff_t r = r0; r < r1; r++) {
        const ptrdiff_t xr = r * C + c0;
        if (dy == NULL)
            CC_BN_PREFETCH(x, xh, xr + CC_BN_AHEAD(C, bits) * C, nv, bits);
        else {
            CC_BN_PREFETCH(x, xh, xr + CC_BN_AHEAD(C, 0) * C, nv, bits);
            CC_BN_PREFETCH(dy, dy, xr + CC_BN_AHEAD(C, 0) * C, nv, 0);
        }
        if (dy == NULL) {
            for (int v = 0; v < nv; v++) {
                cc_bn_v d = cc_bn_load_x(x, xh, xr + CC_BN_W * v, bits) - cf[v];
                a1[v] = a1[v] + d;
                a2[v] = a2[v] + d * d;
            }
            continue;
        }
        for (int v = 0; v < nv; v++) {
            cc_bn_v g = cc_bn_load(dy + r * C + c0 + CC_BN_W * v);
            cc_bn_v d = cc_bn_load_x(x, xh, xr + CC_BN_W * v, bits) - cf[v];
            if (relu_scale != NULL)
                g = cc_bn_keep(g, cc_bn_passes(d, sc[v], bt[v]));
            a1[v] = a1[v] + g;
            a2[v] = a2[v] + g * d;
        }
    }
    for (int v = 0; v < nv; v++)
        for (int l = 0; l < CC_BN_W; l++) {
            s1[c0 + CC_BN_W * v + l] = a1[v][l];
            s2[c0 + CC_BN_W * v + l] = a2[v][l];
        }
}

CC_BN_FN void cc_bn_sums(const float* x, const uint16_t* xh, const float* dy,
                         const float* relu_scale, const float* relu_beta, const double* centre,
                         ptrdiff_t r0, ptrdiff_t r1, ptrdiff_t C, double* s1, double* s2)
{
    CC_BN_EXACT
    ptrdiff_t c0 = 0;
    int nv;
    for (; cc_bn_groups(C, &c0, &nv); c0 += nv * CC_BN_W)
        CC_BN_X(CC_BN_NV(cc_bn_sums_group(x, xh, dy, relu_scale, relu_beta, centre, r0, r1, C,
                                          c0, NV, BITS, s1, s2)));
    for (; c0 < C; c0++) {      /* the channels past the last whole vector */
        float a1 = 0, a2 = 0, cf = (float)centre[c0];
        for (ptrdiff_t r = r0; r < r1; r++) {
            ptrdiff_t e = r * C + c0;
            float d = cc_bn_x1(x, xh, e) - cf;
            if (dy == NULL) {
                a1 = a1 + d;
                a2 = a2 + d * d;
                continue;
            }
            float g = relu_scale == NULL || d * relu_scale[c0] + relu_beta[c0] > 0 ? dy[e]
                                                                                   : 0.0f;
            a1 = a1 + g;
            a2 = a2 + g * d;
        }
        s1[c0] = a1;
        s2[c0] = a2;
    }
}

CC_BN_INLINE void cc_bn_affine_group(const float* x, const uint16_t* xh, const float* mean,
                                     const float* scale, const float* beta, ptrdiff_t r0,
                                     ptrdiff_t r1, ptrdiff_t C, ptrdiff_t c0, const int nv,
                                     const int bits, int relu, float* y, uint16_t* yb)
{
    CC_BN_EXACT
    cc_bn_v m[CC_BN_V], s[CC_BN_V], b[CC_BN_V];
    for (int v = 0; v < nv; v++) {
        m[v] = cc_bn_load(mean + c0 + CC_BN_W * v);
        s[v] = cc_bn_load(scale + c0 + CC_BN_W * v);
        b[v] = cc_bn_load(beta + c0 + CC_BN_W * v);
    }
    for (ptrdiff_t r = r0; r < r1; r++) {
        CC_BN_PREFETCH(x, xh, (r + CC_BN_AHEAD(C, bits)) * C + c0, nv, bits);
        for (int v = 0; v < nv; v++) {
            ptrdiff_t e = r * C + c0 + CC_BN_W * v;
            cc_bn_v o = (cc_bn_load_x(x, xh, e, bits) - m[v]) * s[v] + b[v];
            o = relu ? cc_bn_keep(o, o > 0) : o;
            if (yb != NULL)
                cc_bn_store_bf16(yb + e, o);
            else
                cc_bn_store(y + e, o);
        }
    }
}

CC_BN_FN void cc_bn_affine(const float* x, const uint16_t* xh, const float* mean,
                           const float* scale, const float* beta, ptrdiff_t r0, ptrdiff_t r1,
                           ptrdiff_t C, int relu, float* y, uint16_t* yb)
{
    CC_BN_EXACT
    ptrdiff_t c0 = 0;
    int nv;
    for (; cc_bn_groups(C, &c0, &nv); c0 += nv * CC_BN_W)
        CC_BN_X(CC_BN_NV(cc_bn_affine_group(x, xh, mean, scale, beta, r0, r1, C, c0, NV, BITS,
                                            relu, y, yb)));
    for (; c0 < C; c0++)
        for (ptrdiff_t r = r0; r < r1; r++) {
            ptrdiff_t e = r * C + c0;
            float o = (cc_bn_x1(x, xh, e) - mean[c0]) * scale[c0] + beta[c0];
            o = relu && !(o > 0) ? 0.0f : o;
            if (yb != NULL)
                yb[e] = cc_bn_bits1(o);
            else
                y[e] = o;
        }
}

/* dx's per-channel constants: mean, k, inv, cb, cg (cc_bn_dx), and the
 * forward's scale and beta where its ReLU's mask is made again (else NULL) */
typedef struct { const float *mean, *k, *inv, *cb, *cg, *scale, *beta; } cc_bn_dx_consts;

CC_BN_INLINE void cc_bn_dx_group(const float* x, const uint16_t* xh, const float* dy,
                                 const cc_bn_dx_consts* q, ptrdiff_t r0, ptrdiff_t r1,
                                 ptrdiff_t C, ptrdiff_t c0, const int nv, const int bits,
                                 float* dx, uint16_t* dxb)
{
    CC_BN_EXACT
    cc_bn_v m[CC_BN_V], kk[CC_BN_V], iv[CC_BN_V], b[CC_BN_V], gg[CC_BN_V];
    cc_bn_v sc[CC_BN_V], bt[CC_BN_V];
    for (int v = 0; v < nv; v++) {
        ptrdiff_t c = c0 + CC_BN_W * v;
        m[v] = cc_bn_load(q->mean + c);
        kk[v] = cc_bn_load(q->k + c);
        iv[v] = cc_bn_load(q->inv + c);
        b[v] = cc_bn_load(q->cb + c);
        gg[v] = cc_bn_load(q->cg + c);
        if (q->scale != NULL) {
            sc[v] = cc_bn_load(q->scale + c);
            bt[v] = cc_bn_load(q->beta + c);
        }
    }
    for (ptrdiff_t r = r0; r < r1; r++) {
        ptrdiff_t ahead = (r + CC_BN_AHEAD(C, 0)) * C + c0;
        CC_BN_PREFETCH(x, xh, ahead, nv, bits);
        CC_BN_PREFETCH(dy, dy, ahead, nv, 0);
        for (int v = 0; v < nv; v++) {
            ptrdiff_t e = r * C + c0 + CC_BN_W * v;
            cc_bn_v g = cc_bn_load(dy + e);
            cc_bn_v d = cc_bn_load_x(x, xh, e, bits) - m[v];
            if (q->scale != NULL)
                g = cc_bn_keep(g, cc_bn_passes(d, sc[v], bt[v]));
            cc_bn_v o = kk[v] * ((g - b[v]) - (d * iv[v]) * gg[v]);
            if (dxb != NULL)
                cc_bn_store_bf16(dxb + e, o);
            else
                cc_bn_store(dx + e, o);
        }
    }
}

CC_BN_FN void cc_bn_dx(const float* x, const uint16_t* xh, const float* dy,
                       const float* relu_scale,
                       const float* relu_beta, const float* mean, const float* k,
                       const float* inv, const float* cb, const float* cg, ptrdiff_t r0,
                       ptrdiff_t r1, ptrdiff_t C, float* dx, uint16_t* dxb)
{
    CC_BN_EXACT
    const cc_bn_dx_consts q = {mean, k, inv, cb, cg, relu_scale, relu_beta};
    ptrdiff_t c0 = 0;
    int nv;
    for (; cc_bn_groups(C, &c0, &nv); c0 += nv * CC_BN_W)
        CC_BN_X(CC_BN_NV(cc_bn_dx_group(x, xh, dy, &q, r0, r1, C, c0, NV, BITS, dx, dxb)));
    for (; c0 < C; c0++)
        for (ptrdiff_t r = r0; r < r1; r++) {
            ptrdiff_t e = r * C + c0;
            float d = cc_bn_x1(x, xh, e) - mean[c0];
            float g = relu_scale == NULL || d * relu_scale[c0] + relu_beta[c0] > 0 ? dy[e]
                                                                                   : 0.0f;
            float o = k[c0] * ((g - cb[c0]) - (d * inv[c0]) * cg[c0]);
            if (dxb != NULL)
                dxb[e] = cc_bn_bits1(o);
            else
                dx[e] = o;
        }
}

#endif

#endif
