/* convcore's kernels for AVX2 + FMA: 8 floats a vector, 16 registers (Intel
 * since Haswell, 2013; AMD since Zen). Used only where the CPU has both
 * (_kernel_set.h). */
#include "_kernel_set.h"
#if CC_HAVE_X86
#define CC_KERNEL_SET cc_set_avx2
#define CC_SET_NAME "avx2"
#define CC_W 8
#define CC_TARGET "avx2,fma"
#include "_kernel_set_body.h"
#endif
