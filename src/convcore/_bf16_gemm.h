/* bf16 matrix products: C = op(A) @ op(B) + beta * C, row-major, whose
 * float32 operands are rounded to bfloat16 as they are packed (cc_bf16_bits:
 * ties to even, the bits of convcore.round_bf16) and whose products are summed
 * in float32, by one of two kernels:
 *
 *   CC_BF16_AMX     AMX tiles: TDPBF16PS, a 16x16 float32 tile += a 16x32
 *                   bf16 tile times a 32x16 one (Sapphire Rapids and later)
 *   CC_BF16_AVX512  AVX512-BF16: VDPBF16PS, 16 float32 sums += 16 pairs of
 *                   bf16 products (Cooper Lake, Zen 4 and later)
 *
 * Both read the same packing (after oneDNN's and the AMX guide's):
 *   A  (mp, kp) bf16, row-major: 16-row tiles of 32 columns are loaded with
 *      the row length as stride;
 *   B  (np / 16) panels of 16 columns, each (kp / 2) rows of 16 pairs: row p
 *      holds B[2p, j] and B[2p + 1, j] side by side for its 16 columns j (the
 *      "VNNI" layout both instructions multiply);
 * mp, np, kp: m, n, k rounded up to 32, the padding zero. C is computed in
 * blocks of 32x32 (four tiles of 16x16), each block's sum over k in one
 * fixed order: the bits depend on the shapes and the kernel, never on who
 * runs which block. The caller has asked the OS for the tile state first
 * (cc_bf16_features) and checked that the CPU has the kernel.
 *
 *   cc_gemm_bf16         the product of float32 operands (packs both); 0, or
 *                        -1 where the packing's memory could not be
 *                        allocated (C then untouched)
 *   cc_gemm_bf16_packed  the product of operands packed already
 *   cc_gemm_bf16_whole_k the same, C never reloaded (C stored transposed)
 *   cc_gemm_bf16_rows    the same with A's rows read where they are (a
 *                        convolution's sections, from the padded image)
 *   cc_pack_a, cc_pack_b float32 operands (transposed or not) into the layout
 *   cc_pack_a_bf16_block an A in bfloat16 already (a layer's bf16 input)
 *   cc_narrow_bf16, cc_narrow_padded_bf16, cc_pad_bf16, cc_im2col_bf16,
 *   cc_narrow_transposed_bf16, cc_transposed_bits_bf16, cc_pair_vnni,
 *   cc_rows_transposed
 *                        the convolutions' packing from images in bf16
 *                        (_conv.pyx's bf16 section)
 *   cc_sum_rows          their bias's gradient: dy's rows summed
 */
#ifndef CC_BF16_GEMM_H
#define CC_BF16_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "_bf16_kernels.h"

/* What a product does past its sums (a convolution's bias and ReLU, fused):
 * C starts from bias (a row, n long; then beta is 0) instead of beta * C,
 * and ends as max(C, 0) (NaN kept, -0 kept: _conv.pyx's _relu) where relu.
 * Where to is given, C's rows end at their places instead of in C (C then
 * only carries the sums from one slice of k to the next): row i = oh w + ow
 * (a convolution's outputs at every column of its padded image, w wide,
 * cc_gemm_bf16_rows in place) goes to to + oh row + ow col where ow < ow_n
 * and oh < oh_n, and nowhere else; where tob is given instead of to, the
 * bfloat16 bits of its values go there so (cc_bf16_bits, after the ReLU) */
typedef struct {
    const float* bias;
    int relu;
    float* to;
    size_t w, ow_n, oh_n, row, col;
    uint16_t* tob;
} cc_epilogue;

static inline cc_epilogue cc_epilogue_of(const float* bias, int relu)
{
    cc_epilogue ep = {bias, relu, NULL, 0, 0, 0, 0, 0, NULL};
    return ep;
}

static inline size_t cc_up32(size_t v) { return (v + 31) & ~(size_t)31; }

#define CC_SLACK 32   /* u16 past an image or a row buffer that cc_im2col_bf16 may touch */
#define CC_STREAM 128   /* rows or columns of a streamed operand packed at a time */

/* Whether cc_gemm_bf16 packs A (mp x kp, the larger operand and large) a
 * block of CC_STREAM rows at a time, each block's share of C made from the
 * whole k right after */
static inline int cc_streams_a(size_t mp, size_t np, size_t kp)
{
    return mp > np && mp * kp * 2 > ((size_t)1 << 20);
}

#if defined(__x86_64__) && ((defined(__clang__) && __clang_major__ >= 12) \
                            || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define CC_HAVE_BF16_GEMM 1
#include <immintrin.h>

#if defined(__clang__)   /* (a pragma is one line) */
#pragma clang attribute push (__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16"))), apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512bf16,amx-tile,amx-bf16")
#endif

#define CC_BLK 32   /* C's blocks: 32x32, four 16x16 tiles */
#define CC_BF16_KC 256   /* k a pass over C's blocks (cc_gemm_bf16_rows) */
#define CC_BF16_KC_IN_PLACE 448   /* the same, A read in place: 28 KB of B's column block */

/* 16 floats -> their bfloat16 bits in the top half of each lane (cc_bf16_bits) */
static inline __m512i cc_bf16_bits16(__m512 x)
{
    const __m512i u = _mm512_castps_si512(x);
    const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    const __mmask16 nan = _mm512_cmpgt_epi32_mask(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(u, _mm512_set1_epi32(0x00400000)));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
}

static inline __mmask16 cc_first(ptrdiff_t count)   /* the first count (<= 16) lanes */
{
    return count >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (count > 0 ? count : 0)) - 1u);
}

