"""Callbacks: everything around the training loop (after Keras' Model.fit).

The Trainer (pyconv.train) runs steps and calls each callback's hooks in the
order given. A callback with state that a resumed run needs (the best
accuracy so far, ...) returns it from state() and takes it back in
load_state(): checkpoints carry it, so a resumed run is bit for bit the
uninterrupted one.
"""
import math
import sys


class Callback:
    """Hooks the Trainer calls; each does nothing unless overridden."""

    def on_train_begin(self, trainer):
        pass

    def on_step_begin(self, trainer):
        """Before step trainer.step + 1."""

    def on_step_end(self, trainer, loss, correct):
        """After step trainer.step: the batch's mean loss and how many it got right."""

    def on_evaluation(self, trainer, entry):
        """After trainer.record(entry): an evaluation's figures (see Evaluate)."""

    def on_train_end(self, trainer):
        pass

    def state(self):
        """What a checkpoint must keep of this callback (JSON-able), or None."""
        return None

    def load_state(self, state):
        pass


class ProgressBar(Callback):
    """A tqdm bar with loss, recent batch accuracy and images/s: on a terminal
    only (under a log file the Evaluate lines say the same, once each)."""

    def __init__(self, desc):
        self.desc = desc

    def on_train_begin(self, trainer):
        from tqdm.auto import tqdm
        self.bar = tqdm(total=trainer.steps, initial=trainer.step, unit="step",
                        dynamic_ncols=True, file=sys.stderr, desc=self.desc)
        self.recent, self.step0, self.secs0 = [], trainer.step, trainer.clock.seconds

    def on_step_end(self, trainer, loss, correct):
        self.recent = (self.recent + [correct])[-50:]
        if trainer.step % 10 == 0 or trainer.step == trainer.steps:
            bs = trainer.batch_size
            rate = (trainer.step - self.step0) * bs / max(trainer.clock.seconds - self.secs0,
                                                           1e-9)
            self.bar.set_postfix(loss=f"{loss:.4f}",
                                 acc=f"{sum(self.recent) / (len(self.recent) * bs):.3f}",
                                 img_s=f"{rate:.0f}", refresh=False)
        self.bar.update(1)

    def on_train_end(self, trainer):
        self.bar.close()


class Evaluate(Callback):
    """Every `every` steps and at the last one, records (trainer.record) and
    logs one entry: the step; loss, the batch's at that step; train_loss and
    train_accuracy, over the batches since the last evaluation; lr;
    images_per_second since the last evaluation (steps alone); and
    validation_loss and validation_accuracy when there is validation data."""

    def __init__(self, every):
        self.every = every
        self.since = {"loss": 0.0, "correct": 0, "steps": 0, "seconds": 0.0}

    def on_train_begin(self, trainer):
        if not self.since["steps"]:
            self.since["seconds"] = trainer.clock.seconds

    def on_step_end(self, trainer, loss, correct):
        since = self.since
        since["loss"] += loss
        since["correct"] += correct
        since["steps"] += 1
        if trainer.step % self.every and trainer.step != trainer.steps:
            return
        images = since["steps"] * trainer.batch_size
        entry = {"step": trainer.step, "loss": loss, "train_loss": since["loss"] / since["steps"],
                 "train_accuracy": since["correct"] / images, "lr": trainer.optimizer.lr,
                 "images_per_second": images / max(trainer.clock.seconds - since["seconds"],
                                                   1e-9)}
        line = f"step {trainer.step}: loss {loss:.4f}"
        if trainer.validation is not None:
            result = trainer.evaluate(*trainer.validation)
            entry["validation_loss"] = result["loss"]
            entry["validation_accuracy"] = result["accuracy"]
            line += f", validation accuracy {result['accuracy']:.4f}"
        self.since = {"loss": 0.0, "correct": 0, "steps": 0, "seconds": trainer.clock.seconds}
        trainer.record(entry)
        trainer.log(line)

    def state(self):
        return dict(self.since)

    def load_state(self, state):
        self.since = dict(state)


