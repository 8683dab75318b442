"""Training: a small loop (Trainer) with callbacks (pyconv.callbacks) around it.

The Trainer runs steps; everything else is a callback, each in its own place
(after Keras' Model.fit): the progress bar or log lines, validation at
intervals, checkpoints, learning-rate schedules, early stopping. Resume,
interruption (Ctrl-C) and divergence are the Trainer's own small methods.
fit() is Model.fit; `pyconv train` builds a Trainer too (pyconv.cli.runs).
"""
import math
import os
import signal
import sys
import time

import numpy as np

from ..data.augment import batch
from ..errors import WriteError
from ..io.checkpoints import load_checkpoint, save_checkpoint
from ..model import SLICES
from ..optim import Adam
from ..precision import checked as checked_precision
from . import distributed
from .callbacks import Checkpoint, Evaluate, ProgressBar


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""




class BatchSampler:
    """Batches of indices into n examples, as TensorFlow's next_batch: a new
    shuffled order each epoch; a batch that straddles two epochs takes the
    rest of one and the start of the next. Without shuffle, epochs run in
    order and drop their last partial batch (Grokking Deep Learning's loop). The state is
    (generator state at the start of the epoch, epoch, position)."""

    def __init__(self, n, batch_size, shuffle, seed):
        self.n, self.batch_size, self.shuffle = n, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        self.epoch, self.pos = -1, n
        self._start_state = self.rng.bit_generator.state
        self.order = np.arange(n)

    def _new_epoch(self):
        self._start_state = self.rng.bit_generator.state
        self.order = self.rng.permutation(self.n) if self.shuffle else np.arange(self.n)
        self.epoch += 1
        self.pos = 0

    def next(self):
        if not self.shuffle:
            if self.pos + self.batch_size > self.n:
                self._new_epoch()
            idx = self.order[self.pos:self.pos + self.batch_size]
            self.pos += self.batch_size
            return idx
        parts, need = [], self.batch_size
        while need:
            if self.pos >= self.n:
                self._new_epoch()
            take = min(need, self.n - self.pos)
            parts.append(self.order[self.pos:self.pos + take])
            self.pos += take
            need -= take
        return np.concatenate(parts)

    def state(self):
        return {"rng": self._start_state, "epoch": self.epoch, "pos": self.pos}

    def load_state(self, state):
        self.rng.bit_generator.state = state["rng"]
        epoch, pos = state["epoch"], state["pos"]
        if epoch >= 0:
            self.epoch = epoch - 1
            self._new_epoch()
        self.epoch, self.pos = epoch, pos


class _Interrupts:
    """Turn the first Ctrl-C into a flag read between steps; a second one stops at once."""

    def __init__(self):
        self.requested = False

    def __enter__(self):
        self._old = signal.getsignal(signal.SIGINT)
        try:
            signal.signal(signal.SIGINT, self._handle)
        except ValueError:          # not the main thread: leave Ctrl-C alone
            self._old = None
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)



class Stopwatch:
    """Seconds spent inside `with stopwatch:` blocks, summed."""

    def __init__(self, seconds=0.0):
        self.seconds = seconds

    def __enter__(self):
        self._t = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.seconds += time.perf_counter() - self._t


def log(msg):
    from tqdm.auto import tqdm
    tqdm.write(msg, file=sys.stderr)




# ---------------------------------------------------------------- the loop

