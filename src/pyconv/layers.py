"""Layers: each holds its parameters and their gradients, nothing else.

The arithmetic is convcore's (Chainer's split: stateless functions there,
parameter-holding layers here). Forward and backward of each layer sit side by
side, and forward hands backward what it needs (JAX's vjp):

    y, ctx = layer.forward(x, training=True)
    dx = layer.backward(ctx, dy)          # and the parameters' .grad are set

so a layer keeps no state between the two, and one layer serves any number
of threads predicting at once. Activations are NHWC float32.
"""
from dataclasses import dataclass

import numpy as np

import convcore
from convcore import geometry

from . import graph, init
from .errors import ShapeError


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


@dataclass(frozen=True)
class Training:
    """What a model's training forward pass hands each layer as `training`:
    the generator dropout draws its keys from (the model's, saved with its
    checkpoints), and `first`, the index of this batch's first example in the
    global batch (one process's slice of it: dropout takes that slice of the
    global mask); `sums`, where the batch is one process's slice, the sum of
    an array over the processes (batch normalisation's statistics are the
    global batch's); `slices`, the bounds [0, ..., N] of this batch's slices
    (convcore.slices: each weight and bias gradient is the slices' sums added
    in a fixed tree, the same bits on any number of processes; None: one
    slice). True as a truth value, as training=True is."""
    rng: np.random.Generator
    first: int = 0
    sums: object = None     # over the processes sharing the batch: f(float64 array) -> sums
    slices: object = None   # int32 bounds of this batch's slices, or None

    def __bool__(self):
        return True


def slices_of(training):
    """The bounds of the batch's slices a training forward was given (None: one)."""
    return training.slices if isinstance(training, Training) else None