/* op(A) (m, k) -> pa (mp, kp). trans: op(A)[i, q] = a[q * lda + i] */
static void cc_pack_a(int trans, int m, int k, const float* a, int lda, uint16_t* pa, size_t kp)
{
    if (!trans) {
        for (int i = 0; i < m; i++) {
            const float* row = a + (size_t)i * lda;
            for (int q = 0; q < (int)kp; q += 16) {
                __mmask16 in = cc_first(k - q);
                __m512i r = cc_bf16_bits16(_mm512_maskz_loadu_ps(in, row + q));
                _mm256_storeu_si256((__m256i*)(pa + (size_t)i * kp + q),
                                    _mm512_cvtepi32_epi16(_mm512_srli_epi32(r, 16)));
            }
        }
        return;
    }
    /* two rows of a (q, q + 1) make 16 pairs, one for each of 16 rows of pa */
    uint32_t* pw = (uint32_t*)pa;
    const __m512i lane = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7,
                                                             6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32((int)(kp / 2)));
    for (int i = 0; i < m; i += 16) {
        __mmask16 in = cc_first(m - i);
        for (int q = 0; q < (int)kp; q += 2) {
            __m512i r0 = q < k ? cc_bf16_bits16(_mm512_maskz_loadu_ps(in, a + (size_t)q * lda + i))
                               : _mm512_setzero_si512();
            __m512i r1 = q + 1 < k
                ? cc_bf16_bits16(_mm512_maskz_loadu_ps(in, a + (size_t)(q + 1) * lda + i))
                : _mm512_setzero_si512();
            __m512i pair = _mm512_or_si512(_mm512_srli_epi32(r0, 16), r1);
            _mm512_mask_i32scatter_epi32(pw + (size_t)i * (kp / 2) + q / 2, in, lane, pair, 4);
        }
    }
}

/* op(B) (k, n) -> pb: panels of 16 columns, (kp / 2) rows of 16 pairs each.
 * trans: op(B)[q, j] = b[j * ldb + q] */
static void cc_pack_b(int trans, int n, int k, const float* b, int ldb, uint32_t* pb, size_t kp)
{
    const size_t half = kp / 2;
    if (!trans) {   /* row by row (a pair at a time), each row's panels in turn */
        for (int q = 0; q < (int)kp; q += 2) {
            const float* r0 = b + (size_t)q * ldb;
            for (int j = 0; j < n; j += 16) {
                __mmask16 in = cc_first(n - j);
                __m512i v0 = q < k ? cc_bf16_bits16(_mm512_maskz_loadu_ps(in, r0 + j))
                                   : _mm512_setzero_si512();
                __m512i v1 = q + 1 < k ? cc_bf16_bits16(_mm512_maskz_loadu_ps(in, r0 + ldb + j))
                                       : _mm512_setzero_si512();
                _mm512_storeu_si512(pb + ((size_t)(j / 16) * half + q / 2) * 16,
                                    _mm512_or_si512(_mm512_srli_epi32(v0, 16), v1));
            }
        }
        return;
    }
    /* 32 consecutive q of one column j make 16 pairs, one for each of 16 rows of its panel */
    __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37, 35,
                                   33, 31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512i rows = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7,
                                                             6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32(16));
    for (int j = 0; j < n; j++) {
        const float* col = b + (size_t)j * ldb;
        uint32_t* panel = pb + (size_t)(j / 16) * half * 16 + (j % 16);
        for (int q = 0; q < (int)kp; q += 32) {
            __m512i lo = cc_bf16_bits16(_mm512_maskz_loadu_ps(cc_first(k - q), col + q));
            __m512i hi = cc_bf16_bits16(_mm512_maskz_loadu_ps(cc_first(k - q - 16), col + q + 16));
            __m512i pairs = _mm512_permutex2var_epi16(lo, odd, hi);
            _mm512_i32scatter_epi32(panel + (size_t)(q / 2) * 16, rows, pairs, 4);
        }
    }
}

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} cc_tile_config;

/* tiles 0-3: C's four 16x16 float32 tiles; 4, 5: A's two 16x32; 6, 7: B's two */
static void cc_amx_configure(void)
{
    cc_tile_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = 16;
    }
    /* GCC's ldtilecfg declares a read of 8 bytes only: without this barrier
     * it may drop the stores to the other 56 as dead */
    __asm__ __volatile__("" : : "r"(&cfg) : "memory");
    _tile_loadconfig(&cfg);
}

/* k-slice t (32 values) of A's row i: a0 + i * lda + CC_AOFF(aoff, t). The
 * packed A: lda = kp, aoff NULL (slice t at 32 t); an image's sections read
 * where they are (cc_gemm_bf16_rows): lda its channels, aoff the slices'
 * places in the window */
#define CC_AOFF(aoff, t) ((aoff) != NULL ? (aoff)[t] : (size_t)(t) * 32)

/* A 32x32 block of C from A's 32 rows at a0 (row stride lda, slices aoff)
 * and B's two panels at b0 (ldp deep), over kp of k: cb (row stride ldb
 * floats) := (c0 ? the 32x32 at c0, row stride ld0 : 0) + its products,
 * summed over k in order. (c0 = cb: C's own; ld0 = 0: one row for all, a
 * bias.) */
