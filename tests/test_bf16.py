"""bf16: convcore's rounding to bfloat16 against its NumPy twin and against
ml-dtypes (JAX's bfloat16), and what the CPU reports."""
import json
import os
import re
import subprocess
import sys

import ml_dtypes
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import convcore
import convcore.reference as ref
import pyconv
from convcore import _conv, _isa
from pyconv.fusion import FUSIONS
from pyconv.precision import cpu_name

from conftest import MNIST_DIR
from helpers import assert_within, cpu_flags, no_bf16
from helpers import pyconv as cli

BITS = arrays(np.uint32, st.integers(0, 300), elements=st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(BITS)
def test_round_bf16_is_the_reference_bits_for_any_float32(u):
    """Every float32 bit pattern (NaNs, infinities, subnormals, -0 included)."""
    x = u.view(np.float32)
    assert convcore.round_bf16(x).tobytes() == ref.round_bf16(x).tobytes()


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(BITS, st.integers(1, 2))
def test_narrow_bits_is_the_reference_bits_for_any_float32(threads, u, n_threads):
    """The compiled narrowing (a layer's output handed over in bfloat16
    where its kernel cannot write the bits) gives the reference's bits for
    every float32 pattern, on 1 and 2 threads, in the baseline's vectors and
    (where the CPU runs the bf16 kernels) AVX-512's."""
    from convcore import _bf16
    from convcore._api import narrow_bits
    threads(n_threads)
    x = u.view(np.float32)
    got = narrow_bits(x)
    assert got.dtype == np.uint16 and got.tobytes() == ref.narrow_bits(x).tobytes()
    for wide in (False, True)[:1 + bool(convcore.bf16_supported())]:
        y = np.empty(x.shape, np.uint16)
        _bf16.narrow_bits(x, y, n_threads, wide)
        assert y.tobytes() == got.tobytes()


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


def test_bf16_supported_reports_what_the_cpu_has():
    """Linux lists a feature in /proc/cpuinfo where the CPU has it and the
    kernel enables its state: the same answer as convcore's own cpuid."""
    flags = set(cpu_flags()) if os.path.exists("/proc/cpuinfo") else set()
    if os.environ.get("CONVCORE_MAX_ISA", "").lower() not in ("", "avx512"):
        flags = set()
    want = tuple(name for name, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"))
                 if flag in flags)
    assert convcore.bf16_supported() == want


@pytest.mark.skipif("amx_bf16" not in cpu_flags(), reason="CPU lacks AMX-BF16")
def test_convcore_max_isa_avx512_bf16_leaves_out_amx():
    """CONVCORE_MAX_ISA=avx512_bf16 (oneDNN's spelling of the cap): the
    AVX512-BF16 kernel on an AMX CPU, and every vector set still there."""
    code = "import convcore; print(convcore.bf16_supported(), convcore.simd_supported())"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "CONVCORE_MAX_ISA": "avx512_bf16"})
    assert run.stdout.strip() == f"('avx512_bf16',) {_isa.available()}"


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
    """Every output (y; dx, dw, db) against convcore.reference: float64 sums
    of the rounded operands' products, within the float32 sum's bound (at
    most 1,000 terms here: the longest sum is dx's 5 x 5 x 32). And against
    the reference on the unrounded operands: each operand's rounding moves it
    by at most 2^-9 of itself, so each product by at most 2^-8 + 2^-18 of
    itself, each output by that much of its sum of |products| (plus the
    float32 sum's own error)."""
    terms = 1000
    for name, args, kwargs, _ in _product_cases(np.random.default_rng(3)):
        got = getattr(convcore, name)(*args, **kwargs, precision="bf16-emulated")
        a64 = [np.asarray(a, np.float64) if a.dtype == np.float32 else a for a in args]
        want = getattr(ref, name)(*a64, **kwargs, precision="bf16-emulated")
        plain = {k: v for k, v in kwargs.items() if k not in ("relu", "relu_y")}
        absolute = getattr(ref, name)(*[np.abs(a) if a.dtype == np.float64 else a
                                        for a in a64], **plain)
        exact = getattr(ref, name)(*a64, **kwargs)
        if not isinstance(got, tuple):
            got, want, absolute, exact = (got,), (want,), (absolute,), (exact,)
        for g, w, b, e in zip(got, want, absolute, exact, strict=True):
            assert_within(g, np.asarray(w, np.float64), b, terms, name)
            assert np.all(np.abs(g - e) <= (2.0**-8 + 2.0**-18 + 2 * (terms + 1) * 2.0**-24)
                          * b), name


def test_precision_must_be_one_of_the_names():
    x, w = np.ones((1, 4, 4, 1), np.float32), np.ones((3, 3, 1, 16), np.float32)
    for bad in ("bf16_emulated", "BF16", None, 16):
        with pytest.raises(ValueError, match=r"conv2d_forward: precision must be one of "
                                             r"\('fp32', 'bf16', 'bf16-emulated'\), got "):
            convcore.conv2d_forward(x, w, precision=bad)
    with pytest.raises(ValueError, match="linear_backward_adam: precision must be"):
        convcore.linear_backward_adam(x[0, 0], w[0, 0], x[0, 0, :, :1].repeat(16, 1), None,
                                      w[0, 0], w[0, 0], None, None, 1e-3, precision="fp16")


# ---------------------------------------------------------------- the native kernels

BF16_KERNELS = {"amx": "AMX-BF16 and AMX-TILE", "avx512_bf16": "AVX512-BF16"}


@pytest.fixture(params=list(BF16_KERNELS))
def bf16_kernel(request, monkeypatch):
    """Each native bf16 kernel in turn (AMX also leaves AVX512-BF16 to test:
    the AMX CPUs have both); skipped, naming the CPU feature, where this CPU
    lacks it."""
    name = request.param
    if name not in convcore.bf16_supported():
        pytest.skip(no_bf16(BF16_KERNELS[name]))
    monkeypatch.setattr(convcore._kernels, "_BF16", (name,))
    return name


