/* Dropout's kernels: the keep mask from a counter-based generator, so that
 * any block of it can be made by any thread (the same bits on any thread
 * count) and the backward pass makes it again instead of storing it.
 *
 * The generator is Philox4x32-10 (Salmon, Moraes, Dror and Shaw, "Parallel
 * random numbers: as easy as 1, 2, 3", SC 2011; Random123), the one
 * TensorFlow, PyTorch and JAX use for dropout: a counter (4 words) and a key
 * (2 words) in, 4 random words out; checked against Random123's known-answer
 * vectors (tests/test_dropout.py). Entries go by batches of 256: entry
 * 256 q + 64 l + j takes word l of counter (64 q + j as 2 words, 0, 0), so
 * that a batch is 4 planes of 64 words, each stored from a register of 8
 * counters (one per 64-bit lane) without shuffling words across lanes. An
 * entry is kept if (word >> 8) 2^-24 < keep, and then scaled:
 *
 *   y[i] = x[i] * (kept ? scale : 0)         (x * 0, as a multiplied mask does)
 *
 * convcore.reference.dropout_forward is the same in NumPy.
 */
#ifndef CONVCORE_DROPOUT_KERNELS_H
#define CONVCORE_DROPOUT_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include "_simd.h"

#define CC_PHILOX_M0 0xD2511F53u
#define CC_PHILOX_M1 0xCD9E8D57u
#define CC_PHILOX_W0 0x9E3779B9u
#define CC_PHILOX_W1 0xBB67AE85u
#define CC_DROPOUT_BATCH 256      /* entries per batch: 64 counters x 4 words */

/* Philox4x32-10 of counter c with key k, in place. */
static inline void cc_philox4x32_10(uint32_t c[4], const uint32_t k[2])
{
    uint32_t k0 = k[0], k1 = k[1];
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k0 += CC_PHILOX_W0;
            k1 += CC_PHILOX_W1;
        }
        uint64_t p0 = (uint64_t)CC_PHILOX_M0 * c[0], p1 = (uint64_t)CC_PHILOX_M1 * c[2];
        uint32_t n0 = (uint32_t)(p1 >> 32) ^ c[1] ^ k0, n1 = (uint32_t)p1;
        uint32_t n2 = (uint32_t)(p0 >> 32) ^ c[3] ^ k1, n3 = (uint32_t)p0;
        c[0] = n0; c[1] = n1; c[2] = n2; c[3] = n3;
    }
}

/* The 4 planes of batch q: words[64 l + j] = word l of counter 64 q + j. */
static void cc_philox_batch(uint64_t q, const uint32_t k[2], uint32_t* words)
{
    for (int j = 0; j < 64; j++) {
        uint64_t b = 64 * q + (uint64_t)j;
        uint32_t c[4] = {(uint32_t)b, (uint32_t)(b >> 32), 0, 0};
        cc_philox4x32_10(c, k);
        for (int l = 0; l < 4; l++)
            words[64 * l + j] = c[l];
    }
}

/* y[i] = x[i] * (kept(words[i - s0]) ? scale : 0) for i in [s0, s1). */
static inline void cc_dropout_apply(const float* x, float* y, ptrdiff_t s0, ptrdiff_t s1,
                                    const uint32_t* words, float T, float scale)
{
    for (ptrdiff_t i = s0; i < s1; i++)
        y[i] = x[i] * ((float)(words[i - s0] >> 8) < T ? scale : 0.0f);
}

#if CC_SIMD_COMPILED
#include <immintrin.h>
CC_SIMD_BEGIN
/* cc_philox_batch, 8 counters a register (one per 64-bit lane: the
 * 32 x 32 -> 64-bit products are vpmuludq). */
