"""Which kernels run: the set_kernels state and the rules of each kernel set.

The public functions in _api.py ask conv_simd, linear_simd and winograd which
kernel to call for given shapes; set_kernels changes the choice.
"""
import os
from collections import Counter
from contextlib import contextmanager

import numpy as np

from . import _bf16, _blas, _isa, _linear

VECTOR_SETS = _isa.VECTOR_SETS                       # "avx512", "avx2", "neon"
KERNELS = ("auto", "simd", *VECTOR_SETS, "blas")
_DESCRIBED = {"avx512": "AVX-512F and FMA", "avx2": "AVX2 and FMA", "neon": "ARM64 NEON"}
_CAP = os.environ.get("CONVCORE_MAX_ISA", "").lower()   # "AVX2", as oneDNN spells it, too
BF16_CAPS = ("amx", "avx512_bf16")   # caps above avx512: they leave out bf16 kernels only


def _available():
    """The sets this CPU runs, best first, less those above CONVCORE_MAX_ISA if
    set: convcore then runs as on a CPU whose best set that is (as TensorFlow
    and PyTorch take ONEDNN_MAX_CPU_ISA and ATEN_CPU_CAPABILITY)."""
    have, cap = _isa.available(), _CAP
    if not cap or cap in BF16_CAPS:
        return have
    order = (*VECTOR_SETS, "baseline")
    if cap not in order:
        raise ValueError(f"convcore: CONVCORE_MAX_ISA must be one of {BF16_CAPS + order} "
                         f"(or unset), "
                         f"got {cap!r}")
    return tuple(s for s in have if order.index(s) >= order.index(cap))


_AVAILABLE = _available()     # what the CPU runs does not change while running
_kernels = "auto"
_winograd_on = True
_strict = False


def simd_supported():
    """The vector kernel sets that this build has and this CPU runs, best
    first: ("avx512", "avx2") on a CPU with AVX-512, ("avx2",) on most x86-64
    CPUs since 2013, ("neon",) on ARM64, () where there is none (then every
    convolution and dense layer runs on BLAS). set_kernels takes each. The
    environment variable CONVCORE_MAX_ISA (read at import, in any case)
    leaves out the sets above the one it names: CONVCORE_MAX_ISA=avx2 runs
    as on a CPU without AVX-512, =baseline as on one without any."""
    return _AVAILABLE


def bf16_supported():
    """The bf16 instruction sets this CPU runs, best first: "amx" (AMX-BF16
    tiles, Sapphire Rapids and later Xeons; on Linux, once the OS has granted
    this process the tile state, which this call asks for) and "avx512_bf16"
    (vdpbf16ps: Cooper Lake, Zen 4 and later); () where there is neither, as
    under CONVCORE_MAX_ISA below avx512 (=avx512_bf16 leaves out "amx"). What
    precision="bf16" needs."""
    global _BF16
    if _CAP and _CAP not in BF16_CAPS:
        return ()
    if _BF16 is None:            # asked on first use (not at import: the tile permission)
        _BF16 = tuple(f for f in _bf16.features() if f != "amx" or _CAP != "avx512_bf16")
    return _BF16


def bf16_kernel(fn):
    """The bf16 products' kernel (_blas.gemm_prec's number) for precision="bf16":
    AMX where the CPU has it, else AVX512-BF16; a ValueError naming what is
    missing where neither is there (emulation is never chosen silently)."""
    have = bf16_supported()
    if have and _blas.bf16_compiled():
        return _bf16.KERNELS[have[0]]
    if have:
        raise ValueError(f"{fn}: precision='bf16': this CPU has {' and '.join(have)}, but this "
                         f"build of convcore has no bf16 kernels (its compiler is too old for "
                         f"them: GCC >= 11 or clang >= 12 builds them)")
    raise ValueError(f"{fn}: precision='bf16' needs a CPU with AMX-BF16 or AVX512-BF16 "
                     f"(Xeons since Cooper Lake, AMD since Zen 4); this one has neither"
                     f"{' that convcore may use (CONVCORE_MAX_ISA=' + _CAP + ')' if _CAP else ''}"
                     f". precision='bf16-emulated' runs the same arithmetic on any CPU, "
                     f"slower than fp32")


_BF16 = None