static void cc_amx_block(const uint16_t* a0, size_t lda, const size_t* aoff,
                         const uint32_t* b0, size_t ldp, size_t kp, float* cb, size_t ldb,
                         const float* c0, size_t ld0)
{
    const uint16_t* a1 = a0 + 16 * lda;
    const uint32_t* b1 = b0 + (ldp / 2) * 16;
    const long stride = (long)(ldb * sizeof(float)), stride0 = (long)(ld0 * sizeof(float));
    if (c0 != NULL) {
        _tile_loadd(0, c0, stride0);
        _tile_loadd(1, c0 + 16, stride0);
        _tile_loadd(2, c0 + 16 * ld0, stride0);
        _tile_loadd(3, c0 + 16 * ld0 + 16, stride0);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
    }
    for (size_t q = 0; q < kp; q += 32) {
        _tile_loadd(4, a0 + CC_AOFF(aoff, q / 32), (long)(lda * 2));
        _tile_loadd(5, a1 + CC_AOFF(aoff, q / 32), (long)(lda * 2));
        _tile_loadd(6, b0 + q * 8, 64);
        _tile_loadd(7, b1 + q * 8, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, cb, stride);
    _tile_stored(1, cb + 16, stride);
    _tile_stored(2, cb + 16 * ldb, stride);
    _tile_stored(3, cb + 16 * ldb + 16, stride);
}

/* the same with VDPBF16PS: 8 rows of 32 sums in 16 registers at a time */
static void cc_avx512bf16_block(const uint16_t* a0, size_t lda, const size_t* aoff,
                                const uint32_t* b0, size_t ldp, size_t kp, float* cb,
                                size_t ldb, const float* c0, size_t ld0)
{
    const uint32_t* b1 = b0 + (ldp / 2) * 16;
    for (int r0 = 0; r0 < CC_BLK; r0 += 8) {
        __m512 acc[8][2];
        for (int r = 0; r < 8; r++) {
            const float* row = c0 + (r0 + r) * ld0;
            acc[r][0] = c0 ? _mm512_loadu_ps(row) : _mm512_setzero_ps();
            acc[r][1] = c0 ? _mm512_loadu_ps(row + 16) : _mm512_setzero_ps();
        }
        const uint16_t* a = a0 + r0 * lda;
        for (size_t p = 0; p < kp / 2; p++) {
            __m512bh v0 = (__m512bh)_mm512_loadu_si512(b0 + p * 16);
            __m512bh v1 = (__m512bh)_mm512_loadu_si512(b1 + p * 16);
            const uint16_t* ap = a + CC_AOFF(aoff, p / 16) + 2 * (p % 16);
            for (int r = 0; r < 8; r++) {
                uint32_t pair;
                memcpy(&pair, ap + r * lda, 4);
                __m512bh u = (__m512bh)_mm512_set1_epi32((int)pair);
                acc[r][0] = _mm512_dpbf16_ps(acc[r][0], u, v0);
                acc[r][1] = _mm512_dpbf16_ps(acc[r][1], u, v1);
            }
        }
        for (int r = 0; r < 8; r++) {
            _mm512_storeu_ps(cb + (r0 + r) * ldb, acc[r][0]);
            _mm512_storeu_ps(cb + (r0 + r) * ldb + 16, acc[r][1]);
        }
    }
}

/* A row of a block's n <= 32 sums at src to dst (src itself allowed),
 * through the ReLU where relu: v < 0 (ordered) -> 0, so NaN and -0 kept */
static inline void cc_put_row(float* dst, const float* src, size_t n, int relu)
{
    __mmask16 m0 = cc_first((ptrdiff_t)n), m1 = cc_first((ptrdiff_t)n - 16);
    __m512 v0 = _mm512_maskz_loadu_ps(m0, src), v1 = _mm512_maskz_loadu_ps(m1, src + 16);
    if (relu) {
        const __m512 zero = _mm512_setzero_ps();
        v0 = _mm512_mask_mov_ps(v0, _mm512_cmp_ps_mask(v0, zero, _CMP_LT_OQ), zero);
        v1 = _mm512_mask_mov_ps(v1, _mm512_cmp_ps_mask(v1, zero, _CMP_LT_OQ), zero);
    }
    _mm512_mask_storeu_ps(dst, m0, v0);
    _mm512_mask_storeu_ps(dst + 16, m1, v1);
}

/* the same row's bfloat16 bits (cc_bf16_bits) to dst, after the ReLU */
static inline void cc_put_row_bits(uint16_t* dst, const float* src, size_t n, int relu)
{
    const __m512 zero = _mm512_setzero_ps();
    for (size_t h = 0; h < 2; h++) {
        __mmask16 m = cc_first((ptrdiff_t)n - 16 * (ptrdiff_t)h);
        __m512 v = _mm512_maskz_loadu_ps(m, src + 16 * h);
        if (relu)
            v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
        _mm256_mask_storeu_epi16(dst + 16 * h, m,
                                 _mm512_cvtepi32_epi16(_mm512_srli_epi32(cc_bf16_bits16(v), 16)));
    }
}

/* C's block at (i0, j0): in place where it is whole and beta 0 or 1, else
 * through out (beta * C or the bias, zero outside C, then copied back, or
 * to the rows' places: ep->to). tc: C is stored transposed (element (i, j)
 * at c[j * ldc + i]); ep: NULL or the epilogue (not with tc) */
static void cc_block(int kernel, const uint16_t* a0, size_t lda, const size_t* aoff,
                     const uint32_t* b0, size_t ldp, size_t kp, size_t i0, size_t j0, float* c,
                     size_t ldc, size_t m, size_t n, float beta, float* out, int tc,
                     const cc_epilogue* ep)
{
    void (*block)(const uint16_t*, size_t, const size_t*, const uint32_t*, size_t, size_t,
                  float*, size_t, const float*, size_t) =
        kernel == CC_BF16_AMX ? cc_amx_block : cc_avx512bf16_block;
    size_t ie = m - i0 < CC_BLK ? m - i0 : CC_BLK, je = n - j0 < CC_BLK ? n - j0 : CC_BLK;
    float* cb = tc ? c + j0 * ldc + i0 : c + i0 * ldc + j0;
    size_t si = tc ? 1 : ldc, sj = tc ? ldc : 1;   /* (i, j)'s place: cb[i * si + j * sj] */
    const float* bias = ep != NULL && ep->bias != NULL ? ep->bias + j0 : NULL;
    int relu = ep != NULL && ep->relu, whole = ie == CC_BLK && je == CC_BLK;
    const cc_epilogue* to = ep != NULL && (ep->to != NULL || ep->tob != NULL) ? ep : NULL;
    if (!tc && whole && (beta == 0.0f || beta == 1.0f)) {
        block(a0, lda, aoff, b0, ldp, kp, to ? out : cb, to ? CC_BLK : ldc,
              beta != 0.0f ? cb : bias, beta != 0.0f ? ldc : 0);
        if (to == NULL) {
            for (size_t i = 0; relu && i < CC_BLK; i++)
                cc_put_row(cb + i * ldc, cb + i * ldc, CC_BLK, 1);
            return;
        }
    } else {
        int from_c = beta != 0.0f || bias != NULL;   /* else the block starts from zeros */
        if (from_c) {
            memset(out, 0, CC_BLK * CC_BLK * sizeof(float));
            for (size_t i = 0; i < ie; i++)
                for (size_t j = 0; j < je; j++)
                    out[i * CC_BLK + j] = bias != NULL ? bias[j] : beta * cb[i * si + j * sj];
        }
        block(a0, lda, aoff, b0, ldp, kp, out, CC_BLK, from_c ? out : NULL, CC_BLK);
    }
    if (tc) {   /* C's rows j, each written along (no epilogue with tc) */
        for (size_t j = 0; j < je; j++)
            for (size_t i = 0; i < ie; i++)
                cb[j * sj + i] = out[i * CC_BLK + j];
        return;
    }
    if (to == NULL) {
        for (size_t i = 0; i < ie; i++)
            cc_put_row(cb + i * si, out + i * CC_BLK, je, relu);
        return;
    }
    size_t oh = i0 / to->w, ow = i0 % to->w;   /* row i0's place, then stepped along */
    for (size_t i = 0; i < ie; i++) {
        size_t at = oh * to->row + ow * to->col + j0;
        if (ow < to->ow_n && oh < to->oh_n && to->tob != NULL)
            cc_put_row_bits(to->tob + at, out + i * CC_BLK, je, relu);
        else if (ow < to->ow_n && oh < to->oh_n)
            cc_put_row(to->to + at, out + i * CC_BLK, je, relu);
        if (++ow == to->w) {
            ow = 0;
            oh++;
        }
    }
}

/* C (m, n) := beta * C + A @ B from A's rows (row i0 + r of the 32 of a
 * block at a + (roff ? roff[i0 / 32] : i0 * lda) + r * lda, its slices at
 * aoff: CC_AOFF; rows up to m rounded up to 32 are read) and the packed B
 * (np / 16 panels); tc: C stored transposed (cc_block) */
static void cc_gemm_bf16_rows(int kernel, size_t m, size_t n, size_t kp, const uint16_t* a,
                              size_t lda, const size_t* aoff, const size_t* roff,
                              const uint32_t* pb, float beta, float* c, size_t ldc, int tc,
                              const cc_epilogue* ep)
{
    float out[CC_BLK * CC_BLK] __attribute__((aligned(64)));
    size_t mp = cc_up32(m), np = cc_up32(n);
    if (kernel == CC_BF16_AMX)
        cc_amx_configure();
    /* k in slices of CC_BF16_KC: the inner loop re-reads the smaller
     * operand's slice, which stays in cache; C is carried from slice to
     * slice in float32 (the same sums, the same bits). A read in place
     * (aoff without roff: a convolution over its padded image) has rows
     * that overlap, all of it a few KB: there the columns go outer, one
     * column block's B slice staying in L1 across the row blocks, and k is
     * cut in as few slices of at most CC_BF16_KC_IN_PLACE as it takes (C
     * reloaded less often) */
    int in_place = aoff != NULL && roff == NULL;
    int rows_outer = in_place ? 0 : mp > np;
    size_t outer = rows_outer ? mp : np, inner = rows_outer ? np : mp, step = CC_BF16_KC;
    if (in_place) {
        size_t slices = (kp + CC_BF16_KC_IN_PLACE - 1) / CC_BF16_KC_IN_PLACE;
        step = cc_up32((kp + slices - 1) / slices);
    }
    cc_epilogue first = cc_epilogue_of(ep != NULL ? ep->bias : NULL, 0);
    cc_epilogue last = ep != NULL ? *ep : cc_epilogue_of(NULL, 0);
    last.bias = NULL;
    for (size_t k0 = 0; k0 < kp; k0 += step) {
        size_t kc = kp - k0 < step ? kp - k0 : step;
        const cc_epilogue* e = k0 == 0 ? (k0 + kc == kp ? ep : &first)
                                       : (k0 + kc == kp ? &last : NULL);
        const size_t* ao = aoff != NULL ? aoff + k0 / 32 : NULL;
        for (size_t u = 0; u < outer; u += CC_BLK)
            for (size_t v = 0; v < inner; v += CC_BLK) {
                size_t i0 = rows_outer ? u : v, j0 = rows_outer ? v : u;
                const uint16_t* ab = a + (roff != NULL ? roff[i0 / CC_BLK] : i0 * lda);
                cc_block(kernel, aoff != NULL ? ab : ab + k0, lda, ao,
                         pb + j0 * (kp / 2) + k0 * 8, kp, kc, i0, j0, c, ldc, m, n,
                         k0 == 0 ? beta : 1.0f, out, tc, e);
            }
    }
    if (kernel == CC_BF16_AMX)
        _tile_release();
}

/* the same from the packed A (mp, kp) */
static void cc_gemm_bf16_packed(int kernel, size_t m, size_t n, size_t kp, const uint16_t* pa,
                                const uint32_t* pb, float beta, float* c, size_t ldc, int tc,
                                const cc_epilogue* ep)
{
    cc_gemm_bf16_rows(kernel, m, n, kp, pa, kp, NULL, NULL, pb, beta, c, ldc, tc, ep);
}

/* the same with each 32x32 block of C summed over the whole kp in one call,
 * C never reloaded (as cc_gemm_bf16_streamed makes its blocks): for C
 * stored transposed, which each reload would copy in and out */
static void cc_gemm_bf16_whole_k(int kernel, size_t m, size_t n, size_t kp, const uint16_t* pa,
                                 const uint32_t* pb, float beta, float* c, size_t ldc, int tc)
{
    float out[CC_BLK * CC_BLK] __attribute__((aligned(64)));
    if (kernel == CC_BF16_AMX)
        cc_amx_configure();
    for (size_t i0 = 0; i0 < m; i0 += CC_BLK)
        for (size_t j0 = 0; j0 < n; j0 += CC_BLK)
            cc_block(kernel, pa + i0 * kp, kp, NULL, pb + j0 * (kp / 2), kp, kp, i0, j0, c,
                     ldc, m, n, beta, out, tc, NULL);
    if (kernel == CC_BF16_AMX)
        _tile_release();
}

/* ---- the convolutions' packing, from images already in bfloat16 ---- */

/* y = x's bfloat16 bits (cc_bf16_bits), where relu_y (or NULL) > 0 (else +0) */
static void cc_narrow_bf16(const float* x, const float* relu_y, uint16_t* y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i += 16) {
        __mmask16 in = cc_first(n - i);
        __m512 v = _mm512_maskz_loadu_ps(in, x + i);
        if (relu_y != NULL)
            v = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(in, relu_y + i),
                                                       _mm512_setzero_ps(), _CMP_GT_OQ), v);
        _mm256_mask_storeu_epi16(y + i, in,
                                 _mm512_cvtepi32_epi16(_mm512_srli_epi32(cc_bf16_bits16(v), 16)));
    }
}