class Trainer:
    """Steps of model.train_step over batches of train = (x, y), with callbacks.

    x may be uint8 (scaled one batch at a time by the model), float32, or a
    memory-mapped array (only each batch's rows are read). trainer.clock
    times the steps alone (batching included; evaluation and checkpoints
    not). validation = (x, y) or None, for the Evaluate callback; test = (x, y)
    or None, evaluated once when the steps are done (recorded as the last entry
    of the history)."""

    def __init__(self, model, optimizer, train, *, steps, batch_size, validation=None,
                 test=None, shuffle=True, seed=0, callbacks=(), log=log, config=None,
                 world=None, label_smoothing=0.0, augment=None, slices=SLICES):
        self.model, self.optimizer, self.train, self.validation = (model, optimizer, train,
                                                                   validation)
        self.test = test
        self.steps, self.batch_size, self.config = steps, batch_size, config or {}
        self.world = world or distributed.world()     # several processes: pyconv.distributed
        self.label_smoothing, self.slices = label_smoothing, slices
        self.parallel = distributed.DataParallel(model, optimizer, self.world,   # (once)
                                                 label_smoothing, slices)
        self.augment = augment if augment else None     # a pyconv.data.Augment
        if self.augment is not None:
            self.augment.check(train[0].shape[1:])
        if batch_size < self.world.size:
            raise ValueError(f"Trainer: batch_size ({batch_size}) is the global batch: it must "
                             f"be at least the number of processes ({self.world.size})")
        self.callbacks = list(callbacks)
        self.log = log if self.world.is_root else (lambda msg: None)
        self.sampler = BatchSampler(len(train[0]), batch_size, shuffle, seed)
        self.step, self.history, self.clock = 0, [], Stopwatch()
        self.stop_training = False
        self.last_checkpoint = None        # (path, step) of the last good one
        self.resume_hint = None            # the command that resumes an interrupted run

    def resume(self, path, lr=None):
        """Continue from a checkpoint written by save_checkpoint."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"resume: checkpoint {path} does not exist")
        model, self.optimizer, state = load_checkpoint(path, lr=lr)
        if model.name != self.model.name:
            raise ValueError(f"resume: {path} holds a {model.name!r} model, "
                             f"not {self.model.name!r}")
        self.model = model.set_precision(state.get("precision", "fp32"))   # the run's own
        self.parallel = distributed.DataParallel(model, self.optimizer, self.world,
                                                 self.label_smoothing, self.slices)
        self.step, self.history = state["step"], state["history"]
        if self.augment is not None and state.get("augment") is not None:
            self.augment.load_state(state["augment"])
        self.clock = Stopwatch(state["train_seconds"])
        self.model.rng.bit_generator.state = state["model_rng"]
        self.sampler.load_state(state["sampler"])
        for cb, cb_state in zip(self.callbacks, state.get("callbacks", [])):
            if cb_state is not None:
                cb.load_state(cb_state)
        self.last_checkpoint = (path, self.step)
        self.log(f"resumed from {path} at step {self.step}")

    def save_checkpoint(self, path):
        """Rank 0 writes it (the other ranks check that their weights are the same)."""
        self.world.check_in_sync(self.model, self.step)
        if not self.world.is_root:
            self.last_checkpoint = (path, self.step)
            return
        state = {"step": self.step, "train_seconds": self.clock.seconds,
                 "history": self.history, "model_rng": self.model.rng.bit_generator.state,
                 "sampler": self.sampler.state(), "config": self.config,
                 "precision": self.model.precision,
                 "augment": None if self.augment is None else self.augment.state(),
                 "callbacks": [cb.state() for cb in self.callbacks]}
        try:
            save_checkpoint(path, self.model, self.optimizer, state)
        except OSError as e:
            raise WriteError(f"could not write the checkpoint {path}: {e.strerror or e}; "
                             f"{self.kept_message()}") from None
        self.last_checkpoint = (path, self.step)

    def kept_message(self):
        """Which checkpoint is still good, for an error message."""
        if self.last_checkpoint is None:
            return "no checkpoint was written"
        path, step = self.last_checkpoint
        return f"the last good checkpoint, {path} (step {step}), is kept"

    def run(self):
        """Train to self.steps (or until a callback sets stop_training)."""
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            with _Interrupts() as self._interrupts:
                while self.step < self.steps and not self.stop_training:
                    if self._interrupts.requested:
                        self._interrupted()
                    self._one_step()
            if self.test is not None:
                result = self.evaluate(*self.test)
                self.record({"step": self.step, "test_loss": result["loss"],
                             "test_accuracy": result["accuracy"]})
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.history

    def record(self, entry):
        """An evaluation's figures into the history, and to each callback."""
        self.history.append(entry)
        for cb in self.callbacks:
            cb.on_evaluation(self, entry)

    def evaluate(self, x, y):
        """{"loss", "accuracy"} over (x, y), split across the ranks."""
        return self.parallel.evaluate(x, y)

    def _one_step(self):
        x, y = self.train
        for cb in self.callbacks:
            cb.on_step_begin(self)
        with self.clock:
            idx = self.sampler.next()                 # the global batch, alike on every rank
            first, end = self.world.shard(len(idx))
            yb = np.asarray(y[idx[first:end]]).astype(np.int64)
            # gathered, augmented (drawn for the global batch) and scaled in one pass
            xb = batch(x, idx[first:end], self.augment, first, len(idx),
                       self.model.input_divisor)
            loss, logits = self.parallel.step_slice(xb, yb, first, len(idx))
            correct = int((logits.argmax(1) == yb).sum())
            if self.world.size > 1:                   # the batch's, and a Ctrl-C on any rank
                loss, correct, stop = self.world.sum([loss, correct,
                                                      self._interrupts.requested])
                correct, self._interrupts.requested = int(correct), bool(stop)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {self.step + 1}; "
                                   f"stopping ({self.kept_message()}). Try a smaller learning "
                                   "rate.")
        self.step += 1
        for cb in self.callbacks:
            cb.on_step_end(self, loss, correct)

    def _interrupted(self):
        path = next((cb.path for cb in self.callbacks if isinstance(cb, Checkpoint)),
                    f"pyconv-{self.model.name}-interrupted.npz")
        self.save_checkpoint(path)
        hint = (self.resume_hint or "").format(path=path)
        self.log(f"interrupted at step {self.step}; checkpoint saved to {path}."
                 + (f" Resume with:\n  {hint}" if hint else ""))
        raise KeyboardInterrupt


