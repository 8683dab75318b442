"""Sequential: a stack of layers with forward, backward, a training step and predict."""
import numpy as np

from .layers import LAYERS, Conv2D, Dropout, MaxPool2D
from .losses import softmax_cross_entropy


class ConvPool:
    """A Conv2D and the MaxPool2D after it as one step of a Sequential model:
    convcore's fused conv2d_maxpool_forward and conv2d_maxpool_backward, the
    same bits as the two layers one after the other."""

    def __init__(self, conv, pool):
        self.conv, self.pool = conv, pool

    def forward(self, x, training=False):
        return self.conv.forward_pooled(x, self.pool, training)

    def backward(self, dy):
        return self.conv.backward_pooled(dy)

    def __repr__(self):
        return f"ConvPool({self.conv!r}, {self.pool!r})"


class Sequential:
    def __init__(self, layers, name="sequential", seed=None):
        self.layers = list(layers)
        self.name = name
        self.rng = np.random.default_rng(seed)      # dropout masks
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = self.rng
        if self.layers:
            self.layers[0].needs_input_grad = False  # the input image needs no gradient

    def parameters(self):
        return [p for layer in self.layers for p in layer.params.values()]

    def named_parameters(self):
        return [(f"{i}.{type(layer).__name__}.{name}", p)
                for i, layer in enumerate(self.layers) for name, p in layer.params.items()]

    def steps(self):
        """The layers as forward and backward run them: each Conv2D followed by a
        MaxPool2D as one step (ConvPool), every other layer on its own."""
        steps, i = [], 0
        while i < len(self.layers):
            layer = self.layers[i]
            pool = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(layer, Conv2D) and isinstance(pool, MaxPool2D):
                steps.append(ConvPool(layer, pool))
                i += 2
            else:
                steps.append(layer)
                i += 1
        return steps

    def forward(self, x, training=False):
        """The steps in order (see steps: a Conv2D and the MaxPool2D after it run
        as one convcore call, the same bits without writing the full-size
        convolution output)."""
        self._steps = self.steps()
        for step in self._steps:
            x = step.forward(x, training)
        return x

    def backward(self, dy, optimizer=None):
        """The backward passes of the last forward's steps, in reverse. With an
        optimizer (between its begin_step and finish_step), layers that can
        update their parameters in the same pass do so (Dense.backward_and_update)."""
        for step in reversed(self._steps):
            if optimizer is not None and hasattr(step, "backward_and_update"):
                dy = step.backward_and_update(dy, optimizer)
            else:
                dy = step.backward(dy)
        return dy

    def train_step(self, x, y, optimizer):
        """One step on a batch: x float32 (N, 28, 28, 1), y int (N,). Returns the mean loss."""
        x = _check_images("train_step", x)
        logits = self.forward(x, training=True)
        loss, dlogits = softmax_cross_entropy(logits, y)
        optimizer.begin_step()
        self.backward(dlogits, optimizer)
        optimizer.finish_step()
        self.last_logits = logits
        return loss

    def predict(self, x, batch_size=1000):
        """Logits (N, classes) in inference mode (no dropout), in batches."""
        x = _check_images("predict", x)
        out = [self.forward(x[i:i + batch_size], training=False)
               for i in range(0, len(x), batch_size)]
        return np.concatenate(out) if out else np.zeros((0, self._classes()), np.float32)

    def accuracy(self, x, y, batch_size=1000):
        return float(np.mean(self.predict(x, batch_size).argmax(axis=1) == y)) if len(y) else 0.0

    def _classes(self):
        dense = [layer for layer in self.layers if hasattr(layer, "out_features")]
        return dense[-1].out_features if dense else 0

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
