"""ONNX export and import (pyconv.io.onnx) checked against ONNX Runtime: the
built-in networks, random networks drawn by Hypothesis, a trained network on
real MNIST, a file exported by PyTorch, and broken files."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import pyconv
from pyconv.errors import ModelFileError, ShapeError
from pyconv.layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, ReLU, Tanh

from conftest import FULL_MNIST, HERE, MNIST_DIR
from helpers import pyconv as pyconv_cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pconnx = pytest.importorskip("pyconv.io.onnx")

# ONNX Runtime sums in another order than convcore (its own GEMM and conv
# kernels): outputs agree to float32 rounding, at most BOUND times the largest
# output's magnitude, or BOUND where that is below 1 (measured: at most 1.7e-6
# over 1,000 random networks below, HYPOTHESIS_PROFILE=thorough).
BOUND = 2e-5


def run_onnx(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def assert_agrees(y_onnx, y_pyconv):
    assert y_onnx.shape == y_pyconv.shape
    scale = max(1.0, float(np.abs(y_pyconv).max(initial=0)))
    np.testing.assert_array_less(np.abs(y_onnx - y_pyconv), BOUND * scale + 1e-30)


def same_weights(a, b):
    """The same parameters in the same order, bit for bit (a ReLU layer after
    a Conv2D or Dense comes back fused into it, so layer indices may differ)."""
    pa, pb = a.parameters(), b.parameters()
    assert [(p.name, p.value.shape) for p in pa] == [(p.name, p.value.shape) for p in pb]
    for p, q in zip(pa, pb):
        assert p.value.tobytes() == q.value.tobytes()


@st.composite
def networks(draw):
    """A random chain: 1-3 convolutions or pools (any kernel, stride, padding,
    with and without bias and ReLU, a ReLU or Tanh layer between), a Flatten,
    dense layers (with and without bias, ReLU, a Dropout)."""
    h, w, c = draw(st.integers(3, 12)), draw(st.integers(3, 12)), draw(st.integers(1, 4))
    paddings = st.sampled_from(["same", "valid", 0, 1, 2, (1, 0), (0, 2)])
    sizes = st.one_of(st.integers(1, 5), st.tuples(st.integers(1, 4), st.integers(1, 4)))
    layers = []
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            layers.append(Conv2D(draw(st.integers(1, 20)), draw(sizes),
                                 stride=draw(st.integers(1, 3)), padding=draw(paddings),
                                 activation=draw(st.sampled_from([None, "relu"])),
                                 use_bias=draw(st.booleans())))
        else:
            size = draw(sizes)
            layers.append(MaxPool2D(size, stride=draw(st.none() | st.integers(1, 3)),
                                    padding=draw(st.sampled_from(["same", "valid", 0, 1]))))
        layers += draw(st.sampled_from([[], [ReLU()], [Tanh()]]))
    layers.append(Flatten())
    for _ in range(draw(st.integers(1, 2))):
        layers.append(Dense(draw(st.integers(1, 24)), use_bias=draw(st.booleans()),
                            activation=draw(st.sampled_from([None, "relu"]))))
        layers += draw(st.sampled_from([[], [Dropout(0.5)], [Tanh()]]))
    try:
        return pyconv.Sequential(layers, input_shape=(h, w, c), seed=draw(st.integers(0, 99)))
    except (ShapeError, ValueError):
        assume(False)


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(model=networks(), n=st.integers(1, 5), opset=st.sampled_from([13, 17, 21]))
def test_random_networks_run_in_onnx_runtime_as_in_pyconv(model, n, opset, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "net.onnx"
    pconnx.export(model, path, opset=opset, input_type="float32")
    x = np.random.default_rng(n).standard_normal((n, *model.input_shape), dtype=np.float32)
    y, y_onnx = model.predict(x), run_onnx(path, x)
    assert_agrees(y_onnx, y)
    same_weights(pconnx.load(path), model)


@pytest.mark.parametrize("make", [pyconv.models.tutorial_cnn, pyconv.models.grokking_cnn,
                                  pyconv.models.lenet5])
def test_built_in_networks_agree_on_pixels_and_on_floats(make, tmp_path):
    model = make(seed=3)
    x = np.random.default_rng(0).integers(0, 256, (9, *model.input_shape), dtype=np.uint8)
    pconnx.export(model, tmp_path / "u8.onnx")          # uint8 pixels: scaled in the graph
    assert_agrees(run_onnx(tmp_path / "u8.onnx", x), model.predict(x))
    pconnx.export(model, tmp_path / "f32.onnx", input_type="float32")
    xf = x.astype(np.float32) / 255
    assert_agrees(run_onnx(tmp_path / "f32.onnx", xf), model.predict(xf))
    back = pconnx.load(tmp_path / "u8.onnx")
    same_weights(back, model)
    assert back.input_shape == model.input_shape and back.input_divisor == 255
    assert back.predict(x).tobytes() == model.predict(x).tobytes()


def test_file_records_layout_scaling_and_class_names(tmp_path):
    model = pyconv.Sequential([Conv2D(4, 3), MaxPool2D(2), Flatten(), Dense(3)],
                              input_shape=(8, 8, 3), class_names=["cat", "dog", "eel"],
                              input_divisor=100, name="pets")
    proto = pconnx.export(model, tmp_path / "pets.onnx")
    onnx.checker.check_model(onnx.load(tmp_path / "pets.onnx"), full_check=True)
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["pyconv.input_layout"] == "NHWC" and meta["pyconv.input_type"] == "uint8"
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == ["N", 8, 8, 3]   # dynamic batch
    back = pyconv.load(tmp_path / "pets.onnx")
    assert (back.name, back.class_names, back.input_divisor) == ("pets", model.class_names, 100)
    x = np.full((2, 8, 8, 3), 200, np.uint8)
    assert_agrees(run_onnx(tmp_path / "pets.onnx", x), model.predict(x))


def test_trained_tutorial_network_classes_agree_on_every_test_image(tmp_path):
    """On real MNIST: the 10,000 test images with the full files (the committed
    sample's 1,000 on a fresh clone), after 200 training steps."""
    ds = pyconv.datasets.load("mnist", data_dir=MNIST_DIR)
    model = pyconv.models.tutorial_cnn(seed=0)
    model.fit(ds.x_train, ds.y_train, steps=200, batch_size=50, lr=1e-4, verbose=False)
    pconnx.export(model, tmp_path / "tutorial.onnx")
    classes = run_onnx(tmp_path / "tutorial.onnx", ds.x_test[..., None]).argmax(axis=1)
    assert len(classes) == (10_000 if FULL_MNIST else 1_000)
    np.testing.assert_array_equal(classes, model.predict(ds.x_test).argmax(axis=1))
    assert np.mean(classes == ds.y_test) > 0.8        # trained: the agreement means something


def test_a_network_exported_by_pytorch_predicts_what_pytorch_predicts():
    """tests/data/torch-cnn.onnx: NCHW input, symmetric and strided windows, a
    padded pool, an NCHW Flatten, Gemm with transB (tests/data/make_torch_onnx.py)."""
    model = pconnx.load(os.path.join(HERE, "data", "torch-cnn.onnx"))
    ref = np.load(os.path.join(HERE, "data", "torch-cnn.npz"))
    assert model.input_shape == (28, 28, 1)
    y = model.predict(ref["x_nchw"].transpose(0, 2, 3, 1))    # pyconv takes NHWC
    assert_agrees(y, ref["y"])
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "MaxPool2D", "Conv2D", "Tanh", "Flatten", "Dense", "Dense"]


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    model = pyconv.Sequential([Conv2D(4, 3, activation="relu"), MaxPool2D(2), Tanh(),
                               Flatten(), Dense(5)], input_shape=(6, 6, 1), seed=0)
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    pconnx.export(model, path)
    return path


