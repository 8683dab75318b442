"""Properties: every convcore function equals convcore.reference.

The reference runs in float64 on the same float32 inputs; the tolerance is the
float32 error bound of a sum of L products (L the reduction length), scaled by
the same computation on absolute values, so it grows with the reduction.
"""
import os
import platform
import re
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import convcore
import convcore.reference as ref

from conftest import cpu_lacks
from helpers import (
    assert_within,
    cpu_flags,
    f32,
    padding_forms,
    using_kernels,
    windows,
    winograd_bound,
    winograd_dw_bound,
)

# The convolutions and dense layers have BLAS (im2col + sgemm, sgemm) and the
# vector kernel sets this CPU runs (AVX-512, AVX2, NEON: a multiple of 16
# output channels), whose 5x5 and 3x3 convolutions at stride 1 run Winograd unless
# winograd=False. All must equal the reference: (name, winograd) below. The
# tests of one set's kernels run for each set (SETS), with strict=True.
SETS = convcore.simd_supported()
KERNELS = [("blas", True)] + [(s, wg) for s in SETS for wg in (False, True)]


def _64(*arrays):
    return [None if a is None else np.asarray(a, np.float64) for a in arrays]


def _abs(*arrays):
    return [None if a is None else np.abs(np.asarray(a, np.float64)) for a in arrays]


@given(st.data(), windows())
def test_im2col_equals_reference(data, win):
    shape, k, s, p = win
    x = data.draw(f32(shape))
    got = convcore.im2col(x, k, s, p)
    np.testing.assert_array_equal(got, ref.im2col(x, k, s, p))  # a pure copy: exact


@given(st.data(), windows())
def test_col2im_equals_reference(data, win):
    shape, k, s, p = win
    cols_shape = ref.im2col(np.zeros(shape, np.float32), k, s, p).shape
    c = data.draw(f32(cols_shape))
    got = convcore.col2im(c, shape, k, s, p)
    (c64,) = _64(c)
    terms = k[0] * k[1]   # at most kh*kw sections overlap a pixel
    assert_within(got, ref.col2im(c64, shape, k, s, p), ref.col2im(np.abs(c64), shape, k, s, p),
                  terms, "col2im")


@given(st.data(), windows())
def test_im2col_col2im_adjoint(data, win):
    """<im2col(x), c> == <x, col2im(c)>: col2im is im2col's transpose."""
    shape, k, s, p = win
    x = data.draw(f32(shape))
    cols = convcore.im2col(x, k, s, p)
    c = data.draw(f32(cols.shape))
    lhs = np.sum(cols.astype(np.float64) * c)
    rhs = np.sum(x.astype(np.float64) * convcore.col2im(c, shape, k, s, p))
    bound = np.sum(np.abs(cols.astype(np.float64) * c))
    assert abs(lhs - rhs) <= 2 * (k[0] * k[1] + 1) * 2.0**-24 * bound + 1e-30


@given(st.data(), windows(), st.integers(1, 5), st.booleans(), st.booleans())
def test_conv2d_forward_equals_reference(data, win, cout, with_bias, relu):
    shape, k, s, p = win
    x = data.draw(f32(shape))
    w = data.draw(f32((*k, shape[3], cout)))
    b = data.draw(f32((cout,))) if with_bias else None
    got = convcore.conv2d_forward(x, w, b, stride=s, padding=p, relu=relu)
    want = ref.conv2d_forward(*_64(x, w, b), stride=s, padding=p, relu=relu)
    bound = ref.conv2d_forward(*_abs(x, w, b), stride=s, padding=p)
    assert_within(got, want, bound, k[0] * k[1] * shape[3] + 1, "conv2d_forward y")


@given(st.data(), windows(), st.integers(1, 5), st.booleans(), st.booleans(), st.booleans())
def test_conv2d_backward_equals_reference(data, win, cout, need_dx, relu, need_db):
    shape, k, s, p = win
    x = data.draw(f32(shape))
    w = data.draw(f32((*k, shape[3], cout)))
    y_shape = ref.conv2d_forward(x, w, stride=s, padding=p).shape
    dy = data.draw(f32(y_shape))
    relu_y = data.draw(f32(y_shape)) if relu else None   # any sign pattern
    dx, dw, db = convcore.conv2d_backward(x, w, dy, stride=s, padding=p, need_dx=need_dx,
                                          relu_y=relu_y, need_db=need_db)
    rdx, rdw, rdb = ref.conv2d_backward(*_64(x, w, dy), stride=s, padding=p, relu_y=relu_y)
    bdx, bdw, bdb = ref.conv2d_backward(*_abs(x, w, dy), stride=s, padding=p)
    positions = shape[0] * y_shape[1] * y_shape[2]
    assert_within(dw, rdw, bdw, positions, "conv2d_backward dw")
    if need_db:
        assert_within(db, rdb, bdb, positions, "conv2d_backward db")
    else:
        assert db is None
    if need_dx:
        assert_within(dx, rdx, bdx, k[0] * k[1] * cout, "conv2d_backward dx")
    else:
        assert dx is None


@given(st.data(), windows(pool=True))
def test_maxpool2d_forward_equals_reference(data, win):
    shape, k, s, p = win
    # few distinct values: ties are common, so the tie rule is exercised
    x = data.draw(f32(shape, -2, 2).map(lambda a: np.round(a)))
    y, am = convcore.maxpool2d_forward(x, k, s, p)
    ry, ram = ref.maxpool2d_forward(x, k, s, p)
    np.testing.assert_array_equal(y, ry)
    np.testing.assert_array_equal(am, ram)


@pytest.mark.parametrize("vset", SETS)
@given(st.data(), windows(max_hw=7, max_c=40, pool=True))
def test_maxpool2d_forward_of_many_channels_equals_reference_in_each_set(vset, data, win):
    """The vector sets pool a vector of channels at a time, the rest one by
    one: up to 40 channels (16-lane vectors and a remainder), ties common,
    and NaN, infinities and signed zeros in random places."""
    shape, k, s, p = win
    x = data.draw(f32(shape, -2, 2).map(lambda a: np.round(a)))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    flat = x.reshape(-1)
    where = rng.random(flat.size) < 0.1
    flat[where] = rng.choice(SPECIAL, int(where.sum()))
    with using_kernels(vset, strict=True):
        y, am = convcore.maxpool2d_forward(x, k, s, p)
    ry, ram = ref.maxpool2d_forward(x, k, s, p)
    assert y.tobytes() == ry.tobytes()
    np.testing.assert_array_equal(am, ram)


