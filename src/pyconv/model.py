"""Sequential: a stack of layers with forward, backward, a training step and predict."""
import numpy as np

from .layers import LAYERS, Conv2D, Dropout, MaxPool2D
from .losses import softmax_cross_entropy


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

    def forward(self, x, training=False):
        """The layers in order. At inference a Conv2D followed by a MaxPool2D runs
        as one convcore call (conv2d_maxpool_forward: the same bits, without
        writing the full-size convolution output)."""
        i = 0
        while i < len(self.layers):
            layer = self.layers[i]
            pool = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if not training and isinstance(layer, Conv2D) and isinstance(pool, MaxPool2D):
                x = layer.forward_pooled(x, pool)
                i += 2
            else:
                x = layer.forward(x, training)
                i += 1
        return x

    def backward(self, dy, optimizer=None):
        """The layers' backward passes in reverse. With an optimizer (between its
        begin_step and finish_step), layers that can update their parameters in
        the same pass do so (Dense.backward_and_update)."""
        for layer in reversed(self.layers):
            if optimizer is not None and hasattr(layer, "backward_and_update"):
                dy = layer.backward_and_update(dy, optimizer)
            else:
                dy = layer.backward(dy)
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
