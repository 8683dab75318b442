"""ONNX export and import: a trained model out to any ONNX runtime, and a
network made elsewhere (PyTorch, Keras) in to pyconv.

    pyconv.onnx.export(model, "model.onnx")      # pyconv export model.npz model.onnx
    model = pyconv.onnx.load("model.onnx")       # pyconv.load("model.onnx") too

pyconv's activations are NHWC; ONNX convolutions are NCHW. An exported graph
takes NHWC images, as pyconv does, and transposes them once at the input; it
transposes back before a Flatten, so the dense weights keep pyconv's (h, w, c)
row order and the file's weights are pyconv's, transposed at most. The batch
dimension is dynamic. By default an image model takes uint8 pixels and
divides them by the model's input_divisor in the graph (as predict does with
integer images); input_type="float32" takes the float images the layers take.

Import reads a graph of the operators in IMPORTERS (residual Adds, Concats). A graph whose input is
NCHW (PyTorch's) becomes a model that takes NHWC images, x.transpose(0, 2, 3, 1),
and the dense layer after its Flatten has its rows reordered to match.
Needs the onnx extra: pip install 'pyconv[onnx]'.
"""
import json
import os

import numpy as np

from convcore.geometry import window_pads

from ..errors import ModelFileError, ShapeError
from ..extras import require
from ..layers import (
    LAYERS,
    Add,
    AveragePooling2D,
    BatchNormalization,
    Concatenate,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    LeakyReLU,
    MaxPool2D,
    ReLU,
    Sigmoid,
    Tanh,
)
from ..model import Model
from ..version import __version__
from .files import write_file

DEFAULT_OPSET = 17        # read by ONNX Runtime >= 1.13, onnx.js, TensorRT 8.6, ...
MIN_OPSET = 13            # Flatten, Gemm and Dropout (ratio an input) as written here
MIN_READ_OPSET = 7        # the operators read mean what pyconv computes from opset 7 on
#                           (ONNX's own pytorch-converted models: 6-9; the zoo's MNIST: 8)
INPUT, OUTPUT = "images", "logits"
METADATA = ("pyconv.input_layout", "pyconv.input_type", "pyconv.input_divisor",
            "pyconv.class_names")
"""The metadata every file pyconv writes holds (stored last in the file: a
file cut just before or between them still parses, and is caught by them)."""


def _onnx():
    return require("onnx", "ONNX export and import")[0]


# ------------------------------------------------------------------ export