class TensorBoard(Callback):
    """Each evaluation's figures as TensorBoard scalars in `logdir`, written as
    they are measured (tensorboard --logdir shows the run live). The writer is
    tensorboardX's (the plot extra). A resumed run continues the same curves."""

    TAGS = {"loss": "loss/batch", "train_loss": "loss/train",
            "validation_loss": "loss/validation", "test_loss": "loss/test",
            "train_accuracy": "accuracy/train", "validation_accuracy": "accuracy/validation",
            "test_accuracy": "accuracy/test", "lr": "learning_rate",
            "images_per_second": "images_per_second"}

    def __init__(self, logdir):
        from ..extras import require
        self.tbx = require("tensorboard", "--tensorboard")[0]
        self.logdir, self.writer = logdir, None

    def on_train_begin(self, trainer):
        self.writer = self.tbx.SummaryWriter(self.logdir, purge_step=trainer.step or None)

    def on_evaluation(self, trainer, entry):
        for key, tag in self.TAGS.items():
            if entry.get(key) is not None:
                self.writer.add_scalar(tag, entry[key], entry["step"])
        self.writer.flush()

    def on_train_end(self, trainer):
        self.writer.close()


class Checkpoint(Callback):
    """A checkpoint every `every` steps and at the last step."""

    def __init__(self, path, every):
        self.path, self.every = path, every

    def on_step_end(self, trainer, loss, correct):
        if trainer.step % self.every == 0 or trainer.step == trainer.steps:
            trainer.save_checkpoint(self.path)


class LearningRateSchedule(Callback):
    """Sets the optimiser's learning rate before every step from the step count
    alone (so a resumed run gets the same rates):

    "step":     lr * gamma ** (step // step_size)
    "cosine":   lr * (1 + cos(pi * step / steps)) / 2, from lr down to 0
    "onecycle": PyTorch's OneCycleLR (cosine annealing): from lr / 25 up to lr
                over the first 30% of the steps, then down to lr / 25e4
    """

    KINDS = ("constant", "step", "cosine", "onecycle")
    WARM_UP, START_DIV, END_DIV = 0.3, 25.0, 25e4

    def __init__(self, kind, lr, steps, step_size=None, gamma=0.1):
        if kind not in self.KINDS:
            raise ValueError(f"schedule must be one of {self.KINDS}, got {kind!r}")
        self.kind, self.lr, self.steps, self.gamma = kind, float(lr), int(steps), float(gamma)
        self.step_size = int(step_size) if step_size else max(1, self.steps // 3)

    def rate(self, step):
        if self.kind == "step":
            return self.lr * self.gamma ** (step // self.step_size)
        if self.kind == "cosine":
            return self.lr * (1 + math.cos(math.pi * min(step, self.steps) / self.steps)) / 2
        if self.kind == "onecycle":
            return self._one_cycle(min(step, self.steps - 1))
        return self.lr

    def _one_cycle(self, step):
        """As torch.optim.lr_scheduler.OneCycleLR(max_lr=lr, total_steps=steps)."""
        peak = float(self.WARM_UP * self.steps) - 1
        low, top, end = self.lr / self.START_DIV, self.lr, self.lr / self.END_DIV
        if step <= peak and peak > 0:
            a, b, frac = low, top, step / peak
        else:
            a, b, frac = top, end, (step - peak) / max(self.steps - 1 - peak, 1)
        return b + (a - b) * (1 + math.cos(math.pi * frac)) / 2

    def on_step_begin(self, trainer):
        trainer.optimizer.lr = self.rate(trainer.step)


class EarlyStopping(Callback):
    """Stop when the validation accuracy has not improved (by more than
    min_delta) for `patience` evaluations; keep the best weights' step in
    trainer.history. Put it after Evaluate in the callback list."""

    def __init__(self, patience=5, min_delta=0.0):
        self.patience, self.min_delta = int(patience), float(min_delta)
        self.best, self.best_step, self.wait, self.seen = -1.0, None, 0, 0

    def on_step_end(self, trainer, loss, correct):
        history = [h for h in trainer.history if "validation_accuracy" in h]
        if len(history) == self.seen:
            return                          # no new evaluation this step
        self.seen = len(history)
        acc = history[-1]["validation_accuracy"]
        if acc > self.best + self.min_delta:
            self.best, self.best_step, self.wait = acc, trainer.step, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            trainer.stop_training = True
            trainer.log(f"early stopping at step {trainer.step}: validation accuracy has not "
                        f"improved on {self.best:.4f} (step {self.best_step}) for "
                        f"{self.patience} evaluations")

    def state(self):
        return {"best": self.best, "best_step": self.best_step, "wait": self.wait,
                "seen": self.seen}

    def load_state(self, state):
        self.best, self.best_step = state["best"], state["best_step"]
        self.wait, self.seen = state["wait"], state["seen"]
