"""Models: a graph of layers (Model, after Keras' functional API) and its
chain case (Sequential), built for an input shape; forward, backward, a
training step, predict and evaluate.

A model is a list of nodes in topological order, each a layer and the names
of the values it reads ("input", or an earlier node's name); the last node
is the output. The model plans how to run them once (pyconv.fusion) and
keeps the plan; forward hands backward a tape of what each step needs, so
nothing is written on the model or its layers during a step, and any number
of threads may predict with one model at once.
"""
from dataclasses import dataclass

import numpy as np

import convcore

from .errors import ShapeError
from .fusion import FUSIONS, plan
from .graph import Tensor
from .layers import LAYERS, Training
from .losses import softmax_cross_entropy
from .precision import checked

INPUT = "input"     # the name of the model's input among the values
SLICES = 1          # a batch's slices by default (convcore.slices): one plain sum, the
                    # fastest; 16 gives the same bits on 1, 2, 4, 8 or 16 processes
_LOOP = {}          # "fit": pyconv.train.fit, registered by pyconv.train (above the model)


def register_loop(name, fn):
    """Let Model.<name> call fn(model, ...): how the training package, which
    imports the model, lends it its loop without the model importing it."""
    _LOOP[name] = fn


@dataclass(frozen=True)
class Node:
    """A layer of the graph and the names of the values it reads."""
    name: str
    layer: object
    inputs: tuple


class Tape:
    """What a training forward pass hands its backward pass: the plan's steps
    and each one's ctx."""
    __slots__ = ("steps", "ctxs", "output")

    def __init__(self, steps, ctxs, output):
        self.steps, self.ctxs, self.output = steps, ctxs, output


