"""bf16: convcore's rounding to bfloat16 against its NumPy twin and against
ml-dtypes (JAX's bfloat16), and what the CPU reports."""
import os

import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import convcore
import convcore.reference as ref

BITS = arrays(np.uint32, st.integers(0, 300), elements=st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(BITS)
def test_round_bf16_is_the_reference_bits_for_any_float32(u):
    """Every float32 bit pattern (NaNs, infinities, subnormals, -0 included)."""
    x = u.view(np.float32)
    assert convcore.round_bf16(x).tobytes() == ref.round_bf16(x).tobytes()


def test_round_bf16_agrees_with_ml_dtypes_on_a_million_patterns():
    """ml-dtypes rounds to nearest, ties to even, as bf16 hardware converts:
    the same value for every non-NaN input (a NaN stays a NaN in both)."""
    x = np.random.default_rng(5).integers(0, 2**32, 10**6, dtype=np.uint64) \
        .astype(np.uint32).view(np.float32)
    got = convcore.round_bf16(x)
    with np.errstate(invalid="ignore"):
        want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    nan = np.isnan(x)
    assert got.view(np.uint32)[~nan].tolist() == want.view(np.uint32)[~nan].tolist()
    assert np.isnan(got[nan]).all()


def test_round_bf16_ties_go_to_even_and_overflow_to_infinity():
    one_ulp = 2.0 ** -7        # bfloat16's spacing at 1
    x = np.array([1 + one_ulp / 2, 1 + 1.5 * one_ulp, -(1 + one_ulp / 2),
                  np.finfo(np.float32).max, 3.0e38, -0.0, 1e-40], np.float32)
    y = convcore.round_bf16(x)
    assert y[:3].tolist() == [1.0, 1 + 2 * one_ulp, -1.0]
    assert y[3] == np.inf and y[4] == np.float32(ml_dtypes.bfloat16(3.0e38))
    assert np.signbit(y[5]) and y[5] == 0
    assert 0 < y[6] <= 1e-40      # subnormals are rounded, not flushed
    assert convcore.round_bf16(x[:0]).shape == (0,)
    assert convcore.round_bf16(np.array(1.3, np.float32)).shape == ()


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_bf16_supported_reports_what_the_cpu_has():
    """Linux lists a feature in /proc/cpuinfo where the CPU has it and the
    kernel enables its state: the same answer as convcore's own cpuid."""
    flags = _cpu_flags() if os.path.exists("/proc/cpuinfo") else set()
    if os.environ.get("CONVCORE_MAX_ISA", "").lower() not in ("", "avx512"):
        flags = set()
    want = tuple(name for name, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"))
                 if flag in flags)
    assert convcore.bf16_supported() == want


# ---------------------------------------------------------------- the products in bf16

KERNEL_NAMES = ["blas", *convcore.simd_supported()]
R = convcore.round_bf16


def _product_cases(rng):
    """(name, args, kwargs, rounded args) for each product: the operands x, w
    (and dy) that bf16-emulated rounds, the rest as they are. Shapes on the
    vector kernels' paths (16k channels; 3x3 and 5x5 at stride 1: Winograd)."""
    def a(*shape):
        return rng.uniform(-2, 2, shape).astype(np.float32)
    x, w3, w5, b = a(3, 9, 9, 16), a(3, 3, 16, 16), a(5, 5, 16, 32), a(32)
    dy3, dy5 = a(3, 9, 9, 16), a(3, 9, 9, 32)
    xs, ws, dys = a(3, 8, 8, 16), a(3, 3, 16, 16), a(3, 4, 4, 16)
    argmax = convcore.conv2d_maxpool_forward(xs, ws, padding="same", return_argmax=True)[1]
    xl, wl, dyl, bl = a(20, 48), a(48, 32), a(20, 32), a(32)
    same = {"padding": "same"}
    return [
        ("conv2d_forward", (x, w3), same, (R(x), R(w3))),
        ("conv2d_forward", (x, w5, b), {**same, "relu": True}, (R(x), R(w5), b)),
        ("conv2d_forward", (x, w3), {"stride": 2}, (R(x), R(w3))),
        ("conv2d_backward", (x, w3, dy3), same, (R(x), R(w3), R(dy3))),
        ("conv2d_backward", (x, w5, dy5), {**same, "relu_y": dy5}, (R(x), R(w5), R(dy5))),
        ("conv2d_maxpool_forward", (xs, ws, b[:16]), same, (R(xs), R(ws), b[:16])),
        ("conv2d_maxpool_backward", (xs, ws, dys, argmax), same, (R(xs), R(ws), R(dys), argmax)),
        ("linear_forward", (xl, wl, bl), {"relu": True}, (R(xl), R(wl), bl)),
        ("linear_backward", (xl, wl, dyl), {"relu_y": dyl}, (R(xl), R(wl), R(dyl))),
    ]


def _bits(out):
    return [None if o is None else o.tobytes() for o in (out if isinstance(out, tuple) else
                                                          (out,))]


@pytest.mark.parametrize("kernels_name", KERNEL_NAMES)
def test_bf16_emulated_is_fp32_on_the_rounded_operands(kernels, kernels_name):
    """precision="bf16-emulated" multiplies x, w and dy rounded to bfloat16
    (and not the bias, nor the ReLU's mask): the same bits as the float32 call
    on rounded operands, and not those of the float32 call on the operands."""
    kernels(kernels_name)
    for name, args, kwargs, rounded in _product_cases(np.random.default_rng(1)):
        fn = getattr(convcore, name)
        got = _bits(fn(*args, **kwargs, precision="bf16-emulated"))
        assert got == _bits(fn(*rounded, **kwargs)), (name, kwargs)
        assert got != _bits(fn(*args, **kwargs)), (name, kwargs)


def test_bf16_emulated_dense_adam_updates_the_float32_weights():
    """linear_backward_adam in bf16: the gradient of the rounded product, the
    update applied to the float32 master weights (not to a rounded copy)."""
    rng = np.random.default_rng(2)
    x, w, dy = (rng.uniform(-2, 2, s).astype(np.float32) for s in ((20, 48), (48, 32), (20, 32)))
    state = [np.zeros_like(w), np.zeros_like(w)]
    w2, state2 = w.copy(), [np.zeros_like(w), np.zeros_like(w)]
    dx = convcore.linear_backward_adam(x, w, dy, None, *state, None, None, 1e-3,
                                       precision="bf16-emulated")
    dx2, dw, _ = convcore.linear_backward(R(x), R(w2), R(dy))
    convcore.adam_update(w2, dw, *state2, 1e-3)
    assert dx.tobytes() == dx2.tobytes()
    assert w.tobytes() == w2.tobytes() and state[1].tobytes() == state2[1].tobytes()
    assert not np.array_equal(R(w), w)          # the master weights keep float32's bits


def test_bf16_emulated_equals_the_reference_within_a_stated_bound():
    """Against convcore.reference (float64 sums of the rounded operands'
    products): the float32 sum's bound. And against float32 on the unrounded
    operands: each operand's rounding moves it by at most 2^-9 of itself, so
    each product by at most 2^-8 + 2^-18, each output by that much of the sum
    of |products| (plus the float32 sum's own error)."""
    from helpers import assert_within
    for name, args, kwargs, _ in _product_cases(np.random.default_rng(3)):
        if name.startswith("conv2d_maxpool") or name.endswith("backward"):
            continue                      # (the forward outputs: one sum each)
        got = getattr(convcore, name)(*args, **kwargs, precision="bf16-emulated")
        a64 = [np.asarray(a, np.float64) for a in args]
        want = getattr(ref, name)(*a64, **kwargs, precision="bf16-emulated")
        absolute = getattr(ref, name)(*[np.abs(a) for a in a64], **{
            k: v for k, v in kwargs.items() if k != "relu"})
        terms = args[1].size // args[1].shape[-1]
        assert_within(got, np.asarray(want, np.float64), absolute, terms, name)
        exact = getattr(ref, name)(*a64, **kwargs)
        assert np.all(np.abs(got - exact) <= (2.0**-8 + 2.0**-18 + 2 * (terms + 1) * 2.0**-24)
                      * absolute), name


def test_precision_must_be_one_of_the_names():
    x, w = np.ones((1, 4, 4, 1), np.float32), np.ones((3, 3, 1, 16), np.float32)
    for bad in ("bf16", "BF16", None, 16):
        with pytest.raises(ValueError, match=r"conv2d_forward: precision must be one of "
                                             r"\('fp32', 'bf16-emulated'\), got "):
            convcore.conv2d_forward(x, w, precision=bad)
    with pytest.raises(ValueError, match="linear_backward_adam: precision must be"):
        convcore.linear_backward_adam(x[0, 0], w[0, 0], x[0, 0, :, :1].repeat(16, 1), None,
                                      w[0, 0], w[0, 0], None, None, 1e-3, precision="fp16")