/* acc (n) += x's rows (rows, n) one after another, each where relu_y (or NULL)
 * > 0, else +0 (cc_narrow_bf16's mask): each sum in row order, the bits of
 * adding row by row, acc held in registers 64 values at a time (a bias's
 * gradient, db) */
static void cc_sum_rows(const float* x, const float* relu_y, size_t rows, size_t n,
                        float* acc)
{
    for (size_t c0 = 0; c0 < n; c0 += 64) {
        __mmask16 in[4];
        __m512 s[4];
        for (int v = 0; v < 4; v++) {
            in[v] = cc_first((ptrdiff_t)(n - c0) - 16 * v);
            s[v] = _mm512_maskz_loadu_ps(in[v], acc + c0 + 16 * v);
        }
        for (size_t r = 0; r < rows; r++)
            for (int v = 0; v < 4; v++) {
                const size_t e = r * n + c0 + 16 * (size_t)v;
                __m512 d = _mm512_maskz_loadu_ps(in[v], x + e);
                if (relu_y != NULL)
                    d = _mm512_maskz_mov_ps(
                        _mm512_cmp_ps_mask(_mm512_maskz_loadu_ps(in[v], relu_y + e),
                                           _mm512_setzero_ps(), _CMP_GT_OQ), d);
                s[v] = _mm512_add_ps(s[v], d);
            }
        for (int v = 0; v < 4; v++)
            _mm512_mask_storeu_ps(acc + c0 + 16 * v, in[v], s[v]);
    }
}