def _native_cases(rng):
    """Products whose sums are long enough for the bf16 kernels
    (convcore._api.BF16_MIN_DEPTH: a first layer's 5x5x1 forward, deeper
    ones both ways); edges that are not multiples of their 32x32 blocks."""
    def a(*shape):
        return rng.uniform(-2, 2, shape).astype(np.float32)
    x, w, b, dy = a(3, 9, 9, 16), a(3, 3, 16, 24), a(24), a(3, 9, 9, 24)
    xp, wp, dyp = a(2, 8, 8, 8), a(5, 5, 8, 16), a(2, 4, 4, 16)
    argmax = convcore.conv2d_maxpool_forward(xp, wp, padding="same", return_argmax=True)[1]
    xl, wl, bl, dyl = a(37, 100), a(100, 70), a(70), a(37, 70)
    xs, ws, xb, wb = a(150, 70), a(70, 200), a(600, 960), a(960, 700)   # A packed once for
    x1, w1 = a(3, 11, 13, 1), a(5, 5, 1, 20)                       # the tiles of C's columns
    xn, wn = a(24, 3000), a(3000, 1100)        # B streamed (its tiles' bf16 copies > 1 MB)
    same = {"padding": "same"}
    return [
        ("conv2d_forward", (x1, w1, b[:20]), {"padding": 2, "relu": True}),
        ("conv2d_maxpool_forward", (x1, w1), {"padding": (2, 1)}),
        ("conv2d_forward", (x, w, b), {**same, "relu": True}),
        ("conv2d_forward", (x, w), {"stride": 2}),
        ("conv2d_backward", (x, w, dy), same),
        ("conv2d_backward", (x, w, dy[:, :4, :4]), {"stride": 2}),   # dx: a convolution a
        ("conv2d_backward", (x, w, dy[:, :4, :4]), {"stride": 2, "relu_y": dy[:, :4, :4]}),
        ("conv2d_backward", (x, w[:2, :2], dy[:, :3, :3]), {"stride": 3}),   # phase (one: 0)
        ("conv2d_backward", (x, w, dy), {**same, "relu_y": dy}),
        ("conv2d_maxpool_forward", (xp, wp, b[:16]), same),
        ("conv2d_maxpool_backward", (xp, wp, dyp, argmax), same),
        ("linear_forward", (xl, wl, bl), {"relu": True}),
        ("linear_backward", (xl, wl, dyl), {"relu_y": dyl}),
        ("linear_forward", (xs, ws, wb[0, :200]), {"relu": True}),   # B packed whole
        ("linear_forward", (xb, wb), {}),                           # B packed in strips
        ("linear_forward", (xn, wn), {}),
    ]


def test_bf16_products_equal_the_reference_within_a_stated_bound(bf16_kernel):
    """precision="bf16" on the CPU's kernel: each product is the float64 sum
    of the rounded operands' products (the reference's bf16-emulated) within
    the float32 sum's bound (the kernels sum in float32, in their own order);
    the bias gradient db sums dy in float32 as given (not rounded: it is no
    product), within the same bound of the reference's."""
    terms = 1000
    for name, args, kwargs in _native_cases(np.random.default_rng(4)):
        got = getattr(convcore, name)(*args, **kwargs, precision="bf16")
        a64 = [np.asarray(a, np.float64) if a.dtype == np.float32 else a for a in args]
        want = getattr(ref, name)(*a64, **kwargs, precision="bf16-emulated")
        exact = getattr(ref, name)(*a64, **kwargs)
        plain = {k: v for k, v in kwargs.items() if k not in ("relu", "relu_y")}
        absolute = getattr(ref, name)(*[np.abs(a) if a.dtype == np.float64 else a
                                        for a in a64], **plain)
        if not isinstance(got, tuple):
            got, want, absolute, exact = (got,), (want,), (absolute,), (exact,)
        for i, (g, w, b) in enumerate(zip(got, want, absolute, strict=True)):
            is_db = name.endswith("backward") and i == 2
            assert_within(g, np.asarray(exact[i] if is_db else w, np.float64), b, terms,
                          f"{name} output {i}")
        assert _bits(got) != _bits(getattr(convcore, name)(*args, **kwargs)), name


GEOMETRY = st.tuples(st.integers(1, 3), st.integers(1, 12), st.integers(1, 12),
                     st.sampled_from([1, 2, 3, 8, 17, 32, 64]), st.sampled_from([1, 2, 3, 5]),
                     st.sampled_from([1, 3, 5]), st.integers(1, 3),
                     st.sampled_from([0, 1, 2, "same", "valid"]), st.integers(1, 40))


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(geometry=GEOMETRY, seed=st.integers(0, 2**16))
def test_bf16_convolutions_equal_the_reference_for_any_geometry(bf16_kernel, monkeypatch,
                                                                 geometry, seed):
    """The bf16 kernels' convolution, forward and backward, at any size,
    channels, kernel, stride and padding (every depth sent to them: their
    padded image copy and its sections, the flipped dx at stride 1): the
    reference's bf16-emulated within the float32 sum's bound (the backward
    through the forward's ReLU for odd seeds); sections read in place (stride
    1, kernel rows of 32k values: dw and dx item by item where both do) give
    the bits of sections made."""
    n, h, w_, c, kh, kw, stride, padding, f = geometry
    if padding not in ("same", "valid") and (padding >= kh or padding >= kw):
        padding = 0
    pads = 0 if padding in ("same", "valid") else 2 * padding
    assume(padding == "same" or (h + pads >= kh and w_ + pads >= kw))
    monkeypatch.setattr(convcore._api, "BF16_MIN_DEPTH", {"forward": 1, "backward": 1})
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, h, w_, c)).astype(np.float32)
    w = rng.uniform(-2, 2, (kh, kw, c, f)).astype(np.float32)
    b = rng.uniform(-2, 2, f).astype(np.float32)
    kwargs = {"stride": stride, "padding": padding}
    y = convcore.conv2d_forward(x, w, b, relu=True, **kwargs, precision="bf16")
    x64, w64 = np.float64(x), np.float64(w)
    assert_within(y, ref.conv2d_forward(x64, w64, b, relu=True, **kwargs,
                                        precision="bf16-emulated"),
                  ref.conv2d_forward(np.abs(x64), np.abs(w64), np.abs(b), **kwargs),
                  kh * kw * c + 1, "y")
    dy = rng.uniform(-2, 2, y.shape).astype(np.float32)
    ry = y if seed % 2 else None
    got = convcore.conv2d_backward(x, w, dy, **kwargs, relu_y=ry, precision="bf16")
    want = ref.conv2d_backward(x64, w64, np.float64(dy), **kwargs, relu_y=ry,
                               precision="bf16-emulated")
    absolute = ref.conv2d_backward(np.abs(x64), np.abs(w64), np.abs(np.float64(dy)), **kwargs)
    terms = max(kh * kw * f, n * y.shape[1] * y.shape[2])
    for name, g, want_i, b_i in zip(("dx", "dw"), got, want, absolute):
        assert_within(g, want_i, b_i, terms, name)
    _conv.use_sections_in_place(False)
    try:
        made = (convcore.conv2d_forward(x, w, b, relu=True, **kwargs, precision="bf16"),
                convcore.conv2d_backward(x, w, dy, **kwargs, relu_y=ry, precision="bf16")[0])
    finally:
        _conv.use_sections_in_place(True)
    assert _bits((y, got[0])) == _bits(made)