def rewritten(src, dst, edit):
    proto = onnx.load(src)
    edit(proto)
    with open(dst, "wb") as f:
        f.write(proto.SerializeToString())
    return dst


@settings(max_examples=40)
@given(cut=st.floats(0, 1, exclude_max=True))
def test_a_truncated_file_is_refused_with_its_name(small_file, cut, tmp_path_factory):
    data = small_file.read_bytes()
    path = tmp_path_factory.mktemp("cut") / "cut.onnx"
    path.write_bytes(data[:int(cut * len(data))])
    with pytest.raises(ModelFileError, match="cut.onnx"):
        pconnx.load(path)


def _set_opset(version):
    def edit(proto):
        proto.opset_import[0].version = version
    return edit


def _replace_op(old, new):
    def edit(proto):
        node = next(n for n in proto.graph.node if n.op_type == old)
        node.op_type = new
    return edit


def _bad_dense_rows(proto):
    w = next(t for t in proto.graph.initializer if t.name.endswith("Dense.w"))
    w.CopyFrom(onnx.numpy_helper.from_array(np.zeros((7, 5), np.float32), w.name))


def _insert_after(proto, op_type, op, inputs, name, **attrs):
    """Insert node `name`, an `op` over inputs(found) (found: the first node of
    `op_type`), right after that node, and make the node after it read it."""
    i = next(i for i, n in enumerate(proto.graph.node) if n.op_type == op_type)
    node = onnx.helper.make_node(op, inputs(proto.graph.node[i]), [name], name=name, **attrs)
    proto.graph.node.insert(i + 1, node)
    proto.graph.node[i + 2].input[0] = name