/* One image x (H, W, C) float32 (masked by relu_y > 0 where given) -> y
 * (Hp, Wp, C) bfloat16 (cc_narrow_bf16): PT rows and PL columns of zeros
 * before it, zeros after (Hp >= H + PT, Wp >= W + PL) */
/* Ask the cache for the bytes at p: a row two ahead of the one a
 * channels-first copy gathers from (its source streams from memory, the
 * copy stays in cache; 64x28x28x32 in resnet8's bf16 step, 1 thread: the
 * two copies 3.6% -> 2.7% of it in perf) */
static inline void cc_prefetch_run(const void* p, size_t bytes)
{
    for (size_t o = 0; o < bytes; o += 64)
        __builtin_prefetch((const char*)p + o);
}

static void cc_narrow_padded_bf16(const float* x, const float* relu_y, int H, int W, int C,
                                  int PT, int PL, int Hp, int Wp, uint16_t* y)
{
    const size_t run = (size_t)W * C, line = (size_t)Wp * C, left = (size_t)PL * C;
    memset(y, 0, PT * line * sizeof(uint16_t));   /* only the border is zeroed */
    for (int h = 0; h < H; h++) {
        uint16_t* row = y + (size_t)(h + PT) * line;
        memset(row, 0, left * sizeof(uint16_t));
        cc_narrow_bf16(x + h * run, relu_y != NULL ? relu_y + h * run : NULL, row + left,
                       (ptrdiff_t)run);
        memset(row + left + run, 0, (line - left - run) * sizeof(uint16_t));
    }
    memset(y + (size_t)(H + PT) * line, 0, (size_t)(Hp - H - PT) * line * sizeof(uint16_t));
}

/* cc_narrow_padded_bf16 for an image in bfloat16 already (x: its bits):
 * copied into its padded place */
static void cc_pad_bf16(const uint16_t* x, int H, int W, int C, int PT, int PL, int Hp, int Wp,
                        uint16_t* y)
{
    const size_t run = (size_t)W * C, line = (size_t)Wp * C, left = (size_t)PL * C;
    memset(y, 0, PT * line * sizeof(uint16_t));
    for (int h = 0; h < H; h++) {
        uint16_t* row = y + (size_t)(h + PT) * line;
        memset(row, 0, left * sizeof(uint16_t));
        memcpy(row + left, x + h * run, run * sizeof(uint16_t));
        memset(row + left + run, 0, (line - left - run) * sizeof(uint16_t));
    }
    memset(y + (size_t)(H + PT) * line, 0, (size_t)(Hp - H - PT) * line * sizeof(uint16_t));
}

/* One image x (H, W, C) float32 -> y (C, Hp, Wp) bfloat16 (cc_bf16_bits),
 * channels first, each plane padded as cc_narrow_padded_bf16's image; 1
 * where x holds an infinity or NaN, else 0 */
/* 0, C, 2C, ... 15C: a gather's offsets, 16 pixels' same channel */
static inline __m512i cc_pixel_lanes(int C)
{
    return _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(C));
}

static int cc_narrow_transposed_bf16(const float* x, int H, int W, int C, int PT, int PL,
                                     int Hp, int Wp, uint16_t* y)
{
    const __m512i lanes = cc_pixel_lanes(C);
    const __m512i exp_bits = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    memset(y, 0, (size_t)C * Hp * Wp * sizeof(uint16_t));
    for (int h = 0; h < H; h++) {
        cc_prefetch_run(x + (size_t)(h + 2) * W * C, (size_t)W * C * sizeof(float));
        for (int w = 0; w < W; w += 16) {
            __mmask16 in = cc_first(W - w);
            const float* src = x + ((size_t)h * W + w) * C;
            for (int c = 0; c < C; c++) {
                __m512 v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), in, lanes, src + c, 4);
                __m512i e = _mm512_and_si512(_mm512_castps_si512(v), exp_bits);
                bad |= _mm512_cmpeq_epi32_mask(e, exp_bits);   /* infinity or NaN */
                _mm256_mask_storeu_epi16(
                    y + ((size_t)c * Hp + h + PT) * Wp + PL + w, in,
                    _mm512_cvtepi32_epi16(_mm512_srli_epi32(cc_bf16_bits16(v), 16)));
            }
        }
    }
    return bad != 0;
}

/* cc_narrow_transposed_bf16 for an image in bfloat16 already (x: its bits;
 * C even): each gathered 32-bit word holds two channels, c and c + 1 */
static int cc_transposed_bits_bf16(const uint16_t* x, int H, int W, int C, int PT, int PL,
                                   int Hp, int Wp, uint16_t* y)
{
    const __m512i lanes = cc_pixel_lanes(C);
    const __m512i lo_exp = _mm512_set1_epi32(0x7f80), hi_exp = _mm512_set1_epi32(0x7f800000);
    __mmask16 bad = 0;
    memset(y, 0, (size_t)C * Hp * Wp * sizeof(uint16_t));
    for (int h = 0; h < H; h++) {
        cc_prefetch_run(x + (size_t)(h + 2) * W * C, (size_t)W * C * sizeof(uint16_t));
        for (int w = 0; w < W; w += 16) {
            __mmask16 in = cc_first(W - w);
            const uint16_t* src = x + ((size_t)h * W + w) * C;
            for (int c = 0; c < C; c += 2) {
                __m512i v = _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), in, lanes,
                                                        src + c, 2);
                bad |= _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, lo_exp), lo_exp)
                     | _mm512_cmpeq_epi32_mask(_mm512_and_si512(v, hi_exp), hi_exp);
                uint16_t* to = y + ((size_t)c * Hp + h + PT) * Wp + PL + w;
                _mm256_mask_storeu_epi16(to, in, _mm512_cvtepi32_epi16(v));
                _mm256_mask_storeu_epi16(to + (size_t)Hp * Wp, in,
                                         _mm512_cvtepi32_epi16(_mm512_srli_epi32(v, 16)));
            }
        }
    }
    return bad != 0;
}