def set_kernels(name, winograd=True, strict=False):
    """Choose the kernels of the convolutions and dense layers:

    "auto":   (the default) the best vector set this CPU runs, simd_supported()[0],
              where it applies, else "blas".
    "avx512", "avx2", "neon": that vector set (convcore's register-tiled
              direct convolution, Winograd and dense kernels, compiled for
              that instruction set) where it applies, else "blas": as "auto"
              runs on a CPU whose best set it is. A ValueError if this CPU
              does not run it.
    "blas":   im2col + sgemm for the convolutions, sgemm for the dense layers.
    "simd":   the best vector set, strict (below).

    strict: with a vector set (or "simd"), raise a ValueError where the vector
    kernels do not apply instead of falling back to BLAS: they need a multiple
    of 16 output channels (C_out, D_out); a convolution's input gradient also
    stride 1 and C_in a multiple of 16; a dense layer a batch of at most 256
    (forward) or 96 (backward).

    Max-pool, dropout, batch normalisation and Adam run on the vector set named,
    else on the best one (else the baseline build): their results are the
    same bits on every set.

    winograd: with a vector set, run the convolutions with 5x5 or 3x3
    kernels at stride 1 and C_in a multiple of 16 (forward, input and weight
    gradients) as Winograd F(2x2, 5x5) or F(4x4, 3x3): 2.8x or 4x fewer
    multiplications, a few times (the weight gradient: about 25 times) the
    direct sum's rounding error. False: the direct kernel always.

    All give the same results up to float32 rounding (each is tested against
    convcore.reference) and the same bits on any thread count; the vector
    sets give the same bits as each other."""
    global _kernels, _winograd_on, _strict
    if name not in KERNELS:
        raise ValueError(f"set_kernels: name must be one of {KERNELS}, got {name!r}")
    for arg, value in (("winograd", winograd), ("strict", strict)):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"set_kernels: {arg} must be True or False, got {value!r}")
    have = simd_supported()
    if name == "simd" and not have:
        raise ValueError("set_kernels: 'simd' needs a vector kernel set (AVX-512, AVX2 or "
                         "NEON), and this CPU or build has none"
                         f"{f' under CONVCORE_MAX_ISA={_CAP}' if _CAP else ''}; "
                         "use 'auto' or 'blas'")
    if name in VECTOR_SETS and name not in have:
        raise ValueError(f"set_kernels: the {name!r} kernels need a CPU with "
                         f"{_DESCRIBED[name]} (this one runs: "
                         f"{', '.join(map(repr, have)) or 'none of the vector sets'}"
                         f"{f' under CONVCORE_MAX_ISA={_CAP}' if _CAP else ''}); "
                         "use 'auto' for the best this CPU has")
    if strict and name in ("auto", "blas"):
        raise ValueError(f"set_kernels: strict=True needs a vector set or 'simd', got {name!r}")
    _kernels = name
    _winograd_on = bool(winograd)
    _strict = bool(strict) or name == "simd"


def settings():
    """The arguments of the last set_kernels call: (name, winograd, strict)."""
    return _kernels, _winograd_on, _strict


def get_kernels():
    """The name given to set_kernels: one of KERNELS ("auto" by default)."""
    return _kernels


def winograd_enabled():
    """The winograd setting of set_kernels (True by default)."""
    return _winograd_on


def vector_set():
    """The vector set the convolutions and dense layers use where they apply:
    the name set_kernels gave, or the best this CPU runs; None for "blas" or
    a CPU with none."""
    if _kernels in VECTOR_SETS:
        return _kernels
    have = simd_supported()
    return have[0] if have and _kernels != "blas" else None


def pool_set():
    """The number of the kernel set for max-pool, dropout, batch
    normalisation and Adam (whose results are the same bits on every set): the
    vector set named, else the best this CPU runs, else the baseline."""
    name = _kernels if _kernels in VECTOR_SETS else (simd_supported() or ("baseline",))[0]
    return _isa.SETS[name]


_counts = None      # a Counter while kernel_counts() is open


@contextmanager
def kernel_counts():
    """Count which kernels the convolution and dense functions run inside the
    with block: {(function, "vector" | "blas"): calls}. The fused functions
    (conv2d_maxpool_*, linear_backward_adam) count "vector" only where they
    ran fused; where they fall back they count "blas" and the calls they make.
    For tests and profiling; nothing is counted outside the block.

        with convcore.kernel_counts() as ran:
            model.predict(x)
        ran[("conv2d_maxpool_forward", "vector")]
    """
    global _counts
    outer, _counts = _counts, Counter()
    try:
        yield _counts
    finally:
        if outer is not None:
            outer.update(_counts)
        _counts = outer


def _simd(fn, why):
    """The number of the vector set to take, given why it would not apply (or
    None); None: take BLAS."""
    name = vector_set()
    if name is not None and why and _strict:
        call = f"{_kernels!r}" + ("" if _kernels == "simd" else ", strict=True")
        raise ValueError(f"{fn}: set_kernels({call}) needs {why}; without strict, BLAS "
                         "runs where the vector kernels do not apply")
    chosen = None if name is None or why else _isa.SETS[name]
    if _counts is not None:
        _counts[(fn, "blas" if chosen is None else "vector")] += 1
    return chosen


def conv_simd(fn, g, cout, need_dx):
    """The vector set's number for a convolution of window g, or None: BLAS."""
    why = None
    if cout % 16:
        why = f"C_out a multiple of 16, got C_out = {cout}"
    elif need_dx and g["C"] % 16:
        why = f"C_in a multiple of 16 for the input gradient, got C_in = {g['C']}"
    elif need_dx and (g["SH"], g["SW"]) != (1, 1):
        why = f"stride 1 for the input gradient, got stride {(g['SH'], g['SW'])}"
    return _simd(fn, why)


def winograd(g):
    """Whether a vector convolution (or its input gradient) of window g runs as
    Winograd: F(2x2, 5x5) for 5x5 kernels, F(4x4, 3x3) for 3x3; stride 1, C_in
    a multiple of 16."""
    return (_winograd_on and (g["KH"], g["KW"]) in ((5, 5), (3, 3))
            and (g["SH"], g["SW"]) == (1, 1) and g["C"] % 16 == 0)


SIMD_MAX_BATCH = _linear.simd_max_batch()                       # backward: 96
SIMD_MAX_BATCH_FORWARD = _linear.simd_max_batch(forward=True)   # forward: 256


def linear_simd(fn, n, dout, forward=False):
    """The vector set's number for a dense layer of batch n, or None: BLAS."""
    limit = SIMD_MAX_BATCH_FORWARD if forward else SIMD_MAX_BATCH
    why = None
    if dout % 16:
        why = f"D_out a multiple of 16, got D_out = {dout}"
    elif n > limit:   # larger batches: sgemm's packing pays for itself
        why = f"a batch of at most {limit} for a dense layer, got N = {n}"
    return _simd(fn, why)
