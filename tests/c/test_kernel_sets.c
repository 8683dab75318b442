/* Every kernel set compiled into this binary against plain scalar loops: the
 * direct convolution (forward, weight gradient), Winograd (forward, weight
 * gradient), the dense tiles (forward, weight and input gradients), the
 * masked sum, max-pool (forward, gather), Philox, batch normalisation's
 * passes (the baseline set's bits) and Adam (its operations' bits). Built natively by
 * tests/test_kernel_sets.py, and for ARM64 with gcc-aarch64-linux-gnu and run
 * under qemu-user, since no ARM machine is at hand: the NEON set's check.
 *
 *   cc -O2 -Isrc/convcore tests/c/test_kernel_sets.c src/convcore/_set_*.c -lm
 *   ./a.out [set ...]        sets by name; none: every set this CPU runs
 *
 * Prints one line per set and exits 1 if any output is off by more than the
 * float32 rounding bound of its sum. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "_kernel_set.h"
#include "_conv_winograd.h"
#include "_dropout_kernels.h"

static const char* NAMES[CC_N_SETS] = {"baseline", "avx2", "avx512", "neon"};
static int n_checks, n_failed;
static unsigned long long rng_state = 88172645463325252ull;

static float rnd(void)   /* uniform in [-2, 2), xorshift64 */
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return (float)((rng_state >> 40) * (4.0 / 16777216.0) - 2.0);
}

static float* fill(size_t n)
{
    float* a = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    for (size_t i = 0; i < n; i++)
        a[i] = rnd();
    return a;
}

/* got within the rounding bound of sums of `terms` products whose absolute
 * values add up to bound[i]; a few times more for Winograd's transforms */
static void check(const char* what, const float* got, const double* want, const double* bound,
                  size_t n, double terms)
{
    n_checks++;
    for (size_t i = 0; i < n; i++) {
        double tol = 2.0 * (terms + 1) * 0x1p-24 * bound[i] + 1e-30;
        if (!(fabs(got[i] - want[i]) <= tol)) {
            printf("  %s: entry %zu is %.9g, want %.9g (tolerance %.3g)\n", what, i, got[i],
                   want[i], tol);
            n_failed++;
            return;
        }
    }
}

/* y (OH, OW, F) of the padded image xp (Hp, Wp, C), kernels w (KH, KW, C, F) */
static void ref_conv(const float* xp, int Wp, int C, int KH, int KW, int SH, int SW, int OH,
                     int OW, const float* w, int F, const float* b, double* y, double* yb)
{
    for (int p = 0; p < OH * OW; p++)
        for (int f = 0; f < F; f++) {
            double s = b ? b[f] : 0, a = b ? fabs(b[f]) : 0;
            for (int kh = 0; kh < KH; kh++)
                for (int kw = 0; kw < KW; kw++)
                    for (int c = 0; c < C; c++) {
                        double xv = xp[(((p / OW) * SH + kh) * Wp + (p % OW) * SW + kw) * C + c];
                        double wv = w[((kh * KW + kw) * C + c) * F + f];
                        s += xv * wv;
                        a += fabs(xv * wv);
                    }
            y[p * F + f] = s;
            yb[p * F + f] = a;
        }
}

/* dw (KH, KW, C, F) = sum over positions of the section times dy (OH, OW, F) */
static void ref_conv_dw(const float* xp, int Wp, int C, int KH, int KW, int SH, int SW, int OH,
                        int OW, const float* dy, int F, double* dw, double* db)
{
    for (int kh = 0; kh < KH; kh++)
        for (int kw = 0; kw < KW; kw++)
            for (int c = 0; c < C; c++)
                for (int f = 0; f < F; f++) {
                    double s = 0, a = 0;
                    for (int p = 0; p < OH * OW; p++) {
                        double xv = xp[(((p / OW) * SH + kh) * Wp + (p % OW) * SW + kw) * C + c];
                        s += xv * dy[p * F + f];
                        a += fabs(xv * dy[p * F + f]);
                    }
                    dw[((kh * KW + kw) * C + c) * F + f] = s;
                    db[((kh * KW + kw) * C + c) * F + f] = a;
                }
}

