"""The registry of convcore's operations: the one list of public kernel
functions. `convcore.__all__` is built from it, `convcore.reference` must
define a twin of each (same name, same parameters), and the fuzz,
thread-count and bad-input tests iterate over it, so that a new operation
cannot be left out of any of them. Add a new operation here first.

Each operation's forward and backward sit side by side, as in the kernels.
"""

OPERATIONS = (
    "im2col", "col2im",                                    # image sections and adjoint
    "conv2d_forward", "conv2d_backward",                   # convolution
    "conv2d_maxpool_forward", "conv2d_maxpool_backward",   # convolution + max-pool, fused
    "maxpool2d_forward", "maxpool2d_backward",             # max-pool
    "avgpool2d_forward", "avgpool2d_backward",             # average pool (and global)
    "batchnorm_forward", "batchnorm_backward",             # batch normalisation, training
    "batchnorm_inference",                                 # ... on the running statistics
    "add_forward", "add_backward",                         # residual add (ReLU fused)
    "dropout_forward", "dropout_backward",                 # inverted dropout (Philox)
    "linear_forward", "linear_backward",                   # dense layer
    "linear_backward_adam",                                # dense backward + Adam, fused
    "adam_update", "sgd_update",                           # optimiser steps, in place
    "gather_batch",                                        # a batch: gather, augment, scale
    "round_bf16",                                          # float32 -> bfloat16's values
)

# How the products multiply (each operation's `precision`): the bf16 ones
# take bfloat16 operands (native kernels, or emulated on the float32 ones).
PRECISIONS = ("fp32", "bf16", "bf16-emulated")

# Threads, kernel choice, build facts, aligned arrays: not operations.
CONTROLS = (
    "set_num_threads", "get_num_threads", "openmp_enabled", "set_kernels", "get_kernels",
    "winograd_enabled", "simd_supported", "bf16_supported", "kernel_counts", "empty", "zeros",
)
