"""Sequential: a stack of layers with forward, backward, a training step and predict."""
import numpy as np

from .fusion import FUSIONS, plan
from .layers import LAYERS
from .losses import softmax_cross_entropy


class Sequential:
    def __init__(self, layers, name="sequential", seed=None):
        self.layers = list(layers)
        self.name = name
        self.rng = np.random.default_rng(seed)      # dropout masks
        for layer in self.layers:
            layer.bind(self)
        if self.layers:
            self.layers[0].needs_input_grad = False  # the input image needs no gradient

    def parameters(self):
        return [p for layer in self.layers for p in layer.params.values()]

    def named_parameters(self):
        return [(f"{i}.{type(layer).__name__}.{name}", p)
                for i, layer in enumerate(self.layers) for name, p in layer.params.items()]

    def steps(self, optimizer=None, fusions=FUSIONS):
        """The layers as forward and backward run them, planned from the table
        of fusions (pyconv.fusion): each Conv2D followed by a MaxPool2D as one
        step, a Dense layer as one step with its optimiser's update where the
        optimiser fuses it (Adam), every other layer on its own.
        fusions=() runs every layer on its own (the same bits)."""
        return plan(self.layers, optimizer, fusions)

    def forward(self, x, training=False, optimizer=None, fusions=FUSIONS):
        """The steps in order (see steps). Give the optimizer whose update the
        following backward pass may fuse."""
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

    def train_step(self, x, y, optimizer, fusions=FUSIONS, return_logits=False):
        """One step on a batch: x float32 (N, H, W, C), y int (N,). Returns the
        mean loss, or (loss, logits) with return_logits=True."""
        x = _check_images("train_step", x)
        logits = self.forward(x, training=True, optimizer=optimizer, fusions=fusions)
        loss, dlogits = softmax_cross_entropy(logits, y)
        optimizer.begin_step()
        self.backward(dlogits, optimizer)
        optimizer.finish_step()
        return (loss, logits) if return_logits else loss

    def predict(self, x, batch_size=1000):
        """Logits (N, classes) in inference mode (no dropout), in batches."""
        x = _check_images("predict", x)
        out = [self.forward(x[i:i + batch_size], training=False)
               for i in range(0, max(len(x), 1), batch_size)]   # no images: one empty batch
        return np.concatenate(out)

    def accuracy(self, x, y, batch_size=1000):
        return float(np.mean(self.predict(x, batch_size).argmax(axis=1) == y)) if len(y) else 0.0

    def architecture(self):
        return {"name": self.name,
                "layers": [{"type": type(layer).__name__, **layer.config()}
                           for layer in self.layers]}

    @classmethod
    def from_architecture(cls, arch):
        layers = []
        for spec in arch["layers"]:
            spec = dict(spec)
            kind = spec.pop("type")
            if kind not in LAYERS:
                raise ValueError(f"unknown layer type {kind!r} in the architecture")
            layers.append(LAYERS[kind](**spec))
        return cls(layers, name=arch.get("name", "sequential"))

    def __repr__(self):
        inner = "\n".join(f"  {layer!r}" for layer in self.layers)
        n = sum(p.value.size for p in self.parameters())
        return f"Sequential({self.name!r}, {n} parameters,\n{inner}\n)"


def _check_images(fn, x):
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{fn}: x must be a numpy array of float32 images (N, H, W, C), "
                        f"got {type(x).__name__}")
    if x.dtype != np.float32:
        raise TypeError(f"{fn}: x must be float32 (N, H, W, C), got {x.dtype} {x.shape}")
    return x
