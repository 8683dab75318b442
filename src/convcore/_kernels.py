"""Which kernels run: the set_kernels state and the rules of each kernel set.

The public functions in _api.py ask conv_simd, linear_simd and winograd which
kernel to call for given shapes; set_kernels changes the choice.
"""
import numpy as np

from . import _conv, _linear

KERNELS = ("auto", "simd", "blas")
_kernels = "auto"
_winograd_on = True


def set_kernels(name, winograd=True):
    """Choose the kernels of the convolutions and dense layers:

    "simd": convcore's register-tiled AVX-512 kernels (direct convolution,
            dense tiles); a ValueError where they do not apply.
    "blas": im2col + sgemm for the convolutions, sgemm for the dense layers.
    "auto": (the default) "simd" where it applies, else "blas".

    "simd" needs a CPU with AVX-512F and a multiple of 16 output channels
    (C_out, D_out); a convolution's input gradient also needs stride 1 and
    C_in a multiple of 16; a dense layer a batch of at most 256 (forward) or
    96 (backward).

    winograd: with "simd" or "auto", run the simd convolutions with 5x5
    kernels at stride 1 and C_in a multiple of 16 (forward, input and weight
    gradients) as Winograd F(2x2, 5x5): 2.8x fewer multiplications, a few
    times (the weight gradient: about 25 times) the direct sum's rounding
    error. False: the direct kernel always.

    All give the same results up to float32 rounding (each is tested against
    convcore.reference) and the same bits on any thread count."""
    global _kernels, _winograd_on
    if name not in KERNELS:
        raise ValueError(f"set_kernels: name must be one of {KERNELS}, got {name!r}")
    if not isinstance(winograd, (bool, np.bool_)):
        raise TypeError(f"set_kernels: winograd must be True or False, got {winograd!r}")
    if name == "simd" and not _conv.simd_supported():
        raise ValueError("set_kernels: the 'simd' kernels need a CPU with AVX-512F and a "
                         "GCC build for x86-64; use 'auto' or 'blas'")
    _kernels = name
    _winograd_on = bool(winograd)


def get_kernels():
    """The name given to set_kernels: "auto", "simd" or "blas"."""
    return _kernels


def winograd_enabled():
    """The winograd setting of set_kernels (True by default)."""
    return _winograd_on


def _simd(fn, why):
    """Whether to take the simd kernels, given why they would not apply (or None)."""
    if _kernels == "blas" or not _conv.simd_supported():
        return False
    if why and _kernels == "simd":
        raise ValueError(f"{fn}: set_kernels('simd') needs {why}; "
                         "use 'auto' to fall back to BLAS where the simd kernels do not apply")
    return why is None


def conv_simd(fn, g, cout, need_dx):
    why = None
    if cout % 16:
        why = f"C_out a multiple of 16, got C_out = {cout}"
    elif need_dx and g["C"] % 16:
        why = f"C_in a multiple of 16 for the input gradient, got C_in = {g['C']}"
    elif need_dx and (g["SH"], g["SW"]) != (1, 1):
        why = f"stride 1 for the input gradient, got stride {(g['SH'], g['SW'])}"
    return _simd(fn, why)


def winograd(g):
    """Whether a simd convolution (or its input gradient) of window g runs as
    Winograd F(2x2, 5x5): 5x5 kernels, stride 1, C_in a multiple of 16."""
    return (_winograd_on and (g["KH"], g["KW"]) == (5, 5)
            and (g["SH"], g["SW"]) == (1, 1) and g["C"] % 16 == 0)


SIMD_MAX_BATCH = _linear.simd_max_batch()                       # backward: 96
SIMD_MAX_BATCH_FORWARD = _linear.simd_max_batch(forward=True)   # forward: 256


def linear_simd(fn, n, dout, forward=False):
    limit = SIMD_MAX_BATCH_FORWARD if forward else SIMD_MAX_BATCH
    why = None
    if dout % 16:
        why = f"D_out a multiple of 16, got D_out = {dout}"
    elif n > limit:   # larger batches: sgemm's packing pays for itself
        why = f"a batch of at most {limit} for a dense layer, got N = {n}"
    return _simd(fn, why)
