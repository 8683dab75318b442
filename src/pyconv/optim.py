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
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._updated = set()
        self._hooks = []
        self._waiting = []          # (index, waits): updates deferred to finish_step

    def add_grad_hook(self, hook):
        """Call hook(param) whenever a parameter's gradient is complete in the
        backward pass, before this optimiser applies it: a hook may change
        param.grad in place (a sum across processes, clipping). A hook that
        starts work on the gradient and returns a function (a non-blocking sum
        across processes: its wait) defers that parameter's update to the end
        of the backward pass (finish_step), which calls the function first.
        Returns a function that removes the hook. With a hook, no update is
        fused into a backward pass (the hook needs the gradient stored)."""
        self._hooks.append(hook)
        return lambda: self._hooks.remove(hook)

    def step(self):
        """One update of every parameter from its gradient."""
        self.begin_step()
        self.finish_step()

    def begin_step(self):
        """Start step t + 1: from here the backward pass calls grad_ready."""
        self.t += 1
        self._updated = set()

    def grad_ready(self, p):
        """p.grad is complete for this step: run the hooks, then update p (or
        defer its update, if a hook returned a wait)."""
        i = self._index.get(id(p))
        if i is None or i in self._updated:
            return
        waits = [w for w in (hook(p) for hook in self._hooks) if w is not None]
        self._updated.add(i)
        if waits:
            self._waiting.append((i, waits))
        else:
            self._update(i)

    def finish_step(self):
        """Hand over the parameters not handed to grad_ready since begin_step,
        then apply the deferred updates, each after its waits, in the order
        their gradients were ready."""
        for p in self.params:
            self.grad_ready(p)
        waiting, self._waiting = self._waiting, []
        for i, waits in waiting:
            for wait in waits:
                wait()
            self._update(i)

    def fuses_dense(self, params):
        """Whether this optimiser updates a dense layer holding `params` inside its
        backward pass (dense_backward_update); False for the base class."""
        return False

    def _update(self, i):
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

    def _update(self, i):
        p = self.params[i]
        convcore.sgd_update(p.value, p.grad, self.buf[i], self.lr, self.momentum)

    def state_arrays(self):
        return {f"buf{i}": b for i, b in enumerate(self.buf)}


class Adam(Optimizer):
    """Adam with TensorFlow's defaults and update (beta1 0.9, beta2 0.999, epsilon 1e-8).

    fused=True: a Dense layer's weights are updated inside its backward pass
    (convcore.linear_backward_adam: the weight gradient is applied block by
    block while in cache, never stored; the same bits as unfused)."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, fused=True):
        super().__init__(params, lr)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.fused = bool(fused)
        self.m = [convcore.zeros(p.value.shape) for p in self.params]
        self.v = [convcore.zeros(p.value.shape) for p in self.params]

    def _lr_t(self):
        return self.lr * np.sqrt(1 - self.beta2 ** self.t) / (1 - self.beta1 ** self.t)

    def _update(self, i):
        p = self.params[i]
        convcore.adam_update(p.value, p.grad, self.m[i], self.v[i], self._lr_t(), self.beta1,
                             self.beta2, self.eps)

    def fuses_dense(self, params):
        return (self.fused and not self._hooks and len(params) in (1, 2)
                and all(id(p) in self._index for p in params))

    def dense_backward_update(self, w, b, x, dy, need_dx, relu_y):
        """The backward pass of a dense layer with parameters w, b (b may be None)
        and this step's update of both (where fuses_dense([w, b])); returns dx."""
        iw, ib = self._index[id(w)], None if b is None else self._index[id(b)]
        dx = convcore.linear_backward_adam(
            x, w.value, dy, None if b is None else b.value, self.m[iw], self.v[iw],
            None if b is None else self.m[ib], None if b is None else self.v[ib],
            self._lr_t(), self.beta1, self.beta2, self.eps, need_dx=need_dx, relu_y=relu_y)
        self._updated.add(iw)
        w.grad = None           # applied, not stored
        if b is not None:
            self._updated.add(ib)
            b.grad = None
        return dx

    def state_arrays(self):
        return {**{f"m{i}": m for i, m in enumerate(self.m)},
                **{f"v{i}": v for i, v in enumerate(self.v)}}


OPTIMIZERS = {"SGD": SGD, "Adam": Adam}
