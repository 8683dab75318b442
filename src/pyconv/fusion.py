"""The one table of fusions: which runs of layers execute as one step.

A model does not run its layers one by one: `plan` walks the layers and,
where a row of FUSIONS matches the layers at that point (and its condition
holds), puts one fused step in their place; every other layer is a step of
its own. A step has the layer interface: `forward(x, training)`,
`backward(dy) -> dx`, and `ready_params()`, the parameters whose gradient its
backward pass completed (the model hands each to the optimiser's
`grad_ready`; a step that applied the update itself returns none).

This is the only place that tests layer or optimiser types. A new fusion is
a class here and a row in FUSIONS; `plan(layers, fusions=())` runs the
layers unfused (the tests compare the two, bit for bit).
"""
from collections.abc import Callable
from dataclasses import dataclass

import convcore

from .layers import Conv2D, Dense, MaxPool2D


class ConvPool:
    """A Conv2D and the MaxPool2D after it: convcore's conv2d_maxpool_forward
    and conv2d_maxpool_backward, the same bits as the two layers one after the
    other, without writing the convolution-sized output or its gradient."""

    def __init__(self, conv, pool, optimizer=None):
        self.conv, self.pool = conv, pool

    def _args(self):
        c, p = self.conv, self.pool
        return dict(stride=c.stride, padding=c.padding, pool_size=p.pool_size,
                    pool_stride=p.stride, pool_padding=p.padding)

    def forward(self, x, training=False):
        c = self.conv
        b = c.params["b"].value if c.use_bias else None
        out = convcore.conv2d_maxpool_forward(x, c.params["w"].value, b,
                                              relu=c.activation == "relu",
                                              return_argmax=training, **self._args())
        if not training:
            return out
        self._x = x
        self._y, self._argmax = out     # the pooled output: the ReLU's mask at the winners
        return self._y

    def backward(self, dy):
        c = self.conv
        relu_y = self._y if c.activation == "relu" else None
        dx, dw, db = convcore.conv2d_maxpool_backward(
            self._x, c.params["w"].value, dy, self._argmax, need_dx=c.needs_input_grad,
            relu_y=relu_y, **self._args())
        c.set_grads(dw, db)
        return dx

    def ready_params(self):
        return self.conv.ready_params()

    def __repr__(self):
        return f"ConvPool({self.conv!r}, {self.pool!r})"


class DenseUpdate:
    """A Dense layer whose optimiser updates its parameters inside the backward
    pass (Adam: convcore.linear_backward_adam applies each block of the weight
    gradient while it is in cache; the gradient is never stored). The same
    bits as the backward pass followed by the optimiser's update."""

    def __init__(self, dense, optimizer):
        self.dense, self.optimizer = dense, optimizer

    def forward(self, x, training=False):
        return self.dense.forward(x, training)

    def backward(self, dy):
        d = self.dense
        relu_y = d._y if d.activation == "relu" else None
        return self.optimizer.dense_backward_update(d.params["w"], d.params.get("b"), d._x, dy,
                                                    d.needs_input_grad, relu_y)

    def ready_params(self):
        return []           # updated in the backward pass

    def __repr__(self):
        return f"DenseUpdate({self.dense!r}, {type(self.optimizer).__name__})"


def _always(layers, optimizer):
    return True


def _optimizer_fuses(layers, optimizer):
    return optimizer is not None and optimizer.fuses_dense(layers[0].ready_params())


@dataclass(frozen=True)
class Fusion:
    """Layers of the types in `pattern`, in a row, run as `step(*layers, optimizer)`
    where `applies(layers, optimizer)` holds."""
    name: str
    pattern: tuple
    step: Callable
    applies: Callable = _always


FUSIONS = (
    Fusion("conv + max-pool", (Conv2D, MaxPool2D), ConvPool),
    Fusion("dense + optimiser update", (Dense,), DenseUpdate, _optimizer_fuses),
)


def _match(fusion, layers, optimizer):
    n = len(fusion.pattern)
    return (len(layers) >= n
            and all(isinstance(layer, kind) for layer, kind in zip(layers, fusion.pattern))
            and fusion.applies(layers[:n], optimizer))


def plan(layers, optimizer=None, fusions=FUSIONS):
    """The steps that run `layers`: the first matching row of `fusions` at each
    position, else the layer itself."""
    steps, i = [], 0
    while i < len(layers):
        fusion = next((f for f in fusions if _match(f, layers[i:], optimizer)), None)
        if fusion is None:
            steps.append(layers[i])
            i += 1
        else:
            n = len(fusion.pattern)
            steps.append(fusion.step(*layers[i:i + n], optimizer))
            i += n
    return steps
