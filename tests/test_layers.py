"""pyconv layers: gradients against finite differences, loss and optimiser maths."""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import convcore
import pyconv
from pyconv.fusion import FUSIONS
from pyconv.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Tanh
from pyconv.losses import softmax_cross_entropy
from pyconv.models import tutorial_cnn

import helpers
from conftest import cpu_lacks

# Each vector set this CPU runs: the fused kernels run only in them (under BLAS
# a fused function is its two separate calls, and comparing them proves nothing)
VECTOR_SETS = list(convcore.simd_supported())
needs_vector_set = cpu_lacks(not VECTOR_SETS, "AVX2, AVX-512 or NEON",
                             "the fused kernels run only in a vector set")


def numeric_grad(f, a, eps=1e-3):
    return helpers.numeric_grad(f, a, eps)


def check_layer(layer, x, rng, rtol=2e-2, atol=2e-3):
    """backward(r) == d sum(forward(x) * r) / d(x, params) (Chainer's check_backward)."""
    y, ctx = layer.forward(x, training=True)
    r = rng.standard_normal(y.shape).astype(np.float32)
    dx = layer.backward(ctx, r)

    def loss():
        return float(np.sum(layer.forward(x, training=True)[0].astype(np.float64) * r))

    if dx is not None:
        np.testing.assert_allclose(dx, numeric_grad(loss, x), rtol=rtol, atol=atol)
    for name, p in layer.params.items():
        layer.backward(layer.forward(x, training=True)[1], r)
        analytic = p.grad.copy()
        np.testing.assert_allclose(analytic, numeric_grad(loss, p.value), rtol=rtol, atol=atol,
                                   err_msg=name)


@pytest.mark.parametrize("padding,stride,activation", [("same", 1, "relu"), ("valid", 2, None),
                                                        (1, (2, 1), None)])
def test_conv2d_gradients(padding, stride, activation):
    rng = np.random.default_rng(0)
    layer = Conv2D(3, 3, stride=stride, padding=padding, activation=activation)
    layer.build((5, 6, 2), rng)
    # pre-activations |conv| < 1.5 here: biases of +-3 keep every one far from the
    # ReLU's kink (one channel always on, one always off) for the finite differences
    layer.params["b"].value[...] = [3, -3, 3]
    check_layer(layer, rng.standard_normal((2, 5, 6, 2)).astype(np.float32), rng)


@pytest.mark.parametrize("activation", [None, "relu"])
def test_dense_gradients(activation):
    rng = np.random.default_rng(1)
    layer = Dense(4, activation=activation)
    layer.build((6,), rng)
    check_layer(layer, rng.standard_normal((3, 6)).astype(np.float32), rng)


def test_maxpool_relu_tanh_flatten_gradients():
    rng = np.random.default_rng(2)
    # values well apart, so that no finite-difference step crosses a kink
    x = (rng.permutation(2 * 6 * 6 * 2).reshape(2, 6, 6, 2) * 0.1 - 3.55).astype(np.float32)
    for layer in (MaxPool2D(2), MaxPool2D(3, stride=2, padding="same"), ReLU(), Tanh(),
                  Flatten()):
        check_layer(layer, x.copy(), rng)


def test_dropout_is_identity_at_inference_and_scales_in_training():
    layer = Dropout(0.5)
    layer.rng = np.random.default_rng(0)
    x = np.ones((200, 100), np.float32)
    np.testing.assert_array_equal(layer.forward(x, training=False)[0], x)
    y, ctx = layer.forward(x, training=True)
    assert set(np.unique(y)) == {0.0, 2.0}
    assert abs(y.mean() - 1.0) < 0.05
    np.testing.assert_array_equal(layer.backward(ctx, x), y)   # same mask on the way back
    assert not np.array_equal(layer.forward(x, training=True)[0], y)   # a new mask each step
    with pytest.raises(ValueError, match="rate"):
        Dropout(1.0)


