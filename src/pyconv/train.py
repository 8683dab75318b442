"""Training: a small loop (Trainer) and callbacks around it.

The Trainer runs steps; everything else is a callback, each in its own
place (after Keras' Model.fit): the progress bar or log lines, validation at
intervals, checkpoints. Resume, interruption (Ctrl-C) and divergence are the
Trainer's own small methods. train(cfg) wires them up for the CLI.
"""
import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

import convcore

from . import data as mnist
from .errors import WriteError
from .models import MODELS
from .optim import SGD, Adam
from .serialize import atomic_write, load_checkpoint, save_checkpoint

# Each model's published recipe: the seed's TensorFlow run and the book's run.
# The validation set is the first (or last) twelfth of the training file:
# MNIST's 5,000 of 60,000 (any other count scales, e.g. the tests' sample).
RECIPES = {
    # 20,000 steps of 50 on 55,000 images (the first 5,000 held out), Adam 1e-4
    "tutorial": dict(steps=20000, batch_size=50, lr=1e-4, optimizer="adam",
                     validation="first", train_limit=None, shuffle=True),
    # 300 passes over the first 1,000 images in batches of 128 (7 full batches a
    # pass, in order, as the book's loop does), plain SGD; validation: the last 5,000
    "grokking": dict(steps=2100, batch_size=128, lr=1.0, optimizer="sgd",
                     validation="last", train_limit=1000, shuffle=False),
}


def recipe_split(model, n):
    """((train_start, train_end), (validation_start, validation_end)) of a
    training file of n images, as the model's recipe says."""
    recipe, held = RECIPES[model], n // 12
    if recipe["validation"] == "first":
        train, validation = (held, n), (0, held)
    else:
        train, validation = (0, n - held), (n - held, n)
    limit = recipe["train_limit"]
    if limit is not None:
        train = (train[0], min(train[1], train[0] + limit))
    return train, validation


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    model: str = "tutorial"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    seed: int = 0
    threads: int | None = None
    data_dir: str | None = None
    checkpoint: str | None = None
    checkpoint_every: int = 1000
    resume: bool = False
    metrics: str | None = None
    eval_every: int = 1000
    progress: bool = True

    def resolved(self):
        """A copy with the model's recipe filling every value left as None."""
        if self.model not in RECIPES:
            raise ValueError(f"model must be one of {sorted(RECIPES)}, got {self.model!r}")
        recipe = RECIPES[self.model]
        out = TrainConfig(**asdict(self))
        for key in ("steps", "batch_size", "lr"):
            if getattr(out, key) is None:
                setattr(out, key, recipe[key])
        for key in ("steps", "batch_size", "checkpoint_every"):
            if getattr(out, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(out, key)}")
        if not out.lr > 0:
            raise ValueError(f"lr must be > 0, got {out.lr}")
        if out.resume and not out.checkpoint:
            raise ValueError("--resume needs --checkpoint PATH (the file to resume from)")
        return out


class BatchSampler:
    """Batches of indices into n examples, as TensorFlow's next_batch: a new
    shuffled order each epoch; a batch that straddles two epochs takes the
    rest of one and the start of the next. Without shuffle, epochs run in
    order and drop their last partial batch (the book's loop). The state is
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


def _log(msg):
    from tqdm.auto import tqdm
    tqdm.write(msg, file=sys.stderr)


def load_data(cfg):
    (xtr, ytr), (xte, yte) = mnist.load_mnist(cfg.data_dir, progress=cfg.progress)
    (a, b), (va, vb) = recipe_split(cfg.model, len(xtr))
    return {
        "train": (mnist.to_float(xtr[a:b]), ytr[a:b].astype(np.int64)),
        "validation": (mnist.to_float(xtr[va:vb]), ytr[va:vb].astype(np.int64)),
        "test": (mnist.to_float(xte), yte.astype(np.int64)),
    }


# ---------------------------------------------------------------- callbacks

class Callback:
    """Hooks the Trainer calls; each does nothing unless overridden."""

    def on_train_begin(self, trainer):
        pass

    def on_step_end(self, trainer, loss, correct):
        """After step trainer.step: the batch's mean loss and how many it got right."""

    def on_train_end(self, trainer):
        pass