static void cc_philox_batch_avx512(uint64_t q, const uint32_t k[2], uint32_t* words)
{
    const __m512i m0 = _mm512_set1_epi64(CC_PHILOX_M0), m1 = _mm512_set1_epi64(CC_PHILOX_M1);
    const __m512i lo = _mm512_set1_epi64(0xFFFFFFFFu);
    for (int j = 0; j < 64; j += 8) {
        __m512i b = _mm512_add_epi64(_mm512_set1_epi64((long long)(64 * q + (uint64_t)j)),
                                     _mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0));
        __m512i c0 = _mm512_and_si512(b, lo), c1 = _mm512_srli_epi64(b, 32);
        __m512i c2 = _mm512_setzero_si512(), c3 = _mm512_setzero_si512();
        uint32_t k0 = k[0], k1 = k[1];
        for (int r = 0; r < 10; r++) {
            if (r > 0) {
                k0 += CC_PHILOX_W0;
                k1 += CC_PHILOX_W1;
            }
            __m512i p0 = _mm512_mul_epu32(m0, c0), p1 = _mm512_mul_epu32(m1, c2);
            __m512i n0 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p1, 32), c1),
                                          _mm512_set1_epi64(k0));
            __m512i n2 = _mm512_xor_si512(_mm512_xor_si512(_mm512_srli_epi64(p0, 32), c3),
                                          _mm512_set1_epi64(k1));
            c1 = _mm512_and_si512(p1, lo);
            c3 = _mm512_and_si512(p0, lo);
            c0 = n0;
            c2 = n2;
        }
        _mm256_storeu_si256((__m256i*)(words + j), _mm512_cvtepi64_epi32(c0));
        _mm256_storeu_si256((__m256i*)(words + 64 + j), _mm512_cvtepi64_epi32(c1));
        _mm256_storeu_si256((__m256i*)(words + 128 + j), _mm512_cvtepi64_epi32(c2));
        _mm256_storeu_si256((__m256i*)(words + 192 + j), _mm512_cvtepi64_epi32(c3));
    }
}

static void cc_dropout_apply_avx512(const float* x, float* y, ptrdiff_t s0, ptrdiff_t s1,
                                    const uint32_t* words, float T, float scale)
{
    cc_dropout_apply(x, y, s0, s1, words, T, scale);
}
CC_SIMD_END
#endif

/* y[i] = x[i] * (kept(offset + i) ? scale : 0) for i in [i0, i1): the mask
 * of a larger tensor whose entry offset is x's first (a shard of a batch);
 * simd: use the AVX-512 generator (cc_simd_supported()). x and y may be the
 * same array. A batch of the generator that straddles two calls' ranges is
 * made by both, with the same words. */
static void cc_dropout(const float* x, float* y, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t offset,
                       uint32_t key0, uint32_t key1, float keep, float scale, int simd)
{
    uint32_t words[CC_DROPOUT_BATCH];
    const uint32_t k[2] = {key0, key1};
    const float T = keep * 16777216.0f;   /* kept iff (word >> 8) < keep 2^24, exactly */
    for (ptrdiff_t g0 = (i0 + offset) / CC_DROPOUT_BATCH * CC_DROPOUT_BATCH; g0 < i1 + offset;
         g0 += CC_DROPOUT_BATCH) {
        ptrdiff_t s0 = g0 - offset > i0 ? g0 - offset : i0;
        ptrdiff_t s1 = g0 + CC_DROPOUT_BATCH - offset < i1 ? g0 + CC_DROPOUT_BATCH - offset : i1;
        uint64_t q = (uint64_t)(g0 / CC_DROPOUT_BATCH);
        const uint32_t* w = words + (s0 + offset - g0);    /* entry s0's word */
#if CC_SIMD_COMPILED
        if (simd) {
            cc_philox_batch_avx512(q, k, words);
            cc_dropout_apply_avx512(x, y, s0, s1, w, T, scale);
            continue;
        }
#endif
        cc_philox_batch(q, k, words);
        cc_dropout_apply(x, y, s0, s1, w, T, scale);
    }
}

#endif
