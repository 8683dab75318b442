"""Models as graphs of layers: skip connections and branches, built in Python
(pyconv.Input, calling layers) and from network files; gradients against a
float64 NumPy reference of the same graph (random graphs from Hypothesis);
save, load and resume; no state written during a step; predict from many
threads at once."""
import json
import sys
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convcore.reference as ref
import pyconv
from pyconv.layers import (
    Add,
    AveragePooling2D,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    Layer,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from pyconv.losses import softmax_cross_entropy


def skip_and_branch(seed=0):
    """A residual block (conv-conv + the skip) and a branch of two convolutions
    side by side, concatenated: the graph the tests share."""
    x = pyconv.Input((8, 8, 1))
    h = Conv2D(4, 3, activation="relu")(x)
    r = Conv2D(4, 3)(ReLU()(Conv2D(4, 3)(h)))
    h = ReLU()(Add()([h, r]))
    a = Conv2D(3, 1, activation="relu")(h)
    b = Conv2D(2, 3, activation="relu")(h)
    y = MaxPool2D(2)(Concatenate()([a, b]))
    out = Dense(3)(Dropout(0.25)(Flatten()(y)))
    return pyconv.Model(x, out, name="skip-branch", seed=seed)


def _data(n=48, seed=0):
    """Images of three classes, each a bright bar at its own place on noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = rng.integers(0, 100, (n, 8, 8, 1), dtype=np.uint8)
    for i, c in enumerate(y):
        x[i, :, 2 * c + 1:2 * c + 3] = 250
    return x, y.astype(np.int64)


def test_a_graph_is_built_and_described():
    model = skip_and_branch()
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Add") == 1 and kinds.count("Concatenate") == 1
    assert model.output_shape == (3,)
    text = model.summary()
    assert "Add" in text and "reads" in text
    add = next(n for n in model.nodes if type(n.layer).__name__ == "Add")
    assert len(add.inputs) == 2 and add.inputs[0] != add.inputs[1]


def test_a_chain_built_as_a_graph_is_the_sequential_model():
    x = pyconv.Input((28, 28, 1))
    layers = pyconv.models.tutorial_cnn(seed=0).layers
    fresh = [type(layer)(**layer.config()) for layer in layers]
    h = x
    for layer in fresh:
        h = layer(h)
    graph = pyconv.Model(x, h, seed=0)
    seq = pyconv.models.tutorial_cnn(seed=0)
    for (n1, p1), (n2, p2) in zip(graph.named_parameters(), seq.named_parameters()):
        assert n1 == n2 and p1.value.tobytes() == p2.value.tobytes()
    xb, yb = _mnist_like()
    opts = [pyconv.optim.Adam(m.parameters(), lr=1e-3) for m in (graph, seq)]
    losses = [[m.train_step(xb, yb, o) for _ in range(2)] for m, o in zip((graph, seq), opts)]
    assert losses[0] == losses[1]


def _mnist_like(n=20):
    rng = np.random.default_rng(2)
    return rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8), rng.integers(0, 10, n)


def test_building_a_graph_wrongly_says_what_is_wrong():
    x = pyconv.Input((8, 8, 1))
    h = Conv2D(4, 3)(x)
    with pytest.raises(pyconv.ShapeError, match=r"Add: expects inputs of one shape, got "
                                                r"\(8, 8, 4\), \(8, 8, 1\)"):
        Add()([h, x])
    with pytest.raises(TypeError, match="Add: takes a list of two or more Tensors"):
        Add()(h)
    with pytest.raises(TypeError, match="Conv2D: takes one Tensor, got 2 in a list"):
        Conv2D(2, 3)([h, h])
    shared = Conv2D(4, 3)
    with pytest.raises(ValueError, match="the same layer object"):
        pyconv.Model(x, Add()([shared(h), shared(h)]))
    with pytest.raises(TypeError, match="inputs must be a pyconv.Input"):
        pyconv.Model(h, Flatten()(h))
    with pytest.raises(pyconv.ShapeError, match="Input: shape must be"):
        pyconv.Input((8, 0, 1))


# ------------------------------------------------------------ gradients

def _ref_forward(layer, x):
    """(y, ctx) of one layer in float64 NumPy: convcore.reference and plain maths."""
    kind = type(layer).__name__
    if kind == "Conv2D":
        w = layer.params["w"].value.astype(np.float64)
        b = layer.params["b"].value.astype(np.float64) if layer.use_bias else None
        y = ref.conv2d_forward(x, w, b, layer.stride, layer.padding,
                               relu=layer.activation == "relu")
        return y, (x, w, y)
    if kind == "Dense":
        w = layer.params["w"].value.astype(np.float64)
        y = ref.linear_forward(x, w, layer.params["b"].value.astype(np.float64),
                               relu=layer.activation == "relu")
        return y, (x, w, y)
    if kind == "MaxPool2D":
        y, am = ref.maxpool2d_forward(x, layer.pool_size, layer.stride, layer.padding)
        return y, (am, x.shape)
    if kind == "BatchNormalization":
        gamma = layer.params["gamma"].value.astype(np.float64)
        y, mean, var = ref.batchnorm_forward(x, gamma, layer.params["beta"].value.astype(
            np.float64), layer.epsilon)
        return y, (x, gamma, mean, var)
    if kind == "AveragePooling2D":
        return ref.avgpool2d_forward(x, layer.pool_size, layer.stride, layer.padding), x.shape
    alpha = getattr(layer, "alpha", 0)
    sigmoid = 1 / (1 + np.exp(-x)) if kind == "Sigmoid" else None
    return {"ReLU": lambda: (np.maximum(x, 0), np.maximum(x, 0)),
            "LeakyReLU": lambda: (np.where(x > 0, x, alpha * x), x > 0),
            "Sigmoid": lambda: (sigmoid, sigmoid),
            "GlobalAveragePooling2D": lambda: (x.mean(axis=(1, 2)), x.shape),
            "Tanh": lambda: (np.tanh(x), np.tanh(x)),
            "Flatten": lambda: (x.reshape(len(x), -1), x.shape),
            "Add": lambda: (sum(x[1:], x[0]), len(x)),
            "Concatenate": lambda: (np.concatenate(x, -1), [a.shape[-1] for a in x])}[kind]()


def _ref_backward(layer, ctx, dy):
    """(dx, {param: grad}) of one layer in float64 NumPy."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "Dense"):
        x, w, y = ctx
        relu_y = y if layer.activation == "relu" else None
        if kind == "Conv2D":
            dx, dw, db = ref.conv2d_backward(x, w, dy, layer.stride, layer.padding,
                                             relu_y=relu_y)
        else:
            dx, dw, db = ref.linear_backward(x, w, dy, relu_y=relu_y)
        return dx, {"w": dw, "b": db}
    if kind == "MaxPool2D":
        am, shape = ctx
        return ref.maxpool2d_backward(dy, am, shape, layer.pool_size, layer.stride,
                                      layer.padding), {}
    if kind == "BatchNormalization":
        dx, dgamma, dbeta = ref.batchnorm_backward(*ctx, dy, layer.epsilon)
        return dx, {"gamma": dgamma, "beta": dbeta}
    if kind == "AveragePooling2D":
        return ref.avgpool2d_backward(dy, ctx, layer.pool_size, layer.stride,
                                      layer.padding), {}
    return {"ReLU": lambda: np.where(ctx > 0, dy, 0), "Tanh": lambda: dy * (1 - ctx * ctx),
            "LeakyReLU": lambda: np.where(ctx, dy, layer.alpha * dy),
            "Sigmoid": lambda: dy * ctx * (1 - ctx),
            "GlobalAveragePooling2D": lambda: np.broadcast_to(
                dy[:, None, None, :] / (ctx[1] * ctx[2]), ctx),
            "Flatten": lambda: dy.reshape(ctx), "Add": lambda: [dy] * ctx,
            "Concatenate": lambda: np.split(dy, np.cumsum(ctx)[:-1], -1)}[kind](), {}


def _ref_terms(layer, ctx, dy):
    """{param: the sum of the absolute values of the terms its gradient adds}:
    a float32 gradient's rounding is relative to this, not to the gradient,
    which can cancel to near zero (a bias before batch normalisation). It is
    the layer's own backward on absolute values (for batch normalisation,
    inputs mean + |x - mean|, whose normalised values are |x_hat|)."""
    kind = type(layer).__name__
    if kind in ("Conv2D", "Dense"):
        x, w, y = ctx
        return _ref_backward(layer, (np.abs(x), np.abs(w), y), np.abs(dy))[1]
    if kind == "BatchNormalization":
        x, gamma, mean, var = ctx
        return _ref_backward(layer, (mean + np.abs(x - mean), gamma, mean, var), np.abs(dy))[1]
    return {}


def reference_gradients(model, x, dy):
    """The graph run node by node in float64 (no fusion); the gradients of
    sum(output * dy) for every parameter, fan-outs summed, and the sizes of
    their terms (`_ref_terms`)."""
    values, ctxs = {"input": x.astype(np.float64)}, []
    for node in model.nodes:
        args = [values[n] for n in node.inputs] if len(node.inputs) > 1 else values[
            node.inputs[0]]
        values[node.name], ctx = _ref_forward(node.layer, args)
        ctxs.append(ctx)
    grads, out, terms = {model.nodes[-1].name: dy.astype(np.float64)}, {}, {}
    for node, ctx in zip(reversed(model.nodes), reversed(ctxs)):
        d_out = grads.pop(node.name)
        dx, pg = _ref_backward(node.layer, ctx, d_out)
        out.update({(node.name, k): v for k, v in pg.items() if k in node.layer.params})
        terms.update({(node.name, k): v for k, v in _ref_terms(node.layer, ctx, d_out).items()
                      if k in node.layer.params})
        for name, d in zip(node.inputs, dx if len(node.inputs) > 1 else [dx]):
            grads[name] = grads.get(name, 0) + d
    return values[model.nodes[-1].name], out, terms


@st.composite
def random_graphs(draw):
    """A random graph over 6x6 images: convolutions (1x1, 3x3), ReLU, Tanh,
    LeakyReLU, sigmoid, batch normalisation (often before a ReLU: fused),
    stride-1 max- and average pools, Add of two values of one shape,
    Concatenate of two; every value left unread is concatenated at the end,
    then Flatten or a global average pool, Dense."""
    x = pyconv.Input((6, 6, draw(st.integers(1, 2))))
    values = [x]
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["conv", "conv", "relu", "tanh", "pool", "add", "concat",
                                     "norm", "leaky", "sigmoid", "avgpool"]))
        a = values[draw(st.integers(0, len(values) - 1))]
        same = [v for v in values if v.shape == a.shape and v is not a]
        if kind == "conv":
            v = Conv2D(draw(st.integers(1, 3)), draw(st.sampled_from([1, 3])),
                       activation=draw(st.sampled_from([None, "relu"])))(a)
        elif kind in ("relu", "tanh"):
            v = (ReLU() if kind == "relu" else Tanh())(a)
        elif kind == "pool":
            v = MaxPool2D(2, stride=1, padding="same")(a)
        elif kind == "avgpool":
            v = AveragePooling2D(draw(st.sampled_from([2, 3])), stride=1, padding="same")(a)
        elif kind == "norm":
            v = BatchNormalization()(a)
            v = ReLU()(v) if draw(st.booleans()) else v
        elif kind == "leaky":
            v = LeakyReLU(0.1)(a)
        elif kind == "sigmoid":
            v = Sigmoid()(a)
        elif kind == "add" and same:
            v = Add()([a, same[draw(st.integers(0, len(same) - 1))]])
        elif kind == "concat" and len(values) > 1:
            v = Concatenate()([a, values[draw(st.integers(0, len(values) - 1))]])
        else:
            continue
        values.append(v)
    read = {id(i) for v in values for i in v.inputs}
    ends = [v for v in values[1:] if id(v) not in read] or [values[0]]
    h = Concatenate()(ends) if len(ends) > 1 else ends[0]
    out = Dense(3)((Flatten() if draw(st.booleans()) else GlobalAveragePooling2D())(h))
    return pyconv.Model(x, out, seed=draw(st.integers(0, 2**16)))