def _branch(proto):
    """A residual Add: a graph that is not a chain."""
    _insert_after(proto, "Tanh", "Add", lambda n: [n.output[0], n.input[0]], "skip")


def _concat_rows(proto):
    """A Concat along the rows of NCHW images (axis 2), not the channels."""
    _insert_after(proto, "Tanh", "Concat", lambda n: [n.output[0]] * 2, "cat", axis=2)
    w = next(t for t in proto.graph.initializer if t.name.endswith("Dense.w"))
    w.CopyFrom(onnx.numpy_helper.from_array(np.zeros((72, 5), np.float32), w.name))


def _add_to_raw_input(proto):
    """An Add of the NHWC input itself to a tensor after it."""
    _insert_after(proto, "Div", "Add", lambda n: [n.output[0]] * 2, "raw")


def test_a_residual_add_in_a_file_imports_as_a_graph(small_file, tmp_path):
    """Add(tanh(h), h): the skip connection PyTorch's residual networks write."""
    path = rewritten(small_file, tmp_path / "skip.onnx", _branch)
    model = pconnx.load(path)
    assert type(model).__name__ == "Model"
    add = next(n for n in model.nodes if type(n.layer).__name__ == "Add")
    tanh = next(n for n in model.nodes if type(n.layer).__name__ == "Tanh")
    assert add.inputs == (tanh.name, tanh.inputs[0])
    x = np.random.default_rng(0).integers(0, 256, (4, 6, 6, 1), dtype=np.uint8)
    assert_agrees(run_onnx(path, x), model.predict(x))


