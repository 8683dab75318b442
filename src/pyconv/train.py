"""The training loop: batches, checkpoints, resume, Ctrl-C, divergence, metrics."""
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
from .models import MODELS
from .optim import SGD, Adam
from .serialize import atomic_write, load_checkpoint, save_checkpoint

# Each model's published recipe: the seed's TensorFlow run and the book's run.
RECIPES = {
    # 20,000 steps of 50 on 55,000 images (the first 5,000 held out), Adam 1e-4
    "tutorial": dict(steps=20000, batch_size=50, lr=1e-4, optimizer="adam",
                     train=(5000, 60000), validation=(0, 5000), shuffle=True),
    # 300 passes over the first 1,000 images in batches of 128 (7 full batches a
    # pass, in order, as the book's loop does), plain SGD
    "grokking": dict(steps=2100, batch_size=128, lr=1.0, optimizer="sgd",
                     train=(0, 1000), validation=(55000, 60000), shuffle=False),
}


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


def _log(msg):
    from tqdm.auto import tqdm
    tqdm.write(msg, file=sys.stderr)


def load_data(cfg):
    (xtr, ytr), (xte, yte) = mnist.load_mnist(cfg.data_dir, progress=cfg.progress)
    recipe = RECIPES[cfg.model]
    a, b = recipe["train"]
    va, vb = recipe["validation"]
    return {
        "train": (mnist.to_float(xtr[a:b]), ytr[a:b].astype(np.int64)),
        "validation": (mnist.to_float(xtr[va:vb]), ytr[va:vb].astype(np.int64)),
        "test": (mnist.to_float(xte), yte.astype(np.int64)),
    }


def _new_run(cfg):
    model = MODELS[cfg.model](seed=cfg.seed)
    if RECIPES[cfg.model]["optimizer"] == "adam":
        opt = Adam(model.parameters(), lr=cfg.lr)
    else:
        opt = SGD(model.parameters(), lr=cfg.lr)
    return model, opt


def train(cfg, data=None, log=_log):
    """Train as cfg says; returns the metrics dict (also written to cfg.metrics)."""
    cfg = cfg.resolved()
    if cfg.threads is not None:
        convcore.set_num_threads(cfg.threads)
    data = data or load_data(cfg)
    xtr, ytr = data["train"]
    sampler = BatchSampler(len(xtr), cfg.batch_size, RECIPES[cfg.model]["shuffle"], cfg.seed)
    history, elapsed, step = [], 0.0, 0
    if cfg.resume:
        if not os.path.exists(cfg.checkpoint):
            raise FileNotFoundError(f"--resume: checkpoint {cfg.checkpoint} does not exist")
        model, opt, state = load_checkpoint(cfg.checkpoint, lr=cfg.lr)
        if model.name != cfg.model:
            raise ValueError(f"--resume: {cfg.checkpoint} holds a {model.name!r} model, "
                             f"not {cfg.model!r}")
        step, elapsed, history = state["step"], state["train_seconds"], state["history"]
        model.rng.bit_generator.state = state["model_rng"]
        sampler.load_state(state["sampler"])
        log(f"resumed from {cfg.checkpoint} at step {step}")
    else:
        model, opt = _new_run(cfg)

    def checkpoint(path):
        save_checkpoint(path, model, opt, {
            "step": step, "train_seconds": elapsed, "history": history,
            "model_rng": model.rng.bit_generator.state, "sampler": sampler.state(),
            "config": asdict(cfg)})

    from tqdm.auto import tqdm
    bar = tqdm(total=cfg.steps, initial=step, disable=not cfg.progress, unit="step",
               dynamic_ncols=True, file=sys.stderr, desc=cfg.model)
    recent = []      # (correct, seen) of the last batches, for the bar
    t_start = time.perf_counter()
    step0, elapsed0 = step, elapsed
    try:
        with _Interrupts() as interrupts:
            while step < cfg.steps:
                if interrupts.requested:
                    path = cfg.checkpoint or f"pyconv-{cfg.model}-interrupted.npz"
                    elapsed += time.perf_counter() - t_start
                    t_start = time.perf_counter()
                    checkpoint(path)
                    bar.close()
                    log(f"interrupted at step {step}; checkpoint saved to {path}. Resume with:\n"
                        f"  pyconv train --model {cfg.model} --checkpoint {path} --resume "
                        f"--steps {cfg.steps}")
                    raise KeyboardInterrupt
                idx = sampler.next()
                loss = model.train_step(xtr[idx], ytr[idx], opt)
                if not math.isfinite(loss):
                    bar.close()
                    kept = (f"the last good checkpoint, {cfg.checkpoint}, is kept"
                            if cfg.checkpoint and os.path.exists(cfg.checkpoint)
                            else "no checkpoint was written")
                    raise TrainingDiverged(f"the loss became {loss} at step {step + 1}; "
                                           f"stopping ({kept}). Try a smaller --lr.")
                step += 1
                recent.append((int((model.last_logits.argmax(1) == ytr[idx]).sum()), len(idx)))
                recent = recent[-50:]
                if cfg.progress and (step % 10 == 0 or step == cfg.steps):
                    correct, seen = map(sum, zip(*recent))
                    secs = elapsed - elapsed0 + time.perf_counter() - t_start   # no evals
                    rate = (step - step0) * cfg.batch_size / secs
                    bar.set_postfix(loss=f"{loss:.4f}", acc=f"{correct / seen:.3f}",
                                    img_s=f"{rate:.0f}", refresh=False)
                bar.update(1)
                if step % cfg.eval_every == 0 or step == cfg.steps:
                    elapsed += time.perf_counter() - t_start
                    entry = {"step": step, "loss": loss,
                             "validation_accuracy": model.accuracy(*data["validation"]),
                             "test_accuracy": model.accuracy(*data["test"])}
                    history.append(entry)
                    log(f"step {step}: loss {loss:.4f}, validation accuracy "
                        f"{entry['validation_accuracy']:.4f}")
                    t_start = time.perf_counter()
                if cfg.checkpoint and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                    elapsed += time.perf_counter() - t_start
                    checkpoint(cfg.checkpoint)
                    t_start = time.perf_counter()
    finally:
        bar.close()
    elapsed += time.perf_counter() - t_start
    last = history[-1] if history else None
    test_acc = last["test_accuracy"] if last and last["step"] == step else model.accuracy(*data["test"])
    first_99 = next((h["step"] for h in history if h["test_accuracy"] >= 0.99), None)
    metrics = {
        "model": cfg.model, "steps": step, "batch_size": cfg.batch_size, "lr": cfg.lr,
        "seed": cfg.seed, "threads": convcore.get_num_threads(),
        "test_accuracy": test_acc,
        "validation_accuracy": last["validation_accuracy"] if last else None,
        "train_seconds": elapsed,
        "images_per_second": step * cfg.batch_size / elapsed if elapsed else None,
        "first_step_test_accuracy_at_least_0.99": first_99,
        "eval_every": cfg.eval_every, "history": history,
    }
    if cfg.metrics:
        atomic_write(cfg.metrics, lambda f: f.write(json.dumps(metrics, indent=2).encode()))
    return metrics