static void test_direct(const cc_kernel_set* k, int C, int F, int KH, int KW, int S, int OH,
                        int OW)
{
    int Hp = (OH - 1) * S + KH, Wp = (OW - 1) * S + KW, P = OH * OW;
    float *xp = fill((size_t)Hp * Wp * C), *w = fill((size_t)KH * KW * C * F), *b = fill(F);
    float *y = fill((size_t)P * F), *dy = fill((size_t)P * F);
    float* dw = calloc((size_t)KH * KW * C * F, sizeof(float));
    double* want = malloc(sizeof(double) * (size_t)(P + KH * KW * C) * F);
    double* bound = malloc(sizeof(double) * (size_t)(P + KH * KW * C) * F);
    k->conv_forward_image(xp, Wp, C, KH, KW, S, S, OH, OW, w, F, b, y, 0);
    ref_conv(xp, Wp, C, KH, KW, S, S, OH, OW, w, F, b, want, bound);
    check("direct forward", y, want, bound, (size_t)P * F, KH * KW * C + 1);
    k->conv_dw_image(xp, Wp, C, KH, KW, S, S, OH, OW, dy, F, dw);
    ref_conv_dw(xp, Wp, C, KH, KW, S, S, OH, OW, dy, F, want, bound);
    check("direct weight gradient", dw, want, bound, (size_t)KH * KW * C * F, P);
    free(xp), free(w), free(b), free(y), free(dy), free(dw), free(want), free(bound);
}

static void test_winograd(const cc_kernel_set* k, int r, int C, int F, int OH, int OW)
{
    int m = 7 - r, KK = r * r;
    int Hp = m * ((OH + m - 1) / m) + r - 1, Wp = m * ((OW + m - 1) / m) + r - 1, P = OH * OW;
    float *xp = fill((size_t)Hp * Wp * C), *w = fill((size_t)KK * C * F), *b = fill(F);
    float *y = fill((size_t)P * F), *dy = fill((size_t)P * F), *dw = fill((size_t)KK * C * F);
    float *U = fill((size_t)36 * C * F), *M = fill((size_t)36 * C * F);
    float* scratch = fill(cc_wino_scratch_floats(C));
    float* dw_scratch = fill(cc_wino_dw_scratch_floats(C, F));
    int q[2] = {0, 0};
    double* want = malloc(sizeof(double) * (size_t)(P + KK * C) * F);
    double* bound = malloc(sizeof(double) * (size_t)(P + KK * C) * F);
    k->wino_filter(w, r, C, F, U);
    /* three images in one call: where each has fewer tiles than a block, a
     * block holds tiles of two or three of them */
    enum { G = 3 };
    float *xps3 = fill((size_t)G * Hp * Wp * C), *y3 = fill((size_t)G * P * F);
    const float* xps[G];
    float* ys[G];
    for (int g = 0; g < G; g++)
        xps[g] = xps3 + (size_t)g * Hp * Wp * C, ys[g] = y3 + (size_t)g * P * F;
    k->wino_forward_images(xps, G, Wp, C, r, OH, OW, U, F, b, ys, 0, scratch);
    for (int g = 0; g < G; g++) {
        ref_conv(xps[g], Wp, C, r, r, 1, 1, OH, OW, w, F, b, want, bound);
        check(r == 5 ? "Winograd F(2x2, 5x5) forward" : "Winograd F(4x4, 3x3) forward",
              ys[g], want, bound, (size_t)P * F, 100.0 * (KK * C + 1));
    }
    free(xps3), free(y3);
    k->wino_dw_image(xp, Wp, C, r, dy, OH, OW, F, M, q, dw_scratch);
    k->wino_dw_flush(C, F, M, q, dw_scratch);
    k->wino_dw_finish(M, r, C, F, dw);
    ref_conv_dw(xp, Wp, C, r, r, 1, 1, OH, OW, dy, F, want, bound);
    check(r == 5 ? "Winograd F(2x2, 5x5) weight gradient"
                 : "Winograd F(4x4, 3x3) weight gradient",
          dw, want, bound, (size_t)KK * C * F, 100.0 * P);
    free(xp), free(w), free(b), free(y), free(dy), free(dw), free(U), free(M), free(scratch);
    free(dw_scratch), free(want), free(bound);
}