def test_a_pytorch_network_with_skips_predicts_what_pytorch_predicts_and_trains():
    """tests/data/torch-resnet.onnx: two residual blocks (relu(x + f(x))) and a
    branch concatenated along the channels, exported by torch.onnx.export."""
    model = pconnx.load(os.path.join(HERE, "data", "torch-resnet.onnx"))
    ref = np.load(os.path.join(HERE, "data", "torch-resnet.npz"))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("Add") == 2 and kinds.count("Concatenate") == 1
    x = ref["x_nchw"].transpose(0, 2, 3, 1)
    assert_agrees(model.predict(x), ref["y"])
    y = ref["y"].argmax(1)[::-1].copy()            # labels to learn: not what it predicts
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
    losses = [model.train_step(x, y, opt) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def test_a_pytorch_network_with_batch_norm_predicts_what_pytorch_predicts_and_trains():
    """tests/data/torch-bn-resnet.onnx: torchvision-style blocks with batch
    normalisation (PyTorch's momentum 0.1 written as ONNX's 0.9, pyconv's
    convention), an average pool, LeakyReLU, global average pooling, a
    BatchNorm1d and a sigmoid."""
    model = pconnx.load(os.path.join(HERE, "data", "torch-bn-resnet.onnx"))
    ref = np.load(os.path.join(HERE, "data", "torch-bn-resnet.npz"))
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds.count("BatchNormalization") == 7 and kinds.count("Add") == 2
    for kind in ("AveragePooling2D", "GlobalAveragePooling2D", "LeakyReLU", "Sigmoid"):
        assert kind in kinds
    assert {layer.momentum for layer in model.layers if hasattr(layer, "momentum")} == {0.9}
    x = ref["x_nchw"].transpose(0, 2, 3, 1)
    assert_agrees(model.predict(x), ref["y"])
    y = ref["y"].argmax(1)[::-1].copy()
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
    losses = [model.train_step(x, y, opt) for _ in range(15)]
    assert losses[-1] < 0.5 * losses[0]


def _modern_net(seed):
    x = pyconv.Input((9, 9, 2))
    h = pyconv.layers.BatchNormalization()(Conv2D(6, 3, use_bias=False)(x))
    h = pyconv.layers.LeakyReLU(0.2)(h)
    r = ReLU()(pyconv.layers.BatchNormalization()(Conv2D(6, 3)(h)))
    h = ReLU()(pyconv.layers.Add()([h, r]))
    h = pyconv.layers.AveragePooling2D(3, stride=2, padding=1)(h)
    h = pyconv.layers.GlobalAveragePooling2D()(h)
    h = pyconv.layers.Sigmoid()(pyconv.layers.BatchNormalization()(Dense(8)(h)))
    return pyconv.Model(x, Dense(4)(h), seed=seed)


@pytest.mark.parametrize("make", [_modern_net, pyconv.models.resnet8])
def test_modern_layers_export_and_run_in_onnx_runtime_as_in_pyconv(make, tmp_path):
    """Batch normalisation (trained statistics), average pools, LeakyReLU and
    sigmoid out to ONNX Runtime and back, the same predictions bit for bit."""
    model = make(seed=4)
    shape = model.input_shape
    rng = np.random.default_rng(3)
    xt = rng.random((32, *shape), dtype=np.float32)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(3):
        model.train_step(xt, rng.integers(0, model.output_shape[0], 32), opt)
    pconnx.export(model, tmp_path / "m.onnx", input_type="float32")
    x = rng.random((5, *shape), dtype=np.float32)
    assert_agrees(run_onnx(tmp_path / "m.onnx", x), model.predict(x))
    back = pconnx.load(tmp_path / "m.onnx")
    same_weights(back, model)
    for (_, a), (_, b) in zip(back.named_buffers(), model.named_buffers(), strict=True):
        assert a.tobytes() == b.tobytes()
    assert back.predict(x).tobytes() == model.predict(x).tobytes()


def test_an_opset_8_file_as_older_converters_wrote_them(tmp_path):
    """Opset 8, as the ONNX model zoo's MNIST network: a Conv without bias then
    an Add of a (C, 1, 1) constant, a weight reshaped by a Reshape node, MatMul
    and Add for the dense layer."""
    h = onnx.helper
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 1, 3, 3)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(a, n) for n, a in (
        ("w", w), ("b", rng.standard_normal((4, 1, 1)).astype(np.float32)),
        ("d_raw", rng.standard_normal((4 * 4 * 4 * 3,)).astype(np.float32)),
        ("d_shape", np.array([64, 3], np.int64)), ("flat", np.array([-1, 64], np.int64)),
        ("d_b", rng.standard_normal((3,)).astype(np.float32)))]
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Add", ["c", "b"], ["cb"]), h.make_node("Relu", ["cb"], ["r"]),
             h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             h.make_node("Reshape", ["p", "flat"], ["f"]),
             h.make_node("Reshape", ["d_raw", "d_shape"], ["d"]),
             h.make_node("MatMul", ["f", "d"], ["m"]), h.make_node("Add", ["m", "d_b"], ["y"])]
    # IR 3: the weights are graph inputs too, as the converters of the time wrote them
    weights = [h.make_tensor_value_info(t.name, t.data_type, list(t.dims)) for t in inits]
    graph = h.make_graph(nodes, "zoo-like", [h.make_tensor_value_info(
        "x", onnx.TensorProto.FLOAT, ["N", 1, 8, 8]), *weights], [h.make_tensor_value_info(
            "y", onnx.TensorProto.FLOAT, ["N", 3])], inits)
    proto = h.make_model(graph, opset_imports=[h.make_opsetid("", 8)])
    proto.ir_version = 3
    onnx.save(proto, tmp_path / "zoo.onnx")
    model = pconnx.load(tmp_path / "zoo.onnx")
    assert [type(layer).__name__ for layer in model.layers] == [
        "Conv2D", "MaxPool2D", "Flatten", "Dense"]
    x = rng.random((6, 1, 8, 8), dtype=np.float32)
    assert_agrees(model.predict(x.transpose(0, 2, 3, 1)), run_onnx(tmp_path / "zoo.onnx", x))


def test_a_graph_exports_and_runs_in_onnx_runtime_as_in_pyconv(tmp_path):
    from test_graph import skip_and_branch
    model = skip_and_branch(seed=2)
    pconnx.export(model, tmp_path / "g.onnx")
    x = np.random.default_rng(1).integers(0, 256, (5, 8, 8, 1), dtype=np.uint8)
    assert_agrees(run_onnx(tmp_path / "g.onnx", x), model.predict(x))
    back = pconnx.load(tmp_path / "g.onnx")
    same_weights(back, model)
    assert back.predict(x).tobytes() == model.predict(x).tobytes()