@given(st.data(), windows(pool=True))
def test_maxpool2d_backward_sends_gradient_to_argmax(data, win):
    shape, k, s, p = win
    x = data.draw(f32(shape))
    y, am = convcore.maxpool2d_forward(x, k, s, p)
    n, h, w, c = shape
    # each argmax lies in its window and holds the window's value
    flat = x.reshape(n, h * w, c)
    o = y.shape[1] * y.shape[2]
    np.testing.assert_array_equal(np.take_along_axis(flat, am.reshape(n, o, c), axis=1),
                                  y.reshape(n, o, c))
    oh, ow = np.indices(y.shape[1:3])
    top = (oh * s[0])[None, :, :, None] - (ref.window_pads((h, w), k, s, p)[0][0])
    left = (ow * s[1])[None, :, :, None] - (ref.window_pads((h, w), k, s, p)[1][0])
    assert ((am // w >= top) & (am // w < top + k[0])).all()
    assert ((am % w >= left) & (am % w < left + k[1])).all()
    dy = data.draw(f32(y.shape))
    got = convcore.maxpool2d_backward(dy, am, shape, k, s, p)
    (dy64,) = _64(dy)
    terms = -(-k[0] // s[0]) * -(-k[1] // s[1])   # windows that can share a cell
    assert_within(got, ref.maxpool2d_backward(dy64, am, shape, k, s, p),
                  ref.maxpool2d_backward(np.abs(dy64), am, shape, k, s, p), terms,
                  "maxpool2d_backward")


@given(st.data(), windows(pool=True))
def test_maxpool2d_backward_refuses_an_argmax_of_another_geometry(data, win):
    """An argmax moved out of its window (or an x_shape of another height or
    width) is a ValueError, never a silently wrong gradient."""
    shape, k, s, p = win
    x = data.draw(f32(shape))
    y, am = convcore.maxpool2d_forward(x, k, s, p)
    assume(am.size)
    n, h, w, c = shape
    bad = am.copy()
    i = data.draw(st.integers(0, am.size - 1))
    cell = data.draw(st.integers(0, h * w - 1))
    oh, ow = np.unravel_index(i, am.shape)[1:3]
    (pt, _), (pl, _) = ref.window_pads((h, w), k, s, p)
    assume(not (oh * s[0] - pt <= cell // w < oh * s[0] - pt + k[0]
                and ow * s[1] - pl <= cell % w < ow * s[1] - pl + k[1]))
    bad.flat[i] = cell
    with pytest.raises(ValueError, match="maxpool2d_backward: argmax has 1 entries outside"):
        convcore.maxpool2d_backward(y, bad, shape, k, s, p)
    with pytest.raises(ValueError, match="outside its own window"):
        ref.maxpool2d_backward(y, bad, shape, k, s, p)
    with pytest.raises(ValueError, match="maxpool2d_backward: dy must have shape"):
        convcore.maxpool2d_backward(y, am, (n, h + 2 * s[0], w, c), k, s, p)


@given(st.data(), st.integers(0, 70), st.integers(1, 80), st.integers(1, 80),
       st.booleans(), st.booleans())
def test_linear_equals_reference(data, n, d_in, d_out, with_bias, relu):
    x = data.draw(f32((n, d_in)))
    w = data.draw(f32((d_in, d_out)))
    b = data.draw(f32((d_out,))) if with_bias else None
    got = convcore.linear_forward(x, w, b, relu=relu)
    assert_within(got, ref.linear_forward(*_64(x, w, b), relu=relu),
                  ref.linear_forward(*_abs(x, w, b)), d_in + 1, "linear_forward")
    dy = data.draw(f32((n, d_out)))
    relu_y = data.draw(f32((n, d_out))) if relu else None
    dx, dw, db = convcore.linear_backward(x, w, dy, relu_y=relu_y)
    rdx, rdw, rdb = ref.linear_backward(*_64(x, w, dy), relu_y=relu_y)
    bdx, bdw, bdb = ref.linear_backward(*_abs(x, w, dy))
    assert_within(dx, rdx, bdx, d_out, "linear_backward dx")
    assert_within(dw, rdw, bdw, n, "linear_backward dw")
    assert_within(db, rdb, bdb, n, "linear_backward db")


@pytest.mark.parametrize("vset", SETS)
@given(st.one_of(st.integers(0, 96), st.integers(97, 256)), st.integers(1, 600),
       st.integers(1, 9), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_simd_dense_tiles_equal_reference(vset, n, d_in, blocks, with_bias, relu, seed):
    """Each set's dense tiles (set_kernels(vset, strict=True)): D_out = 16 *
    blocks (every tile width and remainder), up to the largest batch they take
    (forward 256, backward 96), several k-blocks."""
    rng = np.random.default_rng(seed)
    d_out = 16 * blocks
    x, w, dy = (rng.uniform(-2, 2, s).astype(np.float32)
                for s in ((n, d_in), (d_in, d_out), (n, d_out)))
    b = rng.uniform(-2, 2, d_out).astype(np.float32) if with_bias else None
    with using_kernels(vset, strict=True):
        y = convcore.linear_forward(x, w, b, relu=relu)
        assert_within(y, ref.linear_forward(*_64(x, w, b), relu=relu),
                      ref.linear_forward(*_abs(x, w, b)), d_in + 1, "simd linear_forward")
        relu_y = y if relu else None
        if n > 96:
            with pytest.raises(ValueError, match="a batch of at most 96"):
                convcore.linear_backward(x, w, dy, relu_y=relu_y)
            return
        dx, dw, db = convcore.linear_backward(x, w, dy, relu_y=relu_y)
    rdx, rdw, rdb = ref.linear_backward(*_64(x, w, dy), relu_y=relu_y)
    bdx, bdw, bdb = ref.linear_backward(*_abs(x, w, dy))
    assert_within(dx, rdx, bdx, d_out, "simd linear_backward dx")
    assert_within(dw, rdw, bdw, n, "simd linear_backward dw")
    assert_within(db, rdb, bdb, n, "simd linear_backward db")


@pytest.mark.parametrize("name, winograd", KERNELS)
def test_tutorial_shapes_equal_reference(kernels, name, winograd):
    """The tutorial network's own shapes (batch 50): many work items, large sums."""
    kernels(name, winograd)
    rng = np.random.default_rng(0)
    x = rng.random((50, 28, 28, 1), dtype=np.float32)
    w1 = (rng.standard_normal((5, 5, 1, 32)) * 0.1).astype(np.float32)
    y1 = convcore.conv2d_forward(x, w1, padding="same")
    assert_within(y1, ref.conv2d_forward(*_64(x, w1), padding="same"),
                  ref.conv2d_forward(*_abs(x, w1), padding="same"), 25, "conv1")
    p1, a1 = convcore.maxpool2d_forward(y1, 2, padding="same")
    np.testing.assert_array_equal(p1, ref.maxpool2d_forward(y1, 2, padding="same")[0])
    w2 = (rng.standard_normal((5, 5, 32, 64)) * 0.1).astype(np.float32)
    dy = rng.standard_normal((50, 14, 14, 64)).astype(np.float32)
    got = convcore.conv2d_backward(p1, w2, dy, padding="same")
    want = ref.conv2d_backward(*_64(p1, w2, dy), padding="same")
    bound = ref.conv2d_backward(*_abs(p1, w2, dy), padding="same")
    for what, g, r, bd, t in zip("dx dw db".split(), got, want, bound, (1600, 9800, 9800)):
        assert_within(g, r, bd, t, f"conv2 {what}")
    x3 = rng.standard_normal((50, 3136)).astype(np.float32)
    w3 = (rng.standard_normal((3136, 1024)) * 0.02).astype(np.float32)
    b3 = np.full(1024, 0.1, np.float32)
    y3 = convcore.linear_forward(x3, w3, b3, relu=True)
    assert_within(y3, ref.linear_forward(*_64(x3, w3, b3), relu=True),
                  ref.linear_forward(*_abs(x3, w3, b3)), 3137, "dense1 y")
    dy3 = rng.standard_normal((50, 1024)).astype(np.float32)
    got = convcore.linear_backward(x3, w3, dy3, relu_y=y3)
    want = ref.linear_backward(*_64(x3, w3, dy3), relu_y=y3)
    bound = ref.linear_backward(*_abs(x3, w3, dy3))
    for what, g, r, bd, t in zip("dx dw db".split(), got, want, bound, (1024, 50, 50)):
        assert_within(g, r, bd, t, f"dense1 {what}")


@pytest.mark.parametrize("name, winograd", KERNELS)
def test_large_batch_several_items_per_slot_equals_reference(kernels, name, winograd):
    """More work items than gradient slots (150 > 64 or 32): slots accumulate items in order."""
    kernels(name, winograd)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((150, 12, 12, 16)).astype(np.float32)
    w = rng.standard_normal((3, 3, 16, 16)).astype(np.float32)
    dy = rng.standard_normal((150, 12, 12, 16)).astype(np.float32)
    got = convcore.conv2d_backward(x, w, dy, padding="same")
    want = ref.conv2d_backward(*_64(x, w, dy), padding="same")
    bound = ref.conv2d_backward(*_abs(x, w, dy), padding="same")
    for what, g, r, bd, t in zip("dx dw db".split(), got, want, bound, (144, 21600, 21600)):
        assert_within(g, r, bd, t, what)


@st.composite
def direct_cases(draw):
    """Convolutions in the direct kernels' domain (C_out a multiple of 16, 1 to 7
    channel blocks, so every tile width and remainder is used; C_in a multiple
    of 16 or not, stride 1 or more) with dense random data from a drawn seed."""
    n = draw(st.integers(0, 3))
    h, w_ = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    cin = draw(st.sampled_from([1, 2, 3, 16, 32]))
    cout = 16 * draw(st.integers(1, 7))
    pad = draw(padding_forms())
    kernel = []
    for axis, size in enumerate((h, w_)):
        p = 0 if pad in ("valid", "same") else (pad if isinstance(pad, int) else pad[axis])
        hi = size + 3 if pad == "same" else size + 2 * p
        kernel.append(draw(st.integers(1, min(hi, 6))))
    stride = draw(st.sampled_from([(1, 1), (1, 1), (2, 1), (1, 3), (2, 2)]))
    seed = draw(st.integers(0, 2**32 - 1))
    return (n, h, w_, cin), tuple(kernel), stride, pad, cout, seed


@pytest.mark.parametrize("vset", SETS)
@given(direct_cases(), st.booleans(), st.booleans())
def test_direct_kernels_equal_reference(vset, case, with_bias, relu):
    """Under set_kernels(vset, winograd=False, strict=True), every call below
    runs that set's direct convolution kernels (or raises): the input gradient
    where it applies (stride 1, C_in a multiple of 16), the weight gradient always."""
    shape, k, s, p, cout, seed = case
    need_dx = s == (1, 1) and shape[3] % 16 == 0
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    w = rng.uniform(-2, 2, (*k, shape[3], cout)).astype(np.float32)
    b = rng.uniform(-2, 2, cout).astype(np.float32) if with_bias else None
    with using_kernels(vset, winograd=False, strict=True):
        y = convcore.conv2d_forward(x, w, b, stride=s, padding=p, relu=relu)
        dy = rng.uniform(-2, 2, y.shape).astype(np.float32)
        relu_y = y if relu else None
        dx, dw, db = convcore.conv2d_backward(x, w, dy, stride=s, padding=p, need_dx=need_dx,
                                              relu_y=relu_y)
    x64, w64, b64, dy64 = _64(x, w, b, dy)
    want = ref.conv2d_forward(x64, w64, b64, stride=s, padding=p, relu=relu)
    bound = ref.conv2d_forward(*_abs(x, w, b), stride=s, padding=p)
    assert_within(y, want, bound, k[0] * k[1] * shape[3] + 1, "direct forward y")
    rdx, rdw, rdb = ref.conv2d_backward(x64, w64, dy64, stride=s, padding=p, relu_y=relu_y)
    bdx, bdw, bdb = ref.conv2d_backward(*_abs(x, w, dy), stride=s, padding=p)
    positions = shape[0] * y.shape[1] * y.shape[2]
    assert_within(dw, rdw, bdw, positions, "direct backward dw")
    assert_within(db, rdb, bdb, positions, "direct backward db")
    if need_dx:
        assert_within(dx, rdx, bdx, k[0] * k[1] * cout, "direct backward dx")
    else:
        assert dx is None


def window_pads(padding, r):
    """(top, left) padding of an r x r window at stride 1 (r odd), from any padding form."""
    if padding == "same":
        return (r - 1) // 2, (r - 1) // 2
    if padding == "valid":
        return 0, 0
    return (padding, padding) if isinstance(padding, int) else padding


@st.composite
def winograd_cases(draw):
    """Convolutions in Winograd's domain (5x5 or 3x3, stride 1, C_in and C_out
    multiples of 16: every tile width, odd and even output sizes, blocks of
    tiles with remainders, batches whose tiles fill the weight gradient's
    blocks across images) with data from a drawn seed and distribution:
    uniform, or magnitudes over six decades with random signs (cancellation)."""
    r = draw(st.sampled_from([5, 3]))
    pad = draw(padding_forms(max_pad=min(3, r - 1)))   # dx's padding r - 1 - pad >= 0
    top, left = window_pads(pad, r)
    h = draw(st.integers(max(1, r - 2 * top), 12))
    w_ = draw(st.integers(max(1, r - 2 * left), 12))
    shape = (draw(st.integers(0, 40)), h, w_, 16 * draw(st.integers(1, 3)))
    cout = 16 * draw(st.integers(1, 5))
    return r, shape, pad, cout, draw(st.integers(0, 2**32 - 1)), draw(st.booleans())


def _draw_values(rng, shape, wide):
    if not wide:
        return rng.uniform(-2, 2, shape).astype(np.float32)
    signs = rng.choice([-1.0, 1.0], shape)
    return (signs * 10.0 ** rng.uniform(-3, 3, shape)).astype(np.float32)


@pytest.mark.parametrize("vset", SETS)
@given(winograd_cases(), st.booleans(), st.booleans())
def test_winograd_equals_reference(vset, case, with_bias, relu):
    """Under set_kernels(vset, strict=True), 5x5 and 3x3 convolutions at stride 1
    run Winograd F(2x2, 5x5) and F(4x4, 3x3), forward, input and weight
    gradients, each within Winograd's own rounding bound (helpers.winograd_bound,
    winograd_dw_bound)."""
    r, shape, pad, cout, seed, wide = case
    rng = np.random.default_rng(seed)
    x = _draw_values(rng, shape, wide)
    w = _draw_values(rng, (r, r, shape[3], cout), wide)
    b = _draw_values(rng, cout, wide) if with_bias else None
    with using_kernels(vset, strict=True):
        y = convcore.conv2d_forward(x, w, b, padding=pad, relu=relu)
        dy = _draw_values(rng, y.shape, wide)
        relu_y = y if relu else None
        dx, dw, db = convcore.conv2d_backward(x, w, dy, padding=pad, relu_y=relu_y)
    x64, w64, b64, dy64 = _64(x, w, b, dy)
    top, left = window_pads(pad, r)
    _, oh, ow, _ = y.shape
    want = ref.conv2d_forward(x64, w64, b64, padding=pad, relu=relu)
    depth = shape[3] + 32   # the sum over C_in, plus the transforms' roundings
    assert_within(y, want, winograd_bound(x, w, b, top, left, oh, ow), depth, "winograd y")
    rdx, rdw, rdb = ref.conv2d_backward(x64, w64, dy64, padding=pad, relu_y=relu_y)
    bdx, bdw, bdb = ref.conv2d_backward(*_abs(x, w, dy), padding=pad)
    positions = shape[0] * oh * ow
    dy_masked = dy * (y > 0) if relu else dy
    bound = winograd_dw_bound(x, dy_masked, top, left, r)
    assert_within(dw, rdw, bound, positions + 32, "winograd dw")
    assert_within(db, rdb, bdb, positions, "winograd-path db")
    # dx = the convolution of dy, padded by r - 1 - top, r - 1 - left, with the
    # kernels flipped and their channel axes swapped
    wt = w[::-1, ::-1].transpose(0, 1, 3, 2)
    bound = winograd_bound(dy, wt, None, r - 1 - top, r - 1 - left, shape[1], shape[2])
    assert_within(dx, rdx, bound, cout + 32, "winograd dx")


@pytest.mark.parametrize("vset", SETS)
@pytest.mark.parametrize("r, cout, dw_tol", [(5, 64, 2e-5), (3, 32, 1e-5)])
def test_winograd_rounding_at_network_shapes(kernels, vset, r, cout, dw_tol):
    """The worst-case bounds above are loose (the transforms amplify |values|
    by up to 100 * 49), so also hold the typical error, on fixed data, at the
    tutorial's conv2 (5x5, 32 -> 64 channels) and a residual block's 3x3 (32 ->
    32) on 14 x 14 images, to what Winograd achieves: a maximum error within
    1e-5 of the largest entry, dw's within dw_tol (measured: F(2x2, 5x5) 3.6e-6
    forward and dx, 5.1e-6 dw; F(4x4, 3x3) 3.5e-6, 5.0e-6 and 3.3e-6; the direct
    sums: 0.3e-6 to 1.4e-6). A transform coefficient off by 1e-5 fails this."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((8, 14, 14, 32)).astype(np.float32)
    w = (rng.standard_normal((r, r, 32, cout)) * 0.1).astype(np.float32)
    dy = rng.standard_normal((8, 14, 14, cout)).astype(np.float32)
    kernels(vset, strict=True)
    with convcore.kernel_counts() as ran:
        y = convcore.conv2d_forward(x, w, padding="same")
        dx, dw, _ = convcore.conv2d_backward(x, w, dy, padding="same")
    assert ran[("conv2d_forward", "vector")] == 1 and ran[("conv2d_backward", "vector")] == 1
    want = ref.conv2d_forward(*_64(x, w), padding="same")
    want_dx, want_dw, _ = ref.conv2d_backward(*_64(x, w, dy), padding="same")
    for got, ref_, tol in ((y, want, 1e-5), (dx, want_dx, 1e-5), (dw, want_dw, dw_tol)):
        assert np.abs(got - ref_).max() <= tol * np.abs(ref_).max()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="reads Linux's /proc/cpuinfo")
def test_simd_supported_reports_what_the_cpu_has():
    """The sets reported are those the CPU's flags allow, best first (x86-64:
    AVX-512F and FMA, AVX2 and FMA; ARM64: NEON, which every ARM64 CPU has)."""
    flags, machine = set(cpu_flags()), platform.machine()
    want = []
    if machine == "x86_64":
        want += ["avx512"] if {"avx512f", "fma"} <= flags else []
        want += ["avx2"] if {"avx2", "fma"} <= flags else []
    elif machine == "aarch64":
        want = ["neon"]
    cap = os.environ.get("CONVCORE_MAX_ISA", "").lower()    # (CI runs a build with it)
    order = ["avx512", "avx2", "neon", "baseline"]
    if cap:
        want = [s for s in want if order.index(s) >= order.index(cap)]
    assert convcore.simd_supported() == tuple(want)


@pytest.mark.parametrize("cap", ["avx2", "AVX2", "baseline", "sse2"])
def test_convcore_max_isa_leaves_out_the_sets_above(cap):
    """CONVCORE_MAX_ISA=avx2: as on a CPU without AVX-512 (simd_supported()
    leaves AVX-512 out, and a convolution runs); =baseline: no vector set (a
    convolution runs on BLAS); a name it does not know: an error naming the
    variable."""
    code = ("import convcore, numpy as np; print(convcore.simd_supported()); "
            "convcore.set_kernels('auto'); x = np.ones((1, 5, 5, 16), np.float32); "
            "print(convcore.conv2d_forward(x, np.ones((3, 3, 16, 16), np.float32)).sum())")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "CONVCORE_MAX_ISA": cap})
    if cap == "sse2":
        assert run.returncode == 1
        assert ("ValueError: convcore: CONVCORE_MAX_ISA must be one of ('amx', "
                "'avx512_bf16', 'avx512', 'avx2', 'neon', 'baseline') (or unset), got 'sse2'"
                ) in run.stderr
        return
    assert run.returncode == 0, run.stderr
    order = ["avx512", "avx2", "neon", "baseline"]
    want = tuple(s for s in SETS if order.index(s) >= order.index(cap.lower()))
    assert run.stdout.split("\n")[:2] == [str(want), str(9 * 16 * 144.0)]   # 3x3 x 16 of 144


def test_set_kernels(kernels):
    kernels("blas")
    assert convcore.get_kernels() == "blas"
    with pytest.raises(ValueError, match="set_kernels: name must be one of"):
        convcore.set_kernels("fast")
    with pytest.raises(TypeError, match="set_kernels: winograd must be True or False, got 'no'"):
        convcore.set_kernels("auto", winograd="no")
    with pytest.raises(TypeError, match="set_kernels: strict must be True or False, got 1"):
        convcore.set_kernels("auto", strict=1)
    with pytest.raises(ValueError, match="strict=True needs a vector set or 'simd', got 'blas'"):
        convcore.set_kernels("blas", strict=True)
    for name in {"avx512", "avx2", "neon"} - set(SETS):
        with pytest.raises(ValueError, match=f"the '{name}' kernels need a CPU with .* "
                                             "\\(this one runs: "):
            convcore.set_kernels(name)
    if not SETS:
        with pytest.raises(ValueError, match="'simd' needs a vector kernel set"):
            convcore.set_kernels("simd")
    x, w = np.ones((1, 5, 5, 3), np.float32), np.ones((3, 3, 3, 16), np.float32)
    dy = convcore.conv2d_forward(x, w)
    for name, strict in [("simd", False)] * bool(SETS) + [(s, True) for s in SETS]:
        kernels(name, strict=strict)
        assert convcore.get_kernels() == name
        call = re.escape(f"set_kernels('{name}'{', strict=True' if strict else ''}) needs ")
        with pytest.raises(ValueError, match=f"conv2d_forward: {call}C_out a multiple of 16, "
                                             "got C_out = 8"):
            convcore.conv2d_forward(x, np.ones((3, 3, 3, 8), np.float32))
        with pytest.raises(ValueError, match=f"conv2d_backward: {call}C_in a multiple of 16"):
            convcore.conv2d_backward(x, w, dy)
        assert convcore.conv2d_backward(x, w, dy, need_dx=False)[0] is None
        with pytest.raises(ValueError, match=f"linear_forward: {call}D_out a multiple of 16, "
                                             "got D_out = 10"):
            convcore.linear_forward(np.ones((2, 3), np.float32), np.ones((3, 10), np.float32))
        with pytest.raises(ValueError, match="linear_forward: .* a batch of at most 256 for "
                                             "a dense layer, got N = 257"):
            convcore.linear_forward(np.ones((257, 3), np.float32), np.ones((3, 16), np.float32))
        with pytest.raises(ValueError, match="linear_backward: .* a batch of at most 96 for "
                                             "a dense layer, got N = 97"):
            convcore.linear_backward(np.ones((97, 3), np.float32), np.ones((3, 16), np.float32),
                                     np.ones((97, 16), np.float32))
    for name in ("auto", *SETS):   # not strict: BLAS where the vector kernels do not apply
        kernels(name)
        assert convcore.conv2d_backward(x, w, dy)[0].shape == x.shape
        assert convcore.linear_forward(np.ones((2, 3), np.float32),
                                       np.ones((3, 10), np.float32)).shape == (2, 10)


@cpu_lacks(len(SETS) < 2, "AVX-512", "the vector sets' agreement needs two of them")
@given(direct_cases(), st.booleans(), st.booleans(), st.booleans(), st.integers(0, 96))
def test_vector_sets_agree_bit_for_bit(case, with_bias, relu, winograd, n_dense):
    """The convolutions (direct and Winograd, forward and gradients) and the
    dense tiles of every set give the same bits: each lane runs the same
    chain of operations, whatever the vector width and the register tiles."""
    shape, k, s, p, cout, seed = case
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, shape).astype(np.float32)
    w = rng.uniform(-2, 2, (*k, shape[3], cout)).astype(np.float32)
    b = rng.uniform(-2, 2, cout).astype(np.float32) if with_bias else None
    xl = rng.uniform(-2, 2, (n_dense, 37)).astype(np.float32)
    wl = rng.uniform(-2, 2, (37, cout)).astype(np.float32)
    runs = []
    for vset in SETS:     # strict: each call runs the set's own kernel, or raises
        with using_kernels(vset, winograd=winograd, strict=True):
            y = convcore.conv2d_forward(x, w, b, stride=s, padding=p, relu=relu)
            dy = np.random.default_rng(seed).uniform(-2, 2, y.shape).astype(np.float32)
            yl = convcore.linear_forward(xl, wl, b, relu=relu)
            need_dx = s == (1, 1) and shape[3] % 16 == 0   # (where its vector kernel runs)
            runs.append([y, *convcore.conv2d_backward(x, w, dy, stride=s, padding=p,
                                                      need_dx=need_dx), yl,
                         *convcore.linear_backward(xl, wl, yl)])
    for other in runs[1:]:
        for a, b_ in zip(runs[0], other, strict=True):
            assert (a is None and b_ is None) or a.tobytes() == b_.tobytes()


@pytest.mark.parametrize("name, winograd", KERNELS)
def test_nan_and_inf_flow_through(kernels, name, winograd):
    kernels(name, winograd)
    x = np.zeros((1, 4, 4, 1), np.float32)
    x[0, 0, 0, 0] = np.nan
    x[0, 3, 3, 0] = np.inf
    y, am = convcore.maxpool2d_forward(x, 2)
    assert np.isnan(y[0, 0, 0, 0]) and am[0, 0, 0, 0] == 0
    assert y[0, 1, 1, 0] == np.inf and am[0, 1, 1, 0] == 15
    w = np.ones((2, 2, 1, 16), np.float32)
    for relu in (False, True):   # max(NaN, 0) stays NaN, as in the reference
        yc = convcore.conv2d_forward(x, w, relu=relu)
        assert np.isnan(yc[0, 0, 0]).all() and np.isinf(yc[0, 2, 2]).all()
        assert (yc[0, 1, 1] == 0).all()
    # 5x5 at stride 1, 16 channels: Winograd under ("simd", True). A non-finite
    # input reaches every output whose window holds it (Winograd's transforms
    # also spread it over the rest of those outputs' 2x2 tiles: a superset),
    # and outputs whose tiles never see it stay finite.
    x = np.ones((1, 12, 12, 16), np.float32)
    x[0, 5, 6, 3] = np.nan
    x[0, 10, 1, 0] = np.inf
    y = convcore.conv2d_forward(x, np.ones((5, 5, 16, 16), np.float32), padding="same")
    assert np.isnan(y[0, 3:8, 4:9]).all()
    assert (~np.isfinite(y[0, 8:12, 0:4])).all()
    assert np.isfinite(y[0, :2]).all() and np.isfinite(y[0, :, 10:]).all()


@given(st.data(), st.integers(1, 300), st.floats(1e-5, 1e-1), st.integers(1, 50))
def test_adam_update_equals_reference(data, n, lr, t):
    p, g = data.draw(f32((n,))), data.draw(f32((n,)))
    m, v = data.draw(f32((n,))), data.draw(f32((n,), 0, 2))
    lr_t = lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    want = [a.astype(np.float64) for a in (p, g, m, v)]
    ref.adam_update(*want, lr_t)
    convcore.adam_update(p, g, m, v, lr_t)
    for got, w, name in zip((p, m, v), (want[0], want[2], want[3]), "pmv"):
        np.testing.assert_allclose(got, w, rtol=1e-5, atol=1e-6, err_msg=name)


@given(st.data(), st.integers(1, 300), st.floats(1e-5, 1e-1), st.integers(1, 2))
def test_adam_update_is_the_float32_twin_on_every_kernel_set(data, n, lr_t, threads):
    """Each kernel set's Adam (_adam.h, vectorised for the set) gives the bits
    of the same operations in float32, one rounding each, never a fused
    multiply-add: the NumPy twin below; 1 to 300 parameters (whole vectors
    and a remainder), with NaN, infinities and -0 among them."""
    from convcore import _isa, _optim
    arrays = [data.draw(f32((n,), lo, hi)) for lo, hi in ((-2, 2), (-2, 2), (-2, 2), (0, 2))]
    arrays[data.draw(st.integers(0, 3))][data.draw(st.integers(0, n - 1))] = data.draw(
        st.sampled_from([np.nan, np.inf, -np.inf, -0.0, 1e30]))
    p, g, m, v = (a.copy() for a in arrays)
    f = np.float32
    a1, a2, lr = f(1.0 - 0.9), f(1.0 - 0.999), f(lr_t)
    with np.errstate(all="ignore"):
        m += (g - m) * a1
        v += (g * g - v) * a2
        p -= lr * m / (np.sqrt(v) + f(1e-8))
    want = b"".join(a.tobytes() for a in (p, m, v))
    for name in ("baseline", *convcore.simd_supported()):
        p, g, m, v = (a.copy() for a in arrays)
        _optim.adam_update(p, g, m, v, lr_t, 0.9, 0.999, 1e-8, 0.0, threads, _isa.SETS[name])
        assert b"".join(a.tobytes() for a in (p, m, v)) == want, name


@given(st.data(), st.integers(1, 300), st.floats(1e-4, 1.0), st.sampled_from([0.0, 0.9]))
def test_sgd_update_equals_reference(data, n, lr, momentum):
    p, g, buf = data.draw(f32((n,))), data.draw(f32((n,))), data.draw(f32((n,)))
    want = [a.astype(np.float64) for a in (p, g, buf)]
    ref.sgd_update(*want, lr, momentum)
    convcore.sgd_update(p, g, buf, lr, momentum)
    np.testing.assert_allclose(p, want[0], rtol=1e-5, atol=1e-6)
    if momentum:
        np.testing.assert_allclose(buf, want[2], rtol=1e-5, atol=1e-6)


@given(st.integers(0, 120), st.integers(1, 300), st.sampled_from([10, 16, 48, 80]),
       st.booleans(), st.booleans(), st.booleans(), st.integers(0, 2**32 - 1))
def test_linear_backward_adam_equals_the_separate_calls(n, d_in, d_out, with_bias, relu,
                                                        need_dx, seed):
    """The fused dense backward + Adam gives the same bits as linear_backward and
    two adam_update calls, on the simd path (D_out 16k, N <= 96) and off it."""
    rng = np.random.default_rng(seed)
    x, w, dy, yr = (rng.uniform(-2, 2, s).astype(np.float32)
                    for s in ((n, d_in), (d_in, d_out), (n, d_out), (n, d_out)))
    relu_y = yr if relu else None
    b = rng.uniform(-1, 1, d_out).astype(np.float32) if with_bias else None
    state = [rng.uniform(0, 1, a.shape).astype(np.float32) for a in (w, w, w[0], w[0])]
    w2, b2 = w.copy(), None if b is None else b.copy()
    state2 = [a.copy() for a in state]
    dx = convcore.linear_backward_adam(x, w, dy, b, *state, 1e-3, need_dx=need_dx,
                                       relu_y=relu_y)
    dx2, dw, db = convcore.linear_backward(x, w2, dy, need_dx=need_dx, relu_y=relu_y)
    convcore.adam_update(w2, dw, state2[0], state2[1], 1e-3)
    if b is not None:
        convcore.adam_update(b2, db, state2[2], state2[3], 1e-3)
        assert b.tobytes() == b2.tobytes()
        assert state[2].tobytes() == state2[2].tobytes()
        assert state[3].tobytes() == state2[3].tobytes()
    assert w.tobytes() == w2.tobytes()
    assert state[0].tobytes() == state2[0].tobytes()
    assert state[1].tobytes() == state2[1].tobytes()
    assert (dx is None) == (not need_dx)
    if need_dx:
        assert dx.tobytes() == dx2.tobytes()


@given(st.data(), windows(pool=True))
def test_avgpool2d_equals_reference(data, win):
    """Forward and backward, padding not counted in a window's mean."""
    shape, k, s, p = win
    x = data.draw(f32(shape))
    y = convcore.avgpool2d_forward(x, k, s, p)
    ry = ref.avgpool2d_forward(*_64(x), k, s, p)
    terms = k[0] * k[1]
    assert_within(y, ry, ref.avgpool2d_forward(*_abs(x), k, s, p), terms, "avgpool forward")
    dy = data.draw(f32(y.shape))
    dx = convcore.avgpool2d_backward(dy, shape, k, s, p)
    rdx = ref.avgpool2d_backward(*_64(dy), shape, k, s, p)
    assert_within(dx, rdx, ref.avgpool2d_backward(*_abs(dy), shape, k, s, p), terms,
                  "avgpool backward")


def test_global_average_pool_is_the_mean_of_each_image():
    x = np.random.default_rng(3).standard_normal((5, 7, 9, 6)).astype(np.float32)
    y = convcore.avgpool2d_forward(x, (7, 9), padding="valid")
    assert y.shape == (5, 1, 1, 6)
    np.testing.assert_allclose(y[:, 0, 0], x.mean(axis=(1, 2)), rtol=1e-5, atol=1e-6)


SPECIAL = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, 1e-45, -1e-45, 1.0, -1.0], np.float32)


@given(st.data(), st.booleans())
def test_add_equals_reference_and_numpy_bits(data, relu):
    """The residual add (and its ReLU) against the reference, and bit for bit
    the NumPy expressions it replaces (a + b, maximum(., 0), dy * (y > 0)),
    signed zeros, NaN and infinities included; shapes of any rank, empty ones
    too, and more entries than one work item (16384)."""
    shape = data.draw(st.sampled_from([(), (0,), (7,), (3, 5), (2, 3, 4, 5), (5, 81, 41)]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    a, b, dy = (rng.uniform(-3, 3, shape).astype(np.float32) for _ in range(3))
    for arr in (a, b, dy):   # special values in random places, a tenth of the entries
        flat = arr.reshape(-1)
        where = rng.random(flat.size) < 0.1
        flat[where] = rng.choice(SPECIAL, int(where.sum()))
    y = convcore.add_forward(a, b, relu)
    with np.errstate(all="ignore"):
        want = np.maximum(a + b, np.float32(0)) if relu else a + b
        ry = ref.add_forward(*_64(a, b), relu)
        dx = convcore.add_backward(dy, relu_y=y)
        want_dx = np.multiply(dy, y > 0, dtype=np.float32)
    assert y.shape == shape and y.tobytes() == want.tobytes()
    finite = np.isfinite(ry)
    np.testing.assert_allclose(y[finite], ry[finite], rtol=6e-8, atol=0)
    assert np.array_equal(np.isnan(y), np.isnan(ry))
    assert dx.tobytes() == want_dx.tobytes()
    assert convcore.add_backward(dy) is dy   # no ReLU: the gradient is dy itself
    out = np.full(shape, np.float32(7))
    assert convcore.add_forward(a, b, relu, out=out) is out and out.tobytes() == y.tobytes()
    _add_in_bits(a, b, y, dy, dx, relu)


def _add_in_bits(a, b, y, dy, dx, relu):
    """add_forward's out_bf16: the bits of round_bf16(y), on the compiler's
    vectors and (a CPU with the bf16 kernels) AVX-512's, and add_backward's
    mask read from them the same as from y; float32 y where a positive sum
    rounds to +0 (its mask would be lost: with relu only)."""
    from convcore import _add
    lost = int(((y > 0) & (ref.narrow_bits(y) == 0)).sum())
    for wide in (False, True) if convcore.bf16_supported() else (False,):
        bits = np.empty(y.shape, np.uint16)
        assert _add.add_forward_bits(a.reshape(-1), b.reshape(-1), bits.reshape(-1), relu, 1,
                                     wide) == lost
        assert bits.tobytes() == ref.narrow_bits(y).tobytes()
    got = convcore.add_forward(a, b, relu, out_bf16=True)
    with np.errstate(all="ignore"):
        twin = ref.add_forward(a, b, relu, out_bf16=True)     # the reference's rule
        twin_dx = ref.add_backward(dy, relu_y=twin) if relu else None
    assert twin.dtype == got.dtype and twin.tobytes() == got.tobytes()
    if relu and lost:
        assert got.dtype == np.float32 and got.tobytes() == y.tobytes()
        return
    assert got.dtype == np.uint16 and got.tobytes() == ref.narrow_bits(y).tobytes()
    if relu:
        assert convcore.add_backward(dy, relu_y=got).tobytes() == dx.tobytes() \
            == twin_dx.tobytes()


def test_add_of_every_pair_of_special_values_matches_numpy():
    """-0 + -0 (whose ReLU NumPy makes +0), NaN, infinities, subnormals: every
    pair; the backward's ReLU mask read from bfloat16 bits too."""
    a, b = (v.astype(np.float32).reshape(-1) for v in np.meshgrid(SPECIAL, SPECIAL))
    with np.errstate(all="ignore"):
        for relu in (False, True):
            want = np.maximum(a + b, np.float32(0)) if relu else a + b
            assert convcore.add_forward(a, b, relu).tobytes() == want.tobytes(), relu
        assert convcore.add_backward(a, relu_y=b).tobytes() == \
            np.multiply(a, b > 0, dtype=np.float32).tobytes()
        bits = ref.narrow_bits(b)     # the mask read from bfloat16 bits: where b rounds to
        kept = b != np.float32(1e-45)   # +0 (the smallest subnormal), it is lost
        assert convcore.add_backward(a[kept], relu_y=bits[kept]).tobytes() == \
            np.multiply(a[kept], b[kept] > 0, dtype=np.float32).tobytes()


def _bn_case(data, max_hw=9):
    n = data.draw(st.integers(1, 4))
    h, w = data.draw(st.integers(1, max_hw)), data.draw(st.integers(1, max_hw))
    assume(n * h * w >= 2)
    c = data.draw(st.integers(1, 40))
    x = data.draw(f32((n, h, w, c), -3, 3)) + np.float32(data.draw(st.floats(-5, 5)))
    gamma, beta = data.draw(f32((c,))), data.draw(f32((c,)))
    return x, gamma, beta


def _close(got, want, what, rtol=2e-4, atol=2e-4):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=rtol, atol=atol,
                               err_msg=what)


@given(st.data(), st.booleans(), st.sampled_from([1e-5, 1e-3]))
def test_batchnorm_equals_reference(data, relu, eps):
    """Training forward (batch statistics), backward, and inference on the
    statistics the forward returned (the same output)."""
    x, gamma, beta = _bn_case(data)
    y, mean, var = convcore.batchnorm_forward(x, gamma, beta, eps, relu)
    ry, rmean, rvar = ref.batchnorm_forward(*_64(x, gamma, beta), eps, relu)
    scale = 1 + np.abs(x).max() + np.abs(rmean).max()
    _close(mean, rmean, "mean", atol=1e-6 * scale)
    _close(var, rvar, "var", atol=1e-6 * scale ** 2)
    _close(y, ry, "y", atol=2e-4 * (1 + np.abs(ry).max()))
    assert convcore.batchnorm_inference(x, gamma, beta, mean, var, eps, relu).tobytes() == \
        y.tobytes()
    dy = data.draw(f32(x.shape))
    got = convcore.batchnorm_backward(x, gamma, mean, var, dy, eps,
                                      relu_beta=beta if relu else None)
    want = ref.batchnorm_backward(*_64(x, gamma, mean, var, dy), eps,
                                  relu_beta=beta if relu else None)   # the same ReLU mask
    if relu:    # made again from x: the bits of dy taken through the forward's y > 0
        plain = convcore.batchnorm_backward(x, gamma, mean, var, np.where(y > 0, dy, 0), eps)
        assert [a.tobytes() for a in got] == [a.tobytes() for a in plain]
    m = x.shape[0] * x.shape[1] * x.shape[2]
    for g, w, name in zip(got, want, ("dx", "dgamma", "dbeta")):
        # dx divides by sqrt(var + eps): its error grows with 1 / sqrt(eps)
        bound = 1e-5 * m * (1 + np.abs(w).max()) * (1 + np.abs(gamma).max() / np.sqrt(
            rvar.min() + eps) * 1e-2)
        _close(g, w, name, rtol=1e-3, atol=bound)


@given(st.data(), st.booleans(), st.integers(1, 2))
def test_batchnorm_is_the_same_bits_on_every_kernel_set(data, relu, threads):
    """The passes over the rows (_norm_kernels.h) on the baseline and each
    vector set: the same bits (no fused multiply-adds; whole vectors of 4, 8
    or 16 channels in groups of one to four, the channels past the last
    whole vector one at a time), NaN, infinities and -0 among x; where the
    output is asked in bfloat16, its bits are those of round_bf16(y)."""
    from convcore import _isa, _norm
    n, h, w = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 7)), data.draw(
        st.integers(2, 7))
    c = data.draw(st.integers(1, 80))
    x = data.draw(f32((n, h, w, c), -3, 3))
    x.reshape(-1)[data.draw(st.integers(0, x.size - 1))] = data.draw(
        st.sampled_from([np.nan, np.inf, -0.0, 1e30]))
    gamma, beta, dy = data.draw(f32((c,))), data.draw(f32((c,))), data.draw(f32(x.shape))
    rows, d = x.reshape(-1, c), dy.reshape(-1, c)
    results = {}
    for name in ("baseline", *convcore.simd_supported()):
        k = _isa.SETS[name]
        y, mean, var = (np.empty_like(rows), np.empty(c, np.float32), np.empty(c, np.float32))
        _norm.batchnorm_forward(rows, gamma, beta, 1e-5, relu, y, mean, var, threads, k)
        yi = np.empty_like(rows)
        _norm.batchnorm_inference(rows, mean, gamma, beta, relu, yi, threads, k)
        bits = (np.empty(rows.shape, np.uint16), np.empty(rows.shape, np.uint16))
        _norm.batchnorm_forward(rows, gamma, beta, 1e-5, relu, None, *np.empty((2, c), np.float32),
                                threads, k, bits[0])
        _norm.batchnorm_inference(rows, mean, gamma, beta, relu, None, threads, k, bits[1])
        assert bits[0].tobytes() == ref.narrow_bits(y).tobytes(), name
        assert bits[1].tobytes() == ref.narrow_bits(yi).tobytes(), name
        dxb = np.empty(rows.shape, np.uint16)
        _norm.batchnorm_backward(rows, gamma, mean, var, 1e-5, d, beta if relu else None, None,
                                 *np.empty((2, c), np.float32), threads, k, None, dxb)
        dx, dgamma, dbeta = np.empty_like(rows), np.empty(c, np.float32), np.empty(c, np.float32)
        _norm.batchnorm_backward(rows, gamma, mean, var, 1e-5, d, beta if relu else None, dx,
                                 dgamma, dbeta, threads, k)
        assert dxb.tobytes() == ref.narrow_bits(dx).tobytes(), name
        results[name] = b"".join(a.tobytes() for a in (y, mean, var, yi, dx, dgamma, dbeta))
        if relu:    # the mask made again: the bits of dy taken through y > 0
            masked = (np.empty_like(rows), np.empty(c, np.float32), np.empty(c, np.float32))
            _norm.batchnorm_backward(rows, gamma, mean, var, 1e-5, np.where(y > 0, d, 0),
                                     None, *masked, threads, k)
            assert b"".join(a.tobytes() for a in masked) == \
                b"".join(a.tobytes() for a in (dx, dgamma, dbeta)), name
    assert len(set(results.values())) == 1, {k: hash(v) for k, v in results.items()}