# ---------------------------------------------------------------- Model.fit

class History:
    """What fit() returns: history, one dict per evaluation (step, loss, lr,
    validation_accuracy), and the model."""

    def __init__(self, model, history, trainer):
        self.model, self.history, self.trainer = model, history, trainer

    def __repr__(self):
        return f"History({len(self.history)} evaluations, last {self.history[-1:]})"


def fit(model, x, y, *, epochs=None, steps=None, batch_size=32, optimizer=None, lr=1e-3,
        validation_data=None, validation_split=None, callbacks=(), eval_every=None,
        shuffle=True, seed=0, verbose=True, label_smoothing=0.0, augment=None, slices=SLICES,
        precision=None):
    """Train model on images x (N, H, W[, C]; uint8 or float) and integer labels y.

    epochs or steps: how long (an epoch is len(x) / batch_size steps). optimizer:
    an Optimizer over model.parameters() (default Adam(lr)). validation_data
    (x, y), or validation_split: the last fraction of (x, y) held out (as
    Keras). Validation runs every eval_every steps (default: once an epoch)
    and at the end. callbacks: pyconv.callbacks objects (schedules, early
    stopping, checkpoints), called after the validation. label_smoothing: of
    the training loss (0.1: PyTorch's CrossEntropyLoss(label_smoothing=0.1)).
    augment: a pyconv.data.Augment for the training batches. slices: the
    number of slices each batch's sums are cut into (convcore.slices; the
    same bits on any power of two of processes that divides it; 1: one plain
    sum, the fastest). precision: how the convolutions and dense layers
    multiply, "fp32", "bf16" or "bf16-emulated" (pyconv.precision), set on the
    model (model.set_precision) for this and later calls; None: the model's.
    Returns a History."""
    if (epochs is None) == (steps is None):
        raise ValueError(f"fit: give epochs or steps (one of them), got epochs={epochs!r}, "
                         f"steps={steps!r}")
    if len(x) != len(y):
        raise ValueError(f"fit: x has {len(x)} examples but y has {len(y)} labels")
    if validation_split is not None:
        if validation_data is not None or not 0 < validation_split < 1:
            raise ValueError("fit: validation_split must be in (0, 1), without validation_data, "
                             f"got {validation_split!r}")
        cut = len(x) - max(1, int(round(len(x) * validation_split)))
        x, y, validation_data = x[:cut], y[:cut], (x[cut:], y[cut:])
    if precision is not None:
        model.set_precision(checked_precision("fit", precision))
    model.prepare(x[:1], "fit")                     # builds the model on the first example
    per_epoch = max(1, -(-len(x) // batch_size))
    steps = steps if steps is not None else int(math.ceil(epochs * len(x) / batch_size))
    optimizer = optimizer or Adam(model.parameters(), lr=lr)
    cbs = [Evaluate(eval_every or per_epoch), *callbacks]
    if verbose and sys.stderr.isatty() and distributed.world().is_root:
        cbs.append(ProgressBar(model.name))
    trainer = Trainer(model, optimizer, (x, y), steps=steps, batch_size=batch_size,
                      validation=validation_data, shuffle=shuffle, seed=seed, callbacks=cbs,
                      log=log if verbose else (lambda msg: None), label_smoothing=label_smoothing,
                      augment=augment, slices=slices)
    return History(model, trainer.run(), trainer)
