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
 * that a batch is 4 planes of 64 words, each stored from registers of
 * counters (one per 64-bit lane: 8 on AVX-512, 4 on AVX2, 2 on NEON)
 * without shuffling words across lanes. The generator is compiled in each
 * kernel set (_kernel_set_body.h); the driver, cc_dropout, takes a set's. An
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

#ifdef CC_KERNEL_SET   /* ------------------- the generator, once per kernel set */

#ifdef CC_W
#include "_simd.h"

/* The 4 planes of batch q: words[64 l + j] = word l of counter 64 q + j; a
 * vector holds CC_W / 2 counters, one per 64-bit lane (the 32 x 32 -> 64-bit
 * products: cc_mul32), and 4 vectors go at once to hide the multiplies'
 * latency. */
static void cc_philox_batch(uint64_t q, const uint32_t k[2], uint32_t* words)
{
    enum { L = CC_W / 2, U = 4 };
    const cc_vu64 lo = (cc_vu64){0} + 0xFFFFFFFFu;
    const cc_vu64 m0 = (cc_vu64){0} + CC_PHILOX_M0, m1 = (cc_vu64){0} + CC_PHILOX_M1;
    cc_vu64 lane;
    for (int i = 0; i < L; i++)
        lane[i] = (uint64_t)i;
    for (int j = 0; j < 64; j += U * L) {
        cc_vu64 c0[U], c1[U], c2[U], c3[U];
        for (int u = 0; u < U; u++) {
            cc_vu64 b = lane + (64 * q + (uint64_t)(j + u * L));
            c0[u] = b & lo;
            c1[u] = b >> 32;
            c2[u] = c3[u] = (cc_vu64){0};
        }
        uint32_t k0 = k[0], k1 = k[1];
        for (int r = 0; r < 10; r++) {
            for (int u = 0; u < U; u++) {
                cc_vu64 p0 = cc_mul32(m0, c0[u]), p1 = cc_mul32(m1, c2[u]);
                cc_vu64 n0 = (p1 >> 32) ^ c1[u] ^ k0, n2 = (p0 >> 32) ^ c3[u] ^ k1;
                c1[u] = p1 & lo;
                c3[u] = p0 & lo;
                c0[u] = n0;
                c2[u] = n2;
            }
            k0 += CC_PHILOX_W0;
            k1 += CC_PHILOX_W1;
        }
        for (int u = 0; u < U; u++) {
            cc_vu32h out[4] = {__builtin_convertvector(c0[u], cc_vu32h),
                               __builtin_convertvector(c1[u], cc_vu32h),
                               __builtin_convertvector(c2[u], cc_vu32h),
                               __builtin_convertvector(c3[u], cc_vu32h)};
            for (int l = 0; l < 4; l++)
                memcpy(words + 64 * l + j + u * L, &out[l], sizeof out[l]);
        }
    }
}

#else   /* the baseline set: one counter at a time */

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

#endif

#else   /* ------------------------------------------------- _dropout.pyx's */

/* y[i] = x[i] * (kept(words[i - s0]) ? scale : 0) for i in [s0, s1). */
static inline void cc_dropout_apply(const float* x, float* y, ptrdiff_t s0, ptrdiff_t s1,
                                    const uint32_t* words, float T, float scale)
{
    for (ptrdiff_t i = s0; i < s1; i++)
        y[i] = x[i] * ((float)(words[i - s0] >> 8) < T ? scale : 0.0f);
}

/* y[i] = x[i] * (kept(offset + i) ? scale : 0) for i in [i0, i1): the mask
 * of a larger tensor whose entry offset is x's first (a shard of a batch);
 * batch: a kernel set's cc_philox_batch (every set makes the same words).
 * x and y may be the same array. A batch of the generator that straddles two
 * calls' ranges is made by both, with the same words. */
static void cc_dropout(const float* x, float* y, ptrdiff_t i0, ptrdiff_t i1, ptrdiff_t offset,
                       uint32_t key0, uint32_t key1, float keep, float scale,
                       void (*batch)(uint64_t q, const uint32_t k[2], uint32_t* words))
{
    uint32_t words[CC_DROPOUT_BATCH];
    const uint32_t k[2] = {key0, key1};
    const float T = keep * 16777216.0f;   /* kept iff (word >> 8) < keep 2^24, exactly */
    for (ptrdiff_t g0 = (i0 + offset) / CC_DROPOUT_BATCH * CC_DROPOUT_BATCH; g0 < i1 + offset;
         g0 += CC_DROPOUT_BATCH) {
        ptrdiff_t s0 = g0 - offset > i0 ? g0 - offset : i0;
        ptrdiff_t s1 = g0 + CC_DROPOUT_BATCH - offset < i1 ? g0 + CC_DROPOUT_BATCH - offset : i1;
        uint64_t q = (uint64_t)(g0 / CC_DROPOUT_BATCH);
        batch(q, k, words);
        cc_dropout_apply(x, y, s0, s1, words + (s0 + offset - g0), T, scale);
    }
}

#endif

#endif