/* Rows p0 <= p < p1 of the sections of an image padded already (Wp columns
 * of C channels, cc_narrow_padded_bf16: no window reaches past it), each of
 * length kp: the KH runs of KW * C values, then zeros. Whole vectors only: a
 * run's last vector spills into the next run, the zeros into the next row,
 * both written after; CC_SLACK u16 past the image are read, past the last
 * row written. A section of at most 32 values is made in one vector, each
 * run put in its place by a masked load into it: a chain of KH loads, so
 * CC_IM2COL_ROWS sections side by side. */
#define CC_IM2COL_ROWS 8
static void cc_im2col_bf16(const uint16_t* xp, int Wp, int C, int KH, int KW, int SH, int SW,
                           int OW, int p0, int p1, uint16_t* rows, size_t kp)
{
    const size_t run = (size_t)KW * C, K = (size_t)KH * run, line = (size_t)Wp * C;
    if (K <= 32) {   /* a whole section in one vector: run i by a masked load into its place */
        for (int p = p0; p < p1; p += CC_IM2COL_ROWS) {   /* independent chains of loads */
            const uint16_t* src[CC_IM2COL_ROWS];
            __m512i row[CC_IM2COL_ROWS];
            for (int r = 0; r < CC_IM2COL_ROWS; r++) {
                int q = p + r < p1 ? p + r : p;
                src[r] = xp + ((size_t)(q / OW) * SH * Wp + (size_t)(q % OW) * SW) * C;
                row[r] = _mm512_setzero_si512();
            }
            for (int i = 0; i < KH; i++) {   /* (masked lanes are not read) */
                __mmask32 in = (__mmask32)(((1ull << run) - 1) << (i * run));
                for (int r = 0; r < CC_IM2COL_ROWS; r++)
                    row[r] = _mm512_mask_loadu_epi16(row[r], in, src[r] + i * (line - run));
            }
            for (int r = 0; r < CC_IM2COL_ROWS && p + r < p1; r++)
                _mm512_storeu_si512(rows + (size_t)(p + r - p0) * kp, row[r]);
        }
        return;
    }
    for (int p = p0; p < p1; p++) {
        uint16_t* row = rows + (size_t)(p - p0) * kp;
        const uint16_t* src = xp + ((size_t)(p / OW) * SH * Wp + (size_t)(p % OW) * SW) * C;
        for (int i = 0; i < KH; i++, src += line)
            for (size_t q = 0; q < run; q += 32)
                _mm512_storeu_si512(row + i * run + q, _mm512_loadu_si512(src + q));
        if (K < kp)
            _mm512_storeu_si512(row + K, _mm512_setzero_si512());
    }
}

/* Two rows r0, r1 (length np, or NULL: zeros) -> row p of every panel of B */
static void cc_pair_vnni(const uint16_t* r0, const uint16_t* r1, size_t np, size_t p,
                         size_t kp, uint32_t* pb)
{
    const __m256i zero = _mm256_setzero_si256();
    for (size_t j = 0; j < np; j += 16) {
        __m256i lo = r0 != NULL ? _mm256_loadu_si256((const __m256i*)(r0 + j)) : zero;
        __m256i hi = r1 != NULL ? _mm256_loadu_si256((const __m256i*)(r1 + j)) : zero;
        _mm512_storeu_si512(pb + ((j / 16) * (kp / 2) + p) * 16,
                            _mm512_or_si512(_mm512_cvtepu16_epi32(lo),
                                            _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16)));
    }
}

/* Rows (k, of length m; ld apart) as A^T: pa (mp, kp) row i holds column i */
static void cc_rows_transposed(const uint16_t* rows, size_t ld, size_t m, size_t k, size_t kp,
                               uint16_t* pa)
{
    memset(pa, 0, cc_up32(m) * kp * 2);
    uint32_t* pw = (uint32_t*)pa;
    const __m512i lane = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7,
                                                             6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32((int)(kp / 2)));
    const __m256i zero = _mm256_setzero_si256();
    for (size_t i = 0; i < m; i += 16) {
        __mmask16 in = cc_first((ptrdiff_t)(m - i));
        for (size_t q = 0; q < k; q += 2) {
            __m256i lo = _mm256_maskz_loadu_epi16(in, rows + q * ld + i);
            __m256i hi = q + 1 < k ? _mm256_maskz_loadu_epi16(in, rows + (q + 1) * ld + i)
                                   : zero;
            __m512i pair = _mm512_or_si512(_mm512_cvtepu16_epi32(lo),
                                           _mm512_slli_epi32(_mm512_cvtepu16_epi32(hi), 16));
            _mm512_mask_i32scatter_epi32(pw + i * (kp / 2) + q / 2, in, lane, pair, 4);
        }
    }
}


/* op(A)'s rows i0..i0+size (fewer at the end: zero up to mp) into a block */
static void cc_pack_a_block(int trans, int m, int k, const float* a, int lda, size_t i0,
                            size_t size, uint16_t* blk, size_t kp)
{
    size_t rows = (size_t)m - i0 < size ? (size_t)m - i0 : size;
    size_t upto = cc_up32(rows);
    if (rows < upto)
        memset(blk + rows * kp, 0, (upto - rows) * kp * 2);
    cc_pack_a(trans, (int)rows, k, a + (trans ? i0 : i0 * (size_t)lda), lda, blk, kp);
}

/* cc_pack_a_block (not transposed) for an A in bfloat16 already (a: its
 * bits, row length lda): rows i0..i0+size copied, zero past k up to kp and
 * past m up to a multiple of 32 */
static void cc_pack_a_bf16_block(int m, int k, const uint16_t* a, int lda, size_t i0,
                                 size_t size, uint16_t* blk, size_t kp)
{
    size_t rows = (size_t)m - i0 < size ? (size_t)m - i0 : size;
    size_t upto = cc_up32(rows);
    for (size_t i = 0; i < rows; i++) {
        memcpy(blk + i * kp, a + (i0 + i) * (size_t)lda, (size_t)k * 2);
        memset(blk + i * kp + k, 0, (kp - (size_t)k) * 2);
    }
    if (rows < upto)
        memset(blk + rows * kp, 0, (upto - rows) * kp * 2);
}

