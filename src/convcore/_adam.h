/* The Adam update of n parameters (TensorFlow's ApplyAdam), one definition
 * for _optim.adam_update and the dense layer's fused backward (_linear.pyx),
 * so that both give the same bits:
 *
 *   m += (g - m) a1;  v += (g^2 - v) a2;  p -= lr_t m / (sqrt(v) + eps)
 *
 * Compiled once per kernel set (_kernel_set_body.h), the loop vectorised by
 * the compiler for the set's target: a division and a square root a
 * parameter, which the baseline's 4-float vectors made the slowest part of a
 * dense layer's step. Each operation rounds on its own, as written, never
 * contracted into a fused multiply-add (which AVX2, AVX-512 and ARM64 have):
 * IEEE operations in the same order, so every set gives the same bits.
 */
#ifndef CONVCORE_ADAM_H
#define CONVCORE_ADAM_H

#include <math.h>
#include <stddef.h>

#ifdef CC_KERNEL_SET   /* --------------------------- the kernel, once per kernel set */

#if defined(__clang__)
#define CC_ADAM_FN static
#define CC_ADAM_EXACT _Pragma("clang fp contract(off)")
#else
#define CC_ADAM_FN static __attribute__((optimize("fp-contract=off")))
#define CC_ADAM_EXACT
#endif

CC_ADAM_FN void cc_adam(float* restrict p, const float* restrict g, float* restrict m,
                        float* restrict v, ptrdiff_t n, float lr_t, float a1, float a2,
                        float eps)
{
    CC_ADAM_EXACT
    for (ptrdiff_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * a1;
        float vi = v[i] + (gi * gi - v[i]) * a2;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] - lr_t * mi / (sqrtf(vi) + eps);
    }
}

#endif   /* CC_KERNEL_SET */
#endif