class Layer:
    """Base class: build(input_shape, rng) -> output_shape, then
    forward(x, training) -> (y, ctx) and backward(ctx, dy, need_dx) -> dx.

    Shapes are per example (no batch axis): (H, W, C) images or (D,) features.
    A layer says only what a person would (Conv2D(32, 5), Dense(1024)); build
    makes its parameters for the input it is given (the model calls it for
    each layer in turn) and raises ShapeError where that input does not fit.
    buffers: named float32 arrays of non-trainable state (a batch
    normalisation's running statistics) that a training forward may update;
    saved, loaded, checkpointed and checked equal across processes with the
    parameters, never handed to an optimiser.
    Called on a symbolic Tensor (pyconv.Input, another layer's output) it
    records a node of a graph (pyconv.Model); called on an array, it is
    forward in inference mode. A merge layer (merges = True) takes a list of
    inputs and hands back a list of their gradients. precision: how its
    products multiply (pyconv.precision; the model sets it on every layer)."""
    merges = False
    precision = "fp32"

    def __init__(self):
        self.params = {}
        self.buffers = {}       # non-trainable state (running statistics): saved, not trained
        self.input_shape = self.output_shape = None

    def build(self, input_shape, rng):
        """Make the parameters for per-example input_shape (a merge layer: the
        shapes of its inputs), drawing from rng; returns the per-example output
        shape."""
        self.input_shape = tuple(tuple(s) for s in input_shape) if self.merges else tuple(
            input_shape)
        self.output_shape = tuple(self.compute_output_shape(self.input_shape))
        self.make_params(self.input_shape, rng)
        return self.output_shape

    def compute_output_shape(self, input_shape):
        return input_shape

    def make_params(self, input_shape, rng):
        """Create self.params (layers with parameters override this)."""

    def forward(self, x, training=False):
        """(y, ctx): the output, and what backward needs (None at inference)."""
        raise NotImplementedError

    def backward(self, ctx, dy, need_dx=True):
        """dx (None where need_dx is False) from the forward's ctx; sets the
        parameters' gradients."""
        raise NotImplementedError

    def ready_params(self):
        """The parameters whose gradient backward() has just completed."""
        return list(self.params.values())

    def __call__(self, inputs):
        if isinstance(inputs, np.ndarray):
            return self.forward(inputs)[0]
        return graph.call(self, inputs)

    def config(self):
        """The constructor arguments, JSON-serialisable (for save/load and network files)."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"


def _activation(name):
    if name not in (None, "relu"):
        raise ValueError(f"activation must be None or 'relu', got {name!r}")
    return name


def _images(layer, shape):
    if len(shape) != 3:
        raise ShapeError(f"expects images (height, width, channels), got {shape}"
                         + (": a Conv2D or MaxPool2D cannot follow a Flatten or Dense"
                            if len(shape) == 1 else ""))
    return shape


def _window(layer, shape, size, stride, padding, size_name, pool=False):
    """The (OH, OW) of a window over images of `shape`, or ShapeError saying why not."""
    try:
        g = geometry.window(type(layer).__name__, (1, *shape), size, stride, padding, size_name,
                       pool=pool)
    except ValueError as e:
        raise ShapeError(str(e).split(": ", 1)[1]) from None
    return g["OH"], g["OW"]


_W_INIT = ("truncated_normal", {"stddev": 0.1})   # the tutorial's: TensorFlow's example
_B_INIT = ("constant", {"value": 0.1})


class _Affine(Layer):
    """y = act(x * w + b) for a product `*` given by _forward/_backward (convcore's)."""

    def __init__(self, activation, use_bias, w_init, b_init):
        super().__init__()
        self.activation, self.use_bias = _activation(activation), bool(use_bias)
        self.w_init, self.b_init = w_init, b_init

    def _make(self, w_shape, rng):
        self.params["w"] = Parameter("w", init.make(self.w_init, w_shape, rng))
        if self.use_bias:
            self.params["b"] = Parameter("b", init.make(self.b_init, (w_shape[-1],), rng))

    def forward(self, x, training=False, out_bf16=False):
        """out_bf16 (Conv2D's, no activation): y as bfloat16 bits, for batch
        norms that read it so in bf16 (a plan's choice: pyconv.fusion)."""
        if self.output_shape is None:      # used on its own: built for the first input
            self.build(x.shape[1:], np.random.default_rng())
        b = self.params["b"].value if self.use_bias else None
        slices = slices_of(training)
        y = self._forward(x, self.params["w"].value, b, self.activation == "relu", slices,
                          out_bf16)
        return y, ((x, y, slices) if training else None)

    def backward(self, ctx, dy, need_dx=True):
        x, y, slices = ctx
        relu_y = y if self.activation == "relu" else None
        dx, dw, db = self._backward(x, self.params["w"].value, dy, need_dx, relu_y, slices)
        self.set_grads(dw, db)
        return dx

    def set_grads(self, dw, db):
        self.params["w"].grad = dw    # convcore's fresh (aligned) arrays: no copy
        if self.use_bias:
            self.params["b"].grad = db

    def _init_config(self):
        return dict(activation=self.activation, use_bias=self.use_bias,
                    w_init=_jsonable(self.w_init), b_init=_jsonable(self.b_init))


def _jsonable(spec):
    return spec if isinstance(spec, str) else [spec[0], dict(spec[1])]


class Conv2D(_Affine):
    """y = act(conv(x, w) + b): (N, H, W, C) -> (N, OH, OW, filters); ReLU fused.
    w has shape (kh, kw, C, filters), C taken from the input at build."""

    def __init__(self, filters, kernel_size, stride=1, padding="same", activation=None,
                 use_bias=True, w_init=_W_INIT, b_init=_B_INIT):
        super().__init__(activation, use_bias, w_init, b_init)
        self.filters = geometry.integer("Conv2D", "filters", filters, 1)
        self.kernel_size = geometry.pair("Conv2D", "kernel_size", kernel_size)
        self.stride, self.padding = geometry.pair("Conv2D", "stride", stride), padding

    def compute_output_shape(self, input_shape):
        _images(self, input_shape)
        oh, ow = _window(self, input_shape, self.kernel_size, self.stride, self.padding,
                         "kernel_size")
        return (oh, ow, self.filters)

    def make_params(self, input_shape, rng):
        self._make((*self.kernel_size, input_shape[2], self.filters), rng)

    def _forward(self, x, w, b, relu, slices=None, out_bf16=False):
        if out_bf16 and relu:
            raise ValueError("Conv2D: out_bf16 is for a convolution without activation (its "
                             "backward reads a ReLU's mask from its float32 output)")
        return convcore.conv2d_forward(x, w, b, self.stride, self.padding, relu=relu,
                                       slices=slices, precision=self.precision,
                                       out_bf16=out_bf16)

    def _backward(self, x, w, dy, need_dx, relu_y, slices=None):
        return convcore.conv2d_backward(x, w, dy, self.stride, self.padding, need_dx=need_dx,
                                        relu_y=relu_y, slices=slices, precision=self.precision,
                                        need_db=self.use_bias)

    def config(self):
        return dict(filters=self.filters, kernel_size=list(self.kernel_size),
                    stride=list(self.stride), padding=_padding_json(self.padding),
                    **self._init_config())


def _padding_json(padding):
    return list(padding) if isinstance(padding, tuple) else padding


class Dense(_Affine):
    """y = act(x @ w + b): (N, D) -> (N, units); ReLU fused. w has shape (D, units)."""

    def __init__(self, units, activation=None, use_bias=True, w_init=_W_INIT, b_init=_B_INIT):
        super().__init__(activation, use_bias, w_init, b_init)
        self.units = geometry.integer("Dense", "units", units, 1)

    def compute_output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ShapeError(f"expects flat features (D,), got {input_shape}: put a Flatten() "
                             "before it")
        return (self.units,)

    def make_params(self, input_shape, rng):
        self._make((input_shape[0], self.units), rng)

    def _forward(self, x, w, b, relu, slices=None, out_bf16=False):
        if out_bf16:
            raise ValueError("Dense: out_bf16 is not taken (linear_forward writes float32)")
        return convcore.linear_forward(x, w, b, relu=relu, slices=slices,
                                       precision=self.precision)

    def _backward(self, x, w, dy, need_dx, relu_y, slices=None):
        return convcore.linear_backward(x, w, dy, need_dx=need_dx, relu_y=relu_y,
                                        slices=slices, precision=self.precision)

    def config(self):
        return dict(units=self.units, **self._init_config())


class _Pool(Layer):
    """A pool over pool_size windows (stride: the pool size unless given)."""

    def __init__(self, pool_size=2, stride=None, padding="same"):
        super().__init__()
        kind = type(self).__name__
        self.pool_size = geometry.pair(kind, "pool_size", pool_size)
        self.stride = None if stride is None else geometry.pair(kind, "stride", stride)
        self.padding = padding

    def compute_output_shape(self, input_shape):
        _images(self, input_shape)
        stride = self.pool_size if self.stride is None else self.stride
        oh, ow = _window(self, input_shape, self.pool_size, stride, self.padding, "pool_size",
                         pool=True)
        return (oh, ow, input_shape[2])

    def config(self):
        return dict(pool_size=list(self.pool_size),
                    stride=None if self.stride is None else list(self.stride),
                    padding=_padding_json(self.padding))


class MaxPool2D(_Pool):
    """Max over pool_size windows; backward sends each gradient to its window's argmax."""

    def forward(self, x, training=False):
        y, argmax = convcore.maxpool2d_forward(x, self.pool_size, self.stride, self.padding)
        return y, ((argmax, x.shape) if training else None)

    def backward(self, ctx, dy, need_dx=True):
        argmax, x_shape = ctx
        return convcore.maxpool2d_backward(dy, argmax, x_shape, self.pool_size, self.stride,
                                           self.padding) if need_dx else None


def _as_images(x):
    """(N, D) features as (N, 1, 1, D) images: batch normalisation is per channel."""
    return x if x.ndim == 4 else x.reshape(x.shape[0], 1, 1, x.shape[1])


class BatchNormalization(Layer):
    """Batch normalisation per channel (the last axis, of images or features):
    y = (x - mean) / sqrt(var + epsilon) * gamma + beta.

    In training, mean and var are the batch's, over N H W (var biased, as in
    the normalisation of Keras, PyTorch and ONNX), and each step updates the
    running statistics (buffers "mean" and "var"):
    running = momentum * running + (1 - momentum) * batch, the convention of
    Keras and ONNX (momentum 0.9 here is PyTorch's momentum=0.1), with the
    unbiased batch variance (M / (M - 1) var over M = N H W values, as PyTorch
    and TensorFlow keep it). At inference the running statistics are used.
    Defaults are ONNX's and PyTorch's: momentum 0.9, epsilon 1e-5.

    In bf16 (precision "bf16" or "bf16-emulated") it reads its input rounded to
    bfloat16, as Keras' mixed_bfloat16 and PyTorch's autocast hand a
    convolution's output to its batch norm (the statistics stay float32 sums);
    a float32 input is rounded here, a convolution that alone feeds it hands
    it the bits (a plan's choice: pyconv.fusion)."""

    def __init__(self, momentum=0.9, epsilon=1e-5):
        super().__init__()
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or \
                not 0 <= momentum < 1:
            raise ValueError(f"BatchNormalization: momentum must be a number in [0, 1), "
                             f"got {momentum!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or \
                not epsilon > 0:
            raise ValueError(f"BatchNormalization: epsilon must be a number > 0, "
                             f"got {epsilon!r}")
        self.momentum, self.epsilon = float(momentum), float(epsilon)

    def compute_output_shape(self, input_shape):
        if len(input_shape) not in (1, 3):
            raise ShapeError(f"expects images (height, width, channels) or features (D,), "
                             f"got {input_shape}")
        return input_shape

    def make_params(self, input_shape, rng):
        c = input_shape[-1]
        self.params["gamma"] = Parameter("gamma", np.ones(c, np.float32))
        self.params["beta"] = Parameter("beta", np.zeros(c, np.float32))
        self.buffers["mean"] = convcore.zeros((c,))
        self.buffers["var"] = convcore.zeros((c,)) + np.float32(1)

    def forward(self, x, training=False, relu=False, out_bf16=False):
        """out_bf16: y as bfloat16 bits (convcore's batchnorm functions'), for
        layers that multiply in bf16 (a fused step's choice)."""
        if self.output_shape is None:
            self.build(x.shape[1:], np.random.default_rng())
        g, b = self.params["gamma"].value, self.params["beta"].value
        xi = _as_images(x)
        if self.precision != "fp32" and xi.dtype != np.uint16:
            xi = convcore.round_bf16(xi)        # (a convolution's bits are so already)
        if not training:
            y = convcore.batchnorm_inference(xi, g, b, self.buffers["mean"], self.buffers["var"],
                                             self.epsilon, relu, out_bf16=out_bf16)
            return y.reshape(x.shape), None
        sums = training.sums if isinstance(training, Training) else None
        slices = slices_of(training)
        m = xi.shape[0] * xi.shape[1] * xi.shape[2]
        if slices is not None or sums is not None:
            m, mean, var = _global_statistics(xi, sums, slices)
        if m < 2:
            raise ValueError(f"BatchNormalization: training needs more than one value per "
                             f"channel (batch x height x width >= 2), got input {x.shape}")
        if sums is None and slices is None:
            y, mean, var = convcore.batchnorm_forward(xi, g, b, self.epsilon, relu,
                                                      out_bf16=out_bf16)
        else:
            y = convcore.batchnorm_inference(xi, g, b, mean, var, self.epsilon, relu,
                                             out_bf16=out_bf16)
        self._update_running(mean, var, m)
        relu_beta = b.copy() if relu else None     # (the backward makes the mask again)
        return y.reshape(x.shape), (xi, relu_beta, mean, var, sums, m, slices)

    def _update_running(self, mean, var, m):
        k, one = np.float32(self.momentum), np.float32(1 - self.momentum)
        run_mean, run_var = self.buffers["mean"], self.buffers["var"]
        run_mean[...] = k * run_mean + one * mean
        run_var[...] = k * run_var + one * (var * np.float32(m / (m - 1)))

    def backward(self, ctx, dy, need_dx=True, out_bf16=False):
        """out_bf16: dx as bfloat16 bits (for a convolution that multiplies
        in bf16 before it: a fused step's choice)."""
        xi, relu_beta, mean, var, sums, m, slices = ctx
        shape, gamma, dy = dy.shape, self.params["gamma"].value, dy.reshape(xi.shape)
        c, totals = gamma.shape[0], None
        if slices is not None:      # each slice's sums, added in the tree (convcore.slices)
            local = convcore.slices.tree_sum([np.concatenate(convcore.batchnorm_backward(
                xi[a:b], gamma, mean, var, dy[a:b], self.epsilon, False, relu_beta)[1:])
                for a, b in convcore.slices.pairs(slices)])
            total = (local if sums is None else sums(local)).astype(np.float64)
            totals = (m, total[:c], total[c:])
        elif sums is not None:      # this slice's sums first, then the whole batch's
            _, dg, db = convcore.batchnorm_backward(xi, gamma, mean, var, dy, self.epsilon,
                                                    False, relu_beta)
            total = sums(np.concatenate([dg, db]).astype(np.float64))
            totals = (m, total[:len(dg)], total[len(dg):])
        dx, dg, db = convcore.batchnorm_backward(xi, gamma, mean, var, dy, self.epsilon,
                                                 need_dx, relu_beta, totals, out_bf16=out_bf16)
        if slices is not None:      # the slices' tree (the hook adds the processes')
            dg, db = local[:c].copy(), local[c:].copy()
        self.params["gamma"].grad, self.params["beta"].grad = dg, db
        return None if dx is None else dx.reshape(shape)

    def config(self):
        return dict(momentum=self.momentum, epsilon=self.epsilon)


def _global_statistics(xi, sums, slices=None):
    """(count, mean, biased var) per channel over the whole batch, of which xi
    (N, H, W, C) is one process's slice; sums adds arrays over the processes
    (None: this one alone). With slices (convcore.slices), this process's
    sums are each slice's float64 sums added in the tree."""
    c = xi.shape[3]
    if xi.dtype == np.uint16:       # bfloat16 bits: their values
        xi = (xi.astype(np.uint32) << np.uint32(16)).view(np.float32)

    def total(v, *first):
        if slices is None:
            t = v.reshape(-1, c).sum(axis=0, dtype=np.float64)
        else:
            t = convcore.slices.tree_sum([v[a:b].reshape(-1, c).sum(axis=0, dtype=np.float64)
                                          for a, b in convcore.slices.pairs(slices)])
        t = np.concatenate([first, t])
        return t if sums is None else sums(t)
    first = total(xi, xi.shape[0] * xi.shape[1] * xi.shape[2])   # the count, then the sums
    m, mean = int(first[0]), first[1:] / max(first[0], 1)
    second = total(np.square(xi - mean))
    return m, mean.astype(np.float32), (second / max(m, 1)).astype(np.float32)


class AveragePooling2D(_Pool):
    """Mean over pool_size windows; padded cells do not count (ONNX's default)."""

    def forward(self, x, training=False):
        y = convcore.avgpool2d_forward(x, self.pool_size, self.stride, self.padding)
        return y, (x.shape if training else None)

    def backward(self, x_shape, dy, need_dx=True):
        return convcore.avgpool2d_backward(dy, x_shape, self.pool_size, self.stride,
                                           self.padding) if need_dx else None


class GlobalAveragePooling2D(Layer):
    """Each channel's mean over the image: (N, H, W, C) -> (N, C)."""

    def compute_output_shape(self, input_shape):
        return (_images(self, input_shape)[2],)

    def forward(self, x, training=False):
        y = convcore.avgpool2d_forward(x, x.shape[1:3], padding="valid")
        return y.reshape(x.shape[0], x.shape[3]), (x.shape if training else None)

    def backward(self, x_shape, dy, need_dx=True):
        if not need_dx:
            return None
        dy4 = np.ascontiguousarray(dy).reshape(dy.shape[0], 1, 1, dy.shape[1])
        return convcore.avgpool2d_backward(dy4, x_shape, x_shape[1:3], padding="valid")


class ReLU(Layer):
    """y = max(x, 0). Its backward multiplies dy by the mask y > 0 (ten times
    NumPy's where; a NaN in dy stays NaN where the mask is 0)."""

    def forward(self, x, training=False):
        y = np.maximum(x, np.float32(0))
        return y, (y if training else None)

    def backward(self, y, dy, need_dx=True):
        return relu_backward(y, dy) if need_dx else None


def relu_backward(y, dy):
    """dy where y > 0, else 0 (as dy * mask): the gradient through a ReLU,
    compiled (convcore.add_backward, whose ReLU it is; the same bits)."""
    return convcore.add_backward(dy, relu_y=y)


class Tanh(Layer):
    def forward(self, x, training=False):
        y = np.tanh(x)
        return y, (y if training else None)

    def backward(self, y, dy, need_dx=True):
        return dy * (1 - y * y) if need_dx else None


class LeakyReLU(Layer):
    """y = x where x > 0, else alpha x (alpha in [0, 1); ONNX's default 0.01)."""

    def __init__(self, alpha=0.01):
        super().__init__()
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or \
                not 0 <= alpha < 1:
            raise ValueError(f"LeakyReLU: alpha must be a number in [0, 1), got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x, training=False):
        y = np.where(x > 0, x, x * np.float32(self.alpha))
        return y, (x > 0 if training else None)

    def backward(self, positive, dy, need_dx=True):
        return np.where(positive, dy, dy * np.float32(self.alpha)) if need_dx else None

    def config(self):
        return dict(alpha=self.alpha)


class Sigmoid(Layer):
    """y = 1 / (1 + exp(-x)), computed as (1 + tanh(x / 2)) / 2 (no overflow)."""

    def forward(self, x, training=False):
        y = (np.tanh(x * np.float32(0.5)) + np.float32(1)) * np.float32(0.5)
        return y, (y if training else None)

    def backward(self, y, dy, need_dx=True):
        return dy * y * (1 - y) if need_dx else None


class Dropout(Layer):
    """Inverted dropout: in training keep each unit with probability 1 - rate and
    scale it by 1 / (1 - rate); the identity at inference. Each training forward
    draws a 64-bit key from the model's generator (training.rng; a generator of
    its own when called with training=True outside a model); convcore makes the
    mask from the key (Philox4x32-10), in the forward and again in the
    backward pass, so no mask is stored. A slice of a batch that starts at
    example training.first takes that slice of the whole batch's mask."""

    def __init__(self, rate=0.5):
        super().__init__()
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
            raise ValueError(f"Dropout: rate must be in [0, 1), got {rate!r}")
        self.rate = rate
        self.rng = np.random.default_rng()

    def forward(self, x, training=False):
        if not training or self.rate == 0:
            return x, None
        run = training if isinstance(training, Training) else Training(self.rng)
        key = int(run.rng.integers(0, 2**64, dtype=np.uint64))
        offset = run.first * int(np.prod(x.shape[1:]))
        return convcore.dropout_forward(x, self.rate, key, offset), (key, offset)

    def backward(self, ctx, dy, need_dx=True):
        if not need_dx or ctx is None:
            return dy if need_dx else None
        key, offset = ctx
        return convcore.dropout_backward(dy, self.rate, key, offset)

    def config(self):
        return dict(rate=self.rate)


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)), in C order (NHWC: h, w, c)."""

    def compute_output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def forward(self, x, training=False):
        y = x.reshape(x.shape[0], int(np.prod(x.shape[1:])))   # (-1 fails on 0 images)
        return y, (x.shape if training else None)

    def backward(self, x_shape, dy, need_dx=True):
        return dy.reshape(x_shape) if need_dx else None


class _Merge(Layer):
    """A layer of two or more inputs (a list), each of one example's shape;
    its input_shape is the tuple of their shapes."""
    merges = True


class Add(_Merge):
    """The sum of its inputs, all of one shape (a residual connection's add);
    summed left to right. Its backward hands dy to every input."""

    def compute_output_shape(self, input_shapes):
        if any(s != input_shapes[0] for s in input_shapes):
            raise ShapeError("expects inputs of one shape, got "
                             + ", ".join(map(str, input_shapes)))
        return input_shapes[0]

    def forward(self, xs, training=False):
        return add_all(xs), (len(xs) if training else None)

    def backward(self, n, dy, need_dx=True):
        return [dy] * n if need_dx else None


def add_all(xs, relu=False, out_bf16=False):
    """xs[0] + xs[1] + ..., summed left to right (compiled, on convcore's
    threads); relu=True: max(., 0) fused into the last add; out_bf16: its
    output in bfloat16 (convcore.add_forward's)."""
    y = xs[0]
    for i, x in enumerate(xs[1:], 2):
        last = i == len(xs)
        y = convcore.add_forward(y, x, relu=relu and last, out_bf16=out_bf16 and last)
    return y


class Concatenate(_Merge):
    """Its inputs side by side along the last axis (channels, or features);
    every other axis must agree. Its backward hands each input its slice."""

    def compute_output_shape(self, input_shapes):
        first = input_shapes[0]
        if any(len(s) != len(first) or s[:-1] != first[:-1] for s in input_shapes):
            raise ShapeError("expects inputs that differ only in the last axis, got "
                             + ", ".join(map(str, input_shapes)))
        return (*first[:-1], sum(s[-1] for s in input_shapes))

    def forward(self, xs, training=False):
        y = np.concatenate(xs, axis=-1)
        return y, ([x.shape[-1] for x in xs] if training else None)

    def backward(self, widths, dy, need_dx=True):
        if not need_dx:
            return None
        cuts = np.cumsum(widths)[:-1]
        return [np.ascontiguousarray(d) for d in np.split(dy, cuts, axis=-1)]


LAYERS = {cls.__name__: cls for cls in (
    Conv2D, Dense, MaxPool2D, AveragePooling2D, GlobalAveragePooling2D, BatchNormalization,
    ReLU, LeakyReLU, Tanh, Sigmoid, Dropout, Flatten, Add, Concatenate)}