/* op(B)'s columns j0..j0+size (fewer at the end: zero up to np) into panels */
static void cc_pack_b_block(int trans, int n, int k, const float* b, int ldb, size_t j0,
                            size_t size, uint32_t* blk, size_t kp)
{
    size_t cols = (size_t)n - j0 < size ? (size_t)n - j0 : size;
    /* the panels the packing fills (all but a transposed operand's last, scattered) */
    size_t full = trans ? cols / 16 * 16 : (cols + 15) / 16 * 16, upto = cc_up32(cols);
    if (full < upto)
        memset(blk + full * (kp / 2), 0, (upto - full) * kp * 2);
    cc_pack_b(trans, (int)cols, k, b + (trans ? j0 * (size_t)ldb : j0), ldb, blk, kp);
}

/* cc_gemm_bf16 with op(B) (stream_b) or op(A) packed CC_STREAM columns or
 * rows at a time into pb or pa (the other packed whole), each block's share
 * of C made right after */
static void cc_gemm_bf16_streamed(int kernel, int stream_b, int trans_a, int trans_b, int m,
                                  int n, int k, const float* a, int lda, const float* b,
                                  int ldb, float beta, float* c, int ldc, int tc,
                                  uint16_t* pa, uint32_t* pb, size_t kp)
{
    float out[CC_BLK * CC_BLK] __attribute__((aligned(64)));
    size_t mp = cc_up32((size_t)m), np = cc_up32((size_t)n);
    size_t outer = stream_b ? np : mp, inner = stream_b ? mp : np;
    if (kernel == CC_BF16_AMX)
        cc_amx_configure();
    for (size_t s0 = 0; s0 < outer; s0 += CC_STREAM) {
        if (stream_b)
            cc_pack_b_block(trans_b, n, k, b, ldb, s0, CC_STREAM, pb, kp);
        else
            cc_pack_a_block(trans_a, m, k, a, lda, s0, CC_STREAM, pa, kp);
        size_t s1 = s0 + CC_STREAM < outer ? s0 + CC_STREAM : outer;
        for (size_t v = 0; v < inner; v += CC_BLK)
            for (size_t u = s0; u < s1; u += CC_BLK) {
                size_t i0 = stream_b ? v : u, j0 = stream_b ? u : v;
                cc_block(kernel, pa + (stream_b ? i0 : i0 - s0) * kp, kp, NULL,
                         pb + (stream_b ? j0 - s0 : j0) * (kp / 2), kp, kp, i0, j0, c,
                         (size_t)ldc,
                         (size_t)m, (size_t)n, beta, out, tc, NULL);
            }
    }
    if (kernel == CC_BF16_AMX)
        _tile_release();
}

/* cc_gemm_bf16 (neither operand transposed) for one tile of C's columns
 * (n of them, from b and c on) when op(A) is packed already, once for every
 * tile (pa: cc_pack_a_block's, up32(m) x up32(k)); op(B) packed into pb
 * (max(up32(n), CC_STREAM) x up32(k), the caller's): whole, or CC_STREAM
 * columns at a time where cc_gemm_bf16 would have streamed A (cc_streams_a)
 * and so made each block from the whole k. The same blocks: the same bits. */
static void cc_gemm_bf16_shared_a(int kernel, int m, int n, int k, const uint16_t* pa,
                                  const float* b, int ldb, float beta, float* c, int ldc,
                                  uint32_t* pb)
{
    size_t mp = cc_up32((size_t)m), np = cc_up32((size_t)n), kp = cc_up32((size_t)k);
    if (cc_streams_a(mp, np, kp)) {
        cc_gemm_bf16_streamed(kernel, 1, 0, 0, m, n, k, NULL, 0, b, ldb, beta, c, ldc, 0,
                              (uint16_t*)pa, pb, kp);
        return;
    }
    cc_pack_b_block(0, n, k, b, ldb, 0, (size_t)n, pb, kp);
    cc_gemm_bf16_packed(kernel, (size_t)m, (size_t)n, kp, pa, pb, beta, c, (size_t)ldc, 0,
                        NULL);
}

static int cc_gemm_bf16(int kernel, int trans_a, int trans_b, int m, int n, int k,
                        const float* a, int lda, const float* b, int ldb, float beta,
                        float* c, int ldc)
{
    if (m <= 0 || n <= 0)
        return 0;
    if (k <= 0) {                                   /* no products: C = beta C */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return 0;
    }
    /* A transposed operand is packed by scattering: where it is the larger
     * one, C^T = op(B)^T op(A)^T scatters the other instead */
    int tc = trans_a != trans_b && (trans_a ? 4 * n <= m : 4 * m <= n);
    if (tc) {
        const float* t = a; a = b; b = t;
        int l = lda; lda = ldb; ldb = l;
        l = m; m = n; n = l;    /* (each operand keeps its flag: op(B)^T reads b as op(B) did) */
    }
    size_t mp = cc_up32((size_t)m), np = cc_up32((size_t)n), kp = cc_up32((size_t)k);
    /* The larger operand, where it is large (a dense layer's weights), is
     * packed a block at a time (B: its columns; A: its rows, where not
     * transposed), just before its blocks of C: its bf16 copy then stays in
     * cache, and each block of C is summed over the whole k at once. */
    int stream_b = np >= mp && np * kp * 2 > ((size_t)1 << 20);
    int stream_a = !trans_a && !stream_b && cc_streams_a(mp, np, kp);
    uint16_t* pa = (uint16_t*)aligned_alloc(64, (stream_a ? CC_STREAM : mp) * kp * 2);
    uint32_t* pb = (uint32_t*)aligned_alloc(64, (stream_b ? CC_STREAM : np) * kp * 2);
    if (pa == NULL || pb == NULL) {
        free(pa);
        free(pb);
        return -1;
    }
    if (!stream_a)
        cc_pack_a_block(trans_a, m, k, a, lda, 0, (size_t)m, pa, kp);
    if (!stream_b)
        cc_pack_b_block(trans_b, n, k, b, ldb, 0, (size_t)n, pb, kp);
    if (!stream_a && !stream_b)
        cc_gemm_bf16_packed(kernel, (size_t)m, (size_t)n, kp, pa, pb, beta, c, (size_t)ldc,
                            tc, NULL);
    else
        cc_gemm_bf16_streamed(kernel, stream_b, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta,
                              c, ldc, tc, pa, pb, kp);
    free(pa);
    free(pb);
    return 0;
}

/* cc_add_bf16 (_bf16_kernels.h) in this target's vectors, for the CPUs that
 * run the bf16 kernels: the same operations, so the same bits */