def test_batchnorm_of_a_constant_channel_gives_beta():
    """A channel whose values are all equal has mean that value and variance 0
    exactly (the sums are centred on the first row), so y = beta: a mean off
    by an ulp would be multiplied by gamma / sqrt(eps), hundreds of times."""
    x = np.full((1, 6, 7, 35), 4.123457, np.float32)
    x[..., 1] = 1e4 / 3
    gamma, beta = np.full(35, 2, np.float32), np.full(35, 0.4102787, np.float32)
    y, mean, var = convcore.batchnorm_forward(x, gamma, beta)
    assert (y == beta).all() and (var == 0).all() and (mean == x[0, 0, 0]).all()


@given(st.data(), st.integers(1, 9), st.integers(1, 9), st.integers(1, 3),
       st.sampled_from([np.uint8, np.float32]), st.booleans(), st.booleans())
def test_gather_batch_equals_reference(data, h, w, c, dtype, shifted, flipped):
    """A batch gathered, moved (shifts past the image's edge included: all
    zeros), mirrored and scaled: exactly the reference's (one read and one
    division per entry)."""
    n = data.draw(st.integers(1, 6))
    b = data.draw(st.integers(0, 12))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    x = (rng.integers(0, 256, (n, h, w, c)) if dtype == np.uint8
         else rng.standard_normal((n, h, w, c))).astype(dtype)
    rows = rng.integers(0, n, b)
    shift = rng.integers(-max(h, w) - 1, max(h, w) + 2, (b, 2)) if shifted else None
    flip = rng.random(b) < 0.5 if flipped else None
    divisor = data.draw(st.sampled_from([1.0, 255.0, 3.0]))
    got = convcore.gather_batch(x, rows, shift, flip, divisor)
    assert got.dtype == np.float32 and got.shape == (b, h, w, c)
    np.testing.assert_array_equal(got, ref.gather_batch(x, rows, shift, flip, divisor))


def test_gather_batch_moves_and_mirrors_as_documented():
    """out[h, w] = x[h + dy, v + dx], v = W-1-w where mirrored: on a 3x4 image."""
    x = np.arange(1, 13, dtype=np.uint8).reshape(1, 3, 4, 1)
    out = convcore.gather_batch(x, np.array([0, 0, 0]), np.array([[1, -1], [0, 0], [0, 1]]),
                                np.array([False, True, True]))[..., 0]
    np.testing.assert_array_equal(out[0], [[0, 5, 6, 7], [0, 9, 10, 11], [0, 0, 0, 0]])
    np.testing.assert_array_equal(out[1], x[0, :, ::-1, 0])
    np.testing.assert_array_equal(out[2], [[0, 4, 3, 2], [0, 8, 7, 6], [0, 12, 11, 10]])