class ProgressBar(Callback):
    """A tqdm bar with loss, recent batch accuracy and images/s: on a terminal
    only (under a log file the Evaluate lines say the same, once each)."""

    def __init__(self, desc):
        self.desc = desc

    def on_train_begin(self, trainer):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=trainer.cfg.steps, initial=trainer.step, unit="step",
                        dynamic_ncols=True, file=sys.stderr, desc=self.desc)
        self.recent, self.step0, self.secs0 = [], trainer.step, trainer.clock.seconds

    def on_step_end(self, trainer, loss, correct):
        self.recent = (self.recent + [correct])[-50:]
        if trainer.step % 10 == 0 or trainer.step == trainer.cfg.steps:
            bs = trainer.cfg.batch_size
            rate = (trainer.step - self.step0) * bs / max(trainer.clock.seconds - self.secs0,
                                                           1e-9)
            self.bar.set_postfix(loss=f"{loss:.4f}",
                                 acc=f"{sum(self.recent) / (len(self.recent) * bs):.3f}",
                                 img_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer):
        self.bar.close()


class Evaluate(Callback):
    """Validation accuracy every `every` steps and at the last step, into
    trainer.history, with one log line each."""

    def __init__(self, every):
        self.every = every

    def on_step_end(self, trainer, loss, correct):
        if trainer.step % self.every and trainer.step != trainer.cfg.steps:
            return
        acc = trainer.model.accuracy(*trainer.data["validation"])
        trainer.history.append({"step": trainer.step, "loss": loss,
                                "validation_accuracy": acc})
        trainer.log(f"step {trainer.step}: loss {loss:.4f}, validation accuracy {acc:.4f}")


class Checkpoint(Callback):
    """A checkpoint every `every` steps and at the last step."""

    def __init__(self, path, every):
        self.path, self.every = path, every

    def on_step_end(self, trainer, loss, correct):
        if trainer.step % self.every == 0 or trainer.step == trainer.cfg.steps:
            trainer.save_checkpoint(self.path)


# ---------------------------------------------------------------- the loop

class Trainer:
    """Steps of model.train_step over shuffled batches of data["train"], with
    callbacks; trainer.clock times the steps alone (batching included,
    evaluation and checkpoints not)."""

    def __init__(self, model, optimizer, data, cfg, callbacks=(), log=_log):
        self.model, self.optimizer, self.data, self.cfg = model, optimizer, data, cfg
        self.callbacks, self.log = list(callbacks), log
        self.sampler = BatchSampler(len(data["train"][0]), cfg.batch_size,
                                    RECIPES[cfg.model]["shuffle"], cfg.seed)
        self.step, self.history, self.clock = 0, [], Stopwatch()
        self.last_checkpoint = None        # (path, step) of the last good one

    def resume(self, path):
        """Continue from a checkpoint written by save_checkpoint."""
        if not os.path.exists(path):
            raise FileNotFoundError(f"--resume: checkpoint {path} does not exist")
        self.model, self.optimizer, state = load_checkpoint(path, lr=self.cfg.lr)
        if self.model.name != self.cfg.model:
            raise ValueError(f"--resume: {path} holds a {self.model.name!r} model, "
                             f"not {self.cfg.model!r}")
        self.step, self.history = state["step"], state["history"]
        self.clock = Stopwatch(state["train_seconds"])
        self.model.rng.bit_generator.state = state["model_rng"]
        self.sampler.load_state(state["sampler"])
        self.last_checkpoint = (path, self.step)
        self.log(f"resumed from {path} at step {self.step}")

    def save_checkpoint(self, path):
        state = {"step": self.step, "train_seconds": self.clock.seconds,
                 "history": self.history, "model_rng": self.model.rng.bit_generator.state,
                 "sampler": self.sampler.state(), "config": asdict(self.cfg)}
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
        """Train to cfg.steps; returns the test accuracy."""
        for cb in self.callbacks:
            cb.on_train_begin(self)
        try:
            with _Interrupts() as interrupts:
                while self.step < self.cfg.steps:
                    if interrupts.requested:
                        self._interrupted()
                    self._one_step()
        finally:
            for cb in self.callbacks:
                cb.on_train_end(self)
        return self.model.accuracy(*self.data["test"])

    def _one_step(self):
        xtr, ytr = self.data["train"]
        with self.clock:
            idx = self.sampler.next()
            loss, logits = self.model.train_step(xtr[idx], ytr[idx], self.optimizer,
                                                 return_logits=True)
        if not math.isfinite(loss):
            raise TrainingDiverged(f"the loss became {loss} at step {self.step + 1}; "
                                   f"stopping ({self.kept_message()}). Try a smaller --lr.")
        self.step += 1
        correct = int((logits.argmax(1) == ytr[idx]).sum())
        for cb in self.callbacks:
            cb.on_step_end(self, loss, correct)

    def _interrupted(self):
        path = self.cfg.checkpoint or f"pyconv-{self.cfg.model}-interrupted.npz"
        self.save_checkpoint(path)
        self.log(f"interrupted at step {self.step}; checkpoint saved to {path}. Resume with:\n"
                 f"  pyconv train --model {self.cfg.model} --checkpoint {path} --resume "
                 f"--steps {self.cfg.steps}")
        raise KeyboardInterrupt