def test_bf16_conv_backward_item_by_item_gives_the_bits_of_sections_made(bf16_kernel):
    """Where dw and dx both read in place (stride 1, channels in and out a
    multiple of 32), each work item pads its own dy for both (_fused_in_place):
    dx the bits of sections made, dw those of dw alone (need_dx=False: in
    place from a whole-batch copy of dy), dy through the ReLU where relu_y is
    given; dx and dw within the reference's bound."""
    rng = np.random.default_rng(8)
    for n, hw, c, f, k in ((3, 16, 32, 32, 3), (9, 7, 64, 32, 3), (7, 4, 32, 64, 1)):
        x = rng.uniform(-2, 2, (n, hw, hw, c)).astype(np.float32)
        w = rng.uniform(-2, 2, (k, k, c, f)).astype(np.float32)
        dy = rng.uniform(-2, 2, (n, hw, hw, f)).astype(np.float32)
        for relu_y in (None, dy[::-1].copy()):
            got = convcore.conv2d_backward(x, w, dy, padding="same", relu_y=relu_y,
                                           precision="bf16")
            want = ref.conv2d_backward(np.float64(x), np.float64(w), np.float64(dy),
                                       padding="same", relu_y=relu_y,
                                       precision="bf16-emulated")
            bound = ref.conv2d_backward(np.abs(np.float64(x)), np.abs(np.float64(w)),
                                        np.abs(np.float64(dy)), padding="same")
            for name, g, want_i, b_i in zip(("dx", "dw"), got, want, bound):
                assert_within(g, want_i, b_i, max(k * k * f, n * hw * hw), name)
            _conv.use_sections_in_place(False)
            try:
                made = convcore.conv2d_backward(x, w, dy, padding="same", relu_y=relu_y,
                                                precision="bf16")
            finally:
                _conv.use_sections_in_place(True)
            alone = convcore.conv2d_backward(x, w, dy, padding="same", need_dx=False,
                                             relu_y=relu_y, precision="bf16")
            assert _bits(got) == _bits((made[0], alone[1], alone[2])), (n, hw, c, f, k)


def test_bf16_conv_backward_without_db_gives_the_same_dx_and_dw(bf16_kernel):
    """need_db=False (a convolution without bias): db None, dx and dw the bits
    of need_db=True's, on each bf16 path (dw in place, strided dx's phases,
    dw of made sections, through a ReLU)."""
    rng = np.random.default_rng(7)
    x = rng.uniform(-2, 2, (3, 8, 8, 32)).astype(np.float32)
    w = rng.uniform(-2, 2, (3, 3, 32, 48)).astype(np.float32)
    for kwargs in ({"padding": 1}, {"stride": 2, "padding": "same"}, {"padding": 0}):
        dy = rng.uniform(-2, 2, convcore.conv2d_forward(x, w, **kwargs).shape)
        dy = dy.astype(np.float32)
        for relu_y in (None, dy[::-1].copy()):
            whole = convcore.conv2d_backward(x, w, dy, **kwargs, relu_y=relu_y,
                                             precision="bf16")
            dx, dw, db = convcore.conv2d_backward(x, w, dy, **kwargs, relu_y=relu_y,
                                                  precision="bf16", need_db=False)
            assert db is None and _bits((dx, dw)) == _bits(whole[:2]), kwargs


def test_bf16_dw_in_place_leaves_x_that_is_not_finite_to_made_sections(bf16_kernel):
    """dw in place multiplies dy's zero rows (past each output row) by cells
    no window of that kernel cell reads: an infinity there would make NaN
    where the true sum has none. With such an x, conv2d_backward in bf16
    gives the bits of sections made (and finite sums stay finite)."""
    rng = np.random.default_rng(6)
    x = rng.uniform(-2, 2, (2, 6, 6, 32)).astype(np.float32)
    w = rng.uniform(-2, 2, (5, 5, 32, 32)).astype(np.float32)
    dy = rng.uniform(-2, 2, (2, 6, 6, 32)).astype(np.float32)
    x[0, 2, 5, 3] = np.inf   # read by kernel column 0 only past the output row
    got = convcore.conv2d_backward(x, w, dy, padding=2, need_dx=False, precision="bf16")
    _conv.use_sections_in_place(False)
    try:
        made = convcore.conv2d_backward(x, w, dy, padding=2, need_dx=False, precision="bf16")
    finally:
        _conv.use_sections_in_place(True)
    assert _bits(got) == _bits(made)
    assert np.isfinite(got[1][:, 0]).all()


def test_bf16_products_have_the_same_bits_on_one_and_two_threads(bf16_kernel, threads):
    runs = []
    for n in (1, 2):
        threads(n)
        runs.append([_bits(getattr(convcore, name)(*args, **kwargs, precision="bf16"))
                     for name, args, kwargs in _native_cases(np.random.default_rng(5))])
    assert runs[0] == runs[1]