/* y = x @ w + b, dw = x^T dy, dx = dy w^T (x (N, D), w (D, F)) */
static void test_dense(const cc_kernel_set* k, int N, int D, int F)
{
    int NP = (N + 15) / 16 * 16;
    float *x = fill((size_t)N * D), *w = fill((size_t)D * F), *b = fill(F);
    float *y = fill((size_t)N * F), *dy = fill((size_t)N * F), *dyT = calloc((size_t)F * NP, 4);
    float *dw = fill((size_t)D * F), *dx = fill((size_t)N * D);
    size_t most = (size_t)(N > D ? N : D) * (D > F ? D : F);
    double *want = malloc(sizeof(double) * most), *bound = malloc(sizeof(double) * most);
    for (int n = 0; n < N; n++)
        for (int f = 0; f < F; f++)
            dyT[(size_t)f * NP + n] = dy[(size_t)n * F + f];
    for (int c0 = 0; c0 < F; c0 += 64)
        k->linear_forward_block(x, D, w, F, b, y, 0, N, c0, c0 + 64 < F ? c0 + 64 : F, 0);
    for (int n = 0; n < N; n++)       /* the forward: a 1 x 1 convolution of N positions */
        ref_conv(x + (size_t)n * D, 1, D, 1, 1, 1, 1, 1, 1, w, F, b, want + (size_t)n * F,
                 bound + (size_t)n * F);
    check("dense forward", y, want, bound, (size_t)N * F, D + 1);
    int whole[2] = {0, N}, sliced[6] = {0, N / 5, N / 5, N / 2, N - 1, N};  /* an empty one */
    k->linear_dw_block(x, whole, 1, D, dy, F, dw, 0, D);
    ref_conv_dw(x, D, 1, 1, D, 1, 1, N, 1, dy, F, want, bound);   /* x: N rows of 1 x D */
    check("dense weight gradient", dw, want, bound, (size_t)D * F, N);
    k->linear_dw_block(x, sliced, 5, D, dy, F, dw, 0, D);       /* 5 slices: the same sum */
    check("dense weight gradient (5 slices)", dw, want, bound, (size_t)D * F, N);
    k->linear_dx_block(w, F, dyT, NP, dx, D, N, 0, D);
    for (int n = 0; n < N; n++)
        for (int d = 0; d < D; d++) {
            double s = 0, a = 0;
            for (int f = 0; f < F; f++) {
                s += (double)dy[(size_t)n * F + f] * w[(size_t)d * F + f];
                a += fabs((double)dy[(size_t)n * F + f] * w[(size_t)d * F + f]);
            }
            want[(size_t)n * D + d] = s, bound[(size_t)n * D + d] = a;
        }
    check("dense input gradient", dx, want, bound, (size_t)N * D, F);
    free(x), free(w), free(b), free(y), free(dy), free(dyT), free(dw), free(dx);
    free(want), free(bound);
}

/* dy masked by y > 0 and summed over the P rows */
static void test_mask_sum(const cc_kernel_set* k, int P, int F)
{
    float *dy = fill((size_t)P * F), *y = fill((size_t)P * F), *out = fill((size_t)P * F);
    float* db = calloc(F, sizeof(float));
    double *want = malloc(sizeof(double) * P * F), *bound = malloc(sizeof(double) * P * F);
    k->mask_sum(dy, y, P, F, out, db);
    for (int i = 0; i < P * F; i++)
        want[i] = y[i] > 0 ? dy[i] : 0, bound[i] = 0;
    check("masked gradient", out, want, bound, (size_t)P * F, 0);
    for (int f = 0; f < F; f++) {
        want[f] = bound[f] = 0;
        for (int p = 0; p < P; p++)
            want[f] += out[p * F + f], bound[f] += fabs(out[p * F + f]);
    }
    check("bias gradient", db, want, bound, F, P);
    free(dy), free(y), free(out), free(db), free(want), free(bound);
}

/* The max alone (no argmax) of each window, of max(x, 0) where relu, as
 * doubles: checked against y, which the argmax's pass has written */