@settings(max_examples=40, deadline=None)
@given(random_graphs(), st.integers(0, 2**16))
def test_random_graphs_match_the_reference_gradients(model, seed):
    rng = np.random.default_rng(seed)
    # values a step apart in every pooling window keep the max-pools' argmax stable
    x = rng.standard_normal((2, *model.input_shape)).astype(np.float32)
    dy = rng.standard_normal((2, 3)).astype(np.float32)
    y, tape = model.forward(x, training=True)
    model.backward(tape, dy)
    want_y, want, terms = reference_gradients(model, x, dy)
    np.testing.assert_allclose(y, want_y, rtol=1e-4, atol=1e-4)
    for node in model.nodes:
        for name, p in node.layer.params.items():
            g, t = want[(node.name, name)], terms[(node.name, name)]
            # rounding grows with the terms added, not with a sum that cancels
            # (a bias under batch normalisation: 0.0137 of terms adding to 455)
            np.testing.assert_allclose(p.grad, g, rtol=1e-3,
                                       atol=1e-4 * (1 + np.abs(g).max()) + 1e-5 * t.max(),
                                       err_msg=f"{node.name} {name}")


def test_a_value_read_twice_gets_both_gradients():
    """h feeds the Add twice: its gradient is twice the Add's."""
    x = pyconv.Input((4, 4, 1))
    conv = Conv2D(2, 3, use_bias=False)
    h = conv(x)
    model = pyconv.Model(x, Dense(2)(Flatten()(Add()([h, h]))), seed=1)
    xs = np.random.default_rng(0).standard_normal((3, 4, 4, 1)).astype(np.float32)
    dy = np.ones((3, 2), np.float32)
    model.backward(model.forward(xs, True)[1], dy)
    _, want, _ = reference_gradients(model, xs, dy)
    np.testing.assert_allclose(conv.params["w"].grad, want[("0", "w")], rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ training and files

def test_a_graph_trains_saves_loads_and_resumes_bit_for_bit(tmp_path):
    from pyconv.train import Trainer
    x, y = _data(96)

    def run(steps, path=None, resume=False):
        model = skip_and_branch(seed=3)
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
        cbs = [pyconv.callbacks.Checkpoint(str(path), 15)] if path else []
        t = Trainer(model, opt, (x, y), steps=30, batch_size=16, seed=1, callbacks=cbs,
                    log=lambda m: None)
        if resume:
            t.resume(str(path))
        t.steps = steps
        losses = []
        t.callbacks.append(type("Losses", (pyconv.callbacks.Callback,), {
            "on_step_end": lambda self, tr, loss, correct: losses.append(loss)})())
        t.run()
        return t, losses

    straight, losses = run(30)
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])    # it learns
    run(15, tmp_path / "c.npz")
    resumed, _ = run(30, tmp_path / "c.npz", resume=True)
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert p.value.tobytes() == q.value.tobytes()
    pyconv.save(straight.model, tmp_path / "m.npz")
    back = pyconv.load(tmp_path / "m.npz")
    assert type(back).__name__ == "Model" and back.architecture() == straight.model.architecture()
    assert back.predict(x).tobytes() == straight.model.predict(x).tobytes()


