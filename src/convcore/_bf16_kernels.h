/* bfloat16: float32's sign, exponent and top 7 mantissa bits.
 *
 *   cc_round_bf16     float32 -> the nearest bfloat16 value (ties to even),
 *                     kept in float32: what a bf16 kernel multiplies. NaN
 *                     stays NaN (made quiet: the payload's top bits may be 0),
 *                     infinities stay, a finite value past bfloat16's largest
 *                     becomes an infinity (as a rounding must)
 *   cc_narrow_bits    the same value's bfloat16 bits (uint16): a layer's
 *                     output handed to one that reads it in bfloat16
 *   cc_add_bf16       a + b (then max(., 0)) as bfloat16 bits: a residual
 *                     add's output for layers that multiply in bf16
 *   cc_bf16_features  which bf16 instructions this CPU and OS run
 *
 * Integer operations only: the same bits on every compiler and target, the
 * same bits as convcore.reference.round_bf16.
 */
#ifndef CC_BF16_KERNELS_H
#define CC_BF16_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define CC_BF16_AVX512 1   /* AVX512-BF16: vdpbf16ps (Cooper Lake, Zen 4 and later) */
#define CC_BF16_AMX 2      /* AMX-BF16 tiles, the OS permitting (Sapphire Rapids and later) */

/* NaN: made quiet, then cut; else ties to even. In masks, no branch: the
 * compiler makes vectors of the loops that call it */
static inline uint32_t cc_bf16_bits(uint32_t u)
{
    uint32_t nan = -(uint32_t)((u & 0x7fffffffu) > 0x7f800000u);
    return ((nan & (u | 0x00400000u)) | (~nan & (u + 0x7fffu + ((u >> 16) & 1u))))
           & 0xffff0000u;
}

static inline void cc_round_bf16(const float *x, float *y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        u = cc_bf16_bits(u);
        memcpy(y + i, &u, 4);
    }
}

/* y = x's bfloat16 bits (the top half of cc_bf16_bits) */
static inline void cc_narrow_bits(const float *x, uint16_t *y, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        uint32_t u;
        memcpy(&u, x + i, 4);
        y[i] = (uint16_t)(cc_bf16_bits(u) >> 16);
    }
}

/* y = the bits of a + b (relu: then max(., 0) as NumPy's maximum: NaN kept,
 * -0 made +0), cc_bf16_bits's; returns how many are > 0 with bits 0 (their
 * ReLU mask lost) */
static inline ptrdiff_t cc_add_bf16(const float *a, const float *b, uint16_t *y, ptrdiff_t n,
                                    int relu)
{
    uint32_t lost = 0;
    const uint32_t off = relu ? 0u : ~0u;
    for (ptrdiff_t i = 0; i < n; i++) {
        float v = a[i] + b[i];
        uint32_t u;
        memcpy(&u, &v, 4);
        uint32_t pos = -(uint32_t)(v > 0), nan = -(uint32_t)(v != v);
        u &= off | pos | nan;                           /* the ReLU: NaN kept, else +0 */
        uint16_t h = (uint16_t)(cc_bf16_bits(u) >> 16);
        y[i] = h;
        lost += pos & (h == 0);
    }
    return lost;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <cpuid.h>
#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define CC_ARCH_REQ_XCOMP_PERM 0x1023
#define CC_XFEATURE_XTILEDATA 18
#endif

static inline uint64_t cc_xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static inline int cc_bf16_features(void)
{
    unsigned a, b, c, d, a1, b1, c1, d1;
    int out = 0;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d) || !(c & (1u << 27)))   /* OSXSAVE */
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    uint64_t xcr0 = cc_xgetbv0();
    /* AVX-512 state (opmask, upper ZMM, high ZMM) and SSE/AVX enabled by the OS */
    int zmm = (xcr0 & 0xe6) == 0xe6 && (b & (1u << 16));                 /* AVX512F */
    if (zmm && a >= 1 && __get_cpuid_count(7, 1, &a1, &b1, &c1, &d1) && (a1 & (1u << 5)))
        out |= CC_BF16_AVX512;
    /* AMX: AMX-BF16 and AMX-TILE, tile state in XCR0, and Linux's permission */
    if ((d & (1u << 22)) && (d & (1u << 24)) && (xcr0 & 0x60000) == 0x60000) {
#if defined(__linux__)
        if (syscall(SYS_arch_prctl, CC_ARCH_REQ_XCOMP_PERM, CC_XFEATURE_XTILEDATA) == 0)
            out |= CC_BF16_AMX;
#else
        out |= CC_BF16_AMX;
#endif
    }
    return out;
}
#else
static inline int cc_bf16_features(void) { return 0; }
#endif

#endif