class _Writer:
    """The graph being written: nodes, initializers, the current tensor and
    whether it is NCHW (after the input transpose) or NHWC/flat."""

    def __init__(self, onnx):
        self.onnx, self.nodes, self.inits, self.cur, self.nchw = onnx, [], [], INPUT, False

    def const(self, name, value):
        self.inits.append(self.onnx.numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(self, op, inputs, name, **attrs):
        out = f"{name}:{op}"
        self.nodes.append(self.onnx.helper.make_node(op, [self.cur, *inputs], [out], name=name,
                                                     **attrs))
        self.cur = out
        return out

    def to_nchw(self, name, want):
        if self.nchw != want:
            self.node("Transpose", [], f"{name}.to_{'nchw' if want else 'nhwc'}",
                      perm=[0, 3, 1, 2] if want else [0, 2, 3, 1])
            self.nchw = want


def _window_attrs(layer, size, stride):
    (pt, pb), (pl, pr) = window_pads(layer.input_shape[:2], size, stride, layer.padding)
    return dict(kernel_shape=list(size), strides=list(stride), pads=[pt, pl, pb, pr])


def _activation(w, name, layer):
    if layer.activation == "relu":
        w.node("Relu", [], f"{name}.relu")


def _export_conv(w, name, layer):
    w.to_nchw(name, True)
    wt = layer.params["w"].value.transpose(3, 2, 0, 1)       # (kh, kw, C, F) -> (F, C, kh, kw)
    inputs = [w.const(f"{name}.w", np.ascontiguousarray(wt))]
    if layer.use_bias:
        inputs.append(w.const(f"{name}.b", layer.params["b"].value))
    w.node("Conv", inputs, name, **_window_attrs(layer, layer.kernel_size, layer.stride))
    _activation(w, name, layer)


def _export_pool(w, name, layer):
    w.to_nchw(name, True)
    stride = layer.pool_size if layer.stride is None else layer.stride
    w.node("MaxPool", [], name, **_window_attrs(layer, layer.pool_size, stride))


def _export_dense(w, name, layer):
    inputs = [w.const(f"{name}.w", layer.params["w"].value)]
    if layer.use_bias:
        inputs.append(w.const(f"{name}.b", layer.params["b"].value))
    w.node("Gemm", inputs, name)
    _activation(w, name, layer)


def _export_flatten(w, name, layer):
    if len(layer.input_shape) == 3:
        w.to_nchw(name, False)           # pyconv's dense rows are in (h, w, c) order
    w.node("Flatten", [], name, axis=1)


def _export_dropout(w, name, layer):
    w.node("Dropout", [w.const(f"{name}.ratio", np.float32(layer.rate))], name)


def _merge(op, **attrs):
    """An exporter of a merge layer as the operator `op` over its inputs (each
    a (tensor, nchw) pair); images are brought to NCHW first (Concat's axis 1:
    the channels of NCHW images, and the features of flat ones)."""
    def export(w, name, layer, values):
        names = []
        for k, value in enumerate(values):
            w.cur, w.nchw = value
            if len(layer.input_shape[k]) == 3:
                w.to_nchw(f"{name}.{k}", True)
            names.append(w.cur)
        w.cur = names[0]
        w.node(op, names[1:], name, **attrs)
    return export


def _export_avgpool(w, name, layer):
    w.to_nchw(name, True)
    stride = layer.pool_size if layer.stride is None else layer.stride
    w.node("AveragePool", [], name, count_include_pad=0,
           **_window_attrs(layer, layer.pool_size, stride))


def _export_global_pool(w, name, layer):
    w.to_nchw(name, True)
    w.node("GlobalAveragePool", [], name)
    w.node("Flatten", [], f"{name}.flatten", axis=1)      # (N, C, 1, 1) -> (N, C)
    w.nchw = False


def _export_batchnorm(w, name, layer):
    """ONNX's BatchNormalization in inference mode, over NCHW images or (N, C)
    features; momentum and epsilon mean what pyconv's do."""
    if len(layer.input_shape) == 3:
        w.to_nchw(name, True)
    inputs = [w.const(f"{name}.{k}", a) for k, a in (
        ("gamma", layer.params["gamma"].value), ("beta", layer.params["beta"].value),
        ("mean", layer.buffers["mean"]), ("var", layer.buffers["var"]))]
    w.node("BatchNormalization", inputs, name, epsilon=layer.epsilon, momentum=layer.momentum)


EXPORTERS = {
    Conv2D: _export_conv,
    MaxPool2D: _export_pool,
    AveragePooling2D: _export_avgpool,
    GlobalAveragePooling2D: _export_global_pool,
    BatchNormalization: _export_batchnorm,
    LeakyReLU: lambda w, name, layer: w.node("LeakyRelu", [], name, alpha=layer.alpha),
    Sigmoid: lambda w, name, layer: w.node("Sigmoid", [], name),
    Dense: _export_dense,
    Flatten: _export_flatten,
    Dropout: _export_dropout,     # the identity at inference; kept for a round trip
    ReLU: lambda w, name, layer: w.node("Relu", [], name),
    Tanh: lambda w, name, layer: w.node("Tanh", [], name),
}
MERGE_EXPORTERS = {Add: _merge("Add"), Concatenate: _merge("Concat", axis=1)}



def _input(w, model, input_type):
    """The graph's input, scaled (uint8) and transposed as the first layer needs."""
    helper, TensorProto = w.onnx.helper, w.onnx.TensorProto
    if input_type is None:
        input_type = "uint8" if len(model.input_shape) == 3 else "float32"
    if input_type not in ("uint8", "float32"):
        raise ValueError(f"export: input_type must be 'uint8' or 'float32', got {input_type!r}")
    dtype = TensorProto.UINT8 if input_type == "uint8" else TensorProto.FLOAT
    if input_type == "uint8":
        w.node("Cast", [], "input.to_float", to=TensorProto.FLOAT)
        w.node("Div", [w.const("input.divisor", np.float32(model.input_divisor))], "input.scale")
    return helper.make_tensor_value_info(INPUT, dtype, ["N", *model.input_shape]), input_type


def _check_opset(onnx, opset, fn):
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, int) or not MIN_OPSET <= opset <= newest:
        raise ValueError(f"{fn}: opset must be an int from {MIN_OPSET} to {newest} (this onnx "
                         f"package's newest), got {opset!r}")