class Model:
    """A directed acyclic graph of layers from one input to one output.

        x = pyconv.Input((28, 28, 1))
        h = Conv2D(8, 3, activation="relu")(x)
        y = Add()([h, Conv2D(8, 3)(h)])
        model = pyconv.Model(x, Dense(10)(Flatten()(y)))

    inputs: the Input; outputs: the Tensor the last layer made. The layers
    are built at once, in topological order, the weights drawn from the
    seed's generator. seed: the weights' initialisation and the dropout masks
    (two generators, both from the seed). input_divisor: integer images
    (uint8) are divided by it on the way in (255: pixels to [0, 1]); float
    images go in as they are. class_names: the output classes' names.
    """

    def __init__(self, inputs, outputs, name="model", seed=None, input_divisor=255.0,
                 class_names=None):
        if not isinstance(inputs, Tensor) or inputs.layer is not None:
            raise TypeError(f"Model: inputs must be a pyconv.Input, got {inputs!r}")
        if not isinstance(outputs, Tensor) or outputs.layer is None:
            raise TypeError(f"Model: outputs must be a layer's output (a Tensor made by calling "
                            f"a layer), got {outputs!r}")
        self._setup(_trace(inputs, outputs), name, seed, input_divisor, class_names)
        self.build(inputs.shape)

    def _setup(self, nodes, name, seed, input_divisor, class_names):
        self.nodes = tuple(nodes)
        self.name, self.seed = name, seed
        self.input_divisor = float(input_divisor)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.rng = np.random.default_rng(seed)      # dropout masks
        self.input_shape = self.output_shape = None
        self._plans = {}            # (optimizer, its fusion_key, fusions) -> steps
        self.set_precision("fp32")

    def set_precision(self, precision):
        """How the convolutions and dense layers multiply: "fp32" (the
        default), "bf16" (on a CPU with AMX-BF16 or AVX512-BF16; a ValueError
        naming what this CPU lacks elsewhere) or "bf16-emulated" (the same
        arithmetic on any CPU, slower); see pyconv.precision. The weights stay
        float32. Returns the model."""
        self.precision = checked("set_precision", precision)
        for node in self.nodes:
            node.layer.precision = self.precision
        return self

    @property
    def layers(self):
        """The layers, in the order they run."""
        return [node.layer for node in self.nodes]

    @property
    def output(self):
        return self.nodes[-1].name

    # ------------------------------------------------------------ building

    def build(self, input_shape):
        """Build every layer in turn for one example's input_shape, the weights
        drawn from the seed's generator in the nodes' order. A layer that does
        not fit its input raises ShapeError naming it (name, type, expected, given)."""
        shape = _shape("build", input_shape)
        rng = np.random.default_rng(self.seed)
        shapes = {INPUT: shape}
        for node in self.nodes:
            given = _read(shapes, node.inputs)
            try:
                shapes[node.name] = node.layer.build(given, rng)
            except ShapeError as e:
                raise ShapeError(f"layer {node.name} ({type(node.layer).__name__}): {e}") from None
        out = shapes[self.output]
        if self.class_names is not None and (len(out) != 1 or out[0] != len(self.class_names)):
            raise ShapeError(f"the model's output {out} does not match its "
                             f"{len(self.class_names)} class_names")
        self._plans = {}
        self._inference = plan(self.nodes, self.output, training=False)
        self.input_shape, self.output_shape = shape, out
        return self

    @property
    def built(self):
        return self.input_shape is not None

    def check_built(self, fn):
        """Raise ValueError, naming `fn`, unless the model is built."""
        if not self.built:
            raise ValueError(f"{fn}: the model is not built yet: give Sequential(..., "
                             "input_shape=(H, W, C)) or call model.build(input_shape) first")

    def parameters(self):
        self.check_built("parameters")
        return [p for layer in self.layers for p in layer.params.values()]

    def named_parameters(self):
        self.check_built("named_parameters")
        return [(f"{node.name}.{type(node.layer).__name__}.{name}", p)
                for node in self.nodes for name, p in node.layer.params.items()]

    def named_buffers(self):
        """[(name, array)]: every layer's non-trainable state (Layer.buffers),
        named as named_parameters names the parameters."""
        self.check_built("named_buffers")
        return [(f"{node.name}.{type(node.layer).__name__}.{name}", b)
                for node in self.nodes for name, b in node.layer.buffers.items()]

    # ------------------------------------------------------------ running

    def steps(self, optimizer=None, fusions=FUSIONS, training=True):
        """The plan: the graph's nodes as forward and backward run them, from the
        table of fusions (pyconv.fusion): each Conv2D followed by a MaxPool2D
        as one step, a Dense layer as one step with its Adam update where the
        optimiser fuses it, every other layer on its own. fusions=() runs every
        layer on its own (the same bits). training=False: the inference plan,
        where a batch normalisation is folded into the convolution before it.
        Planned once per (optimizer, its hooks, fusions, training) and kept."""
        self.check_built("steps")
        if not training and fusions is FUSIONS:
            return self._inference
        key = (optimizer, None if optimizer is None else optimizer.fusion_key(), fusions,
               bool(training))
        found = self._plans.get(key)
        if found is None:
            if len(self._plans) >= 8:
                self._plans = {}
            found = self._plans[key] = plan(self.nodes, self.output, optimizer, fusions,
                                            bool(training))
        return found

    def prepare(self, x, fn="forward"):
        """x as the first layer takes it: float32 (N, *input_shape). Integer
        images are divided by input_divisor; (N, H, W) gains its channel axis
        where the model takes one channel; builds the model on its first input."""
        if not isinstance(x, np.ndarray) and hasattr(x, "__array__") and hasattr(x, "shape"):
            x = np.asarray(x)                  # rows read from disk (datasets.NpyRows)
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{fn}: x must be a numpy array of images (N, H, W, C), "
                            f"got {type(x).__name__}")
        if not self.built and x.ndim >= 2:
            self.build(x.shape[1:] + ((1,) if x.ndim == 3 else ()))
        self.check_built(fn)
        if x.ndim == len(self.input_shape) and self.input_shape[-1:] == (1,):
            x = x[..., None]
        if x.shape[1:] != self.input_shape:
            raise ShapeError(f"{fn}: x has examples of shape {x.shape[1:]} (x {x.shape}); "
                             f"the model takes {self.input_shape}")
        if np.issubdtype(x.dtype, np.integer) or x.dtype == np.bool_:
            return x.astype(np.float32) / np.float32(self.input_divisor)
        if not np.issubdtype(x.dtype, np.floating):
            raise TypeError(f"{fn}: x must hold integer or float images, got {x.dtype}")
        return x if x.dtype == np.float32 else x.astype(np.float32)

    def forward(self, x, training=False, optimizer=None, fusions=FUSIONS):
        """(output, tape): the plan's steps in order on float32 x (see prepare).
        training: False, True or a layers.Training (the dropout generator and
        this slice's first example; True: the model's generator). The tape
        holds what backward needs (None at inference). Give the optimizer
        whose update the following backward pass may fuse."""
        steps = self.steps(optimizer, fusions, bool(training))
        if training and not isinstance(training, Training):
            training = Training(self.rng)
        values = {INPUT: x}
        ctxs = []
        for step in steps:
            y, ctx = step.op.forward(_read(values, step.inputs), training)
            values[step.output] = y
            for n in step.drop:             # what no later step reads
                del values[n]
            ctxs.append(ctx)
        out = values[steps[-1].output]
        return out, (Tape(steps, ctxs, steps[-1].output) if training else None)

    def backward(self, tape, dy, optimizer=None):
        """The backward passes of a training forward's steps (its tape), in
        reverse; returns the input's gradient (None: the input needs none).
        Where a value is read by several steps, its gradients are summed in
        the order those steps' backward passes run. With an optimizer (between
        its begin_step and finish_step), each parameter is handed to
        optimizer.grad_ready as soon as its gradient is complete."""
        grads = {tape.output: dy}
        for step, ctx in zip(reversed(tape.steps), reversed(tape.ctxs)):
            dx = step.op.backward(ctx, grads.pop(step.output), step.need_dx)
            if optimizer is not None:
                for p in step.op.ready_params():
                    optimizer.grad_ready(p)
            if not step.need_dx:
                continue
            for name, d in zip(step.inputs, dx if len(step.inputs) > 1 else (dx,)):
                grads[name] = d if name not in grads else _summed(grads[name], d)
        return grads.get(INPUT)

    def node_outputs(self, x):
        """[(node, its output)] for every node in order, unfused, in inference
        mode, on float32 x (see prepare): what the feature maps show."""
        values, out = {INPUT: x}, []
        for node in self.nodes:
            values[node.name] = node.layer.forward(_read(values, node.inputs))[0]
            out.append((node, values[node.name]))
        return out

    def train_step(self, x, y, optimizer, fusions=FUSIONS, return_logits=False, shard=None,
                   label_smoothing=0.0, sums=None, slices=SLICES):
        """One step on a batch: x images (N, H, W, C), float32 or integer (scaled
        by input_divisor), y integer labels (N,). Returns the mean loss, or
        (loss, logits) with return_logits=True.

        shard=(first, end, n): x and y are examples first..end-1 of a global
        batch of n (one process's slice of it: pyconv.distributed.DataParallel
        cuts them), the loss returned is their share of its mean, and dropout
        draws that slice of the global batch's masks; sums (with a shard): the
        sum of an array over the processes, for batch normalisation's global
        statistics. label_smoothing: of the loss (pyconv.losses).

        slices: the number of slices the batch is cut into (convcore.slices:
        every weight and bias gradient is the slices' sums added in a fixed
        tree; 1: one plain sum), or, with a shard, the bounds [0, ..., end -
        first] of this process's slices (DataParallel gives them)."""
        x = self.prepare(x, "train_step")
        training = Training(self.rng, 0 if shard is None else shard[0], sums,
                            _bounds(slices, len(y), shard))
        logits, tape = self.forward(x, training, optimizer, fusions)
        loss, dlogits = softmax_cross_entropy(logits, y, None if shard is None else shard[2],
                                              label_smoothing)
        optimizer.begin_step()
        self.backward(tape, dlogits, optimizer)
        optimizer.finish_step()
        return (loss, logits) if return_logits else loss

    def fit(self, x, y, **kwargs):
        """Train on images x and labels y: pyconv.train.fit(model, x, y, ...),
        see there for the options (epochs or steps, batch_size, optimizer,
        validation_data or validation_split, callbacks). Returns a History.
        (The loop lives above the model: pyconv.train registers it here when
        imported, as `import pyconv` does.)"""
        if _LOOP.get("fit") is None:
            raise RuntimeError("Model.fit: the training loop is not loaded: import pyconv.train")
        return _LOOP["fit"](self, x, y, **kwargs)

    def predict(self, x, batch_size=1000):
        """Logits (N, classes) in inference mode (no dropout), in batches; x as
        for train_step (uint8 images are scaled as in training)."""
        if not hasattr(x, "shape"):
            raise TypeError(f"predict: x must be a numpy array of images (N, H, W, C), "
                            f"got {type(x).__name__}")
        out = [self.forward(self.prepare(x[i:i + batch_size], "predict"))[0]
               for i in range(0, max(len(x), 1), batch_size)]   # no images: one empty batch
        return np.concatenate(out)

    def predict_classes(self, x, batch_size=1000):
        """The most likely class of each image (N,) and its softmax probability (N,)."""
        logits = self.predict(x, batch_size).astype(np.float64)
        z = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = z / z.sum(axis=1, keepdims=True)
        classes = probs.argmax(axis=1)
        return classes, probs[np.arange(len(classes)), classes]

    def evaluate(self, x, y, batch_size=1000):
        """{"loss": mean cross-entropy, "accuracy": fraction right} over (x, y)."""
        logits = self.predict(x, batch_size)
        loss = softmax_cross_entropy(logits, np.asarray(y).astype(np.int64))[0]
        acc = float(np.mean(logits.argmax(axis=1) == y)) if len(y) else 0.0
        return {"loss": loss, "accuracy": acc}

    def accuracy(self, x, y, batch_size=1000):
        return float(np.mean(self.predict(x, batch_size).argmax(axis=1) == y)) if len(y) else 0.0

    # ------------------------------------------------------------ describing

    def architecture(self):
        """The network as a JSON-able record: what network files and saved models
        hold. Each layer is a node with a name and the names of its inputs."""
        layers = [{"type": type(node.layer).__name__, "name": node.name,
                   "inputs": list(node.inputs), **node.layer.config()} for node in self.nodes]
        return {"name": self.name, "input_shape": list(self.input_shape or []) or None,
                "input_divisor": self.input_divisor, "class_names": self.class_names,
                "layers": layers}

    @classmethod
    def from_architecture(cls, arch, seed=None, where="the architecture"):
        """A model from an architecture record (or a network file's contents):
        {"input_shape": [H, W, C], "layers": [{"type": "Conv2D", "filters": 32,
        "kernel_size": 5}, ...]}, optional "name", "input_divisor", "class_names".
        Each layer may have a "name" (default: its index) and "inputs", the
        names of the layers it reads ("input": the model's input; default: the
        layer before it); the last layer is the output. A chain of layers
        gives a Sequential, any other graph a Model."""
        if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list):
            raise ValueError(f"{where}: expected an object with a list of \"layers\"")
        unknown = set(arch) - {"name", "input_shape", "input_divisor", "class_names", "layers",
                               "seed"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        nodes = _nodes_from_specs(arch["layers"], where)
        chain = all(node.inputs == ((nodes[i - 1].name,) if i else (INPUT,))
                    and node.name == str(i) for i, node in enumerate(nodes))
        kwargs = dict(name=arch.get("name", "sequential" if chain else "model"),
                      seed=arch.get("seed", seed), input_divisor=arch.get("input_divisor", 255.0),
                      class_names=arch.get("class_names"))
        if chain:
            return Sequential([n.layer for n in nodes], input_shape=arch.get("input_shape"),
                              **kwargs)
        model = Model.__new__(Model)
        model._setup(nodes, **kwargs)
        if arch.get("input_shape") is not None:
            model.build(arch["input_shape"])
        return model

    def summary(self):
        """A table of the layers, their output shapes and parameter counts (Keras'
        model.summary()), with what each reads where the model is not a chain;
        as a string."""
        self.check_built("summary")
        chain = isinstance(self, Sequential)
        rows = [("layer", "output shape", "parameters", "reads"),
                ("input", str(self.input_shape), "", "")]
        for node in self.nodes:
            layer = node.layer
            rows.append((f"{node.name} {type(layer).__name__}", str(layer.output_shape),
                         f"{sum(p.value.size for p in layer.params.values()):,}",
                         ", ".join(node.inputs)))
        rows = [r[:3] for r in rows] if chain else rows
        total = sum(p.value.size for p in self.parameters())
        widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]))]
        lines = ["  ".join(f"{v:>{w}}" if c == 2 else f"{v:<{w}}"
                           for c, (v, w) in enumerate(zip(r, widths))).rstrip() for r in rows]
        rule = "-" * max(len(line) for line in lines)
        return "\n".join([f"{self.name}", rule, lines[0], rule, *lines[1:], rule,
                          f"total parameters: {total:,}"])

    def __repr__(self):
        inner = "\n".join(f"  {n.name}: {n.layer!r} <- {', '.join(n.inputs)}" for n in self.nodes)
        n = sum(p.value.size for p in self.parameters()) if self.built else "unbuilt,"
        return f"Model({self.name!r}, {n} parameters,\n{inner}\n)"


