/* The body of every kernel-set file: the kernels, compiled for the file's
 * target, and their table. The file defines, before including this:
 *   CC_KERNEL_SET  the table's name (cc_set_avx2, ...)
 *   CC_SET_NAME    its name for users ("avx2", ...)
 *   CC_W           floats a vector (none: the baseline set)
 *   CC_TARGET      the compiler target for the whole file, or none
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__) && defined(CC_W)
#include <immintrin.h>
#elif defined(__aarch64__) && defined(CC_W)
#include <arm_neon.h>
#endif
#include "_kernel_set.h"

/* CC_TARGET is expanded as an argument, then the pragma is spelled out */
#define CC_PRAGMA(x) _Pragma(#x)
#define CC_CLANG_TARGET(t) CC_PRAGMA(clang attribute push (__attribute__((target(t))), \
                                                         apply_to = function))
#define CC_GCC_TARGET(t) CC_PRAGMA(GCC target(t))
#ifdef CC_TARGET
#if defined(__clang__)
CC_CLANG_TARGET(CC_TARGET)
#else
CC_GCC_TARGET(CC_TARGET)
#endif
#endif

#ifdef CC_W
#include "_conv_direct.h"
#include "_conv_winograd.h"
#include "_linear_tiles.h"
#endif
#include "_pool_kernels.h"
#include "_dropout_kernels.h"
#include "_norm_kernels.h"
#include "_adam.h"

const cc_kernel_set CC_KERNEL_SET = {
    .name = CC_SET_NAME,
#ifdef CC_W
    .lanes = CC_W,
    .conv_forward_image = cc_conv_forward_image,
    .conv_dw_image = cc_conv_dw_image,
    .mask_sum = cc_mask_sum,
    .wino_filter = cc_wino_filter,
    .wino_forward_images = cc_wino_forward_images,
    .wino_dw_image = cc_wino_dw_image,
    .wino_dw_flush = cc_wino_dw_flush,
    .wino_dw_finish = cc_wino_dw_finish,
    .linear_forward_block = cc_linear_forward_block,
    .linear_dw_block = cc_linear_dw_block,
    .linear_dx_block = cc_linear_dx_block,
#else
    .lanes = 1,
#endif
    .pool_row = cc_pool_row,
    .unpool_tiled = cc_unpool_tiled,
    .philox_batch = cc_philox_batch,
    .bn_sums = cc_bn_sums,
    .bn_affine = cc_bn_affine,
    .bn_dx = cc_bn_dx,
    .adam = cc_adam,
};

#if defined(CC_TARGET) && defined(__clang__)
#pragma clang attribute pop
#endif