def to_onnx(model, opset=DEFAULT_OPSET, input_type=None):
    """The model as an onnx.ModelProto (checked by onnx.checker, full check)."""
    onnx = _onnx()
    _check_opset(onnx, opset, "export")
    model.check_built("export")
    w = _Writer(onnx)
    graph_input, input_type = _input(w, model, input_type)
    values = {"input": (w.cur, w.nchw)}      # each value's ONNX tensor and whether NCHW
    for node in model.nodes:
        layer, name = node.layer, f"{node.name}.{type(node.layer).__name__}"
        if layer.merges:
            MERGE_EXPORTERS[type(layer)](w, name, layer, [values[n] for n in node.inputs])
        else:
            w.cur, w.nchw = values[node.inputs[0]]
            EXPORTERS[type(layer)](w, name, layer)
        values[node.name] = (w.cur, w.nchw)
    w.cur, w.nchw = values[model.output]
    w.to_nchw("output", False)
    w.nodes.append(onnx.helper.make_node("Identity", [w.cur], [OUTPUT], name="output"))

    graph = onnx.helper.make_graph(
        w.nodes, model.name, [graph_input],
        [onnx.helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT,
                                            ["N", *model.output_shape])], w.inits)
    proto = onnx.helper.make_model(graph, producer_name="pyconv", producer_version=__version__,
                                   opset_imports=[onnx.helper.make_opsetid("", opset)])
    proto.ir_version = min(proto.ir_version, _IR_FOR_OPSET.get(opset, proto.ir_version))
    meta = {"pyconv.input_layout": "NHWC", "pyconv.input_type": input_type,
            "pyconv.input_divisor": repr(model.input_divisor),
            "pyconv.class_names": json.dumps(model.class_names)}
    assert set(meta) == set(METADATA)
    onnx.helper.set_model_props(proto, meta)
    onnx.checker.check_model(proto, full_check=True)
    return proto


_IR_FOR_OPSET = {13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10}
"""The oldest IR version that holds each opset: a file that older runtimes read."""


def export(model, path, opset=DEFAULT_OPSET, input_type=None):
    """Write the model to `path` as ONNX (atomically); returns the ModelProto.
    input_type: 'uint8' (images as pixels, divided by input_divisor in the
    graph; the default for image models) or 'float32' (as the layers take them)."""
    proto = to_onnx(model, opset, input_type)
    write_file(path, lambda f: f.write(proto.SerializeToString()))
    return proto


# ------------------------------------------------------------------ import