def _new_run(cfg):
    model = MODELS[cfg.model](seed=cfg.seed)
    if RECIPES[cfg.model]["optimizer"] == "adam":
        opt = Adam(model.parameters(), lr=cfg.lr)
    else:
        opt = SGD(model.parameters(), lr=cfg.lr)
    return model, opt


def _callbacks(cfg):
    out = [Evaluate(cfg.eval_every)]
    if cfg.checkpoint:
        out.append(Checkpoint(cfg.checkpoint, cfg.checkpoint_every))
    if cfg.progress and sys.stderr.isatty():
        out.append(ProgressBar(cfg.model))
    return out


def train(cfg, data=None, log=_log):
    """Train as cfg says; returns the metrics dict (also written to cfg.metrics)."""
    cfg = cfg.resolved()
    if cfg.threads is not None:
        convcore.set_num_threads(cfg.threads)
    data = data or load_data(cfg)
    trainer = Trainer(*_new_run(cfg), data, cfg, _callbacks(cfg), log)
    if cfg.resume:
        trainer.resume(cfg.checkpoint)
    wall = time.perf_counter()
    test_acc = trainer.run()
    metrics = _metrics(trainer, test_acc, time.perf_counter() - wall)
    if cfg.metrics:
        try:
            atomic_write(cfg.metrics, lambda f: f.write(json.dumps(metrics, indent=2).encode()))
        except OSError as e:
            raise WriteError(f"could not write the metrics {cfg.metrics}: "
                             f"{e.strerror or e}; {trainer.kept_message()}") from None
    return metrics


def _metrics(trainer, test_acc, wall_seconds):
    cfg, history, secs = trainer.cfg, trainer.history, trainer.clock.seconds
    last = history[-1] if history else None
    first_99 = next((h["step"] for h in history if h["validation_accuracy"] >= 0.99), None)
    return {
        "model": cfg.model, "steps": trainer.step, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "seed": cfg.seed, "threads": convcore.get_num_threads(),
        "test_accuracy": test_acc,
        "validation_accuracy": last["validation_accuracy"] if last else None,
        "train_seconds": secs,
        "images_per_second": trainer.step * cfg.batch_size / secs if secs else None,
        "wall_seconds_this_run": wall_seconds,
        "first_step_validation_accuracy_at_least_0.99": first_99,
        "eval_every": cfg.eval_every, "history": history,
    }