def test_a_network_file_describes_a_graph(tmp_path):
    spec = {"input_shape": [8, 8, 1], "layers": [
        {"name": "stem", "type": "Conv2D", "filters": 4, "kernel_size": 3, "activation": "relu"},
        {"name": "a", "type": "Conv2D", "filters": 4, "kernel_size": 3, "inputs": ["stem"]},
        {"name": "sum", "type": "Add", "inputs": ["stem", "a"]},
        {"name": "side", "type": "Conv2D", "filters": 2, "kernel_size": 1, "inputs": ["stem"]},
        {"name": "cat", "type": "Concatenate", "inputs": ["sum", "side"]},
        {"type": "Flatten"}, {"type": "Dense", "units": 3}]}
    path = tmp_path / "net.json"
    path.write_text(json.dumps(spec))
    model = pyconv.load_network(str(path), seed=0)
    assert [n.inputs for n in model.nodes][2] == ("stem", "a")
    assert model.architecture()["layers"][4]["inputs"] == ["sum", "side"]
    x, y = _data(32)
    opt = pyconv.optim.SGD(model.parameters(), lr=0.05)
    model.train_step(x, y, opt)
    again = pyconv.Model.from_architecture(model.architecture())
    assert again.architecture() == model.architecture()


@pytest.mark.parametrize("layers,message", [
    ([{"type": "Add", "inputs": ["input", "x"]}], r"layer '0' reads \['x'\] before"),
    ([{"type": "Conv2D", "filters": 2, "kernel_size": 1},
      {"type": "Add", "inputs": ["0"]}], r"layer '1' \(Add\) reads 1 input\(s\); it takes two"),
    ([{"type": "Conv2D", "filters": 2, "kernel_size": 1, "name": "c"},
      {"type": "Conv2D", "filters": 2, "kernel_size": 1, "name": "c"}], "name 'c' is used twice"),
    ([{"type": "Conv2D", "filters": 2, "kernel_size": 1},
      {"type": "Conv2D", "filters": 2, "kernel_size": 1, "inputs": ["input"]}],
     r"layer\(s\) \['0'\] are read by no other layer"),
    ([{"type": "Flatten", "inputs": "input"}], "inputs must be a list of layer names"),
])
def test_network_file_graph_errors_name_the_layer(tmp_path, layers, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"input_shape": [4, 4, 1], "layers": layers}))
    with pytest.raises(ValueError, match=message):
        pyconv.load_network(str(path))


