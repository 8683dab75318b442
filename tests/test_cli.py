"""The pyconv command end to end on real MNIST (PYCONV_DATA_DIR, set by .ci/run)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pyconv as pyconv_pkg

from conftest import MNIST_DIR
from helpers import pyconv


def weights(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files if k.startswith(("param/", "opt/"))}


def test_tutorial_short_run_clears_accuracy_floor(tmp_path):
    """200 Adam steps of the tutorial network. Seed 0 reaches ~0.90 test accuracy
    here; the floor 0.85 leaves room for BLAS rounding while still failing any
    broken gradient, layer or data path (those stay near 0.10-0.6)."""
    metrics = tmp_path / "m.json"
    ckpt = tmp_path / "c.npz"
    out = pyconv("train", "--steps", "200", "--eval-every", "200", "--metrics", str(metrics),
                 "--checkpoint", str(ckpt), "--no-progress").stdout
    m = json.loads(metrics.read_text())
    assert m["model"] == "tutorial" and m["steps"] == 200
    assert m["test_accuracy"] >= 0.85, m
    for key in ("train_seconds", "images_per_second", "validation_accuracy"):
        assert m[key] > 0
    assert f"test accuracy: {m['test_accuracy']:.4f}" in out
    ev = json.loads(pyconv("evaluate", str(ckpt)).stdout)
    assert ev["test_accuracy"] == pytest.approx(m["test_accuracy"])


def test_grokking_short_run_clears_accuracy_floor(tmp_path):
    """140 SGD steps (20 passes over 1,000 images); seed 0 reaches ~0.85, floor 0.75."""
    metrics = tmp_path / "m.json"
    pyconv("train", "--model", "grokking", "--steps", "140", "--eval-every", "140",
           "--metrics", str(metrics), "--no-progress")
    m = json.loads(metrics.read_text())
    assert m["model"] == "grokking" and m["batch_size"] == 128
    assert m["test_accuracy"] >= 0.75, m


def test_same_seed_same_run_on_one_and_two_threads(tmp_path):
    runs = []
    for i, threads in enumerate(("1", "2", "2")):
        ckpt = tmp_path / f"c{i}.npz"
        pyconv("train", "--model", "grokking", "--steps", "12", "--seed", "5", "--threads",
               threads, "--checkpoint", str(ckpt), "--no-progress")
        runs.append(weights(ckpt))
    for other in runs[1:]:
        assert runs[0].keys() == other.keys()
        for k in runs[0]:
            assert runs[0][k].tobytes() == other[k].tobytes(), k
    pyconv("train", "--model", "grokking", "--steps", "12", "--seed", "6",
           "--checkpoint", str(tmp_path / "d.npz"), "--no-progress")
    assert any(runs[0][k].tobytes() != v.tobytes()
               for k, v in weights(tmp_path / "d.npz").items())


def test_fast_recipe_with_augmentation_resumes_bit_for_bit(tmp_path):
    """--model fast takes its recipe (one-cycle, label smoothing, all the
    training images, batch 128); with augmentation on, a run killed after a
    checkpoint and resumed ends with the weights of the uninterrupted run (the
    augmentation's generator is in the checkpoint)."""
    base = ["train", "--model", "fast", "--steps", "300", "--checkpoint-every", "7",
            "--eval-every", "1000", "--seed", "3", "--no-progress"]
    common = [*base, "--augment-shift", "2"]
    metrics = tmp_path / "m.json"
    pyconv(*common, "--checkpoint", str(tmp_path / "a.npz"), "--metrics", str(metrics))
    m = json.loads(metrics.read_text())
    assert (m["schedule"], m["label_smoothing"], m["batch_size"], m["augment_shift"]) == \
        ("onecycle", 0.1, 128, 2)
    assert m["validation_accuracy"] is None          # nothing held out
    ckpt = tmp_path / "b.npz"
    step = _killed_after_a_checkpoint(common, ckpt, settle=0.0)
    assert 7 <= step < 300, f"killed at step {step}: not mid-run"
    pyconv(*common, "--checkpoint", str(ckpt), "--resume")
    a, b = weights(tmp_path / "a.npz"), weights(ckpt)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k
    pyconv(*base, "--checkpoint", str(tmp_path / "c.npz"))
    assert any(a[k].tobytes() != v.tobytes() for k, v in weights(tmp_path / "c.npz").items())


def _killed_after_a_checkpoint(args, ckpt, settle):
    """Start `pyconv *args --checkpoint ckpt`, SIGKILL it `settle` seconds after
    its first checkpoint appears; the step the checkpoint holds."""
    env = dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR)
    proc = subprocess.Popen([sys.executable, "-m", "pyconv", *args, "--checkpoint", str(ckpt)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for(ckpt)
    time.sleep(settle)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    with np.load(ckpt, allow_pickle=False) as f:
        return json.loads(str(f["train_state"]))["step"]


def _wait_for(path, timeout=120):
    start = time.time()
    while not os.path.exists(path):
        if time.time() - start > timeout:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.05)


def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    """A real process killed with SIGKILL after a checkpoint, then --resume."""
    # 150 steps (~20 ms each here) leave ample room to be killed mid-run
    common = ["train", "--model", "grokking", "--steps", "150", "--checkpoint-every", "7",
              "--eval-every", "1000", "--seed", "1", "--no-progress"]
    pyconv(*common, "--checkpoint", str(tmp_path / "straight.npz"))
    ckpt = tmp_path / "killed.npz"
    step = _killed_after_a_checkpoint(common, ckpt, settle=0.3)
    assert 7 <= step < 150, f"killed at step {step}: not mid-run"
    pyconv(*common, "--checkpoint", str(ckpt), "--resume")
    a, b = weights(tmp_path / "straight.npz"), weights(ckpt)
    for k in a:
        assert a[k].tobytes() == b[k].tobytes(), k


def test_ctrl_c_saves_a_checkpoint_and_says_how_to_resume(tmp_path):
    ckpt = tmp_path / "c.npz"
    common = ["train", "--model", "grokking", "--steps", "400", "--checkpoint-every", "5",
              "--eval-every", "1000", "--no-progress", "--checkpoint", str(ckpt)]
    env = dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR)
    proc = subprocess.Popen([sys.executable, "-m", "pyconv", *common], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(ckpt)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "--resume" in err and str(ckpt) in err
    with np.load(ckpt, allow_pickle=False) as f:
        step = json.loads(str(f["train_state"]))["step"]
    assert 5 <= step < 400


def test_diverging_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    ckpt = tmp_path / "c.npz"
    proc = pyconv("train", "--model", "grokking", "--steps", "300", "--lr", "1e37",
                  "--checkpoint-every", "1", "--checkpoint", str(ckpt), "--no-progress",
                  check=False)
    assert proc.returncode == 3, proc.stderr
    assert "loss became" in proc.stderr and "last good checkpoint" in proc.stderr
    with np.load(ckpt, allow_pickle=False) as f:
        assert all(np.isfinite(f[k]).all() for k in f.files if k.startswith("param/"))


def test_bad_options_are_clear_errors(tmp_path):
    proc = pyconv("train", "--steps", "0", check=False)
    assert proc.returncode == 2 and "--steps" in proc.stderr
    proc = pyconv("train", "--resume", check=False)
    assert proc.returncode == 2 and "--checkpoint" in proc.stderr
    proc = pyconv("evaluate", str(tmp_path / "missing.npz"), check=False)
    assert proc.returncode != 0 and "missing.npz" in proc.stderr
    proc = pyconv("train", "--model", "fast", "--augment-shift", "28", "--steps", "1",
                  check=False)
    assert proc.returncode == 2 and "--augment-shift 28 does not fit images of 28x28" in \
        proc.stderr and "at most 27" in proc.stderr
    proc = pyconv("train", "--label-smoothing", "1", check=False)
    assert proc.returncode == 2 and "--label-smoothing: must be a number in [0, 1), got '1'" \
        in proc.stderr
    proc = pyconv("train", "--optimizer", "sgd", "--momentum", "1", check=False)
    assert proc.returncode == 2 and "--momentum: must be a number in [0, 1), got '1'" \
        in proc.stderr
    proc = pyconv("train", "--weight-decay", "0.1", "--steps", "1", check=False)
    assert proc.returncode == 2 and "--weight-decay needs --optimizer adamw" in proc.stderr
    proc = pyconv("train", "--slices", "many", check=False)
    assert proc.returncode == 2 and "--slices: must be a number of slices from 1 to 1024, " \
        "got 'many'" in proc.stderr


def test_version_is_the_installed_package_version():
    from importlib.metadata import version
    out = pyconv("--version").stdout.strip()
    assert out == f"pyconv {version('pyconv')}" == f"pyconv {pyconv_pkg.__version__}"