class Sequential(Model):
    """Layers applied one after the other: the chain case of Model.

    input_shape: one example's shape, (H, W, C) images or (D,) features; the
    model is built for it (every parameter shape follows), or, if None, for
    the first batch it sees (fit, predict) or an explicit build(input_shape).
    The other arguments are Model's.
    """

    def __init__(self, layers, input_shape=None, name="sequential", seed=None,
                 input_divisor=255.0, class_names=None):
        layers = list(layers)
        nodes = [Node(str(i), layer, (INPUT if i == 0 else str(i - 1),))
                 for i, layer in enumerate(layers)]
        _check_unshared(nodes)
        self._setup(nodes, name, seed, input_divisor, class_names)
        if input_shape is not None:
            self.build(input_shape)

    def build(self, input_shape):
        if not self.nodes:
            raise ValueError("Sequential: a model needs at least one layer, got none")
        return super().build(input_shape)

    def __repr__(self):
        inner = "\n".join(f"  {layer!r}" for layer in self.layers)
        n = sum(p.value.size for p in self.parameters()) if self.built else "unbuilt,"
        return f"Sequential({self.name!r}, {n} parameters,\n{inner}\n)"


def _shape(fn, shape):
    if isinstance(shape, int) or not all(isinstance(d, (int, np.integer)) and not
                                         isinstance(d, bool) and d >= 1 for d in shape):
        raise ShapeError(f"{fn}: input_shape must be (H, W, C) or (D,) of positive ints, "
                         f"got {shape!r}")
    return tuple(int(d) for d in shape)


