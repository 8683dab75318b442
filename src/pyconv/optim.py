"""Optimisers over a model's Parameters; each step is one fused convcore pass."""
import numpy as np

import convcore


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: params is empty")
        if not lr > 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr!r}")
        self.lr = float(lr)
        self.t = 0

    def step(self):
        raise NotImplementedError

    def state_arrays(self):
        """Named state arrays (for checkpoints), besides the step count self.t."""
        return {}

    def load_state(self, t, arrays):
        self.t = int(t)
        for name, a in self.state_arrays().items():
            if name not in arrays or arrays[name].shape != a.shape:
                raise ValueError(f"{type(self).__name__}: checkpoint has no matching state "
                                 f"{name!r}")
            a[...] = arrays[name]


class SGD(Optimizer):
    """p -= lr * buf, buf = momentum * buf + grad (plain SGD when momentum is 0)."""

    def __init__(self, params, lr=0.01, momentum=0.0):
        super().__init__(params, lr)
        if not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)
        self.buf = [convcore.zeros(p.value.shape) for p in self.params]

    def step(self):
        self.t += 1
        for p, b in zip(self.params, self.buf):
            convcore.sgd_update(p.value, p.grad, b, self.lr, self.momentum)

    def state_arrays(self):
        return {f"buf{i}": b for i, b in enumerate(self.buf)}


class Adam(Optimizer):
    """Adam with TensorFlow's defaults and update (beta1 0.9, beta2 0.999, epsilon 1e-8)."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m = [convcore.zeros(p.value.shape) for p in self.params]
        self.v = [convcore.zeros(p.value.shape) for p in self.params]

    def step(self):
        self.t += 1
        lr_t = self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)
        for p, m, v in zip(self.params, self.m, self.v):
            convcore.adam_update(p.value, p.grad, m, v, lr_t, self.beta1, self.beta2, self.eps)

    def state_arrays(self):
        return {**{f"m{i}": m for i, m in enumerate(self.m)},
                **{f"v{i}": v for i, v in enumerate(self.v)}}


OPTIMIZERS = {"SGD": SGD, "Adam": Adam}