class _Reader:
    """A graph read node by node into layer specs: the current tensor, its
    per-example shape in pyconv's terms ((H, W, C) or (D,)), and its layout."""

    def __init__(self, onnx, path, proto):
        self.onnx, self.path, self.graph = onnx, path, proto.graph
        self.consts = {t.name: onnx.numpy_helper.to_array(t) for t in self.graph.initializer}
        inputs = [v for v in self.graph.input if v.name not in self.consts]
        if len(inputs) != 1 or len(self.graph.output) != 1:
            raise ModelFileError(f"{path}: pyconv reads graphs of one input and one output, "
                                 f"this has {len(inputs)} and {len(self.graph.output)}")
        self.cur, self.dims = inputs[0].name, _static_dims(path, inputs[0])
        self.layout = "input"       # -> "nhwc" or "nchw" at the first layer; "flat" after
        self.shape = self.input_shape = None
        if len(self.dims) == 1:
            self.layout, self.shape = "flat", self.dims
            self.input_shape = self.dims
        self.divisor, self.specs, self.row_order, self.index = None, [], None, 0
        self.value = "input"        # the pyconv value the current tensor holds
        self.tensors = {}           # ONNX tensor -> (value, layout, shape, row_order)
        self.readers = {}           # ONNX tensor -> how many nodes read it
        for node in self.graph.node:
            for name in node.input:
                self.readers[name] = self.readers.get(name, 0) + 1
        self.save(self.cur)

    def save(self, tensor):
        """The current state as what ONNX tensor `tensor` holds."""
        self.tensors[tensor] = (self.value, self.layout, self.shape, self.row_order)

    def load(self, node, k=0):
        """Make input k of node the current tensor; its state, or fail."""
        name = node.input[k] if k < len(node.input) else ""
        if name not in self.tensors:
            self.fail(node, f"input {k} ({name or 'missing'}) is not the graph's input nor a "
                      "node's output that pyconv read")
        self.cur = name
        self.value, self.layout, self.shape, self.row_order = self.tensors[name]
        return self.tensors[name]

    def last_spec_makes_current(self):
        """The last layer read makes the current tensor, and nothing else reads it
        (so an activation or bias may be fused into that layer)."""
        return (bool(self.specs) and self.specs[-1][0]["name"] == self.value
                and self.readers.get(self.cur, 0) == 1)

    def where(self, node):
        return f"{self.path}: node {self.index} {node.name!r} ({node.op_type})"

    def fail(self, node, why):
        raise ModelFileError(f"{self.where(node)}: {why}")

    def const(self, node, k, required=True):
        """Input k of node as an array: an initializer or a Constant's value."""
        name = node.input[k] if k < len(node.input) else ""
        if name in self.consts:
            return self.consts[name]
        if required or name:
            self.fail(node, f"input {k} ({name or 'missing'}) must be a constant (an "
                      "initializer): pyconv reads weights, not computed tensors")
        return None

    def attrs(self, node):
        return {a.name: self.onnx.helper.get_attribute_value(a) for a in node.attribute}

    def images(self, node):
        """Fix the input layout at the first layer if not yet (NCHW: PyTorch's)."""
        if self.layout == "input":
            if len(self.dims) != 3:
                self.fail(node, f"expects images, the graph's input is {self.dims}")
            c, h, w = self.dims
            self.input_shape = self.shape = (h, w, c)
            self.layout = "nchw"
        if len(self.shape) != 3:
            self.fail(node, f"expects images (N, C, H, W), gets flat features {self.shape}")

    def add(self, node, spec, weights=None, inputs=None, shapes=None):
        """A layer that reads the current value (or the values `inputs`, of
        per-example `shapes`), becoming the current value."""
        config = {k: v for k, v in spec.items() if k != "type"}
        layer = LAYERS[spec["type"]](**config)
        try:
            shape = layer.compute_output_shape(self.shape if shapes is None else shapes)
        except ShapeError as e:
            self.fail(node, str(e))
        name = str(len(self.specs))
        spec.update(name=name, inputs=[self.value] if inputs is None else inputs)
        self.specs.append((spec, weights or {}))
        self.shape, self.value = tuple(shape), name



def _static_dims(path, value_info):
    """An input's per-example dims (all fixed) from its (N, ...) type."""
    dims = value_info.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    if len(shape) not in (2, 4) or None in shape[1:]:
        raise ModelFileError(f"{path}: input {value_info.name!r} must be (N, D) features or "
                             f"(N, ...) images of a fixed size, got {shape}")
    return shape[1:]


def _scalar(r, node, k):
    v = r.const(node, k)
    if v.size != 1:
        r.fail(node, f"pyconv reads a scaling of the input by one number, got shape {v.shape}")
    return float(v.reshape(()))


def _prelude(r, node):
    if r.specs or r.layout not in ("input", "flat"):
        r.fail(node, "pyconv reads Cast, Div and Mul only as the input's scaling, before "
               "the first layer")