static void check_pool_max(const cc_kernel_set* k, const float* x, int H, int W, int C, int K,
                           int relu, const float* y)
{
    int OH = H / K, OW = W / K;
    float* got = fill((size_t)OH * OW * C);
    double *want = malloc(sizeof(double) * OH * OW * C), *bound = calloc(OH * OW * C, 8);
    for (int oh = 0; oh < OH; oh++)
        k->pool_row(x, H, W, C, K, K, K, K, 0, 0, OW, oh, relu, got + (size_t)oh * OW * C, NULL);
    for (int i = 0; i < OH * OW * C; i++)
        want[i] = relu && y[i] < 0 ? 0.0 : y[i];
    check(relu ? "max-pool with ReLU, no argmax" : "max-pool, no argmax", got, want, bound,
          (size_t)OH * OW * C, 0);
    free(got), free(want), free(bound);
}

/* max-pool of windows K x K at stride K (padding 0) with its argmax, then the
 * gather of dy back to the winners; ties broken by the first maximum; the
 * max alone, with and without a ReLU before it (check_pool_max) */
static void test_pool(const cc_kernel_set* k, int H, int W, int C, int K)
{
    int OH = H / K, OW = W / K;
    float *x = fill((size_t)H * W * C), *y = fill((size_t)OH * OW * C);
    float *dy = fill((size_t)OH * OW * C), *dx = fill((size_t)H * W * C);
    int* am = malloc(sizeof(int) * OH * OW * C);
    double *want = malloc(sizeof(double) * H * W * C), *bound = calloc(H * W * C, 8);
    for (int i = 0; i < H * W * C; i += 7)
        x[i] = x[i > C ? i - C : i];   /* ties */
    for (int oh = 0; oh < OH; oh++)
        k->pool_row(x, H, W, C, K, K, K, K, 0, 0, OW, oh, 0, y + (size_t)oh * OW * C,
                    am + (size_t)oh * OW * C);
    check_pool_max(k, x, H, W, C, K, 0, y);
    check_pool_max(k, x, H, W, C, K, 1, y);
    for (int i = 0; i < H * W * C; i++)
        want[i] = 0;
    for (int o = 0; o < OH * OW; o++)
        for (int c = 0; c < C; c++) {
            int best = -1;
            for (int i = 0; i < K * K; i++) {
                int cell = ((o / OW) * K + i / K) * W + (o % OW) * K + i % K;
                if (best < 0 || x[cell * C + c] > x[best * C + c])
                    best = cell;
            }
            n_failed += am[o * C + c] != best || y[o * C + c] != x[best * C + c];
            want[best * C + c] = dy[o * C + c];
        }
    n_checks++;
    if (k->unpool_tiled(dy, am, NULL, H, W, C, K, K, 0, 0, OH, OW, dx) != OH * OW * C)
        n_failed++, printf("  gather: a winner not found in its window\n");
    check("max-pool gather", dx, want, bound, (size_t)H * W * C, 0);
    free(x), free(y), free(dy), free(dx), free(am), free(want), free(bound);
}

/* the generator's words, then dropout's mask of 1000 entries from entry 300:
 * entry 256 q + 64 l + j takes word l of counter 64 q + j */
static void test_philox(const cc_kernel_set* k)
{
    uint32_t words[CC_DROPOUT_BATCH], key[2] = {0x243f6a88u, 0x85a308d3u};
    float ones[1000], y[1000];
    n_checks += 2;
    for (int i = 0; i < 1000; i++)
        ones[i] = 1.0f;
    cc_dropout(ones, y, 0, 1000, 300, key[0], key[1], 0.75f, 2.0f, k->philox_batch);
    for (int i = 0; i < 1000; i++) {
        uint64_t e = 300 + (uint64_t)i, b = 64 * (e / 256) + e % 64;
        uint32_t c[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0};
        cc_philox4x32_10(c, key);
        float want = (float)(c[e % 256 / 64] >> 8) < 0.75f * 16777216.0f ? 2.0f : 0.0f;
        if (y[i] != want) {
            printf("  dropout: entry %d is %g, want %g\n", i, y[i], want);
            n_failed++;
            break;
        }
    }
    for (uint64_t q = 0; q < 4; q++) {
        uint64_t batch = q == 3 ? 0x123456789abull : q;
        k->philox_batch(batch, key, words);
        for (int j = 0; j < 64; j++) {
            uint64_t b = 64 * batch + (uint64_t)j;
            uint32_t c[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0};
            cc_philox4x32_10(c, key);
            for (int l = 0; l < 4; l++)
                if (words[64 * l + j] != c[l]) {
                    printf("  Philox: batch %llu, counter %d, word %d differs\n",
                           (unsigned long long)batch, j, l);
                    n_failed++;
                    return;
                }
        }
    }
}