def test_bf16_fused_steps_have_the_bits_of_the_calls_one_by_one(bf16_kernel):
    """conv2d_maxpool_forward in bf16 (the pool taken from each item's output
    in cache) gives the bits, and the argmax, of conv2d_forward then
    maxpool2d_forward; its backward those of maxpool2d_backward then
    conv2d_backward."""
    rng = np.random.default_rng(7)
    x, w, b = (rng.uniform(-2, 2, s).astype(np.float32) for s in ((5, 12, 12, 8), (5, 5, 8, 32),
                                                                   (32,)))
    y, argmax = convcore.conv2d_maxpool_forward(x, w, b, padding=2, relu=True,
                                                return_argmax=True, precision="bf16")
    conv = convcore.conv2d_forward(x, w, b, padding=2, relu=True, precision="bf16")
    y2, argmax2 = convcore.maxpool2d_forward(conv, 2)
    assert y.tobytes() == y2.tobytes() and argmax.tobytes() == argmax2.tobytes()
    dy = rng.uniform(-2, 2, y.shape).astype(np.float32)
    got = convcore.conv2d_maxpool_backward(x, w, dy, argmax, padding=2, relu_y=y,
                                           precision="bf16")
    dconv = convcore.maxpool2d_backward(dy * (y > 0), argmax, conv.shape, 2)
    assert _bits(got) == _bits(convcore.conv2d_backward(x, w, dconv, padding=2,
                                                        precision="bf16"))


def _conv_operands(rng, n, c, inf):
    """x (n, 9, 11, c), w (5, 5, c, 32), b (32,) uniform in [-2, 2); with inf,
    one infinity in the first image (x[0, 4, 5, 0])."""
    x, w, b = (rng.uniform(-2, 2, s).astype(np.float32)
               for s in ((n, 9, 11, c), (5, 5, c, 32), (32,)))
    if inf:
        x[0, 4, 5, 0] = np.inf
    return x, w, b


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 7), c=st.sampled_from([8, 32, 64]),
       pool=st.sampled_from([(2, 2, 0), (3, 2, 1), (2, 1, 0)]), relu=st.booleans(),
       inf=st.booleans(), n_threads=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_bf16_conv_maxpool_has_the_bits_of_the_steps_one_by_one(bf16_kernel, threads, n, c,
                                                                pool, relu, inf, n_threads,
                                                                seed):
    """The fused convolution + max-pool in bf16, for windows that tile,
    overlap or slide by one, any batch (work items of two images, the last
    one short), 1 and 2 threads. The forward without argmax (inference: the
    pool reads the convolution's rows in place where its windows allow) has
    the training forward's bits. The backward sends the pool's dy into each
    work item's scratch (dw in place: channels a multiple of 32, x finite) or,
    else, into the whole convolution-sized gradient first: either way the
    bits of maxpool2d_backward then conv2d_backward; an argmax entry outside
    its window is an error."""
    threads(n_threads)
    rng = np.random.default_rng(seed)
    x, w, b = _conv_operands(rng, n, c, inf)
    size, stride, pad = pool
    kw = {"pool_size": size, "pool_stride": stride, "pool_padding": pad}
    y, argmax = convcore.conv2d_maxpool_forward(x, w, b, padding=2, relu=relu, **kw,
                                                return_argmax=True, precision="bf16")
    inference = convcore.conv2d_maxpool_forward(x, w, b, padding=2, relu=relu, **kw,
                                                precision="bf16")   # pooled in place
    assert inference.tobytes() == y.tobytes()
    dy = rng.uniform(-2, 2, y.shape).astype(np.float32)
    relu_y = y if relu else None
    got = convcore.conv2d_maxpool_backward(x, w, dy, argmax, padding=2, relu_y=relu_y, **kw,
                                           precision="bf16")
    dconv = convcore.maxpool2d_backward(dy * (y > 0) if relu else dy, argmax,
                                        (n, 9, 11, 32), size, stride, pad)
    assert _bits(got) == _bits(convcore.conv2d_backward(x, w, dconv, padding=2,
                                                        precision="bf16"))
    argmax[-1, 0, 0, 3] = 9 * 11 - 1           # the image's last cell: in no first window
    with pytest.raises(ValueError, match="outside"):
        convcore.conv2d_maxpool_backward(x, w, dy, argmax, padding=2, relu_y=relu_y, **kw,
                                         precision="bf16")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 7), c=st.sampled_from([1, 8, 32, 64]),
       pool=st.sampled_from([(2, 2, 0), (3, 2, 1), (2, 1, 0)]), relu=st.booleans(),
       inf=st.booleans(), n_threads=st.integers(1, 2), seed=st.integers(0, 2**16),
       rows=st.integers(1, 300), d_in=st.integers(16, 200))
