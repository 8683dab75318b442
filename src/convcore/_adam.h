/* The Adam update of n parameters (TensorFlow's ApplyAdam), one definition
 * for _optim.adam_update and the dense layer's fused backward (_linear.pyx),
 * so that both give the same bits. Compiled for the baseline ISA (in the
 * drivers, outside the kernel sets' targets), where there is no FMA to
 * contract into: each operation rounds on its own, as written.
 *
 *   m += (g - m) a1;  v += (g^2 - v) a2;  p -= lr_t m / (sqrt(v) + eps)
 */
#ifndef CONVCORE_ADAM_H
#define CONVCORE_ADAM_H

#include <math.h>
#include <stddef.h>

static void cc_adam(float* restrict p, const float* restrict g, float* restrict m,
                    float* restrict v, ptrdiff_t n, float lr_t, float a1, float a2, float eps)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float gi = g[i];
        float mi = m[i] + (gi - m[i]) * a1;
        float vi = v[i] + (gi * gi - v[i]) * a2;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] - lr_t * mi / (sqrtf(vi) + eps);
    }
}

#endif