/* one set's batch normalisation passes over x (or xh's bits, x NULL): the sums
 * without and with dy (rows 1..M and 0..M-1), y without and with relu, dx */
typedef struct { double *s0, *s1; float *y0, *y1, *dx; } bn_out;

static bn_out run_bn(const cc_kernel_set* ks, const float* x, const uint16_t* xh,
                     const float* dy, const float* p, const double* centre, int M, int C)
{
    size_t n = (size_t)M * C;
    bn_out o = {malloc(sizeof(double) * 2 * C), malloc(sizeof(double) * 2 * C),
                malloc(sizeof(float) * n), malloc(sizeof(float) * n), malloc(sizeof(float) * n)};
    ks->bn_sums(x, xh, NULL, NULL, NULL, centre, 1, M, C, o.s0, o.s0 + C);
    ks->bn_sums(x, xh, dy, p + C, p + 2 * C, centre, 0, M - 1, C, o.s1, o.s1 + C);
    ks->bn_affine(x, xh, p, p + C, p + 2 * C, 0, M, C, 0, o.y0, NULL);
    ks->bn_affine(x, xh, p, p + C, p + 2 * C, 0, M, C, 1, o.y1, NULL);
    ks->bn_dx(x, xh, dy, p + C, p + 2 * C, p, p + C, p + 2 * C, p + 3 * C, p + 4 * C, 0, M,
              C, o.dx, NULL);
    return o;
}

static void check_bn(bn_out a, bn_out b, int M, int C, const char* how)
{
    const char* what[] = {"bn sums", "bn sums (dy, the ReLU's mask)", "bn affine",
                          "bn affine (relu)", "bn dx"};
    const void* pa[] = {a.s0, a.s1, a.y0, a.y1, a.dx};
    const void* pb[] = {b.s0, b.s1, b.y0, b.y1, b.dx};
    size_t n = (size_t)M * C, bytes[] = {sizeof(double) * 2 * C, sizeof(double) * 2 * C,
                                          sizeof(float) * n, sizeof(float) * n,
                                          sizeof(float) * n};
    for (int j = 0; j < 5; j++) {
        n_checks++;
        if (memcmp(pa[j], pb[j], bytes[j]) != 0) {
            printf("  %s (M %d, C %d): not the baseline's bits%s\n", what[j], M, C, how);
            n_failed++;
        }
    }
}

static void free_bn(bn_out o)
{
    free(o.s0), free(o.s1), free(o.y0), free(o.y1), free(o.dx);
}

/* batch normalisation's passes over rows r0..r1 of x (M, C): the same bits as
 * the baseline set's (no fused multiply-add; channels past the last chunk one
 * at a time), with NaN, infinity and -0 among x and relu_y; and x given as
 * bfloat16 bits the same bits as their values given as float32 */
static void test_bn(const cc_kernel_set* k, int M, int C)
{
    const cc_kernel_set* base = cc_kernel_set_get(CC_SET_BASELINE);
    size_t n = (size_t)M * C;
    float *x = fill(n), *dy = fill(n), *p = fill(6 * (size_t)C), *xw = malloc(sizeof(float) * n);
    uint16_t* xh = malloc(sizeof(uint16_t) * n);
    double* centre = malloc(sizeof(double) * C);
    x[3] = NAN, x[n / 2] = INFINITY, x[n - 1] = -0.0f, x[5] = -INFINITY, p[C + 1] = 0.0f;
    /* channel 2: (x - 0) / 3 - 1 is +0 rounded twice, 3e-8 fused: a contracted
     * mask (one rounding, not the forward's two) would pass what the ReLU stopped */
    p[2] = 0.0f, p[C + 2] = 1.0f / 3.0f, p[2 * C + 2] = -1.0f;
    for (int r = 0; r < M; r += 2)
        x[(size_t)r * C + 2] = 3.0f;
    for (int c = 0; c < C; c++)
        centre[c] = p[c] * 0.1;
    for (size_t i = 0; i < n; i++) {    /* x's top halves, and their values */
        uint32_t u;
        memcpy(&u, x + i, 4);
        xh[i] = (uint16_t)(u >> 16), u &= 0xffff0000u;
        memcpy(xw + i, &u, 4);
    }
    bn_out a = run_bn(base, x, NULL, dy, p, centre, M, C);
    bn_out b = run_bn(k, x, NULL, dy, p, centre, M, C);
    check_bn(a, b, M, C, "");
    free_bn(a), free_bn(b);
    a = run_bn(base, xw, NULL, dy, p, centre, M, C);
    b = run_bn(k, NULL, xh, dy, p, centre, M, C);
    check_bn(a, b, M, C, " (x as bfloat16 bits)");
    free_bn(a), free_bn(b);
    free(x), free(dy), free(p), free(centre), free(xw), free(xh);
}