def test_bf16_layers_hand_over_bfloat16_bits_with_the_bits_of_float32(
        bf16_kernel, threads, n, c, pool, relu, inf, n_threads, seed, rows, d_in):
    """Inference in bf16 hands a layer's output to the next in bfloat16 (uint16
    bits): the fused convolution + max-pool, and a convolution, write
    round_bf16 of their float32 output (out_bf16; both paths: sections made,
    c 1 and 8 or stride 2, and read in place, c 32 and 64), and a
    convolution or dense layer given bits computes
    what it computes on their float32 values (each image padded from the
    bits; a dense layer's A packed from them: any rows and features)."""
    threads(n_threads)
    rng = np.random.default_rng(seed)
    x, w, b = _conv_operands(rng, n, c, inf)
    size, stride, pad = pool
    kw = {"padding": 2, "relu": relu, "pool_size": size, "pool_stride": stride,
          "pool_padding": pad, "precision": "bf16"}
    y = convcore.conv2d_maxpool_forward(x, w, b, **kw)
    bits = convcore.conv2d_maxpool_forward(x, w, b, **kw, out_bf16=True)
    assert bits.dtype == np.uint16 and bits.tobytes() == ref.narrow_bits(y).tobytes()
    for s in (1, 2):                                  # unpooled: in place, sections made
        conv = {"padding": 2, "relu": relu, "stride": s, "precision": "bf16"}
        bits = convcore.conv2d_forward(x, w, b, **conv, out_bf16=True)
        assert bits.tobytes() == ref.narrow_bits(convcore.conv2d_forward(x, w, b, **conv)).tobytes()
    xh = ref.narrow_bits(x)
    for fn, more in ((convcore.conv2d_maxpool_forward, {}),
                     (convcore.conv2d_forward, {"relu": relu, "stride": (1, 2)[seed % 2]})):
        args = {**kw, **more} if fn is convcore.conv2d_maxpool_forward else \
            {"padding": 2, "precision": "bf16", **more}
        assert _bits(fn(xh, w, b, **args)) == _bits(fn(ref.widen_bits(xh), w, b, **args))
    xl = ref.narrow_bits(rng.uniform(-2, 2, (rows, d_in)).astype(np.float32))
    wl, bl = rng.uniform(-1, 1, (d_in, 40)).astype(np.float32), b[:40 % 32 + 1]
    wl = wl[:, :bl.shape[0]].copy()
    assert _bits(convcore.linear_forward(xl, wl, bl, relu=relu, precision="bf16")) == \
        _bits(convcore.linear_forward(ref.widen_bits(xl), wl, bl, relu=relu, precision="bf16"))


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 4), c=st.sampled_from([6, 32, 64]), f=st.sampled_from([16, 32]),
       window=st.sampled_from([(3, 1, 1), (3, 2, 1), (1, 2, 0), (5, 1, 2)]),
       need_dx=st.booleans(), relu=st.booleans(), inf=st.booleans(), sliced=st.booleans(),
       dy_bits=st.booleans(), need_db=st.booleans(), n_threads=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_bf16_conv_backward_takes_bits_with_the_bits_of_float32(
        bf16_kernel, threads, n, c, f, window, need_dx, relu, inf, sliced, dy_bits, need_db,
        n_threads, seed):
    """A convolution handed its input in bfloat16 in training keeps it so for
    its backward pass, and may be handed dy so: conv2d_backward given x's
    bits (and dy's) gives the bits of the call on their float32 values, and
    of x's (which it rounds so anyway); on each path: dw in place (c 32 and
    64: x made channels first from the bits, an infinity there leaving it to
    made sections; dy padded item by item from its bits), dw of made
    sections (c 6, strides 2), the strided dx's phases (reading dy's bits),
    a batch in slices; with a bias gradient or a ReLU, dy widened; dx float32."""
    threads(n_threads)
    rng = np.random.default_rng(seed)
    k, stride, pad = window
    x = rng.uniform(-2, 2, (n, 9, 9, c)).astype(np.float32)
    if inf:     # in the last column: read in place at rows past the output's (dy 0 there)
        x[0, 4, 8, seed % 2] = np.inf
    w = rng.uniform(-2, 2, (k, k, c, f)).astype(np.float32)
    kw = {"stride": stride, "padding": pad, "need_dx": need_dx, "precision": "bf16",
          "slices": [0, n // 2, n] if sliced and n > 1 else None, "need_db": need_db}
    shape = convcore.conv2d_forward(x, w, **{a: kw[a] for a in ("stride", "padding")}).shape
    dy = rng.uniform(-2, 2, shape).astype(np.float32)
    kw["relu_y"] = rng.uniform(-1, 1, shape).astype(np.float32) if relu else None
    dyh = ref.narrow_bits(dy) if dy_bits else dy
    dy = ref.widen_bits(dyh) if dy_bits else dy
    xh = ref.narrow_bits(x)
    got = convcore.conv2d_backward(xh, w, dyh, **kw)
    assert got[0] is None or got[0].dtype == np.float32
    assert _bits(got) == _bits(convcore.conv2d_backward(ref.widen_bits(xh), w, dy, **kw)) \
        == _bits(convcore.conv2d_backward(x, w, dy, **kw))


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 5), hw=st.integers(1, 9), c=st.sampled_from([1, 7, 32, 64, 100]),
       relu=st.booleans(), out_bf16=st.booleans(), odd=st.booleans(),
       kernels_name=st.sampled_from(KERNEL_NAMES), n_threads=st.integers(1, 2),
       seed=st.integers(0, 2**16))
def test_batchnorm_takes_x_as_bits_with_the_bits_of_their_values(
        kernels, threads, n, hw, c, relu, out_bf16, odd, kernels_name, n_threads, seed):
    """A batch norm given its input as bfloat16 bits (a bf16 network's: a
    convolution's out_bf16) gives the bits of the call on their float32
    values, on every kernel set and thread count: batchnorm_forward's y,
    mean and var, batchnorm_inference's y, batchnorm_backward's dx, dgamma
    and dbeta (with the ReLU's mask made again from the bits), whole
    vectors of channels and the channels past them; NaN and infinities too."""
    assume(n * hw * hw >= 2)
    kernels(kernels_name)
    threads(n_threads)
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, hw, hw, c)) * 3 + 1).astype(np.float32)
    if odd:
        x.reshape(-1)[rng.integers(0, x.size, 3)] = [np.inf, -np.inf, np.nan]
    xh = ref.narrow_bits(x)
    xw = ref.widen_bits(xh)
    g, b = rng.uniform(0.5, 2, c).astype(np.float32), rng.uniform(-1, 1, c).astype(np.float32)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    fw = _bits(convcore.batchnorm_forward(xh, g, b, 1e-5, relu, out_bf16=out_bf16))
    assert fw == _bits(convcore.batchnorm_forward(xw, g, b, 1e-5, relu, out_bf16=out_bf16))
    mean, var = convcore.batchnorm_forward(xw, g, b, 1e-5, relu)[1:]
    var = np.abs(np.nan_to_num(var))
    assert _bits(convcore.batchnorm_inference(xh, g, b, mean, var, 1e-5, relu, out_bf16)) == \
        _bits(convcore.batchnorm_inference(xw, g, b, mean, var, 1e-5, relu, out_bf16))
    rb = b if relu else None
    assert _bits(convcore.batchnorm_backward(xh, g, mean, var, dy, 1e-5, True, rb,
                                             out_bf16=out_bf16)) == \
        _bits(convcore.batchnorm_backward(xw, g, mean, var, dy, 1e-5, True, rb,
                                          out_bf16=out_bf16))