# ------------------------------------------------------------ no shared state

def _attributes(model):
    """(owner, name) -> id of the value, for the model and every layer."""
    out = {("model", k): id(v) for k, v in vars(model).items()}
    for node in model.nodes:
        out.update({(node.name, k): id(v) for k, v in vars(node.layer).items()})
    return out


def test_predict_from_eight_threads_writes_nothing():
    model = skip_and_branch(seed=4)
    x, _ = _data(40)
    want = model.predict(x)
    before = _attributes(model)
    results, errors = [None] * 8, []

    def work(i):
        try:
            results[i] = [model.predict(x[i:i + 16]) for _ in range(5)]
        except Exception as e:          # noqa: BLE001 - reported below
            errors.append(e)

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(old)
    assert not errors
    for i, runs in enumerate(results):
        for got in runs:
            assert got.tobytes() == want[i:i + 16].tobytes()
    assert _attributes(model) == before


@pytest.mark.parametrize("make", [
    lambda: pyconv.Sequential([Conv2D(4, 3, activation="relu"), Flatten(), Dense(10)],
                              input_shape=(8, 8, 1), seed=0),
    lambda: pyconv.Sequential([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Flatten(),
                               Dense(10)], input_shape=(8, 8, 1), seed=0),
    lambda: skip_and_branch(seed=0),
])
def test_predict_between_forward_and_backward_changes_nothing(make):
    """A predict (a callback, a monitoring thread) between a training forward
    and its backward: the same gradients, bit for bit, as without it."""
    x, _ = _data(8)
    xs = x.astype(np.float32) / 255
    grads = []
    for interleave in (False, True):
        model = make()
        logits, tape = model.forward(xs, training=True)
        dy = softmax_cross_entropy(logits, np.arange(8) % 3)[1]
        if interleave:
            before = _attributes(model)
            model.predict(x[::-1])
            assert _attributes(model) == before
        model.backward(tape, dy)
        grads.append([p.grad.tobytes() for p in model.parameters()])
    assert grads[0] == grads[1]


