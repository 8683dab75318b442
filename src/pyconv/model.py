"""Sequential: layers in a row, built for an input shape; forward, backward, a
training step, predict and evaluate."""
import numpy as np

from . import distributed
from .errors import ShapeError
from .fusion import FUSIONS, plan
from .layers import LAYERS
from .losses import softmax_cross_entropy


class Sequential:
    """Layers applied one after the other.

    input_shape: one example's shape, (H, W, C) images or (D,) features; the
    model is built for it (every parameter shape follows), or, if None, for
    the first batch it sees (fit, predict) or an explicit build(input_shape).
    seed: the weights' initialisation and the dropout masks (two generators,
    both from the seed). input_divisor: integer images (uint8) are divided by
    it on the way in, one batch at a time (255: pixels to [0, 1]); float
    images go in as they are. class_names: the output classes' names.
    """

    def __init__(self, layers, input_shape=None, name="sequential", seed=None,
                 input_divisor=255.0, class_names=None):
        self.layers = list(layers)
        self.name, self.seed = name, seed
        self.input_divisor = float(input_divisor)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.rng = np.random.default_rng(seed)      # dropout masks
        self.shard_start = 0     # this process's first example of the batch (distributed)
        self.input_shape = self.output_shape = None
        for layer in self.layers:
            layer.bind(self)
        if self.layers:
            self.layers[0].needs_input_grad = False  # the input image needs no gradient
        if input_shape is not None:
            self.build(input_shape)

    # ------------------------------------------------------------ building

    def build(self, input_shape):
        """Build every layer in turn for one example's input_shape, the weights
        drawn from the seed's generator in layer order. A layer that does not
        fit its input raises ShapeError naming it (index, type, expected, given)."""
        shape = _shape("build", input_shape)
        rng = np.random.default_rng(self.seed)
        self.input_shape = shape
        for i, layer in enumerate(self.layers):
            try:
                shape = layer.build(shape, rng)
            except ShapeError as e:
                self.input_shape = None
                raise ShapeError(f"layer {i} ({type(layer).__name__}): {e}") from None
        self.output_shape = shape
        if self.class_names is not None and (len(shape) != 1
                                             or shape[0] != len(self.class_names)):
            raise ShapeError(f"the model's output {shape} does not match its "
                             f"{len(self.class_names)} class_names")
        return self

    @property
    def built(self):
        return self.input_shape is not None

    def _need_built(self, fn):
        if not self.built:
            raise ValueError(f"{fn}: the model is not built yet: give Sequential(..., "
                             "input_shape=(H, W, C)) or call model.build(input_shape) first")

    def parameters(self):
        self._need_built("parameters")
        return [p for layer in self.layers for p in layer.params.values()]

    def named_parameters(self):
        self._need_built("named_parameters")
        return [(f"{i}.{type(layer).__name__}.{name}", p)
                for i, layer in enumerate(self.layers) for name, p in layer.params.items()]

    # ------------------------------------------------------------ running

    def steps(self, optimizer=None, fusions=FUSIONS):
        """The layers as forward and backward run them, planned from the table
        of fusions (pyconv.fusion): each Conv2D followed by a MaxPool2D as one
        step, a Dense layer as one step with its optimiser's update where the
        optimiser fuses it (Adam), every other layer on its own.
        fusions=() runs every layer on its own (the same bits)."""
        return plan(self.layers, optimizer, fusions)

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
        self._need_built(fn)
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
        """The steps in order (see steps) on float32 x (see prepare). Give the
        optimizer whose update the following backward pass may fuse."""
        self._steps = self.steps(optimizer, fusions)
        for step in self._steps:
            x = step.forward(x, training)
        return x

    def backward(self, dy, optimizer=None):
        """The backward passes of the last forward's steps, in reverse. With an
        optimizer (between its begin_step and finish_step), each parameter is
        handed to optimizer.grad_ready as soon as its gradient is complete."""
        for step in reversed(self._steps):
            dy = step.backward(dy)
            if optimizer is not None:
                for p in step.ready_params():
                    optimizer.grad_ready(p)
        return dy

    def train_step(self, x, y, optimizer, fusions=FUSIONS, return_logits=False, shard=None):
        """One step on a batch: x images (N, H, W, C), float32 or integer (scaled
        by input_divisor), y integer labels (N,). Returns the mean loss, or
        (loss, logits) with return_logits=True.

        In a world of several processes (pyconv.distributed: mpiexec), x and y
        are the global batch, the same on every rank: each rank computes its
        own slice, the gradients are summed across the ranks, and the loss
        returned is the global batch's (the logits, this rank's slice's).
        shard=(first, end, n): x and y are already examples first..end-1 of a
        global batch of n, and the loss returned is their share of its mean."""
        world = distributed.world()
        whole = shard is None and world.size > 1
        if whole:
            first, end = world.shard(len(y))
            x, y, shard = x[first:end], y[first:end], (first, end, len(y))
        if world.size > 1:
            world.attach(optimizer)
        x = self.prepare(x, "train_step")
        self.shard_start = 0 if shard is None else shard[0]     # (dropout's masks)
        logits = self.forward(x, training=True, optimizer=optimizer, fusions=fusions)
        loss, dlogits = softmax_cross_entropy(logits, y, None if shard is None else shard[2])
        optimizer.begin_step()
        self.backward(dlogits, optimizer)
        optimizer.finish_step()
        if whole:
            loss = float(world.sum([loss])[0])
        return (loss, logits) if return_logits else loss

    def fit(self, x, y, **kwargs):
        """Train on images x and labels y: see pyconv.train.fit for the options
        (epochs or steps, batch_size, optimizer, validation_data or
        validation_split, callbacks). Returns a History."""
        from .train import fit
        return fit(self, x, y, **kwargs)

    def predict(self, x, batch_size=1000):
        """Logits (N, classes) in inference mode (no dropout), in batches; x as
        for train_step (uint8 images are scaled as in training)."""
        if not hasattr(x, "shape"):
            raise TypeError(f"predict: x must be a numpy array of images (N, H, W, C), "
                            f"got {type(x).__name__}")
        out = [self.forward(self.prepare(x[i:i + batch_size], "predict"), training=False)
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
        hold. Each layer is named; layers form a chain today, and the record
        keeps that explicit ("inputs") so that a graph of layers fits later."""
        layers = []
        for i, layer in enumerate(self.layers):
            layers.append({"type": type(layer).__name__, "name": f"{i}",
                           "inputs": ["input" if i == 0 else f"{i - 1}"], **layer.config()})
        return {"name": self.name, "input_shape": list(self.input_shape or []) or None,
                "input_divisor": self.input_divisor, "class_names": self.class_names,
                "layers": layers}

    @classmethod
    def from_architecture(cls, arch, seed=None, where="the architecture"):
        """A model from an architecture record (or a network file's contents):
        {"input_shape": [H, W, C], "layers": [{"type": "Conv2D", "filters": 32,
        "kernel_size": 5}, ...]}, optional "name", "input_divisor", "class_names"."""
        if not isinstance(arch, dict) or not isinstance(arch.get("layers"), list):
            raise ValueError(f"{where}: expected an object with a list of \"layers\"")
        unknown = set(arch) - {"name", "input_shape", "input_divisor", "class_names", "layers",
                               "seed"}
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {sorted(unknown)}")
        layers = [_layer_from_spec(spec, i, where) for i, spec in enumerate(arch["layers"])]
        return cls(layers, input_shape=arch.get("input_shape"),
                   name=arch.get("name", "sequential"), seed=arch.get("seed", seed),
                   input_divisor=arch.get("input_divisor", 255.0),
                   class_names=arch.get("class_names"))

    def summary(self):
        """A table of the layers, their output shapes and parameter counts (Keras'
        model.summary()), as a string."""
        self._need_built("summary")
        rows = [("layer", "output shape", "parameters"), ("input", str(self.input_shape), "")]
        for i, layer in enumerate(self.layers):
            rows.append((f"{i} {type(layer).__name__}", str(layer.output_shape),
                         f"{sum(p.value.size for p in layer.params.values()):,}"))
        total = sum(p.value.size for p in self.parameters())
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        lines = [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}" for r in rows]
        rule = "-" * len(lines[0])
        return "\n".join([f"{self.name}", rule, lines[0], rule, *lines[1:], rule,
                          f"total parameters: {total:,}"])

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


def _layer_from_spec(spec, i, where):
    if not isinstance(spec, dict) or "type" not in spec:
        raise ValueError(f"{where}: layer {i} must be an object with a \"type\", got {spec!r}")
    expected = ["input" if i == 0 else f"{i - 1}"]
    if "inputs" in spec and spec["inputs"] != expected:
        raise ValueError(f"{where}: layer {i} takes inputs {spec['inputs']!r}; pyconv runs "
                         f"layers in a chain ({expected!r} here): graphs are not supported yet")
    spec = {k: v for k, v in spec.items() if k not in ("name", "inputs")}
    kind = spec.pop("type")
    if kind not in LAYERS:
        raise ValueError(f"{where}: layer {i}: unknown type {kind!r}; pyconv has "
                         f"{', '.join(sorted(LAYERS))}")
    try:
        return LAYERS[kind](**spec)
    except TypeError as e:
        raise ValueError(f"{where}: layer {i} ({kind}): {e}") from None
    except ValueError as e:
        raise ValueError(f"{where}: layer {i} ({kind}): {e}") from None