def _import_cast(r, node):
    _prelude(r, node)
    if r.attrs(node).get("to") != r.onnx.TensorProto.FLOAT:
        r.fail(node, "pyconv reads a Cast of the input to float32 only")


def _import_scale(r, node):
    _prelude(r, node)
    v = _scalar(r, node, 1)
    if v == 0 or not np.isfinite(v):
        r.fail(node, f"scales the input by {v}")
    r.divisor = v if node.op_type == "Div" else 1 / v


def _import_transpose(r, node):
    perm = list(r.attrs(node).get("perm", []))
    if r.layout == "input" and perm == [0, 3, 1, 2] and len(r.dims) == 3:
        r.input_shape = r.shape = tuple(r.dims)       # the graph takes NHWC, as pyconv does
        r.layout = "nchw"
    elif r.layout == "nchw" and perm == [0, 2, 3, 1]:
        r.layout = "nhwc"                             # (before a Flatten: (h, w, c) rows)
    else:
        r.fail(node, f"perm {perm} on a {r.layout.upper()} tensor: pyconv reads an NHWC "
               "input transposed to NCHW, and NCHW back to NHWC before a Flatten")


def _window(r, node, size):
    """pyconv's stride and padding for a Conv's or MaxPool's attributes."""
    a = r.attrs(node)
    if any(d != 1 for d in a.get("dilations", [])) or a.get("ceil_mode", 0):
        r.fail(node, "dilations and ceil_mode are not in pyconv")
    stride = tuple(a.get("strides", (1, 1)))
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "VALID"):
        return list(stride), "same" if auto == "SAME_UPPER" else "valid"
    if auto != "NOTSET":
        r.fail(node, f"auto_pad {auto}: pyconv pads as SAME_UPPER (TensorFlow's 'same')")
    t, left, b, right = a.get("pads", (0, 0, 0, 0))
    if (t, b, left, right) == (0, 0, 0, 0):
        return list(stride), "valid"
    if ((t, b), (left, right)) == window_pads(r.shape[:2], size, stride, "same"):
        return list(stride), "same"
    if t == b and left == right:
        return list(stride), [t, left]
    r.fail(node, f"pads {[t, left, b, right]}: pyconv pads both sides alike, or as "
           "TensorFlow's 'same' (the odd cell at the bottom and right)")


def _import_conv(r, node):
    r.images(node)
    _need_nchw(r, node)
    w, b = r.const(node, 1), r.const(node, 2, required=False)
    if r.attrs(node).get("group", 1) != 1 or w.ndim != 4:
        r.fail(node, "pyconv's convolutions are 2-d and ungrouped")
    if w.shape[1] != r.shape[2]:
        r.fail(node, f"its weight {w.shape} takes {w.shape[1]} channels; the tensor before "
               f"it has {r.shape[2]}")
    stride, padding = _window(r, node, w.shape[2:])
    spec = {"type": "Conv2D", "filters": int(w.shape[0]), "kernel_size": list(w.shape[2:]),
            "stride": stride, "padding": padding, "use_bias": b is not None}
    r.add(node, spec, {"w": w.transpose(2, 3, 1, 0), "b": b})


def _need_nchw(r, node):
    if r.layout != "nchw":
        r.fail(node, f"a {node.op_type} on a tensor transposed to NHWC (ONNX's are NCHW)")


def _import_maxpool(r, node):
    r.images(node)
    _need_nchw(r, node)
    if len(node.output) > 1 and node.output[1]:
        r.fail(node, "its argmax output (Indices) is not in pyconv")
    size = list(r.attrs(node)["kernel_shape"])
    stride, padding = _window(r, node, size)
    r.add(node, {"type": "MaxPool2D", "pool_size": size, "stride": stride, "padding": padding})


def _import_avgpool(r, node):
    r.images(node)
    _need_nchw(r, node)
    a = r.attrs(node)
    size = list(a["kernel_shape"])
    if a.get("count_include_pad", 0) and any(a.get("pads", ())):
        r.fail(node, "count_include_pad=1 with padding: pyconv's average pools count the "
               "cells inside the image only (ONNX's default)")
    stride, padding = _window(r, node, size)
    r.add(node, {"type": "AveragePooling2D", "pool_size": size, "stride": stride,
                 "padding": padding})


