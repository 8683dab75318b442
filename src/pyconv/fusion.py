"""The one table of fusions, and the planner that reads it over a model's graph.

A model does not run its layers one by one: `plan` walks the graph's nodes
in their order and, where a row of FUSIONS matches a run of nodes (each the
only input of the next, and the next its only reader) and its condition
holds, puts one fused step in their place; every other node is a step of its
own. A step runs as its layer does: `forward(x, training) -> (y, ctx)`,
`backward(ctx, dy, need_dx) -> dx`, and `ready_params()`, the parameters
whose gradient its backward pass completed (the model hands each to the
optimiser's `grad_ready`; a step that applied the update itself returns none).

This is the only place that tests layer or optimiser types. A new fusion is
a class here and a row in FUSIONS; `plan(nodes, fusions=())` runs the layers
unfused (the tests compare the two, bit for bit). The model plans once per
(optimiser, its hooks, fusions) and keeps the plan: planning reads no batch.
"""
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

import convcore

from .layers import (
    Add,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    MaxPool2D,
    ReLU,
    add_all,
    relu_backward,
    slices_of,
)
from .optim import Adam
from .precision import PRECISIONS

BF16 = PRECISIONS[1:]   # the precisions whose products take bfloat16 bits


class ConvPool:
    """A Conv2D and the MaxPool2D after it: convcore's conv2d_maxpool_forward
    and conv2d_maxpool_backward, the same bits as the two layers one after the
    other, without writing the convolution-sized output or its gradient.

    bits_for: the layers that multiply its output (an inference plan's,
    _with_handoffs): where they and it run in bf16, the output is handed to
    them in bfloat16 (out_bf16: what they would round it to; half the bytes)."""

    def __init__(self, conv, pool, bits_for=()):
        self.conv, self.pool, self.bits_for = conv, pool, tuple(bits_for)
        c, p = conv, pool
        self._args = dict(stride=c.stride, padding=c.padding, pool_size=p.pool_size,
                          pool_stride=p.stride, pool_padding=p.padding)

    def forward(self, x, training=False):
        c = self.conv
        b = c.params["b"].value if c.use_bias else None
        slices = slices_of(training)
        out = convcore.conv2d_maxpool_forward(x, c.params["w"].value, b,
                                              relu=c.activation == "relu",
                                              return_argmax=bool(training), slices=slices,
                                              precision=c.precision,
                                              out_bf16=not training and _in_bits(self),
                                              **self._args)
        if not training:
            return out, None
        y, argmax = out         # the pooled output: the ReLU's mask at the winners
        return y, (x, y, argmax, slices)

    def backward(self, ctx, dy, need_dx=True):
        x, y, argmax, slices = ctx
        c = self.conv
        relu_y = y if c.activation == "relu" else None
        dx, dw, db = convcore.conv2d_maxpool_backward(
            x, c.params["w"].value, dy, argmax, need_dx=need_dx, relu_y=relu_y, slices=slices,
            precision=c.precision, **self._args)
        c.set_grads(dw, db)
        return dx

    def ready_params(self):
        return self.conv.ready_params()

    def handing_bits_to(self, layers):
        return ConvPool(self.conv, self.pool, layers)

    def __repr__(self):
        return f"ConvPool({self.conv!r}, {self.pool!r})"


def _all_bf16(layers):
    """Whether there are layers and all multiply in bf16 (a NormReLU's or
    AddReLU's bits_for: then they are handed its output in bfloat16)."""
    return bool(layers) and all(layer.precision == "bf16" for layer in layers)


def _in_bits(op):
    """Whether op (a ConvPool or ConvNorm of an inference plan) hands its
    output over in bfloat16: it and the layers that multiply it (bits_for)
    all run in bf16."""
    return (bool(op.bits_for) and op.conv.precision == "bf16"
            and all(layer.precision in BF16 for layer in op.bits_for))


class DenseAdam:
    """A Dense layer whose Adam update runs inside its backward pass
    (convcore.linear_backward_adam applies each block of the weight gradient
    while it is in cache; the gradient is never stored). The optimiser hands
    over its state and this step's rates (Adam.update_state), and is told the
    parameters are applied; the same bits as the backward pass followed by the
    optimiser's own update."""

    def __init__(self, dense, optimizer):
        self.dense, self.optimizer = dense, optimizer

    def forward(self, x, training=False):
        return self.dense.forward(x, training)

    def backward(self, ctx, dy, need_dx=True):
        x, y, slices = ctx
        d, opt = self.dense, self.optimizer
        w, b = d.params["w"], d.params.get("b")
        mw, vw = opt.update_state(w)
        mb, vb = opt.update_state(b) if b is not None else (None, None)
        dx = convcore.linear_backward_adam(
            x, w.value, dy, None if b is None else b.value, mw, vw, mb, vb, *opt.rates(),
            need_dx=need_dx, relu_y=y if d.activation == "relu" else None, slices=slices,
            precision=d.precision)
        opt.applied(w, b)
        return dx

    def ready_params(self):
        return []           # updated in the backward pass

    def __repr__(self):
        return f"DenseAdam({self.dense!r})"