def test_softmax_cross_entropy_value_and_gradient():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((5, 4)).astype(np.float32) * 3
    labels = np.array([0, 3, 1, 1, 2])
    loss, grad = softmax_cross_entropy(logits, labels)
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), labels])), rel=1e-5)
    g = numeric_grad(lambda: softmax_cross_entropy(logits, labels)[0], logits, eps=1e-3)
    np.testing.assert_allclose(grad, g, atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        softmax_cross_entropy(logits, np.array([0, 1, 2, 3, 4]))


def test_whole_model_gradient():
    """Sequential.backward through conv, pool, flatten, dense against the loss."""
    rng = np.random.default_rng(4)
    model = pyconv.Sequential([Conv2D(2, 3, activation="relu"), MaxPool2D(2), Flatten(),
                               Dense(3)], input_shape=(6, 6, 1), seed=4)
    model.layers[0].params["b"].value[...] = [2, -2]     # far from the ReLU kink
    x = rng.random((2, 6, 6, 1), dtype=np.float32)
    y = np.array([0, 2])
    logits, tape = model.forward(x, True)
    _, d = softmax_cross_entropy(logits, y)
    model.backward(tape, d)
    for layer in (model.layers[0], model.layers[3]):
        for name, p in layer.params.items():
            analytic = p.grad.copy()
            g = numeric_grad(lambda: softmax_cross_entropy(model.forward(x, True)[0], y)[0],
                             p.value, eps=1e-3)
            np.testing.assert_allclose(analytic, g, rtol=2e-2, atol=2e-3, err_msg=name)


def test_adam_matches_tensorflows_update():
    p = pyconv.layers.Parameter("p", np.array([1.0, -2.0, 0.5], np.float32))
    opt = pyconv.optim.Adam([p], lr=0.1)
    m = np.zeros(3)
    v = np.zeros(3)
    want = p.value.astype(np.float64)
    for t, g in enumerate(([0.5, -1.0, 2.0], [0.1, 0.2, -0.3], [1.0, 1.0, 1.0]), start=1):
        g = np.array(g)
        p.grad[...] = g
        opt.step()
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        lr_t = 0.1 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
        want -= lr_t * m / (np.sqrt(v) + 1e-8)
        np.testing.assert_allclose(p.value, want, rtol=1e-5)


def test_sgd_momentum():
    p = pyconv.layers.Parameter("p", np.array([1.0], np.float32))
    opt = pyconv.optim.SGD([p], lr=0.5, momentum=0.9)
    p.grad[...] = 1.0
    opt.step()
    opt.step()
    assert p.value[0] == pytest.approx(1.0 - 0.5 * 1.0 - 0.5 * 1.9)


def test_initialisers():
    rng = np.random.default_rng(0)
    t = pyconv.init.truncated_normal((200, 300), rng, stddev=0.1)
    assert t.dtype == np.float32 and np.abs(t).max() <= 0.2 and abs(t.std() - 0.088) < 0.005
    g = pyconv.init.glorot_uniform((100, 50), rng)
    assert np.abs(g).max() <= np.sqrt(6 / 150)
    h = pyconv.init.he_normal((3, 3, 16, 32), rng)
    assert abs(h.std() - np.sqrt(2 / 144)) < 0.01
    assert (pyconv.init.constant((4,), value=0.1) == np.float32(0.1)).all()


def test_tutorial_cnn_is_the_seeds_network():
    model = pyconv.models.tutorial_cnn(seed=0)
    shapes = [p.value.shape for p in model.parameters()]
    assert shapes == [(5, 5, 1, 32), (32,), (5, 5, 32, 64), (64,), (3136, 1024), (1024,),
                      (1024, 10), (10,)]
    assert sum(p.value.size for p in model.parameters()) == 3274634
    assert all((p.value == np.float32(0.1)).all() for p in model.parameters() if p.name == "b")
    w = model.parameters()[4].value
    assert np.abs(w).max() <= 0.2 and abs(w.std() - 0.088) < 0.002
    x = np.zeros((3, 28, 28, 1), np.float32)
    assert model.predict(x).shape == (3, 10)


@pytest.mark.parametrize("name", ["tutorial", "grokking"])
def test_predict_on_no_images_gives_no_rows(name):
    """No images in: (0, classes) out, and accuracy 0.0, not an error."""
    model = pyconv.models.MODELS[name](seed=0)
    x = np.zeros((0, 28, 28, 1), np.float32)
    assert model.predict(x).shape == (0, 10)
    assert model.accuracy(x, np.zeros(0, np.int64)) == 0.0


def test_train_step_learns_a_batch():
    rng = np.random.default_rng(0)
    model = pyconv.models.grokking_cnn(seed=0)
    opt = pyconv.optim.SGD(model.parameters(), lr=0.05)
    x = rng.random((20, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    first = model.train_step(x, y, opt)
    for _ in range(30):
        last = model.train_step(x, y, opt)
    assert last < first / 2
    with pytest.raises(TypeError, match="train_step: x must be a numpy array"):
        model.train_step(x.tolist(), y, opt)
    with pytest.raises(TypeError, match="train_step: x must hold integer or float images"):
        model.train_step(x.astype(np.complex64), y, opt)


@needs_vector_set
@pytest.mark.parametrize("kernels_name", VECTOR_SETS)
def test_inference_fuses_conv_and_pool_with_the_same_bits(kernels, kernels_name):
    """predict runs Conv2D + MaxPool2D as one conv2d_maxpool_forward (and it
    ran fused: counted): the same logits, bit for bit, as the layers one by one."""
    kernels(kernels_name)
    model = tutorial_cnn(seed=3)
    x = np.random.default_rng(3).random((7, 28, 28, 1), dtype=np.float32)
    h = x
    for layer in model.layers:
        h = layer.forward(h, training=False)[0]
    with convcore.kernel_counts() as ran:
        fused = model.predict(x)
    assert ran[("conv2d_maxpool_forward", "vector")] == 2
    assert fused.tobytes() == h.tobytes()


@needs_vector_set
@pytest.mark.parametrize("k", [3, 5])   # 5: Winograd under "auto"
def test_conv2d_maxpool_forward_equals_the_two_calls(kernels, k):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 9, 11, 16)).astype(np.float32)
    w = rng.standard_normal((k, k, 16, 48)).astype(np.float32)
    b = rng.standard_normal(48).astype(np.float32)
    for kernels_name in VECTOR_SETS:
        kernels(kernels_name)
        for pool, stride, padding in ((2, None, "same"), (3, 2, 1), (2, 1, "valid")):
            with convcore.kernel_counts() as ran:
                got = convcore.conv2d_maxpool_forward(x, w, b, 1, "same", True, pool, stride,
                                                      padding)
            assert ran == {("conv2d_maxpool_forward", "vector"): 1}
            y = convcore.conv2d_forward(x, w, b, 1, "same", relu=True)
            want = convcore.maxpool2d_forward(y, pool, stride, padding)[0]
            assert got.tobytes() == want.tobytes()
    with pytest.raises(ValueError, match="conv2d_maxpool_forward: pool_padding must be smaller"):
        convcore.conv2d_maxpool_forward(x, w, b, pool_size=2, pool_padding=2)


@st.composite
def conv_pool_cases(draw):
    """A convolution and a max-pool over its output where the fused kernels run:
    each vector set, with Winograd where the window allows, or not; C_out a
    multiple of 16 (the input gradient only where it runs fused too: C_in a
    multiple of 16, stride 1); overlapping and padded pool windows. Values are
    small integers, so that windows often tie (the first maximum wins) and the
    ReLU often cuts."""
    n = draw(st.integers(0, 3))
    cin, cout = draw(st.sampled_from([1, 3, 16, 32])), draw(st.sampled_from([16, 48]))
    k, stride = draw(st.sampled_from([1, 3, 5])), draw(st.sampled_from([1, 1, 2]))
    h, w = draw(st.integers(k, 10)), draw(st.integers(k, 10))
    pad = draw(st.sampled_from(["same", "valid", k // 2]))
    oh, ow = ((-(-s // stride)) if pad == "same" else
              (s + 2 * (0 if pad == "valid" else pad) - k) // stride + 1 for s in (h, w))
    pool, pool_stride = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pool_pad = draw(st.sampled_from(["same", "valid", 0, pool - 1]))
    p = 0 if pool_pad in ("same", "valid") else pool_pad
    assume(pool_pad == "same" or (pool <= oh + 2 * p and pool <= ow + 2 * p))
    kernels = draw(st.sampled_from([(name, wg) for name in VECTOR_SETS for wg in (True, False)]))
    need_dx = draw(st.booleans()) and cin % 16 == 0 and stride == 1
    return ((n, h, w, cin), (k, k, cin, cout), stride, pad, (pool, pool_stride, pool_pad),
            kernels, draw(st.booleans()), need_dx, draw(st.booleans()),
            draw(st.integers(0, 2**32 - 1)))


@needs_vector_set
@given(conv_pool_cases())
def test_conv2d_maxpool_backward_equals_the_two_calls(case):
    """conv2d_maxpool_forward(return_argmax=True) and conv2d_maxpool_backward
    give the same bits as conv2d_forward, maxpool2d_forward, maxpool2d_backward
    and conv2d_backward one after the other: y, argmax, dx, dw and db. An
    argmax whose entries were shuffled into other windows is refused by both
    (ValueError), not turned into a silently wrong gradient."""
    (x_shape, w_shape, stride, pad, (pool, pool_stride, pool_pad), kern, relu, need_dx,
     shuffle, seed) = case
    rng = np.random.default_rng(seed)
    x = rng.integers(-3, 4, x_shape).astype(np.float32)
    w = rng.integers(-2, 3, w_shape).astype(np.float32)
    b = rng.integers(-2, 3, w_shape[3]).astype(np.float32)
    with helpers.using_kernels(*kern), convcore.kernel_counts() as ran:
        y_conv = convcore.conv2d_forward(x, w, b, stride, pad, relu=relu)
        y, am = convcore.maxpool2d_forward(y_conv, pool, pool_stride, pool_pad)
        got_y, got_am = convcore.conv2d_maxpool_forward(x, w, b, stride, pad, relu, pool,
                                                        pool_stride, pool_pad,
                                                        return_argmax=True)
        assert got_y.tobytes() == y.tobytes() and got_am.tobytes() == am.tobytes()
        dy = rng.standard_normal(y.shape).astype(np.float32)
        if shuffle:
            am = rng.permuted(am.reshape(len(am), int(np.prod(am.shape[1:]))),
                              axis=1).reshape(am.shape)
        try:
            dy_conv = convcore.maxpool2d_backward(dy, am, y_conv.shape, pool, pool_stride,
                                                  pool_pad)
        except ValueError as e:   # shuffled out of its windows: refused by both
            assert shuffle and "outside their own pooling window" in str(e)
            with pytest.raises(ValueError, match="conv2d_maxpool_backward: argmax has"):
                convcore.conv2d_maxpool_backward(x, w, dy, am, stride, pad, pool, pool_stride,
                                                 pool_pad, need_dx, relu_y=got_y)
            return
        want = convcore.conv2d_backward(x, w, dy_conv, stride, pad, need_dx,
                                        relu_y=y_conv if relu else None)
        if relu and shuffle:   # the pooled y is no longer the conv's value at the argmax
            n_, oh_, ow_, c_ = y_conv.shape
            relu_y = np.take_along_axis(y_conv.reshape(n_, oh_ * ow_, c_),
                                        am.reshape(n_, am.shape[1] * am.shape[2], c_),
                                        1).reshape(am.shape)
        else:
            relu_y = got_y if relu else None
        got = convcore.conv2d_maxpool_backward(x, w, dy, am, stride, pad, pool, pool_stride,
                                               pool_pad, need_dx, relu_y=relu_y)
    assert ran[("conv2d_maxpool_forward", "vector")] == 1
    assert ran[("conv2d_maxpool_backward", "vector")] == 1
    for g, wnt in zip(got, want):
        assert (g is None and wnt is None) or g.tobytes() == wnt.tobytes()


@needs_vector_set
@pytest.mark.parametrize("kernels_name", VECTOR_SETS)
def test_training_fuses_conv_and_pool_with_the_same_bits(kernels, kernels_name):
    """train_step runs each Conv2D + MaxPool2D as one step (conv2d_maxpool_forward
    and conv2d_maxpool_backward): three steps give the same loss and parameters,
    bit for bit, as the layers run one by one."""
    kernels(kernels_name)
    rng = np.random.default_rng(6)
    x = rng.random((12, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 12)
    runs = []
    for fused in (True, False):
        model = tutorial_cnn(seed=6)
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-3)
        assert [type(s.op).__name__ for s in model.steps(opt)] == [
            "ConvPool", "ConvPool", "Flatten", "DenseAdam", "Dropout", "DenseAdam"]
        with convcore.kernel_counts() as ran:
            losses = [model.train_step(x, y, opt, fusions=FUSIONS if fused else ())
                      for _ in range(3)]
        assert ran[("conv2d_maxpool_backward", "vector")] == (6 if fused else 0)
        runs.append((losses, [p.value.tobytes() for p in model.parameters()]))
    assert runs[0] == runs[1]


@needs_vector_set
def test_fused_adam_training_gives_the_same_bits_as_unfused(kernels):
    """Adam(fused=True) updates the dense layers inside their backward pass
    (linear_backward_adam, counted: both dense layers have 16k outputs, so the
    fused kernel runs for each); three steps give the same parameters and
    state, bit for bit, as Adam(fused=False), and the same grads elsewhere."""
    rng = np.random.default_rng(5)
    x = rng.random((20, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 20)
    runs = []
    for fused in (True, False):
        model = tutorial_cnn(seed=5, classes=16)
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-3, fused=fused)
        with convcore.kernel_counts() as ran:
            losses = [model.train_step(x, y, opt) for _ in range(3)]
        assert ran[("linear_backward_adam", "vector")] == (6 if fused else 0)
        runs.append((losses, [p.value.tobytes() for p in model.parameters()],
                     [a.tobytes() for a in opt.state_arrays().values()], opt.t))
        # fused: the dense gradients were applied, not stored; conv ones are kept
        dense, conv = model.layers[5].params["w"], model.layers[2].params["w"]
        assert (dense.grad is None) == fused and conv.grad is not None
    assert runs[0] == runs[1]