def _import_global_pool(r, node):
    r.images(node)
    _need_nchw(r, node)
    r.add(node, {"type": "GlobalAveragePooling2D"})
    r.layout = "flat"          # (N, C, 1, 1) in ONNX: a Flatten after it changes nothing


def _f32(v):
    """An attribute's float (ONNX stores float32: 0.9 reads 0.8999999762) as the
    shortest decimal that float32 rounds to it (0.9)."""
    return float(f"{np.float32(v):.7g}")


def _import_batchnorm(r, node):
    a = r.attrs(node)
    if len([o for o in node.output if o]) > 1 or a.get("training_mode", 0):
        r.fail(node, "a BatchNormalization in training mode (pyconv reads inference graphs)")
    if not a.get("spatial", 1):
        r.fail(node, "spatial=0 (statistics per position): pyconv's are per channel")
    if r.layout == "input":
        r.images(node)
    if r.layout == "nhwc" or r.row_order is not None:
        r.fail(node, "a BatchNormalization of a tensor transposed to NHWC or flattened from "
               "NCHW images")
    gamma, beta, mean, var = (r.const(node, k).reshape(-1) for k in range(1, 5))
    if gamma.size != r.shape[-1]:
        r.fail(node, f"its statistics are for {gamma.size} channels; the tensor before it has "
               f"{r.shape[-1]}")
    spec = {"type": "BatchNormalization", "momentum": _f32(a.get("momentum", 0.9)),
            "epsilon": _f32(a.get("epsilon", 1e-5))}
    r.add(node, spec, {"gamma": gamma, "beta": beta, "mean": mean, "var": var})


def _import_flatten(r, node, axis=None):
    axis = r.attrs(node).get("axis", 1) if axis is None else axis
    if axis != 1 or r.layout == "input":
        r.fail(node, f"pyconv flattens each example (axis 1), got axis {axis}")
    if r.layout == "nchw":     # ONNX's rows (c, h, w); pyconv's Flatten gives (h, w, c)
        h, w, c = r.shape
        r.row_order = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).ravel()
    r.add(node, {"type": "Flatten"})
    r.layout = "flat"


def _import_reshape(r, node):
    shape = [int(v) for v in r.const(node, 1)]
    flat = int(np.prod(r.shape or r.dims))
    if len(shape) != 2 or shape[0] not in (0, -1) or shape[1] not in (-1, flat) \
            or shape == [-1, -1]:
        r.fail(node, f"pyconv reads a Reshape to (N, features) only, got {shape}")
    _import_flatten(r, node, axis=1)


def _dense(r, node, w, b):
    if r.layout != "flat":
        r.fail(node, "a dense layer needs flat features: put a Flatten before it")
    if w.ndim != 2 or w.shape[0] != r.shape[0]:
        r.fail(node, f"its weight {w.shape} takes {w.shape[0] if w.ndim else '?'} features; "
               f"the tensor before it has {r.shape[0]}")
    if r.row_order is not None:
        w, r.row_order = w[r.row_order], None
    spec = {"type": "Dense", "units": int(w.shape[1]), "use_bias": b is not None}
    r.add(node, spec, {"w": w, "b": None if b is None else b.reshape(-1)})


def _import_gemm(r, node):
    a = r.attrs(node)
    if a.get("alpha", 1.0) != 1 or a.get("beta", 1.0) != 1 or a.get("transA", 0):
        r.fail(node, "pyconv reads Gemm with alpha = beta = 1 and transA = 0")
    w = r.const(node, 1)
    _dense(r, node, w.T if a.get("transB", 0) else w, r.const(node, 2, required=False))


