"""How a network's products multiply: its convolutions and dense layers.

    "fp32"           float32 operands, float32 sums (the default)
    "bf16"           bfloat16 operands, float32 sums, on a CPU's bf16
                     instructions (AMX-BF16, AVX512-BF16)
    "bf16-emulated"  the same arithmetic on any CPU: the operands rounded to
                     bfloat16 (convcore.round_bf16), multiplied exactly by the
                     float32 kernels; slower than fp32, never chosen for you.
                     To see how a network trains in bf16 before renting the CPU.

In both bf16 modes the activations, weights and gradients that a product
takes are rounded to nearest, ties to even, and so is a batch norm's input;
the master weights, optimiser state, batch-norm statistics, the loss and
the softmax stay float32, as do the saved, checkpointed and exported
weights. Keras' mixed_bfloat16 policy and PyTorch's autocast(bfloat16) make
the same split.
"""
import os

import convcore

PRECISIONS = convcore.PRECISIONS   # (convcore names them: its products' precision)


def cpu_name():
    """The CPU's model name as Linux reports it ("this CPU" elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "this CPU"


def checked(fn, precision):
    """`precision` if this CPU runs it, else a ValueError naming `fn`, what it
    needs and what this CPU has. (A build whose compiler had no bf16 kernels
    is named by convcore's products on first use.)"""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{fn}: precision must be one of {', '.join(PRECISIONS)}, "
                         f"got {precision!r}")
    if precision != "bf16":
        return precision
    have = convcore.bf16_supported()
    if not have:
        cap = os.environ.get("CONVCORE_MAX_ISA")
        raise ValueError(
            f"{fn}: bf16 needs a CPU with AMX-BF16 or AVX512-BF16 (Xeons since "
            f"Cooper Lake and Sapphire Rapids, AMD since Zen 4); this one ({cpu_name()}) has "
            f"neither{f' that convcore may use (CONVCORE_MAX_ISA={cap})' if cap else ''}. "
            "bf16-emulated runs the same arithmetic on any CPU, slower than fp32")
    return precision

