/* convcore's kernels for the compiler's default target (max-pool and
 * dropout's generator, vectorised as that target allows), and the choice
 * among the sets: cc_kernel_set_get. */
#include "_kernel_set.h"
#define CC_KERNEL_SET cc_set_baseline
#define CC_SET_NAME "baseline"
#include "_kernel_set_body.h"

#if CC_HAVE_X86
extern const cc_kernel_set cc_set_avx512, cc_set_avx2;
#endif
#if CC_HAVE_NEON
extern const cc_kernel_set cc_set_neon;
#endif

const cc_kernel_set* cc_kernel_set_get(int set)
{
    switch (set) {
    case CC_SET_BASELINE:
        return &cc_set_baseline;
#if CC_HAVE_X86
    case CC_SET_AVX512:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma")
            ? &cc_set_avx512 : NULL;
    case CC_SET_AVX2:
        __builtin_cpu_init();
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")
            ? &cc_set_avx2 : NULL;
#endif
#if CC_HAVE_NEON
    case CC_SET_NEON:
        return &cc_set_neon;
#endif
    default:
        return NULL;
    }
}