def _import_add(r, node):
    """The bias of the MatMul or Conv before it (a constant: per unit, or per
    channel (C, 1, 1)), or the sum of two or more tensors (a residual
    connection): an Add layer."""
    if len(node.input) < 2 or node.input[1] not in r.consts:
        return _import_merge(r, node, "Add")
    spec, weights = r.specs[-1] if r.specs else ({}, {})
    b = r.const(node, 1)
    width = spec.get("units", spec.get("filters"))
    per_channel = spec.get("type") == "Dense" or b.shape[-2:] in ((1, 1), ()) or b.ndim < 2
    if (not r.last_spec_makes_current() or spec.get("type") not in ("Dense", "Conv2D")
            or spec["use_bias"] or spec.get("activation") or b.size != width
            or not per_channel):
        r.fail(node, "pyconv reads an Add of a constant only as the bias of the MatMul or "
               "Conv before it")
    spec["use_bias"], weights["b"] = True, b.reshape(-1)


def _import_merge(r, node, kind):
    """Add or Concat (along the channels of NCHW images, or the features) of
    tensors alike in layout, as a merge layer."""
    states = [r.load(node, k) for k in range(len(node.input))]
    layouts = {layout for _, layout, _, _ in states}
    if len(layouts) != 1 or not layouts <= {"nchw", "flat"}:
        r.fail(node, f"its inputs are {' and '.join(sorted(layouts))}: pyconv reads a {kind} "
               "of NCHW images or of flat features")
    if any(order is not None for _, _, _, order in states):
        r.fail(node, f"a {kind} of features flattened from NCHW images")
    if kind == "Concatenate":
        rank = 4 if layouts == {"nchw"} else 2
        if r.attrs(node).get("axis", 1) % rank != 1:
            r.fail(node, "pyconv concatenates along the channels (axis 1), got axis "
                   f"{r.attrs(node).get('axis')}")
    r.load(node, 0)
    r.add(node, {"type": kind}, inputs=[v for v, _, _, _ in states],
          shapes=[s for _, _, s, _ in states])


def _import_relu(r, node):
    spec = r.specs[-1][0] if r.specs else {}
    if (r.last_spec_makes_current() and spec.get("type") in ("Conv2D", "Dense")
            and spec.get("activation") is None):
        spec["activation"] = "relu"                 # fused, as pyconv runs it
    else:
        r.add(node, {"type": "ReLU"})


def _import_dropout(r, node):
    mode = r.const(node, 2, required=False)
    if mode is not None and bool(mode):
        r.fail(node, "a Dropout in training mode")
    ratio = r.const(node, 1, required=False)
    rate = float(r.attrs(node).get("ratio", 0.5) if ratio is None else ratio)
    r.add(node, {"type": "Dropout", "rate": rate})


def _import_softmax(r, node):
    if node is not r.graph.node[-1] or r.layout != "flat":
        r.fail(node, "pyconv reads a Softmax only as the last node, over the classes")
    # dropped: a pyconv model gives logits; predict_classes' probabilities are their softmax


IMPORTERS = {
    "Conv": _import_conv,
    "MaxPool": _import_maxpool,
    "Gemm": _import_gemm,
    "MatMul": lambda r, node: _dense(r, node, r.const(node, 1), None),
    "Add": _import_add,
    "Concat": lambda r, node: _import_merge(r, node, "Concatenate"),
    "AveragePool": _import_avgpool,
    "GlobalAveragePool": _import_global_pool,
    "BatchNormalization": _import_batchnorm,
    "Relu": _import_relu,
    "LeakyRelu": lambda r, node: r.add(node, {"type": "LeakyReLU",
                                              "alpha": _f32(r.attrs(node).get("alpha", 0.01))}),
    "Sigmoid": lambda r, node: r.add(node, {"type": "Sigmoid"}),
    "Tanh": lambda r, node: r.add(node, {"type": "Tanh"}),
    "Flatten": _import_flatten,
    "Reshape": _import_reshape,
    "Dropout": _import_dropout,
    "Transpose": _import_transpose,
    "Cast": _import_cast,
    "Div": _import_scale,
    "Mul": _import_scale,
    "Identity": lambda r, node: None,
    "Softmax": _import_softmax,
    "LogSoftmax": _import_softmax,
}