class Conv:
    """A Conv2D on its own (a training plan's, _with_handoffs), no activation,
    whose output only batch norms read (bits_for): where it and they run in
    bf16, it writes that output in bfloat16 (conv2d_forward's out_bf16: what
    a batch norm in bf16 rounds its input to; half the bytes written, and
    read by each of the batch norm's passes). Backward: the Conv2D's."""

    def __init__(self, conv, bits_for=()):
        self.conv, self.bits_for = conv, tuple(bits_for)

    def forward(self, x, training=False):
        return self.conv.forward(x, training, out_bf16=_all_bf16((self.conv,) + self.bits_for))

    def backward(self, ctx, dy, need_dx=True):
        return self.conv.backward(ctx, dy, need_dx)

    def ready_params(self):
        return self.conv.ready_params()

    def __repr__(self):
        return f"Conv({self.conv!r})"


class Norm:
    """A BatchNormalization on its own (a training plan's, _with_handoffs)
    whose input only it reads and a bias-free convolution without activation
    makes (grad_bits_for): where that convolution multiplies in bf16, the
    input gradient is handed back to it in bfloat16 (batchnorm_backward's
    out_bf16: what it would round its dy to; no bias gradient sums dy)."""

    def __init__(self, norm, grad_bits_for=()):
        self.norm, self.grad_bits_for = norm, tuple(grad_bits_for)

    def forward(self, x, training=False):
        return self.norm.forward(x, training)

    def backward(self, ctx, dy, need_dx=True):
        return self.norm.backward(ctx, dy, need_dx, out_bf16=_all_bf16(self.grad_bits_for))

    def ready_params(self):
        return self.norm.ready_params()

    def __repr__(self):
        return f"Norm({self.norm!r})"


class NormReLU(Norm):
    """A BatchNormalization and the ReLU after it: one pass over the batch
    (convcore's batchnorm functions with relu=True), in training and inference.

    bits_for: the layers that alone read its output (_with_handoffs): where
    they all multiply in bf16, the output is handed to them in bfloat16
    (out_bf16: what they would round it to; half the bytes written and read).
    In training too: its own backward reads its input, not its output.
    grad_bits_for and the backward pass: Norm's."""

    def __init__(self, norm, relu, bits_for=(), grad_bits_for=()):
        super().__init__(norm, grad_bits_for)
        self.relu, self.bits_for = relu, tuple(bits_for)

    def forward(self, x, training=False):
        return self.norm.forward(x, training, relu=True, out_bf16=_all_bf16(self.bits_for))

    def handing_bits_to(self, layers):
        return NormReLU(self.norm, self.relu, layers, self.grad_bits_for)

    def handing_grad_bits_to(self, conv):
        return NormReLU(self.norm, self.relu, self.bits_for, (conv,))

    def __repr__(self):
        return f"NormReLU({self.norm!r}, {self.relu!r})"


class AddReLU:
    """An Add and the ReLU after it (a residual block's end): the sum and the
    ReLU written in one output array; backward hands each input dy through
    the ReLU's mask. The same bits as the two layers. bits_for: as
    NormReLU's (the mask then read from the bits: convcore.add_forward)."""
    merges = True

    def __init__(self, add, relu, bits_for=()):
        self.add, self.relu, self.bits_for = add, relu, tuple(bits_for)

    def forward(self, xs, training=False):
        y = add_all(xs, relu=True, out_bf16=_all_bf16(self.bits_for))
        return y, ((len(xs), y) if training else None)

    def handing_bits_to(self, layers):
        return AddReLU(self.add, self.relu, layers)

    def backward(self, ctx, dy, need_dx=True):
        n, y = ctx
        return [relu_backward(y, dy)] * n if need_dx else None

    def ready_params(self):
        return []

    def __repr__(self):
        return f"AddReLU({self.add!r}, {self.relu!r})"