/* Adam (_adam.h) of n parameters: the bits of its operations one rounding
 * each (volatile: this file may be compiled to contract them), never fused */
static void test_adam(const cc_kernel_set* k, int n)
{
    float *p = fill(n), *g = fill(n), *m = fill(n), *v = fill(n);
    float* want = malloc(3 * sizeof(float) * n);
    const float lr_t = 1e-3f, a1 = 0.1f, a2 = 1e-3f, eps = 1e-8f;
    p[1] = NAN, g[2] = INFINITY, m[3] = -0.0f;
    for (int i = 0; i < n; i++) {
        v[i] = fabsf(v[i]);
        volatile float d = g[i] - m[i], dm = d * a1, gg = g[i] * g[i], e = gg - v[i], dv = e * a2;
        volatile float mi = m[i] + dm, vi = v[i] + dv, r = sqrtf(vi), s = r + eps, t = lr_t * mi;
        volatile float u = t / s;
        want[i] = p[i] - u, want[n + i] = mi, want[2 * n + i] = vi;
    }
    k->adam(p, g, m, v, n, lr_t, a1, a2, eps);
    n_checks++;
    if (memcmp(p, want, sizeof(float) * n) || memcmp(m, want + n, sizeof(float) * n)
        || memcmp(v, want + 2 * n, sizeof(float) * n)) {
        printf("  adam (n %d): not the bits of its operations one rounding each\n", n);
        n_failed++;
    }
    free(p), free(g), free(m), free(v), free(want);
}

static void test_set(const cc_kernel_set* k)
{
    test_pool(k, 12, 10, 48, 2);
    test_pool(k, 9, 9, 3, 3);
    test_philox(k);
    test_bn(k, 70, 100);      /* every chunk width's remainder, AVX-512's 64 included */
    test_bn(k, 9, 7);
    test_adam(k, 301);
    if (k->lanes == 1)
        return;
    int shapes[][7] = {/* C, F, KH, KW, stride, OH, OW: every tile width and remainder */
        {16, 64, 5, 5, 1, 14, 14}, {1, 32, 5, 5, 1, 28, 28}, {3, 48, 3, 2, 2, 5, 7},
        {16, 16, 1, 1, 1, 3, 13}, {32, 112, 2, 3, 1, 4, 9}};
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
        int* s = shapes[i];
        test_direct(k, s[0], s[1], s[2], s[3], s[4], s[5], s[6]);
    }
    for (int r = 3; r <= 5; r += 2) {
        test_winograd(k, r, 32, 64, 14, 14);
        test_winograd(k, r, 16, 48, 7, 5);
        test_winograd(k, r, 48, 16, 3, 9);
    }
    test_dense(k, 50, 300, 1024);
    test_dense(k, 97, 37, 80);
    test_dense(k, 1, 600, 16);
    test_mask_sum(k, 29, 48);
}

int main(int argc, char** argv)
{
    int tested = 0;
    for (int s = 0; s < CC_N_SETS; s++) {
        int asked = argc == 1;
        for (int a = 1; a < argc; a++)
            asked |= strcmp(argv[a], NAMES[s]) == 0;
        const cc_kernel_set* k = asked ? cc_kernel_set_get(s) : NULL;
        if (!k)
            continue;
        int before = n_failed, checks = n_checks;
        test_set(k);
        printf("%s (%d floats a vector): %d checks, %s\n", k->name, k->lanes,
               n_checks - checks, n_failed == before ? "all passed" : "FAILED");
        tested++;
    }
    if (tested < (argc == 1 ? 1 : argc - 1)) {
        printf("a set asked for is not compiled in or not run by this CPU\n");
        return 1;
    }
    return n_failed ? 1 : 0;
}