def test_bfloat16_bits_are_refused_where_they_would_be_misread():
    """uint16 is taken as bfloat16 bits with precision bf16 or bf16-emulated
    only (with fp32, raw 16-bit pixels would be misread: a TypeError naming
    x, forward or backward); out_bf16 needs one of them and no argmax."""
    x = np.zeros((1, 6, 6, 2), np.uint16)
    w = np.zeros((3, 3, 2, 16), np.float32)
    with pytest.raises(TypeError, match="conv2d_forward: x must be float32, got uint16"):
        convcore.conv2d_forward(x, w)
    with pytest.raises(TypeError, match="linear_forward: x must be float32, got uint16"):
        convcore.linear_forward(x[0, 0], w[0, 0])
    with pytest.raises(ValueError, match="out_bf16=True needs precision"):
        convcore.conv2d_maxpool_forward(x.view(np.float16).astype(np.float32), w,
                                        out_bf16=True)
    with pytest.raises(ValueError, match="out_bf16=True needs precision"):
        convcore.conv2d_maxpool_forward(x, w, out_bf16=True, return_argmax=True,
                                        precision="bf16-emulated")
    with pytest.raises(TypeError, match="conv2d_backward: x must be float32, got uint16"):
        convcore.conv2d_backward(x, w, np.zeros((1, 4, 4, 16), np.float32))
    with pytest.raises(TypeError, match="conv2d_backward: dy must be float32, got uint16"):
        convcore.conv2d_backward(x.astype(np.float32), w, np.zeros((1, 4, 4, 16), np.uint16))
    a = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError, match="add_forward: out_bf16=True writes a new uint16 "):
        convcore.add_forward(a, a, out_bf16=True, out=np.empty_like(a))
    got = convcore.conv2d_maxpool_forward(x, w, padding=1, out_bf16=True,
                                          precision="bf16-emulated")   # (the float32 kernels)
    assert got.dtype == np.uint16 and got.shape == (1, 3, 3, 16) and not got.any()


def _out_bf16_calls(monkeypatch, name):
    """The out_bf16 of each call of convcore.<name> from now on (a list)."""
    calls, real = [], getattr(convcore, name)
    monkeypatch.setattr(convcore, name,
                        lambda *a, **k: calls.append(k.get("out_bf16")) or real(*a, **k))
    return calls


def test_bf16_inference_hands_bits_only_to_layers_that_multiply_them(bf16_kernel,
                                                                      monkeypatch):
    """The inference plan hands a conv + pool's output over in bfloat16 where
    only convolutions and dense layers read it (through Flatten and
    Dropout): both of the tutorial's; not where anything else does (the
    model's output, a global pool), nor in fp32, nor in training. predict
    gives the bits of the layers run one by one in float32 between them."""
    calls = _out_bf16_calls(monkeypatch, "conv2d_maxpool_forward")
    x = np.random.default_rng(3).random((37, 28, 28, 1), dtype=np.float32)
    model = pyconv.models.tutorial_cnn(seed=3).set_precision("bf16")
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=False)[0]
    assert model.predict(x).tobytes() == h.tobytes() and calls == [True, True]
    calls.clear()
    model.train_step(x[:8], np.arange(8), pyconv.optim.Adam(model.parameters()))
    model.set_precision("fp32").predict(x[:2])
    assert calls == [False, False, False, False]
    L = pyconv.layers
    other = pyconv.Sequential([L.Conv2D(16, 3, activation="relu"), L.MaxPool2D(2),
                               L.Conv2D(16, 3), L.MaxPool2D(2), L.GlobalAveragePooling2D(),
                               L.Dense(10)], seed=0)
    other.build((12, 12, 1))
    calls.clear()
    other.set_precision("bf16").predict(x[:3, :12, :12])
    assert calls == [True, False]
    inp = pyconv.Input((12, 12, 1))          # read by a convolution and by a global pool
    h = L.MaxPool2D(2)(L.Conv2D(16, 3, activation="relu")(inp))
    out = L.Dense(4)(L.Concatenate()([L.GlobalAveragePooling2D()(h),
                                      L.GlobalAveragePooling2D()(L.Conv2D(16, 3)(h))]))
    branched = pyconv.Model(inp, out, seed=0).set_precision("bf16")
    calls.clear()
    branched.predict(x[:3, :12, :12])
    assert calls == [False]


def test_bf16_inference_hands_bits_from_a_folded_conv_to_the_next(bf16_kernel, monkeypatch,
                                                                   threads):
    """resnet8 at inference: each block's first convolution (batch norm and
    ReLU folded in) hands its output to the second in bfloat16, the others
    meet a residual add and do not; predict gives the bits of the same plan
    handing over float32 (1 and 2 threads)."""
    from pyconv import fusion
    calls = _out_bf16_calls(monkeypatch, "conv2d_forward")
    x = np.random.default_rng(4).random((21, 28, 28, 1), dtype=np.float32)
    model = pyconv.models.resnet8(seed=1).set_precision("bf16")
    got = model.predict(x)
    assert calls.count(True) == 3 and len(calls) == 9     # the stem, 3 blocks of 2, 2 shortcuts
    with monkeypatch.context() as m:
        m.setattr(fusion, "_with_handoffs", lambda steps, output, training: steps)
        plain = pyconv.models.resnet8(seed=1).set_precision("bf16")
    for n in (1, 2):
        threads(n)
        assert model.predict(x).tobytes() == got.tobytes() == plain.predict(x).tobytes()