def _bounds(slices, n, shard):
    """The int32 bounds of a batch of n's slices, from their number or (with a
    shard) as given; checked (None: one slice)."""
    if isinstance(slices, (int, np.integer)) and not isinstance(slices, bool):
        if shard is not None:
            raise ValueError("train_step: with a shard, slices must be the bounds of this "
                             f"process's slices [0, ..., {n}], got the number {slices}")
        if not 1 <= slices <= convcore.slices.MAX_SLICES:
            raise ValueError(f"train_step: slices must be a number of slices from 1 to "
                             f"{convcore.slices.MAX_SLICES}, got {slices}")
        return convcore.slices.slice_bounds(n, slices) if slices > 1 else None
    return convcore.slices.checked_bounds("train_step", slices, n)


def _summed(a, b):
    """a + b, two gradients of one value: convcore's threaded add (the same
    bits as NumPy's) where both are float32 of one shape. Into memory NumPy
    allocates, as `a + b` did: taken from convcore's pool instead, it left
    the next convolutions' scratch on fresh pages (resnet8, bf16: some 3,000
    more page faults a step, the step 8% slower on 2 threads)."""
    if (isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and a.shape == b.shape
            and a.dtype == b.dtype == np.float32):
        return convcore.add_forward(a, b, out=np.empty(a.shape, np.float32))
    return a + b