@pytest.mark.parametrize("edit, message", [
    (_set_opset(6), r"opset 7 to \d+; the file uses \{'ai.onnx': 6\}"),
    (_set_opset(999), r"the file uses \{'ai.onnx': 999\}"),
    (_replace_op("Tanh", "Softsign"), r"node 6 '2.Tanh' \(Softsign\): operator Softsign has "
                                      r"no pyconv layer; pyconv reads Conv, MaxPool"),
    (_replace_op("MaxPool", "LpPool"), r"\(LpPool\): operator LpPool has no pyconv layer"),
    (_bad_dense_rows, r"not a valid ONNX model: .*node name: 4.Dense.*mismatch.* 7 and 36"),
    (_concat_rows, r"node 7 'cat' \(Concat\): pyconv concatenates along the channels \(axis "
                   r"1\), got axis 2"),
    (_add_to_raw_input, r"node \d+ 'raw' \(Add\): its inputs are .*: pyconv reads a Add of "
                        r"NCHW images or of flat features"),
])
def test_a_bad_file_is_refused_naming_the_node(small_file, tmp_path, edit, message):
    path = rewritten(small_file, tmp_path / "bad.onnx", edit)
    with pytest.raises(ModelFileError, match=message) as e:
        pconnx.load(path)
    assert str(path) in str(e.value)



def test_files_that_are_not_onnx(tmp_path):
    (tmp_path / "noise.onnx").write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelFileError, match="noise.onnx"):
        pconnx.load(tmp_path / "noise.onnx")
    with pytest.raises(FileNotFoundError):
        pconnx.load(tmp_path / "missing.onnx")


def test_export_command_and_the_onnx_file_in_every_command(tmp_path):
    model = pyconv.models.lenet5(seed=1)
    pyconv.save(model, tmp_path / "lenet.npz")
    out = pyconv_cli("export", str(tmp_path / "lenet.npz"), str(tmp_path / "lenet.onnx")).stdout
    assert out.startswith(f"wrote {tmp_path / 'lenet.onnx'}: opset 17, ")
    assert "input 'images' uint8 (N, 28, 28, 1), output 'logits' (N, 10)" in out
    evaluated = [json.loads(pyconv_cli("evaluate", str(tmp_path / name)).stdout)
                 for name in ("lenet.npz", "lenet.onnx")]
    assert evaluated[0]["test_accuracy"] == evaluated[1]["test_accuracy"]
    assert "Conv2D" in pyconv_cli("summary", str(tmp_path / "lenet.onnx")).stdout
    bad = pyconv_cli("export", str(tmp_path / "lenet.npz"), str(tmp_path / "x.onnx"),
                     "--opset", "5", check=False)
    assert bad.returncode == 2 and "opset must be an int from 13 to" in bad.stderr
    assert not (tmp_path / "x.onnx").exists()


def test_without_the_extra_the_command_says_what_to_install(tmp_path):
    """onnx hidden: `pyconv export` names the extra; importing pyconv and
    training never import onnx."""
    pyconv.save(pyconv.models.grokking_cnn(), tmp_path / "g.npz")
    code = ("import sys; sys.modules['onnx'] = None\n"
            "import pyconv, pyconv.cli\n"
            "assert 'onnxruntime' not in sys.modules\n"
            f"sys.exit(pyconv.cli.main(['export', {str(tmp_path / 'g.npz')!r}, 'g.onnx']))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == ("pyconv: error: ONNX export and import needs the 'onnx' "
                                   "extra (onnx is not installed): pip install 'pyconv[onnx]'")
    assert not (tmp_path / "g.onnx").exists()


def test_every_cut_of_a_file_is_refused(small_file, tmp_path):
    """Each prefix of the file, byte by byte: a cut at a field boundary still
    parses (the metadata, stored last, is then missing), and is refused too."""
    data = small_file.read_bytes()
    path = tmp_path / "cut.onnx"
    for cut in range(len(data)):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="cut.onnx"):
            pconnx.load(path)


def test_a_bf16_run_exports_its_float32_weights(tmp_path):
    """A checkpoint trained in bf16-emulated holds float32 master weights: the
    file computes what the checkpoint computes in fp32."""
    ckpt = tmp_path / "c.npz"
    pyconv_cli("train", "--model", "grokking", "--steps", "4", "--batch-size", "32",
               "--precision", "bf16-emulated", "--no-progress", "--checkpoint", str(ckpt))
    pyconv_cli("export", str(ckpt), str(tmp_path / "m.onnx"))
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28, 1)).astype(np.uint8)
    np.testing.assert_allclose(pyconv.load(tmp_path / "m.onnx").predict(x),
                               pyconv.load(ckpt).predict(x), rtol=1e-5, atol=1e-5)