class ConvNorm:
    """Inference only: a Conv2D (no activation) and the BatchNormalization
    after it (and a ReLU after that), folded into one convolution: w' = w *
    scale and b' = (b - mean) * scale + beta per output channel, scale =
    gamma / sqrt(var + eps), from the parameters and running statistics as
    they are at each call (so training in between is seen). Not the same bits
    as the layers one by one: each w' and b' is rounded once more, so the
    output moves by at most 2 float32 ulps of |scale| * sum |w x| per output
    (measured on resnet8 through 6 training steps: 6.7e-7 of the largest logit).
    bits_for: as ConvPool's."""

    def __init__(self, conv, norm, relu=None, bits_for=()):
        self.conv, self.norm, self.relu, self.bits_for = conv, norm, relu, tuple(bits_for)

    def forward(self, x, training=False):
        c, n = self.conv, self.norm
        scale = (n.params["gamma"].value.astype(np.float64)
                 / np.sqrt(n.buffers["var"].astype(np.float64) + n.epsilon))
        b = c.params["b"].value if c.use_bias else 0.0
        w = (c.params["w"].value * scale).astype(np.float32)
        bias = ((b - n.buffers["mean"]) * scale + n.params["beta"].value).astype(np.float32)
        return convcore.conv2d_forward(x, w, bias, c.stride, c.padding,
                                       relu=self.relu is not None, precision=c.precision,
                                       out_bf16=_in_bits(self)), None

    def ready_params(self):
        return []

    def handing_bits_to(self, layers):
        return ConvNorm(self.conv, self.norm, self.relu, layers)

    def __repr__(self):
        return f"ConvNorm({self.conv!r}, {self.norm!r}" + (
            f", {self.relu!r})" if self.relu is not None else ")")


def _always(layers, optimizer):
    return True


def _no_activation(layers, optimizer):
    return layers[0].activation is None


def _adam_fuses(layers, optimizer):
    return isinstance(optimizer, Adam) and optimizer.fusable(layers[0].ready_params())


@dataclass(frozen=True)
class Fusion:
    """Layers of the types in `pattern`, in a row, run as `step(*layers)` (or
    `step(*layers, optimizer)` for a fusion of the optimiser's update) where
    `applies(layers, optimizer)` holds."""
    name: str
    pattern: tuple
    step: Callable
    applies: Callable = _always
    with_optimizer: bool = False
    inference_only: bool = False      # (a step without a backward pass)


FUSIONS = (
    Fusion("conv + batch norm + ReLU, folded", (Conv2D, BatchNormalization, ReLU), ConvNorm,
           _no_activation, inference_only=True),
    Fusion("conv + batch norm, folded", (Conv2D, BatchNormalization), ConvNorm, _no_activation,
           inference_only=True),
    Fusion("conv + max-pool", (Conv2D, MaxPool2D), ConvPool),
    Fusion("batch norm + ReLU", (BatchNormalization, ReLU), NormReLU),
    Fusion("add + ReLU", (Add, ReLU), AddReLU),
    Fusion("dense + Adam update", (Dense,), DenseAdam, _adam_fuses, with_optimizer=True),
)


@dataclass(frozen=True)
class Step:
    """One step of a plan: `op` (a layer or a fused step) reads the values
    named `inputs` ("input": the model's input; else a node's name) and makes
    the value `output`; need_dx: whether any input wants a gradient; drop:
    the values no later step reads (forward lets them go after this step)."""
    op: object
    inputs: tuple
    output: str
    need_dx: bool
    drop: tuple = ()


def _chain(node, readers, by_name, n):
    """`node` and the n - 1 nodes after it where each is the only reader of the
    one before and reads nothing else; fewer where the chain ends."""
    run = [node]
    while len(run) < n:
        after = readers.get(run[-1].name, ())
        if len(after) != 1 or after[0] is None or by_name[after[0]].inputs != (run[-1].name,):

            break
        run.append(by_name[after[0]])
    return run


def _matches(fusion, run, optimizer, training):
    n = len(fusion.pattern)
    layers = [node.layer for node in run[:n]]
    return (len(run) >= n and not (training and fusion.inference_only)
            and all(isinstance(layer, kind) for layer, kind in zip(layers, fusion.pattern))
            and fusion.applies(layers, optimizer))


def plan(nodes, output, optimizer=None, fusions=FUSIONS, training=True):
    """The steps that run a graph's `nodes` (in topological order; each with
    .name, .layer and .inputs) up to the node named `output`: at each node the
    first matching row of `fusions` (training=False: inference-only rows too),
    else the node's layer on its own."""
    by_name = {node.name: node for node in nodes}
    readers = {}
    for node in nodes:
        for name in node.inputs:
            readers.setdefault(name, []).append(node.name)
    readers.setdefault(output, []).append(None)      # the model's output has a reader
    longest = max((len(f.pattern) for f in fusions), default=1)
    steps, done = [], set()
    for node in nodes:
        if node.name in done:
            continue
        run = _chain(node, readers, by_name, longest)
        fusion = next((f for f in fusions if _matches(f, run, optimizer, training)), None)
        run = run[:len(fusion.pattern)] if fusion else run[:1]
        op = node.layer if fusion is None else fusion.step(
            *(r.layer for r in run), *((optimizer,) if fusion.with_optimizer else ()))
        done.update(r.name for r in run)
        steps.append(Step(op, node.inputs, run[-1].name,
                          any(name != "input" for name in node.inputs)))
    return _with_drops(_with_handoffs(steps, output, training))


