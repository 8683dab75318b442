"""The layers of modern small CNNs: batch normalisation (its running
statistics, the fused BatchNorm + ReLU step, errors), average pools,
LeakyReLU and sigmoid."""
import numpy as np
import pytest

import pyconv
from pyconv.fusion import FUSIONS
from pyconv.layers import (
    Add,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    GlobalAveragePooling2D,
    LeakyReLU,
    ReLU,
    Sigmoid,
)


def small_resnet(seed=0):
    x = pyconv.Input((8, 8, 2))
    h = ReLU()(BatchNormalization()(Conv2D(8, 3, use_bias=False)(x)))
    r = ReLU()(BatchNormalization()(Conv2D(8, 3, use_bias=False)(h)))
    r = BatchNormalization()(Conv2D(8, 3, use_bias=False)(r))
    h = ReLU()(Add()([h, r]))
    out = Dense(4)(GlobalAveragePooling2D()(AveragePooling2D(2)(h)))
    return pyconv.Model(x, out, seed=seed)


def _data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 8, 8, 2)).astype(np.float32), rng.integers(0, 4, n)


def test_batchnorm_relu_and_add_relu_run_fused_with_the_same_bits():
    x, y = _data()
    runs = []
    for fusions in (FUSIONS, ()):
        model = small_resnet()
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
        kinds = [type(s.op).__name__ for s in model.steps(opt, fusions)]
        assert kinds.count("NormReLU") == (2 if fusions else 0)
        assert kinds.count("AddReLU") == (1 if fusions else 0)
        losses = [model.train_step(x, y, opt, fusions=fusions) for _ in range(4)]
        runs.append((losses, [p.value.tobytes() for p in model.parameters()],
                     [b.tobytes() for _, b in model.named_buffers()],
                     model.predict(x).tobytes()))
    assert runs[0] == runs[1]


def test_running_statistics_follow_the_stated_convention():
    """running = momentum * running + (1 - momentum) * batch; the variance
    unbiased (M / (M - 1)); inference uses the running statistics."""
    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 3, 4, 5)) * 3 + 2).astype(np.float32)
    bn = BatchNormalization(momentum=0.8)
    bn.build((3, 4, 5), rng)
    y, _ = bn.forward(x, training=True)
    m = 6 * 3 * 4
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(bn.buffers["mean"], 0.2 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.buffers["var"], 0.8 + 0.2 * var * m / (m - 1), rtol=1e-5)
    got = bn.forward(x)[0]
    want = (x - bn.buffers["mean"]) / np.sqrt(bn.buffers["var"] + 1e-5)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_of_features_normalises_each_feature():
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((16, 7)) * 5 - 1).astype(np.float32)
    bn = BatchNormalization()
    y, ctx = bn.forward(x, training=True)
    assert y.shape == x.shape
    np.testing.assert_allclose(y.std(axis=0), 1, rtol=1e-3)
    dx = bn.backward(ctx, np.ones_like(y))
    assert dx.shape == x.shape
    np.testing.assert_allclose(dx, 0, atol=1e-5)   # a shift of every output: no gradient


@pytest.mark.parametrize("make, message", [
    (lambda: BatchNormalization(momentum=1.0), "momentum must be a number in [0, 1)"),
    (lambda: BatchNormalization(momentum=-0.1), "momentum"),
    (lambda: BatchNormalization(epsilon=0), "epsilon must be a number > 0"),
    (lambda: LeakyReLU(alpha=1.5), "alpha must be a number in [0, 1)"),
    (lambda: AveragePooling2D(0), "pool_size"),
])
def test_bad_arguments_are_refused_naming_them(make, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(")", r"\)")):
        make()


def test_batchnorm_over_a_batch_of_one_is_refused_in_training():
    bn = BatchNormalization()
    x = np.ones((1, 5), np.float32)
    with pytest.raises(ValueError, match="more than one value per channel"):
        bn.forward(x, training=True)
    assert bn.forward(x)[0].shape == (1, 5)      # inference on one example is fine


def test_leaky_relu_and_sigmoid():
    x = np.array([[-2.0, -0.5, 0.0, 0.5, 40.0, -40.0]], np.float32)
    y, mask = LeakyReLU(0.1).forward(x, training=True)
    np.testing.assert_allclose(y, [[-0.2, -0.05, 0, 0.5, 40, -4]], rtol=1e-6)
    np.testing.assert_allclose(LeakyReLU(0.1).backward(mask, np.ones_like(x)),
                               [[0.1, 0.1, 0.1, 1, 1, 0.1]], rtol=1e-6)
    s, ctx = Sigmoid().forward(x, training=True)
    np.testing.assert_allclose(s, 1 / (1 + np.exp(-x.astype(np.float64))), rtol=1e-6,
                               atol=1e-7)
    assert np.isfinite(s).all()


def test_a_residual_network_trains_saves_and_loads(tmp_path):
    x, y = _data(64)
    model = small_resnet(seed=3)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
    first = model.train_step(x, y, opt)
    for _ in range(30):
        last = model.train_step(x, y, opt)
    assert last < first / 2
    pyconv.save(model, tmp_path / "m.npz")
    back = pyconv.load(tmp_path / "m.npz")
    assert back.predict(x).tobytes() == model.predict(x).tobytes()
    assert [type(layer).__name__ for layer in back.layers] == \
        [type(layer).__name__ for layer in model.layers]


def test_inference_folds_batch_norm_into_the_convolution_within_its_bound():
    """predict runs conv + BatchNorm (+ ReLU) as one convolution with folded
    weights: within 2 float32 ulps of |scale| sum |w x| of the layers run one
    by one (checked against 1e-5 of the largest activation), and it follows
    the parameters and statistics as training changes them."""
    model = pyconv.models.resnet8(seed=1)
    inference = [type(s.op).__name__ for s in model.steps(training=False)]
    assert inference.count("ConvNorm") == 9 and "BatchNormalization" not in inference
    training = [type(s.op).__name__ for s in model.steps(pyconv.optim.SGD(model.parameters()))]
    assert "ConvNorm" not in training
    rng = np.random.default_rng(0)
    x = rng.random((16, 28, 28, 1), dtype=np.float32)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        folded = model.predict(x)
        plain = model.forward(x, fusions=())[0]
        scale = np.abs(plain).max()
        assert 0 < np.abs(folded - plain).max() <= 1e-5 * scale
        model.train_step(x, rng.integers(0, 10, 16), opt)


@pytest.mark.parametrize("name", ["fast", "resnet8"])
def test_the_built_in_networks_are_network_files_too(name):
    """examples/fast.json and examples/resnet8.json describe the built-in
    networks: the same layers, shapes, parameters and initial weights."""
    import pathlib

    from pyconv.io.network_files import load_network
    path = pathlib.Path(__file__).resolve().parent.parent / "examples" / f"{name}.json"
    from_file = load_network(str(path), 0, (28, 28, 1))
    if not from_file.built:
        from_file.build((28, 28, 1))
    built_in = pyconv.models.MODELS[name](seed=0)
    assert [(type(n.layer).__name__, n.layer.output_shape) for n in from_file.nodes] == \
        [(type(n.layer).__name__, n.layer.output_shape) for n in built_in.nodes]
    for p, q in zip(from_file.parameters(), built_in.parameters(), strict=True):
        assert p.value.tobytes() == q.value.tobytes()