def _read(values, names):
    """The value a layer reads: the one named, or the list of them (a merge)."""
    return [values[n] for n in names] if len(names) > 1 else values[names[0]]


def _check_unshared(nodes):
    seen = {}
    for node in nodes:
        if id(node.layer) in seen:
            raise ValueError(f"layer {node.name} ({type(node.layer).__name__}) is the same "
                             f"layer object as layer {seen[id(node.layer)]}: pyconv does not "
                             "share a layer's weights between two places; make a new layer")
        seen[id(node.layer)] = node.name


def _trace(inputs, outputs):
    """The nodes that lead from `inputs` to `outputs`, in topological order
    (each node after the ones it reads, inputs in the order given), named by
    their position."""
    names, nodes, stack = {id(inputs): INPUT}, [], [(outputs, False)]
    while stack:
        t, expanded = stack.pop()
        if id(t) in names:
            continue
        if t.layer is None:
            raise ValueError(f"Model: the outputs depend on an Input other than `inputs` "
                             f"({t!r})")
        if expanded:
            names[id(t)] = str(len(nodes))
            nodes.append(Node(names[id(t)], t.layer, tuple(names[id(i)] for i in t.inputs)))
            continue
        stack.append((t, True))
        stack.extend((i, False) for i in reversed(t.inputs) if id(i) not in names)
    _check_unshared(nodes)
    return nodes


