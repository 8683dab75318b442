"""Data-parallel training over MPI (pyconv.train.distributed): the pieces in one
process, then real `mpiexec -n 2` runs against one process with the same
global batch, run-to-run determinism, a rank killed mid-run and resumed,
and ranks started differently."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convcore
import pyconv
from pyconv.layers import Dense, Dropout, Flatten, Training
from pyconv.losses import softmax_cross_entropy
from pyconv.train import distributed

from conftest import HERE, MNIST_DIR
from helpers import no_bf16


@given(n=st.integers(0, 500), size=st.integers(1, 40))
def test_shards_split_a_batch_in_order(n, size):
    parts = [distributed.shard(n, r, size) for r in range(size)]
    assert parts[0][0] == 0 and parts[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(parts, parts[1:]))
    sizes = [e - f for f, e in parts]
    assert max(sizes) - min(sizes) <= 1


@given(n=st.integers(0, 500), log_slices=st.integers(0, 7), log_size=st.integers(0, 7))
def test_a_ranks_shard_is_whole_slices_where_its_size_divides_them(n, log_slices, log_size):
    """Rank k of K holds slices k S/K .. (k + 1) S/K - 1 of the batch
    (convcore.slices), whatever n, for K a power of two dividing S."""
    slices, size = 2 ** log_slices, 2 ** min(log_size, log_slices)
    bounds = convcore.slices.slice_bounds(n, slices)
    per = slices // size
    for r in range(size):
        assert distributed.shard(n, r, size) == (bounds[r * per], bounds[(r + 1) * per])


def test_slices_of_a_batch_give_its_loss_and_gradient():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 4)).astype(np.float32)
    y = rng.integers(0, 4, 7)
    loss, grad = softmax_cross_entropy(logits, y)
    a, ga = softmax_cross_entropy(logits[:3], y[:3], batch=7)
    b, gb = softmax_cross_entropy(logits[3:], y[3:], batch=7)
    assert np.concatenate([ga, gb]).tobytes() == grad.tobytes()
    assert abs(a + b - loss) <= 1e-6 * abs(loss)


def test_a_slice_of_a_batch_drops_what_the_batch_drops():
    model = pyconv.Sequential([Flatten(), Dropout(0.5), Dense(3)], input_shape=(4, 5, 1),
                              seed=3)
    x = np.random.default_rng(1).random((6, 4, 5, 1), dtype=np.float32)
    flat, dropout = model.layers[0], model.layers[1]
    whole = dropout.forward(flat(x), Training(np.random.default_rng(3)))[0]
    part = dropout.forward(flat(x[4:]), Training(np.random.default_rng(3), first=4))[0]
    assert part.tobytes() == whole[4:].tobytes()


def test_a_hook_that_returns_a_wait_defers_the_update():
    """The non-blocking sum's contract with the optimiser: the update of a
    parameter whose hook returned a wait comes after the wait, at finish_step."""
    model = pyconv.Sequential([Flatten(), Dense(2)], input_shape=(3, 1, 1), seed=0)
    opt = pyconv.optim.SGD(model.parameters(), lr=0.1)
    events = []

    def hook(p):
        events.append(("ready", p.name))
        return lambda: events.append(("wait", p.name))
    opt.add_grad_hook(hook)
    w0 = model.parameters()[0].value.copy()
    x, y = np.ones((2, 3, 1, 1), np.float32), np.array([0, 1])
    model.train_step(x, y, opt)
    assert events == [("ready", "w"), ("ready", "b"), ("wait", "w"), ("wait", "b")]
    assert not np.array_equal(model.parameters()[0].value, w0)     # then updated


def test_one_process_never_imports_mpi4py():
    code = ("import sys; import pyconv, pyconv.cli, pyconv.train.distributed as d\n"
            "assert d.world().size == 1 and 'mpi4py' not in sys.modules")
    env = {k: v for k, v in os.environ.items() if k not in distributed.SIZE_VARIABLES}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


# ------------------------------------------------------------ under mpiexec

MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")


def mpiexec(n, *args, timeout=300, check=True, **kw):
    if MPIEXEC is None:
        pytest.fail("the MPI tests need mpiexec: pip install '.[mpi]' (the test extra has it)")
    env = dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR, OMP_NUM_THREADS="1")
    proc = subprocess.run([MPIEXEC, "-n", str(n), sys.executable, *args], env=env,
                          capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode:
        raise AssertionError(f"mpiexec -n {n} {args}: exit {proc.returncode}\n{proc.stderr}")
    return proc


def worker(n, out, optimizer, steps, batch, model="tutorial", slices=16, precision="fp32"):
    mpiexec(n, os.path.join(HERE, "mpi_worker.py"), str(out), optimizer, str(steps),
            str(batch), model, str(slices), precision)
    with np.load(out) as f:
        return {k: f[k] for k in f.files}


@pytest.mark.parametrize("optimizer, batch, steps", [("adam", 50, 300), ("sgd", 51, 20)])
def test_one_two_and_four_ranks_train_the_same_bits(tmp_path, optimizer, batch, steps):
    """The tutorial network (dropout included) on 1, 2 and 4 ranks with the
    same global batch: every weight the same bits after 300 Adam steps
    (batch 51: ranks of 25 and 26, 12 and 13 images), the gradients' sums
    being each batch's 16 slices added in one fixed tree (convcore.slices)
    however the slices are spread. The loss, summed across the ranks in
    float64, agrees to its rounding."""
    one = worker(1, tmp_path / "one.npz", optimizer, steps, batch)
    for ranks in (2, 4):
        many = worker(ranks, tmp_path / f"{ranks}.npz", optimizer, steps, batch)
        assert int(many["size"]) == ranks and int(one["size"]) == 1
        assert np.abs(many["losses"] - one["losses"]).max() <= 1e-5
        names = [k for k in one if "." in k]
        assert len(names) == 8
        for name in names:
            assert many[name].tobytes() == one[name].tobytes(), (ranks, name)


@pytest.mark.parametrize("precision", ["bf16-emulated", "bf16"])
def test_bf16_trains_the_same_bits_on_one_and_two_ranks(tmp_path, precision):
    """precision bf16 (emulated; native where the CPU has AMX-BF16 or
    AVX512-BF16): each rank multiplies its own slice's operands in bf16, and
    the gradients' sums are the slices' in the fixed tree, so 20 SGD steps of
    51 give the same weights on 1 and 2 ranks; not those of fp32."""
    if precision == "bf16" and not convcore.bf16_supported():
        pytest.skip(no_bf16())
    one = worker(1, tmp_path / "one.npz", "sgd", 20, 51, precision=precision)
    two = worker(2, tmp_path / "two.npz", "sgd", 20, 51, precision=precision)
    fp32 = worker(1, tmp_path / "fp32.npz", "sgd", 20, 51)
    names = [k for k in one if "." in k]
    for name in names:
        assert two[name].tobytes() == one[name].tobytes(), name
    assert all(fp32[name].tobytes() != one[name].tobytes() for name in names)


def test_three_ranks_say_that_they_sum_in_mpis_order(tmp_path):
    """3 does not divide the batch's slices: the run goes on in MPI's own
    order and rank 0 says so, once; the weights then agree to rounding."""
    proc = mpiexec(3, "-m", "pyconv", "train", "--model", "tutorial", "--steps", "3",
                   "--batch-size", "30", "--slices", "16", "--no-progress")
    assert proc.stderr.count("3 processes with 3 is not a power of two: the gradients are "
                             "summed in MPI's own order") == 1, proc.stderr
    assert "3 steps" in proc.stdout


def test_a_checkpoint_of_two_ranks_resumes_on_four_bit_for_bit(tmp_path):
    """20 steps on 2 ranks, then 20 more on 4 from their checkpoint: the
    same weights and optimiser state, bit for bit, as 40 steps in one
    process (pyconv train, its checkpoints)."""
    common = ["-m", "pyconv", "train", "--model", "tutorial", "--batch-size", "48",
              "--slices", "16", "--eval-every", "1000", "--validation-split", "0.02",
              "--no-progress"]
    mpiexec(1, *common, "--steps", "40", "--checkpoint", str(tmp_path / "one.npz"))
    mpiexec(2, *common, "--steps", "20", "--checkpoint", str(tmp_path / "many.npz"))
    done = mpiexec(4, *common, "--steps", "40", "--checkpoint", str(tmp_path / "many.npz"),
                   "--resume")
    assert "resumed from" in done.stderr and "at step 20" in done.stderr
    with np.load(tmp_path / "one.npz") as a, np.load(tmp_path / "many.npz") as b:
        arrays = [k for k in a.files if a[k].dtype == np.float32]
        assert len(arrays) >= 8 + 16          # the weights, Adam's two moments of each
        for k in arrays:
            assert a[k].tobytes() == b[k].tobytes(), k


def test_a_batch_norm_network_trains_the_same_bits_on_one_two_and_four_ranks(tmp_path):
    """resnet8 (batch normalisation in every block), 5 SGD steps of 32 with
    16 slices: each batch normalisation's statistics and its gradient's sums
    are the slices' float64 sums added in the tree, then the ranks'
    (World.tree_total), so weights and running statistics are the same bits
    on 1, 2 and 4 ranks."""
    one = worker(1, tmp_path / "one.npz", "sgd", 5, 32, "resnet8")
    names = [k for k in one if "." in k]
    assert any(k.endswith("BatchNormalization.var") for k in names)
    for ranks in (2, 4):
        many = worker(ranks, tmp_path / f"{ranks}.npz", "sgd", 5, 32, "resnet8")
        for name in names:
            assert many[name].tobytes() == one[name].tobytes(), (ranks, name)


def test_without_slices_two_ranks_train_a_batch_norm_network_to_rounding(tmp_path):
    """The same without slices (MPI's own order): one SGD step of 32 on 2
    ranks against 1 process, each rank normalising by the global batch's
    statistics (summed across the ranks): weights and running statistics
    agree to the rounding of the sums' order (measured: 3e-8 at most). Later
    steps drift further apart where a ReLU's input is within rounding of 0,
    as between any two summation orders."""
    one = worker(1, tmp_path / "one.npz", "sgd", 1, 32, "resnet8", slices=1)
    two = worker(2, tmp_path / "two.npz", "sgd", 1, 32, "resnet8", slices=1)
    assert np.abs(one["losses"] - two["losses"]).max() <= 1e-6
    names = [k for k in one if "." in k]
    assert any(k.endswith("BatchNormalization.var") for k in names)
    for name in names:
        assert np.abs(one[name] - two[name]).max() <= 1e-6, name


def test_two_ranks_give_the_same_bits_run_after_run(tmp_path):
    a = worker(2, tmp_path / "a.npz", "adam", 5, 50)
    b = worker(2, tmp_path / "b.npz", "adam", 5, 50)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)


def _train(n, tmp_path, *extra, check=True):
    return mpiexec(n, "-m", "pyconv", "train", "--model", "tutorial", "--steps", "60",
                   "--eval-every", "30", "--batch-size", "50", "--no-progress", *extra,
                   check=check)


def test_pyconv_train_on_two_ranks_prints_once_and_matches_one_process(tmp_path):
    two = _train(2, tmp_path, "--metrics", str(tmp_path / "two.json"))
    one = _train(1, tmp_path, "--metrics", str(tmp_path / "one.json"))
    assert two.stdout.count("test accuracy") == 1 and two.stderr.count("step 30:") == 1
    assert two.stderr.count("2 processes with --slices 1 (the default): the gradients are "
                            "summed in MPI's own order") == 1
    assert one.stdout.count("test accuracy") == 1 and "1 threads" in one.stdout
    m2, m1 = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("two", "one"))
    assert m2["processes"] == 2 and m1["processes"] == 1
    assert abs(m2["test_accuracy"] - m1["test_accuracy"]) <= 0.01
    assert abs(m2["history"][-2]["train_loss"] - m1["history"][-2]["train_loss"]) <= 0.01


def _rank_pid(marker, rank):
    """The pid of the training process of `rank` whose command line has marker."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read().decode(errors="replace").split("\0")
        except OSError:
            continue
        if marker in cmd and "pyconv" in cmd and f"PMI_RANK={rank}" in env:
            return int(pid)
    return None


def test_a_killed_rank_ends_the_job_and_resume_goes_on_with_any_ranks(tmp_path):
    ckpt = tmp_path / "ckpt.npz"
    env = dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([MPIEXEC, "-n", "2", sys.executable, "-m", "pyconv", "train",
                             "--steps", "2000", "--checkpoint", str(ckpt), "--checkpoint-every",
                             "20", "--no-progress"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), "no checkpoint within 120 s"
        pid = _rank_pid(str(ckpt), 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        killed = time.time()
        out, err = proc.communicate(timeout=30)
        ended_after = time.time() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and ended_after < 10, (proc.returncode, ended_after)
    assert "BAD TERMINATION" in out and "Killed (signal 9)" in out, (out + err)[-2000:]  # hydra
    with np.load(ckpt) as f:
        step = json.loads(str(f["train_state"]))["step"]
    assert step >= 20
    # a checkpoint of 2 ranks resumes on 1, and that one on 2 again
    for ranks, end in ((1, step + 20), (2, step + 40)):
        done = mpiexec(ranks, "-m", "pyconv", "train", "--steps", str(end), "--checkpoint",
                       str(ckpt), "--checkpoint-every", "20", "--resume", "--no-progress")
        assert f"resumed from {ckpt} at step {end - 20}" in done.stderr
        assert f"{end} steps" in done.stdout


def test_ranks_started_differently_are_refused_naming_the_difference(tmp_path):
    env = dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR, OMP_NUM_THREADS="1")
    common = ["-m", "pyconv", "train", "--model", "grokking", "--steps", "5", "--no-progress"]
    proc = subprocess.run([MPIEXEC, "-n", "1", sys.executable, *common, "--seed", "0", ":",
                           "-n", "1", sys.executable, *common, "--seed", "1"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "rank 1's option --seed differs from rank 0's (1 there, 0 on rank 0)" in proc.stderr
    assert "start every rank with the same options and data" in proc.stderr