# ------------------------------------------------------------ non-trainable state

class RunningMean(Layer):
    """A test layer with a buffer: the identity, keeping the running mean of
    each channel of what it sees in training (as a batch normalisation keeps
    its statistics)."""

    def make_params(self, input_shape, rng):
        self.buffers["mean"] = np.zeros(input_shape[-1], np.float32)

    def forward(self, x, training=False):
        if training:
            m = self.buffers["mean"]
            m[...] = 0.9 * m + 0.1 * x.mean(axis=tuple(range(x.ndim - 1)))
        return x, None

    def backward(self, ctx, dy, need_dx=True):
        return dy if need_dx else None


def test_buffers_are_saved_loaded_and_resumed_bit_for_bit(tmp_path, monkeypatch):
    from pyconv.layers import LAYERS
    from pyconv.train import Trainer
    monkeypatch.setitem(LAYERS, "RunningMean", RunningMean)
    x, y = _data(64)

    def run(steps, path, resume=False):
        inp = pyconv.Input((8, 8, 1))
        h = Conv2D(4, 3, activation="relu")(inp)
        out = Dense(3)(Flatten()(Add()([h, RunningMean()(h)])))
        model = pyconv.Model(inp, out, seed=5)
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
        t = Trainer(model, opt, (x, y), steps=8, batch_size=16, seed=2, log=lambda m: None,
                    callbacks=[pyconv.callbacks.Checkpoint(str(path), 4)])
        if resume:
            t.resume(str(path))
        t.steps = steps
        t.run()
        return t.model

    straight = run(8, tmp_path / "a.npz")
    (name, mean), = straight.named_buffers()
    assert name.endswith("RunningMean.mean") and np.abs(mean).max() > 0
    run(4, tmp_path / "b.npz")
    resumed = run(8, tmp_path / "b.npz", resume=True)
    assert resumed.named_buffers()[0][1].tobytes() == mean.tobytes()
    for p, q in zip(straight.parameters(), resumed.parameters()):
        assert p.value.tobytes() == q.value.tobytes()
    pyconv.save(straight, tmp_path / "m.npz")
    assert pyconv.load(tmp_path / "m.npz").named_buffers()[0][1].tobytes() == mean.tobytes()