static ptrdiff_t cc_add_bf16_wide(const float* a, const float* b, uint16_t* y, ptrdiff_t n,
                                  int relu)
{
    return cc_add_bf16(a, b, y, n, relu);
}

/* cc_narrow_bits in AVX-512's vectors, likewise */
static void cc_narrow_bits_wide(const float* x, uint16_t* y, ptrdiff_t n)
{
    cc_narrow_bits(x, y, n);
}

#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

#else   /* no bf16 kernels in this build (not x86-64, or an older compiler): the
         * drivers still link; convcore refuses precision="bf16" before any call */
#define CC_HAVE_BF16_GEMM 0
static inline int cc_gemm_bf16(int kernel, int trans_a, int trans_b, int m, int n, int k,
                               const float* a, int lda, const float* b, int ldb, float beta,
                               float* c, int ldc)
{
    (void)kernel; (void)trans_a; (void)trans_b; (void)m; (void)n; (void)k; (void)a;
    (void)lda; (void)b; (void)ldb; (void)beta; (void)c; (void)ldc;
    return -2;
}
static inline void cc_narrow_bf16(const float* x, const float* relu_y, uint16_t* y,
                                  ptrdiff_t n) { (void)x; (void)relu_y; (void)y; (void)n; }
static inline void cc_sum_rows(const float* x, const float* relu_y, size_t rows, size_t n,
                               float* acc)
{ (void)x; (void)relu_y; (void)rows; (void)n; (void)acc; }
static inline void cc_pack_a_block(int trans, int m, int k, const float* a, int lda,
                                   size_t i0, size_t size, uint16_t* blk, size_t kp)
{ (void)trans; (void)m; (void)k; (void)a; (void)lda; (void)i0; (void)size; (void)blk; (void)kp; }
static inline void cc_gemm_bf16_shared_a(int kernel, int m, int n, int k, const uint16_t* pa,
                                         const float* b, int ldb, float beta, float* c,
                                         int ldc, uint32_t* pb)
{
    (void)kernel; (void)m; (void)n; (void)k; (void)pa; (void)b; (void)ldb; (void)beta;
    (void)c; (void)ldc; (void)pb;
}
static inline void cc_pack_a(int trans, int m, int k, const float* a, int lda, uint16_t* pa,
                             size_t kp)
{ (void)trans; (void)m; (void)k; (void)a; (void)lda; (void)pa; (void)kp; }
static inline void cc_pack_b(int trans, int n, int k, const float* b, int ldb, uint32_t* pb,
                             size_t kp)
{ (void)trans; (void)n; (void)k; (void)b; (void)ldb; (void)pb; (void)kp; }
static inline void cc_gemm_bf16_packed(int kernel, size_t m, size_t n, size_t kp,
                                       const uint16_t* pa, const uint32_t* pb, float beta,
                                       float* c, size_t ldc, int tc, const cc_epilogue* ep)
{
    (void)kernel; (void)m; (void)n; (void)kp; (void)pa; (void)pb; (void)beta; (void)c;
    (void)ldc; (void)tc; (void)ep;
}
static inline void cc_gemm_bf16_rows(int kernel, size_t m, size_t n, size_t kp,
                                     const uint16_t* a, size_t lda, const size_t* aoff,
                                     const size_t* roff, const uint32_t* pb, float beta,
                                     float* c, size_t ldc, int tc, const cc_epilogue* ep)
{
    (void)kernel; (void)m; (void)n; (void)kp; (void)a; (void)lda; (void)aoff; (void)roff;
    (void)pb; (void)beta; (void)c; (void)ldc; (void)tc; (void)ep;
}
static inline int cc_narrow_transposed_bf16(const float* x, int H, int W, int C, int PT,
                                            int PL, int Hp, int Wp, uint16_t* y)
{
    (void)x; (void)H; (void)W; (void)C; (void)PT; (void)PL; (void)Hp; (void)Wp; (void)y;
    return 0;
}
static inline int cc_transposed_bits_bf16(const uint16_t* x, int H, int W, int C, int PT,
                                          int PL, int Hp, int Wp, uint16_t* y)
{
    (void)x; (void)H; (void)W; (void)C; (void)PT; (void)PL; (void)Hp; (void)Wp; (void)y;
    return 0;
}
static inline void cc_narrow_padded_bf16(const float* x, const float* relu_y, int H, int W,
                                         int C, int PT, int PL, int Hp, int Wp, uint16_t* y)
{
    (void)x; (void)relu_y; (void)H; (void)W; (void)C; (void)PT; (void)PL; (void)Hp; (void)Wp;
    (void)y;
}
static inline void cc_pad_bf16(const uint16_t* x, int H, int W, int C, int PT, int PL,
                               int Hp, int Wp, uint16_t* y)
{
    (void)x; (void)H; (void)W; (void)C; (void)PT; (void)PL; (void)Hp; (void)Wp; (void)y;
}
static inline ptrdiff_t cc_add_bf16_wide(const float* a, const float* b, uint16_t* y,
                                         ptrdiff_t n, int relu)
{
    return cc_add_bf16(a, b, y, n, relu);
}
static inline void cc_narrow_bits_wide(const float* x, uint16_t* y, ptrdiff_t n)
{
    cc_narrow_bits(x, y, n);
}
static inline void cc_pack_a_bf16_block(int m, int k, const uint16_t* a, int lda, size_t i0,
                                        size_t size, uint16_t* blk, size_t kp)
{ (void)m; (void)k; (void)a; (void)lda; (void)i0; (void)size; (void)blk; (void)kp; }
static inline void cc_im2col_bf16(const uint16_t* xp, int Wp, int C, int KH, int KW, int SH,
                                  int SW, int OW, int p0, int p1, uint16_t* rows, size_t kp)
{
    (void)xp; (void)Wp; (void)C; (void)KH; (void)KW; (void)SH; (void)SW; (void)OW; (void)p0;
    (void)p1; (void)rows; (void)kp;
}
static inline void cc_pair_vnni(const uint16_t* r0, const uint16_t* r1, size_t np, size_t p,
                                size_t kp, uint32_t* pb)
{ (void)r0; (void)r1; (void)np; (void)p; (void)kp; (void)pb; }
static inline void cc_rows_transposed(const uint16_t* rows, size_t ld, size_t m, size_t k,
                                      size_t kp, uint16_t* pa)
{ (void)rows; (void)ld; (void)m; (void)k; (void)kp; (void)pa; }
#endif

#endif