_PASS_ON = (Flatten, Dropout)   # hand their input on as it is (at inference)
_CONV_LED = (ConvPool, ConvNorm)   # fused steps whose convolution reads their input


def _multipliers(name, readers, training):
    """The Conv2D and Dense layers that read the value `name`, directly or
    (at inference) through steps that hand it on as it is (_PASS_ON) or a
    fused step's convolution (_CONV_LED); in training Conv2D steps only (their
    backward passes take it in bfloat16 too); None where anything else reads
    it (another step, the model's output)."""
    found = []
    for step in readers.get(name, ()):
        op = None if step is None else step.op
        if training:
            more = [op] if isinstance(op, Conv2D) else None
        else:
            more = (_multipliers(step.output, readers, training) if isinstance(op, _PASS_ON)
                    else [op.conv] if isinstance(op, _CONV_LED)
                    else [op] if isinstance(op, (Conv2D, Dense)) else None)
        if more is None:
            return None
        found += more
    return found


def _with_handoffs(steps, output, training):
    """The steps, each that can write its output in bfloat16 (NormReLU,
    AddReLU; ConvPool and ConvNorm at inference) knowing the layers that
    alone read it (_multipliers): it hands it to them so where all run in
    bf16 (bits_for); in training, each convolution that only batch norms
    read knowing them (Conv: they read it in bfloat16), and each batch norm
    that can hand its input gradient back so knowing the convolution it goes
    to (_grad_bits_for)."""
    readers = {output: [None]}
    for step in steps:
        for name in step.inputs:
            readers.setdefault(name, []).append(step)
    handing = (NormReLU, AddReLU) + (() if training else _CONV_LED)
    made = {step.output: step for step in steps}
    out = []
    for step in steps:
        found = (_multipliers(step.output, readers, training)
                 if isinstance(step.op, handing) else None)
        op = step.op.handing_bits_to(found) if found else step.op
        norms = _norms_reading(step, readers) if training else None
        op = Conv(op, norms) if norms else op
        conv = _grad_bits_for(step, made, readers) if training else None
        if conv is not None:
            op = op.handing_grad_bits_to(conv) if isinstance(op, NormReLU) else Norm(op, (conv,))
        out.append(replace(step, op=op))
    return out


def _norms_reading(step, readers):
    """The batch norms that alone read the output of `step`, a Conv2D without
    activation (its backward reads no ReLU mask from that output); else None."""
    conv = step.op
    if not isinstance(conv, Conv2D) or conv.activation is not None:
        return None
    ops = [None if s is None else s.op for s in readers.get(step.output, ())]
    if not ops or not all(isinstance(op, (BatchNormalization, NormReLU)) for op in ops):
        return None
    return [op.norm if isinstance(op, NormReLU) else op for op in ops]


def _keeps_bits(op):
    """Whether op is a Conv2D whose backward pass reads a dy in bfloat16 bits
    as they are; not a 1x1 strided one (its input gradient is a product of
    float32 sections: it would widen them, a pass more than float32 costs)."""
    return isinstance(op, Conv2D) and (op.kernel_size != (1, 1) or op.stride == (1, 1))


def _grad_bits_for(step, made, readers):
    """The Conv2D whose output only the batch norm `step` reads, where it
    has no bias and no activation (so it needs its dy only in bfloat16, as
    its products round it) and its sums are long enough for the bf16
    kernels' backward (shorter ones would widen the bits again); else None."""
    if not isinstance(step.op, (BatchNormalization, NormReLU)):
        return None
    name = step.inputs[0]
    before = made.get(name)
    conv = None if before is None else before.op
    if not _keeps_bits(conv) or conv.use_bias or conv.activation is not None \
            or readers.get(name) != [step]:
        return None
    kh, kw, c_in = conv.params["w"].value.shape[:3]
    return conv if kh * kw * c_in >= convcore.BF16_MIN_DEPTH["backward"] else None


def _with_drops(steps):
    """The steps, each knowing which values it reads for the last time."""
    last = {name: i for i, step in enumerate(steps) for name in step.inputs}
    return tuple(replace(step, drop=tuple(sorted({n for n in step.inputs if last[n] == i})))
                 for i, step in enumerate(steps))
