"""convcore.reference checked against central finite differences in float64.

Each check differentiates the scalar L = sum(forward(...) * r) for a random r,
whose gradients are exactly what the backward functions return for dy = r.
"""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import convcore.reference as ref

import helpers
from helpers import windows


def f64(shape):
    return arrays(np.float64, shape, elements=st.floats(-1, 1))


def numeric_grad(f, a, eps=1e-6):
    return helpers.numeric_grad(f, a, eps)


@settings(max_examples=25)
@given(st.data(), windows(max_hw=5, max_c=2, max_n=2), st.integers(1, 3))
def test_conv2d_backward_matches_finite_differences(data, win, cout):
    shape, k, s, p = win
    x = data.draw(f64(shape))
    w = data.draw(f64((*k, shape[3], cout)))
    b = data.draw(f64((cout,)))
    r = data.draw(f64(ref.conv2d_forward(x, w, b, s, p).shape))

    def loss():
        return np.sum(ref.conv2d_forward(x, w, b, s, p) * r)

    dx, dw, db = ref.conv2d_backward(x, w, r, s, p)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), atol=1e-6)
    np.testing.assert_allclose(dw, numeric_grad(loss, w), atol=1e-6)
    np.testing.assert_allclose(db, numeric_grad(loss, b), atol=1e-6)


@settings(max_examples=25)
@given(st.data(), windows(max_hw=6, max_c=2, max_n=2, pool=True))
def test_maxpool2d_backward_matches_finite_differences(data, win):
    shape, k, s, p = win
    # distinct values a step apart: no ties, so the max is differentiable
    size = int(np.prod(shape))
    x = data.draw(st.permutations(range(size)))
    x = np.asarray(x, np.float64).reshape(shape) * 0.01
    y, am = ref.maxpool2d_forward(x, k, s, p)
    r = data.draw(f64(y.shape))
    dx = ref.maxpool2d_backward(r, am, shape, k, s, p)
    np.testing.assert_allclose(
        dx, numeric_grad(lambda: np.sum(ref.maxpool2d_forward(x, k, s, p)[0] * r), x, 1e-4),
        atol=1e-8)


@settings(max_examples=25)
@given(st.data(), st.integers(0, 4), st.integers(1, 5), st.integers(1, 5))
def test_linear_backward_matches_finite_differences(data, n, d_in, d_out):
    x, w, b = data.draw(f64((n, d_in))), data.draw(f64((d_in, d_out))), data.draw(f64((d_out,)))
    r = data.draw(f64((n, d_out)))

    def loss():
        return np.sum(ref.linear_forward(x, w, b) * r)

    dx, dw, db = ref.linear_backward(x, w, r)
    for analytic, a in ((dx, x), (dw, w), (db, b)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, a), atol=1e-6)


@given(st.data(), windows(max_hw=6, max_c=2, max_n=2))
def test_reference_same_padding_is_tensorflows(data, win):
    """'same' keeps ceil(in / stride) outputs, 'valid' floor((in - k) / stride) + 1."""
    shape, k, s, _ = win
    x = np.zeros(shape)
    same = ref.im2col(x, k, s, "same").shape
    assert same[1:3] == (-(-shape[1] // s[0]), -(-shape[2] // s[1]))
    if shape[1] >= k[0] and shape[2] >= k[1]:
        valid = ref.im2col(x, k, s, "valid").shape
        assert valid[1:3] == ((shape[1] - k[0]) // s[0] + 1, (shape[2] - k[1]) // s[1] + 1)


def test_reference_im2col_matches_the_seeds_loop():
    """The seed's get_image_section loop, rows ordered (kh, kw, C), valid positions."""
    rng = np.random.default_rng(1)
    x = rng.random((2, 6, 7, 1))
    kr, kc = 3, 2
    sects = []
    for row in range(x.shape[1] - kr + 1):
        for col in range(x.shape[2] - kc + 1):
            sects.append(x[:, row:row + kr, col:col + kc].reshape(2, 1, -1))
    expected = np.concatenate(sects, axis=1).reshape(2, 4, 6, kr * kc)
    np.testing.assert_array_equal(ref.im2col(x, (kr, kc)), expected)


@settings(max_examples=25)
@given(st.data(), windows(max_hw=6, max_c=2, max_n=2, pool=True))
def test_avgpool2d_backward_matches_finite_differences(data, win):
    shape, k, s, p = win
    x = data.draw(f64(shape))
    r = data.draw(f64(ref.avgpool2d_forward(x, k, s, p).shape))
    dx = ref.avgpool2d_backward(r, shape, k, s, p)
    np.testing.assert_allclose(
        dx, numeric_grad(lambda: np.sum(ref.avgpool2d_forward(x, k, s, p) * r), x), atol=1e-7)


@settings(max_examples=25)
@given(st.data(), st.integers(1, 3), st.integers(1, 3), st.integers(1, 3), st.booleans())
def test_batchnorm_backward_matches_finite_differences(data, n, hw, c, relu):
    x = data.draw(f64((n, hw, 2, c)))
    gamma, beta = data.draw(f64((c,))), data.draw(f64((c,)))
    x = x + np.linspace(0, 1, x.size).reshape(x.shape)   # no channel of equal values
    y, mean, var = ref.batchnorm_forward(x, gamma, beta, 1e-3, relu)
    if relu:   # keep away from the ReLU's kink, where the derivative is undefined
        from hypothesis import assume
        assume(np.abs(y[y > 0]).min(initial=1) > 1e-3 and np.abs(
            ref.batchnorm_forward(x, gamma, beta, 1e-3)[0]).min() > 1e-3)
    r = data.draw(f64(y.shape))

    def loss():
        return np.sum(ref.batchnorm_forward(x, gamma, beta, 1e-3, relu)[0] * r)

    dx, dgamma, dbeta = ref.batchnorm_backward(x, gamma, mean, var, r, 1e-3,
                                               relu_beta=beta if relu else None)
    np.testing.assert_allclose(dx, numeric_grad(loss, x), atol=1e-5)
    np.testing.assert_allclose(dgamma, numeric_grad(loss, gamma), atol=1e-5)
    np.testing.assert_allclose(dbeta, numeric_grad(loss, beta), atol=1e-5)
