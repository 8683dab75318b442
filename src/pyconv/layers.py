"""Layers: each holds its parameters, their gradients and what its backward needs.

The arithmetic is convcore's (Chainer's split: stateless functions there,
parameter-holding layers here). Forward and backward of each layer sit side by
side. Activations are NHWC float32.
"""
import numpy as np

import convcore

from . import init


class Parameter:
    """A trainable array and its gradient (same shape, float32)."""
    __slots__ = ("name", "value", "grad")

    def __init__(self, name, value):
        self.name = name
        self.value = convcore.empty(np.shape(value))   # cache-line aligned, for the kernels
        self.value[...] = value
        self.grad = convcore.zeros(self.value.shape)

    def __repr__(self):
        return f"Parameter({self.name}, shape={self.value.shape})"


class Layer:
    """Base class: forward(x, training) -> y, backward(dy) -> dx."""
    needs_input_grad = True     # False on a first layer: its dx is never used

    def __init__(self):
        self.params = {}

    def forward(self, x, training=False):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def ready_params(self):
        """The parameters whose gradient backward() has just completed."""
        return list(self.params.values())

    def bind(self, model):
        """Called once by the model that holds this layer (Dropout takes its generator)."""

    def config(self):
        """The constructor arguments, JSON-serialisable (for save/load)."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _activation(name):
    if name not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {name!r}")
    return name


class _Affine(Layer):
    """y = act(x * w + b) for a product `*` given by _forward/_backward (convcore's)."""

    def _init_params(self, w_shape, activation, use_bias, w_init, b_init, rng):
        self.activation, self.use_bias = _activation(activation), use_bias
        rng = rng if rng is not None else np.random.default_rng()
        self.params["w"] = Parameter("w", init.make(w_init, w_shape, rng))
        if use_bias:
            self.params["b"] = Parameter("b", init.make(b_init, (w_shape[-1],), rng))

    def forward(self, x, training=False):
        b = self.params["b"].value if self.use_bias else None
        self._x = x
        self._y = self._forward(x, self.params["w"].value, b, self.activation == "relu")
        return self._y

    def backward(self, dy):
        relu_y = self._y if self.activation == "relu" else None
        dx, dw, db = self._backward(self._x, self.params["w"].value, dy, self.needs_input_grad,
                                    relu_y)
        self.set_grads(dw, db)
        return dx

    def set_grads(self, dw, db):
        self.params["w"].grad = dw    # convcore's fresh (aligned) arrays: no copy
        if self.use_bias:
            self.params["b"].grad = db


class Conv2D(_Affine):
    """y = act(conv(x, w) + b), x (N, H, W, C_in) -> (N, OH, OW, C_out); ReLU fused."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding="same",
                 activation=None, use_bias=True, w_init=("truncated_normal", {"stddev": 0.1}),
                 b_init=("constant", {"value": 0.1}), rng=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self._init_params((kh, kw, in_channels, out_channels), activation, use_bias, w_init,
                          b_init, rng)

    def _forward(self, x, w, b, relu):
        return convcore.conv2d_forward(x, w, b, self.stride, self.padding, relu=relu)

    def _backward(self, x, w, dy, need_dx, relu_y):
        return convcore.conv2d_backward(x, w, dy, self.stride, self.padding, need_dx=need_dx,
                                        relu_y=relu_y)

    def config(self):
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=list(self.kernel_size), stride=self.stride,
                    padding=self.padding, activation=self.activation, use_bias=self.use_bias)


class Dense(_Affine):
    """y = act(x @ w + b), x (N, D_in) -> (N, D_out); ReLU fused."""

    def __init__(self, in_features, out_features, activation=None, use_bias=True,
                 w_init=("truncated_normal", {"stddev": 0.1}),
                 b_init=("constant", {"value": 0.1}), rng=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self._init_params((in_features, out_features), activation, use_bias, w_init, b_init,
                          rng)

    def _forward(self, x, w, b, relu):
        return convcore.linear_forward(x, w, b, relu=relu)

    def _backward(self, x, w, dy, need_dx, relu_y):
        return convcore.linear_backward(x, w, dy, need_dx=need_dx, relu_y=relu_y)

    def config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    activation=self.activation, use_bias=self.use_bias)


class MaxPool2D(Layer):
    """Max over pool_size windows; backward sends each gradient to its window's argmax."""

    def __init__(self, pool_size=2, stride=None, padding="same"):
        super().__init__()
        self.pool_size, self.stride, self.padding = pool_size, stride, padding

    def forward(self, x, training=False):
        y, self._argmax = convcore.maxpool2d_forward(x, self.pool_size, self.stride, self.padding)
        self._x_shape = x.shape
        return y

    def backward(self, dy):
        return convcore.maxpool2d_backward(dy, self._argmax, self._x_shape, self.pool_size,
                                           self.stride, self.padding)

    def config(self):
        return dict(pool_size=self.pool_size, stride=self.stride, padding=self.padding)


class ReLU(Layer):
    def forward(self, x, training=False):
        self._y = np.maximum(x, np.float32(0))
        return self._y

    def backward(self, dy):
        return np.where(self._y > 0, dy, np.float32(0))


class Tanh(Layer):
    def forward(self, x, training=False):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy):
        return dy * (1 - self._y * self._y)


class Dropout(Layer):
    """Inverted dropout: in training keep each unit with probability 1 - rate and
    scale it by 1 / (1 - rate); the identity at inference. Each training forward
    draws a 64-bit key from `rng` (the model's generator, from bind);
    convcore makes the mask from the key (Philox4x32-10), in the forward and
    again in the backward pass, so no mask is stored."""

    def __init__(self, rate=0.5):
        super().__init__()
        if not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = rate
        self.rng = np.random.default_rng()

    def bind(self, model):
        self.rng = model.rng

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            self._key = None
            return x
        self._key = int(self.rng.integers(0, 2**64, dtype=np.uint64))
        return convcore.dropout_forward(x, self.rate, self._key)

    def backward(self, dy):
        return dy if self._key is None else convcore.dropout_backward(dy, self.rate, self._key)

    def config(self):
        return dict(rate=self.rate)


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)), in C order (NHWC: h, w, c)."""

    def forward(self, x, training=False):
        self._shape = x.shape
        return x.reshape(x.shape[0], int(np.prod(x.shape[1:])))   # (-1 fails on 0 images)

    def backward(self, dy):
        return dy.reshape(self._shape)


LAYERS = {cls.__name__: cls for cls in (Conv2D, Dense, MaxPool2D, ReLU, Tanh, Dropout, Flatten)}
