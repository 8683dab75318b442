"""Optimisers over a model's Parameters; each update is one fused convcore pass.

When each parameter is updated, in one place: a training step calls
begin_step; the backward pass hands each parameter to grad_ready as soon as
its gradient is complete, and grad_ready runs the gradient hooks and then
updates it at once, or, where a hook returned a wait (a sum across processes
still under way), defers the update to finish_step, which waits and applies
those in the order their gradients were ready. A fused step of the model's
plan (pyconv.fusion: Dense + Adam) applies the update inside its backward
pass from the state this optimiser hands it (update_state, rates) and says
so (applied); finish_step then updates every parameter not yet seen.
"""
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

    def fusion_key(self):
        """What a model's plan of fused steps depends on: the gradient hooks, and
        whether this optimiser fuses its updates at all (fused)."""
        return tuple(self._hooks), bool(getattr(self, "fused", False))

    def applied(self, *params):

        """A fused step applied this step's update of `params` (None entries
        ignored): their gradients were never stored."""
        for p in params:
            if p is not None:
                self._updated.add(self._index[id(p)])
                p.grad = None

    def _update(self, i):
        raise NotImplementedError

    def state_arrays(self):
        """Named state arrays (for checkpoints), besides the step count self.t."""
        return {}

    def config(self):
        """The constructor's arguments besides params and lr (JSON-able, for
        checkpoints: a resumed run gets the same optimiser)."""
        return {}

    def load_state(self, t, arrays):
        self.t = int(t)
        for name, a in self.state_arrays().items():
            if name not in arrays or arrays[name].shape != a.shape:
                raise ValueError(f"{type(self).__name__}: checkpoint has no matching state "
                                 f"{name!r}")
            a[...] = arrays[name]


def _weight_decay(owner, weight_decay):
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or \
            not weight_decay >= 0:
        raise ValueError(f"{owner}: weight_decay must be a number >= 0, got {weight_decay!r}")
    return float(weight_decay)


class SGD(Optimizer):
    """PyTorch's SGD: g = grad + weight_decay * p; buf = momentum * buf + g;
    p -= lr * buf, or with nesterov=True p -= lr * (g + momentum * buf)
    (plain SGD when momentum is 0)."""

    def __init__(self, params, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or \
                not 0 <= momentum < 1:
            raise ValueError(f"SGD: momentum must be in [0, 1), got {momentum!r}")
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs a momentum > 0")
        self.momentum, self.nesterov = float(momentum), bool(nesterov)
        self.weight_decay = _weight_decay("SGD", weight_decay)
        self.buf = [convcore.zeros(p.value.shape) for p in self.params]

    def _update(self, i):
        p = self.params[i]
        convcore.sgd_update(p.value, p.grad, self.buf[i], self.lr, self.momentum, self.nesterov,
                            self.weight_decay)

    def state_arrays(self):
        return {f"buf{i}": b for i, b in enumerate(self.buf)}

    def config(self):
        return dict(momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)


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
        convcore.adam_update(p.value, p.grad, self.m[i], self.v[i], *self.rates(),
                             decay=self.lr * getattr(self, "weight_decay", 0.0))


    def fusable(self, params):
        """Whether a fused step may apply this optimiser's update of `params`
        inside a backward pass: fused=True, no gradient hooks (a hook needs the
        gradient stored), and every parameter one of this optimiser's."""
        return (self.fused and not self._hooks and len(params) in (1, 2)
                and all(id(p) in self._index for p in params))

    def update_state(self, p):
        """(m, v): p's moment estimates, which an update of p changes in place."""
        i = self._index[id(p)]
        return self.m[i], self.v[i]

    def rates(self):
        """(lr_t, beta1, beta2, eps) of this step's update (lr_t: the step size
        with both bias corrections folded in, as TensorFlow's Adam)."""
        return self._lr_t(), self.beta1, self.beta2, self.eps

    def state_arrays(self):
        return {**{f"m{i}": m for i, m in enumerate(self.m)},
                **{f"v{i}": v for i, v in enumerate(self.v)}}

    def config(self):
        return dict(beta1=self.beta1, beta2=self.beta2, eps=self.eps, fused=self.fused)


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter; PyTorch's
    AdamW): each step first p *= 1 - lr * weight_decay, then Adam's update,
    for every parameter. Its updates are never fused into a backward pass."""

    def __init__(self, params, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01):
        super().__init__(params, lr, beta1, beta2, eps, fused=False)
        self.weight_decay = _weight_decay("AdamW", weight_decay)

    def config(self):
        return dict(beta1=self.beta1, beta2=self.beta2, eps=self.eps,
                    weight_decay=self.weight_decay)


OPTIMIZERS = {"SGD": SGD, "Adam": Adam, "AdamW": AdamW}
