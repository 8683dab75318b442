/* convcore's kernels for AVX-512F + FMA: 16 floats a vector, 32 registers
 * (Intel Xeon since Skylake-SP, Ice Lake and later client cores with it;
 * AMD Zen 4 and later). Used only where the CPU has both (_kernel_set.h). */
#include "_kernel_set.h"
#if CC_HAVE_X86
#define CC_KERNEL_SET cc_set_avx512
#define CC_SET_NAME "avx512"
#define CC_W 16
#define CC_TARGET "avx512f,fma"
#include "_kernel_set_body.h"
#endif
