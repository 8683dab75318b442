/* convcore's kernels for ARM64's Advanced SIMD (NEON): 4 floats a vector,
 * 32 registers, part of every ARMv8-A CPU (Apple Silicon, AWS Graviton,
 * Raspberry Pi 4 and 5), so no target switch and no check at run time. */
#include "_kernel_set.h"
#if CC_HAVE_NEON
#define CC_KERNEL_SET cc_set_neon
#define CC_SET_NAME "neon"
#define CC_W 4
#include "_kernel_set_body.h"
#endif