def _nodes_from_specs(specs, where):
    """The nodes of a network record's layers, checked: unique names, inputs
    defined before they are read, every layer on the way to the output."""
    nodes, names = [], {INPUT}
    for i, spec in enumerate(specs):
        if not isinstance(spec, dict) or "type" not in spec:
            raise ValueError(f"{where}: layer {i} must be an object with a \"type\", "
                             f"got {spec!r}")
        name = str(spec.get("name", i))
        inputs = spec.get("inputs", [nodes[-1].name if nodes else INPUT])
        if isinstance(inputs, str) or not isinstance(inputs, list) or not inputs:
            raise ValueError(f"{where}: layer {name!r}: inputs must be a list of layer names, "
                             f"got {inputs!r}")
        undefined = [n for n in inputs if n not in names]
        if undefined:
            raise ValueError(f"{where}: layer {name!r} reads {undefined} before any layer of "
                             "that name: list each layer after the layers it reads "
                             "(\"input\" is the model's input)")
        if name in names:
            raise ValueError(f"{where}: layer {i}: the name {name!r} is used twice")
        layer = _layer_from_spec(spec, name, where)
        if layer.merges != (len(inputs) > 1):
            raise ValueError(f"{where}: layer {name!r} ({spec['type']}) reads {len(inputs)} "
                             f"input(s); it takes {'two or more' if layer.merges else 'one'}")
        names.add(name)
        nodes.append(Node(name, layer, tuple(str(n) for n in inputs)))
    if not nodes:
        raise ValueError(f"{where}: \"layers\" is empty")
    read = {n for node in nodes for n in node.inputs}
    unread = [node.name for node in nodes[:-1] if node.name not in read]
    if unread:
        raise ValueError(f"{where}: layer(s) {unread} are read by no other layer: only the "
                         "last layer is the model's output")
    return nodes


def _layer_from_spec(spec, name, where):
    spec = {k: v for k, v in spec.items() if k not in ("name", "inputs")}
    kind = spec.pop("type")
    if kind not in LAYERS:
        raise ValueError(f"{where}: layer {name}: unknown type {kind!r}; pyconv has "
                         f"{', '.join(sorted(LAYERS))}")
    try:
        return LAYERS[kind](**spec)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{where}: layer {name} ({kind}): {e}") from None