def test_bf16_training_hands_outputs_only_convolutions_read_in_bits(
        bf16_kernel, monkeypatch, threads):
    """In training, a batch norm + ReLU or a residual add + ReLU whose output
    only bf16 convolutions read writes it in bfloat16 (resnet8: each block's
    first batch norm, not the stem's, which the residual add reads too; the
    first two blocks' adds, not the last's, which the global pool reads; at
    inference too; not in fp32); a convolution whose output only batch norms
    read writes it so (all nine of resnet8's: a batch norm in bf16 reads its
    input in bfloat16); a batch norm hands its input gradient back
    so to the bias-free convolution that alone feeds it (not the stem's,
    whose 3x3x1 sums run on the float32 kernels, nor the 1x1 strided
    shortcuts', whose input gradient is made of float32 sections). Training
    gives the bits of the same plan handing over float32 (each batch norm
    then rounding its input itself): weights, running statistics and
    predictions, on 1 and 2 threads."""
    from pyconv import fusion
    convs = _out_bf16_calls(monkeypatch, "conv2d_forward")
    calls = _out_bf16_calls(monkeypatch, "batchnorm_forward")
    adds = _out_bf16_calls(monkeypatch, "add_forward")
    grads = _out_bf16_calls(monkeypatch, "batchnorm_backward")
    rng = np.random.default_rng(5)
    x, y = rng.random((16, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 16)

    def trained(model):
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-3)
        for _ in range(2):
            model.train_step(x, y, opt)
        return ([p.value.tobytes() for p in model.parameters()]
                + [b.tobytes() for _, b in model.named_buffers()] + [model.predict(x).tobytes()])
    got = trained(pyconv.models.resnet8(seed=2).set_precision("bf16"))
    assert calls == [False, True, False, True, False, False, True, False, False] * 2
    assert [a for a in adds if a is not None] == [True, True, False] * 3   # 2 steps, predict
    assert grads == [False, True, True, False, True, True, True, True, False] * 2  # reversed
    assert convs == [True] * 18 + [False, True, False, True, False, False, True, False, False]
    for seen in (calls, adds, grads, convs):
        seen.clear()
    trained(pyconv.models.resnet8(seed=2))
    assert True not in calls + adds + grads + convs
    real = fusion._with_handoffs
    monkeypatch.setattr(fusion, "_with_handoffs",
                        lambda steps, output, training: steps if training else
                        real(steps, output, training))
    for n in (1, 2):
        threads(n)
        assert trained(pyconv.models.resnet8(seed=2).set_precision("bf16")) == got


@settings(max_examples=30, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(n=st.integers(1, 300), d_in=st.integers(1, 200), d_out=st.integers(1, 90),
       bias=st.booleans(), relu=st.booleans(), need_dx=st.booleans(),
       n_threads=st.integers(1, 2), seed=st.integers(0, 2**16))
def test_bf16_dense_adam_updates_the_float32_weights(bf16_kernel, threads, n, d_in, d_out,
                                                     bias, relu, need_dx, n_threads, seed):
    """linear_backward_adam in bf16 is linear_backward in bf16, then Adam on
    the float32 weights: the same bits as the separate calls, dx made strip
    by strip of w with the update (its transposed product, C^T = w dy^T,
    against linear_backward's dy w^T where the batch is over a quarter of
    D_in), strips of 32 rows and a remainder, 1 and 2 threads."""
    threads(n_threads)
    rng = np.random.default_rng(seed)
    x, w, dy, y = (rng.uniform(-2, 2, s).astype(np.float32)
                   for s in ((n, d_in), (d_in, d_out), (n, d_out), (n, d_out)))
    b = rng.uniform(-1, 1, d_out).astype(np.float32) if bias else None
    state = [rng.uniform(0, 1, a.shape).astype(np.float32) for a in (w, w, w[0], w[0])]
    w2, b2, state2 = w.copy(), None if b is None else b.copy(), [a.copy() for a in state]
    relu_y = y if relu else None
    dx = convcore.linear_backward_adam(x, w, dy, b, *(state[:2] + (state[2:] if bias else
                                                                   [None, None])),
                                       1e-3, need_dx=need_dx, relu_y=relu_y, precision="bf16")
    dx2, dw, db = convcore.linear_backward(x, w2, dy, need_dx=need_dx, relu_y=relu_y,
                                           precision="bf16")
    convcore.adam_update(w2, dw, *state2[:2], 1e-3)
    if bias:
        convcore.adam_update(b2, db, *state2[2:], 1e-3)
        assert b.tobytes() == b2.tobytes()
    assert _bits(dx) == _bits(dx2) and w.tobytes() == w2.tobytes()
    assert b"".join(a.tobytes() for a in state) == b"".join(a.tobytes() for a in state2)
    assert not np.array_equal(R(w), w)


def test_bf16_on_a_cpu_without_it_names_what_is_missing(monkeypatch):
    """Emulation is never chosen silently: precision="bf16" on a CPU without
    AMX-BF16 or AVX512-BF16 is a ValueError naming the function and the way
    out."""
    monkeypatch.setattr(convcore._kernels, "_BF16", ())
    x, w = np.ones((1, 4, 4, 16), np.float32), np.ones((3, 3, 16, 16), np.float32)
    with pytest.raises(ValueError, match=r"^conv2d_forward: precision='bf16' needs a CPU with "
                                         r"AMX-BF16 or AVX512-BF16 .*this one has neither.*"
                                         r"precision='bf16-emulated' runs the same"):
        convcore.conv2d_forward(x, w, precision="bf16")


# ---------------------------------------------------------------- networks in bf16

def _batch(n, seed, shape=(28, 28, 1)):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, *shape)).astype(np.uint8), rng.integers(0, 10, n)


def test_set_precision_names_what_the_cpu_lacks(monkeypatch):
    model = pyconv.models.tutorial_cnn(seed=0)
    with pytest.raises(ValueError, match=r"^set_precision: precision must be one of fp32, "
                                         r"bf16, bf16-emulated, got 'fp16'$"):
        model.set_precision("fp16")
    if not convcore.bf16_supported():
        with pytest.raises(ValueError, match=rf"bf16 needs a CPU with AMX-BF16 or AVX512-BF16 "
                                             rf".*this one \({re.escape(cpu_name())}\) has "
                                             r"neither( that convcore may use \(CONVCORE_MAX_"
                                             r"ISA=\w+\))?\. bf16-emulated runs"):
            model.set_precision("bf16")
    monkeypatch.setattr(convcore, "bf16_supported", lambda: ())
    with pytest.raises(ValueError, match="has neither"):
        model.set_precision("bf16")
    monkeypatch.setattr(convcore, "bf16_supported", lambda: ("amx", "avx512_bf16"))
    assert model.set_precision("bf16").precision == "bf16"
    model.set_precision("fp32")
    with pytest.raises(ValueError, match=r"^fit: precision must be one of fp32, bf16, "):
        model.fit(*_batch(4, 0), steps=1, verbose=False, precision="float16")
    assert model.precision == "fp32" and {layer.precision for layer in model.layers} == {"fp32"}