def _read(onnx, path):
    """The ModelProto in `path`, checked, or ModelFileError saying what is wrong."""
    from google.protobuf.message import DecodeError
    path = os.fspath(path)
    try:
        proto = onnx.load(path)
    except FileNotFoundError:
        raise
    except (DecodeError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path}: not a readable ONNX file (truncated or corrupted?): "
                             f"{e}") from None
    opsets = {o.domain or "ai.onnx": o.version for o in proto.opset_import}
    newest = onnx.defs.onnx_opset_version()
    if set(opsets) - {"ai.onnx"} or not MIN_READ_OPSET <= opsets.get("ai.onnx", 0) <= newest:
        raise ModelFileError(f"{path}: pyconv reads the standard operators (ai.onnx) of opset "
                             f"{MIN_READ_OPSET} to {newest}; the file uses {opsets}")
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        raise ModelFileError(f"{path}: not a valid ONNX model: "
                             f"{str(e).strip().splitlines()[0]}") from None
    return proto


def _walk(r):
    """Each node of the graph (in its order, which ONNX makes topological) into
    r's layer specs, each reading the values its inputs hold."""
    for node in r.graph.node:
        if node.op_type == "Constant":
            r.consts[node.output[0]] = r.onnx.numpy_helper.to_array(node.attribute[0].t)
            continue
        if node.op_type == "Identity" and node.input[0] in r.consts:    # a weight renamed
            r.consts[node.output[0]] = r.consts[node.input[0]]
            continue
        if node.op_type == "Reshape" and node.input[0] in r.consts:     # a weight reshaped
            a = r.consts[node.input[0]]
            shape = [a.shape[i] if v == 0 else int(v) for i, v in enumerate(r.const(node, 1))]
            r.consts[node.output[0]] = a.reshape(shape)
            continue
        if node.op_type not in IMPORTERS:
            r.fail(node, f"operator {node.op_type} has no pyconv layer; pyconv reads "
                   f"{', '.join(IMPORTERS)}")
        r.load(node, 0)
        IMPORTERS[node.op_type](r, node)
        r.save(node.output[0])
        r.index += 1
    out = r.graph.output[0].name
    if r.input_shape is None or not r.specs:
        raise ModelFileError(f"{r.path}: the graph has no layer pyconv reads")
    if r.tensors.get(out, (None,))[0] != r.specs[-1][0]["name"]:
        raise ModelFileError(f"{r.path}: the graph's output {out!r} is not made by its last "
                             "layer")


def _model(r, meta, input_divisor):
    names = json.loads(meta.get("pyconv.class_names", "null"))
    divisor = (input_divisor or r.divisor or float(meta.get("pyconv.input_divisor", 255.0)))
    arch = {"name": r.graph.name or "onnx", "input_shape": list(r.input_shape),
            "input_divisor": divisor, "class_names": names,
            "layers": [spec for spec, _ in r.specs]}
    try:
        model = Model.from_architecture(arch, where=r.path)
    except ValueError as e:
        raise ModelFileError(f"{r.path}: {e}") from None
    for (_, weights), layer in zip(r.specs, model.layers):
        for key, p in layer.params.items():
            p.value[...] = weights[key].astype(np.float32, copy=False)
        for key, b in layer.buffers.items():
            b[...] = weights[key].astype(np.float32, copy=False)
    return model


def load(path, input_divisor=None):
    """A model from an ONNX file: a graph of the operators in IMPORTERS (a
    Sequential where they form a chain).

    input_divisor: what integer images are divided by (default: the graph's
    own scaling of a uint8 input, else pyconv's 255)."""
    onnx = _onnx()
    proto = _read(onnx, path)
    meta = {p.key: p.value for p in proto.metadata_props}
    missing = [k for k in METADATA if k not in meta]
    if proto.producer_name == "pyconv" and missing:
        raise ModelFileError(f"{path}: written by pyconv, but its metadata {missing} is "
                             "missing (truncated?)")
    r = _Reader(onnx, os.fspath(path), proto)
    _walk(r)
    return _model(r, meta, input_divisor)
