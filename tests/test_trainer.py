"""The Trainer and its callbacks, the optimisers' gradient hook, and failures
named: a full disk, a log file instead of a terminal."""
import json
import os
import subprocess
import sys
import uuid

import numpy as np
import pytest

import pyconv
from pyconv.cli.runs import TrainConfig, train

from conftest import MNIST_DIR


def _batch(seed=0, n=8):
    rng = np.random.default_rng(seed)
    return rng.random((n, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, n)


@pytest.mark.parametrize("opt_name", ["Adam", "SGD"])
def test_grad_hook_sees_every_parameter_once_per_step_before_its_update(opt_name):
    """The backward pass hands each parameter to the hook as its gradient is
    complete (last layer first), once per step, before the update; a hook that
    scales the gradient changes the update as scaling it by hand does."""
    x, y = _batch()
    runs = []
    for scale_by_hook in (False, True):
        model = pyconv.models.tutorial_cnn(seed=1)
        opt = pyconv.optim.OPTIMIZERS[opt_name](model.parameters(), lr=1e-3)
        seen = []

        def hook(p, seen=seen, model=model, scale_by_hook=scale_by_hook):
            seen.append(p.name)
            before = model.parameters()[0].value.copy() if p is model.parameters()[0] else None
            if scale_by_hook:
                p.grad *= 0.5
            if before is not None:        # not yet updated when the hook runs
                assert (before == p.value).all()

        remove = opt.add_grad_hook(hook)
        assert [type(s.op).__name__ for s in model.steps(opt)].count("DenseAdam") == 0
        model.train_step(x, y, opt)
        assert seen == ["w", "b", "w", "b", "w", "b", "w", "b"]   # dense2 ... conv1
        remove()
        seen.clear()
        model.train_step(x, y, opt)
        assert seen == []
        runs.append([p.value.copy() for p in model.parameters()])
    assert any(not np.array_equal(a, b) for a, b in zip(*runs))


def test_adam_fuses_the_dense_update_only_without_hooks():
    model = pyconv.models.tutorial_cnn(seed=0)
    adam = pyconv.optim.Adam(model.parameters(), lr=1e-3)
    assert [type(s.op).__name__ for s in model.steps(adam)].count("DenseAdam") == 2
    assert "DenseAdam" not in [type(s.op).__name__ for s in model.steps(
        pyconv.optim.Adam(model.parameters(), fused=False))]
    other = pyconv.optim.Adam(pyconv.models.tutorial_cnn(seed=0).parameters())
    assert "DenseAdam" not in [type(s.op).__name__ for s in model.steps(other)]


def _data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    y = (x.reshape(n, -1)[:, :392].sum(1) > x.reshape(n, -1)[:, 392:].sum(1)).astype(np.int64)
    return {"train": (x, y), "validation": (x[:100], y[:100]), "test": (x[:100], y[:100])}


def test_train_evaluates_validation_at_intervals_and_test_once(monkeypatch):
    """The history holds what the curves need: each evaluation's training
    loss and accuracy (over its interval), validation loss and accuracy,
    learning rate and speed; then the test set's, once."""
    calls = []
    real = pyconv.Sequential.evaluate

    def counted(self, x, y, batch_size=1000):
        calls.append(len(x))
        return real(self, x, y, batch_size)

    monkeypatch.setattr(pyconv.Sequential, "evaluate", counted)
    logs = []
    m = train(TrainConfig(model="grokking", steps=10, batch_size=16, eval_every=4,
                          progress=False), data=_data(), log=logs.append)
    *evaluations, test = m["history"]
    assert [h["step"] for h in evaluations] == [4, 8, 10]
    assert set(evaluations[0]) == {"step", "loss", "train_loss", "train_accuracy", "lr",
                                   "images_per_second", "validation_loss",
                                   "validation_accuracy"}
    assert [h["lr"] for h in evaluations] == [1.0] * 3          # grokking's SGD rate
    assert all(0 <= h["train_accuracy"] <= 1 and h["images_per_second"] > 0
               for h in evaluations)
    assert test == {"step": 10, "test_loss": test["test_loss"],
                    "test_accuracy": m["test_accuracy"]}
    assert len(calls) == 4                       # 3 validations, 1 test
    assert [line.split(":")[0] for line in logs] == ["step 4", "step 8", "step 10"]
    assert 0 < m["train_seconds"] <= m["wall_seconds_this_run"]


def test_evaluations_average_the_training_batches_since_the_last_one():
    """train_loss and train_accuracy are the means over exactly the steps since
    the previous evaluation; every callback sees each entry (on_evaluation)."""
    from pyconv.train import Trainer
    from pyconv.train.callbacks import Callback, Evaluate

    class Record(Callback):
        def __init__(self):
            self.steps, self.entries = [], []

        def on_step_end(self, trainer, loss, correct):
            self.steps.append((loss, correct))

        def on_evaluation(self, trainer, entry):
            self.entries.append(entry)

    data = _data(200)
    model = pyconv.models.grokking_cnn(seed=0)
    record = Record()
    t = Trainer(model, pyconv.optim.SGD(model.parameters(), lr=0.5), data["train"], steps=7,
                batch_size=10, validation=data["validation"], test=data["test"],
                callbacks=[Evaluate(3), record], log=lambda m: None)
    t.run()
    assert record.entries == t.history and [h["step"] for h in t.history] == [3, 6, 7, 7]
    for entry, (a, b) in zip(t.history, [(0, 3), (3, 6), (6, 7)]):
        losses, correct = zip(*record.steps[a:b])
        assert entry["train_loss"] == sum(losses) / len(losses)
        assert entry["train_accuracy"] == sum(correct) / (10 * len(losses))
        assert entry["loss"] == losses[-1]
    assert t.history[-1]["test_accuracy"] == model.evaluate(*data["test"])["accuracy"]


def test_checkpoint_write_failure_names_the_file_and_the_good_checkpoint(tmp_path, monkeypatch):
    """The second checkpoint write fails: a WriteError naming the file, the
    reason and the last good checkpoint, which is intact; no temporary file."""
    import pyconv.train.loop as train_module
    real, calls = train_module.save_checkpoint, []

    def failing(path, *a):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        real(path, *a)

    monkeypatch.setattr(train_module, "save_checkpoint", failing)
    ckpt = tmp_path / "c.npz"
    with pytest.raises(pyconv.WriteError) as info:
        train(TrainConfig(model="grokking", steps=10, batch_size=16, checkpoint=str(ckpt),
                          checkpoint_every=3, progress=False), data=_data(), log=print)
    assert str(info.value) == (f"could not write the checkpoint {ckpt}: No space left on "
                               f"device; the last good checkpoint, {ckpt} (step 3), is kept")
    _, _, state = pyconv.io.load_checkpoint(ckpt)
    assert state["step"] == 3 and os.listdir(tmp_path) == ["c.npz"]


def _weights(model):
    return [p.value.copy() for p in model.parameters()]


def test_optimizer_options_build_the_optimiser_they_name(tmp_path):
    """--optimizer, --weight-decay, --momentum and --nesterov make the run's
    optimiser (recorded in the metrics from the optimiser itself); the
    recipe's own settings stay with the recipe's optimiser; each setting
    changes the weights the run ends with."""
    def run(**opts):
        ckpt = tmp_path / f"{len(list(tmp_path.iterdir()))}.npz"
        m = train(TrainConfig(model="grokking", steps=6, batch_size=16, progress=False,
                              eval_every=100, checkpoint=str(ckpt), **opts), data=_data(),
                  log=lambda msg: None)
        model, _, _ = pyconv.io.load_checkpoint(ckpt)
        return m["optimizer"], _weights(model)

    plain, w_plain = run()                                  # grokking's recipe: plain SGD
    assert plain == {"type": "SGD", "momentum": 0.0, "nesterov": False, "weight_decay": 0.0}
    sgd, w_sgd = run(optimizer="sgd", momentum=0.9, nesterov=True, weight_decay=1e-3)
    assert sgd == {"type": "SGD", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}
    adamw, w_adamw = run(optimizer="adamw", lr=1e-3)
    assert adamw == {"type": "AdamW", "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                     "weight_decay": 0.01}
    decayed, w_decayed = run(optimizer="adamw", lr=1e-3, weight_decay=0.5)
    assert decayed["weight_decay"] == 0.5
    for a, b in ((w_plain, w_sgd), (w_adamw, w_decayed), (w_plain, w_adamw)):
        assert any(not np.array_equal(u, v) for u, v in zip(a, b))
    fast = TrainConfig(model="fast", optimizer="adamw").resolved(600)
    assert fast.optimizer == "adamw"       # fast's betas are Adam's: not carried over
    assert pyconv.cli.runs.optimizer_args(fast) == {}
    assert pyconv.cli.runs.optimizer_args(TrainConfig(model="fast").resolved(600)) == \
        {"beta1": 0.7, "beta2": 0.9}


@pytest.mark.parametrize("opts, message", [
    (dict(weight_decay=0.1, optimizer="adam"), "--weight-decay needs --optimizer adamw"),
    (dict(weight_decay=-1.0, optimizer="adamw"), "--weight-decay must be a number >= 0, got -1"),
    (dict(momentum=0.9), "--momentum and --nesterov are SGD's: they need --optimizer sgd "
                         "(this run's is adam)"),
    (dict(optimizer="sgd", momentum=1.0), "--momentum must be in [0, 1), got 1.0"),
    (dict(optimizer="sgd", nesterov=True), "--nesterov needs --momentum > 0"),
    (dict(optimizer="rmsprop"), "--optimizer must be one of adam, adamw, sgd, got 'rmsprop'"),
])
def test_optimizer_options_that_do_not_fit_are_clear_errors(opts, message):
    with pytest.raises(ValueError) as info:
        train(TrainConfig(model="tutorial", steps=1, progress=False, **opts), data=_data())
    assert message in str(info.value)


def test_a_resumed_run_keeps_its_optimiser_and_refuses_other_settings(tmp_path):
    ckpt = tmp_path / "c.npz"
    common = dict(model="grokking", batch_size=16, progress=False, eval_every=100,
                  checkpoint=str(ckpt))
    train(TrainConfig(steps=4, optimizer="sgd", momentum=0.5, **common), data=_data(),
          log=lambda msg: None)
    for opts, given in ((dict(optimizer="adamw"), "--optimizer adamw"),
                        (dict(optimizer="sgd", momentum=0.9), "--momentum 0.9"),
                        (dict(optimizer="sgd", momentum=0.5, weight_decay=0.1),
                         "--weight-decay 0.1")):
        with pytest.raises(ValueError) as info:
            train(TrainConfig(steps=8, resume=True, **opts, **common), data=_data(),
                  log=lambda msg: None)
        assert str(info.value) == (
            f"--resume: {ckpt} was trained with SGD (momentum 0.5, nesterov False, "
            f"weight_decay 0.0), which a resumed run keeps: {given} does not apply (leave "
            "it out, or start a new run)")
    for opts in ({}, dict(optimizer="sgd", momentum=0.5)):   # left out, or the same
        m = train(TrainConfig(steps=8, resume=True, **opts, **common), data=_data(),
                  log=lambda msg: None)
        assert m["steps"] == 8 and m["optimizer"]["momentum"] == 0.5


@pytest.fixture
def small_filesystem(tmp_path):
    """A 1.2 MB tmpfs: room for one grokking checkpoint (870 kB), not two."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    mnt = tmp_path / f"small-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_full_disk_ends_the_run_with_one_clear_line(small_filesystem):
    ckpt = small_filesystem / "c.npz"
    proc = subprocess.run(
        [sys.executable, "-m", "pyconv", "train", "--model", "grokking", "--steps", "30",
         "--checkpoint-every", "10", "--checkpoint", str(ckpt), "--data-dir", MNIST_DIR],
        capture_output=True, text=True, timeout=600)
    assert proc.returncode == 4, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (f"pyconv: error: could not write the checkpoint {ckpt}: No space left on "
                    f"device; the last good checkpoint, {ckpt} (step 10), is kept"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert os.listdir(small_filesystem) == ["c.npz"]          # no temporary file left
    with np.load(ckpt, allow_pickle=False) as f:
        assert json.loads(str(f["train_state"]))["step"] == 10


def test_under_a_log_file_one_line_per_evaluation_and_no_bar(tmp_path):
    """stderr not a terminal: no progress bar's carriage returns, one line per evaluation."""
    proc = subprocess.run(
        [sys.executable, "-m", "pyconv", "train", "--model", "grokking", "--steps", "40",
         "--eval-every", "10", "--data-dir", MNIST_DIR], capture_output=True, text=True,
        timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["step 10", "step 20", "step 30", "step 40"]