def _train(model, x, y, steps=3, **kw):
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-3)
    losses = [model.train_step(x, y, opt, **kw) for _ in range(steps)]
    return losses, [p.value.tobytes() for p in model.parameters()]


@pytest.mark.parametrize("bf16", ["bf16-emulated", "bf16"])
@pytest.mark.parametrize("name", ["tutorial", "resnet8"])
def test_bf16_training_fused_unfused_and_on_two_threads_alike(threads, name, bf16):
    """A network in bf16 (emulated; native where the CPU has it): its fused
    steps (conv + pool, dense + Adam, batch norm + ReLU, add + ReLU) give the
    same bits as its layers one by one, and 2 threads the same bits as 1;
    not the bits of fp32."""
    if bf16 == "bf16" and not convcore.bf16_supported():
        pytest.skip(no_bf16())
    make = pyconv.models.MODELS[name]
    x, y = _batch(16, 1, (28, 28, 1))
    runs = {}
    for key, n_threads, fusions, precision in [("fused", 2, FUSIONS, bf16),
                                               ("unfused", 2, (), bf16),
                                               ("1 thread", 1, FUSIONS, bf16),
                                               ("fp32", 2, FUSIONS, "fp32")]:
        threads(n_threads)
        runs[key] = _train(make(seed=2).set_precision(precision), x, y, fusions=fusions)
    assert runs["fused"] == runs["unfused"] == runs["1 thread"]
    assert runs["fused"][0] != runs["fp32"][0]


def test_bf16_emulated_keeps_float32_master_weights():
    """The products' operands are rounded; the weights the optimiser updates
    (and saves) are not: after a few steps they hold float32's low bits."""
    x, y = _batch(16, 2)
    model = pyconv.models.tutorial_cnn(seed=3).set_precision("bf16-emulated")
    _train(model, x, y)
    w = model.parameters()[0].value
    assert not np.array_equal(convcore.round_bf16(w), w)
    assert model.predict(x).tobytes() != model.set_precision("fp32").predict(x).tobytes()


@pytest.mark.parametrize("bf16", ["bf16-emulated", "bf16"])
def test_bf16_learns_real_digits_as_fp32_does(bf16):
    """The tutorial network, 150 Adam steps of 50 on real MNIST images (the
    test's sample when the full set is absent), then the held-out images:
    bf16's accuracy (emulated; native where the CPU has AMX-BF16 or
    AVX512-BF16) within 3 points of fp32's (same seed), both well above chance."""
    if bf16 == "bf16" and not convcore.bf16_supported():
        pytest.skip(no_bf16())
    ds = pyconv.datasets.load("mnist", data_dir=MNIST_DIR)
    n_test = min(1000, len(ds.y_test))
    accuracy = {}
    for precision in ("fp32", bf16):
        model = pyconv.models.tutorial_cnn(seed=0)
        model.fit(ds.x_train[:7500], ds.y_train[:7500], steps=150, batch_size=50, lr=1e-3,
                  verbose=False, precision=precision)
        assert model.precision == precision
        accuracy[precision] = model.accuracy(ds.x_test[:n_test], ds.y_test[:n_test])
    assert min(accuracy.values()) > 0.8, accuracy
    assert abs(accuracy["fp32"] - accuracy[bf16]) <= 0.03, accuracy


# ---------------------------------------------------------------- the command in bf16

def test_pyconv_train_evaluate_and_predict_in_bf16(tmp_path):
    """--precision for train (recorded in the metrics and the checkpoint: a
    resume keeps it, bit for bit, and refuses another), evaluate and predict;
    the checkpoint's weights are float32. (The report and the ONNX export of
    a bf16 run: tests/test_report.py, tests/test_onnx.py.)"""
    ckpt, half, metrics = tmp_path / "c.npz", tmp_path / "h.npz", tmp_path / "m.json"
    common = ["train", "--model", "grokking", "--batch-size", "32", "--no-progress",
              "--eval-every", "100"]
    out = cli(*common, "--steps", "6", "--precision", "bf16-emulated",
                 "--checkpoint", str(ckpt), "--metrics", str(metrics)).stdout
    assert "seed 0, bf16-emulated, " in out, out
    assert json.loads(metrics.read_text())["precision"] == "bf16-emulated"
    cli(*common, "--steps", "3", "--precision", "bf16-emulated", "--checkpoint", str(half))
    refused = cli(*common, "--steps", "6", "--checkpoint", str(half), "--resume",
                     "--precision", "fp32", check=False)
    assert refused.returncode == 2 and (f"--resume: {half} was trained in bf16-emulated, which "
                                        "a resumed run keeps: --precision fp32 does not apply"
                                        ) in refused.stderr
    cli(*common, "--steps", "6", "--checkpoint", str(half), "--resume")
    with np.load(ckpt) as a, np.load(half) as b:
        weights = [k for k in a.files if k.startswith("param")]
        assert weights and all(a[k].tobytes() == b[k].tobytes() for k in weights)
        assert all(a[k].dtype == np.float32 for k in weights)
    result = json.loads(cli("evaluate", str(ckpt), "--precision", "bf16-emulated").stdout)
    assert result["precision"] == "bf16-emulated" and result["test_accuracy"] > 0.1
    np.save(tmp_path / "x.npy", np.zeros((2, 28, 28), np.uint8))
    said = cli("predict", str(ckpt), str(tmp_path / "x.npy"), "--precision",
                  "bf16-emulated").stdout
    assert said.count("x.npy[") == 2, said
    for command in (["evaluate", str(ckpt)], [*common, "--steps", "1"]):
        run = cli(*command, "--precision", "bf16", check=False)
        if convcore.bf16_supported():    # natively: the same command runs
            assert run.returncode == 0 and "bf16" in run.stdout, run.stderr
        else:
            assert run.returncode == 2 and "--precision: bf16 needs a CPU" in run.stderr
            assert "has neither" in run.stderr, run.stderr
