"""Data-parallel training over MPI (mpi4py): one model trained by K processes.

    mpiexec -n 2 pyconv train --batch-size 100         # 50 images a process a step
    srun -n 8 pyconv train --batch-size 400            # under Slurm

Every process (rank) holds the whole model and takes its own slice of every
global batch (`--batch-size` is the global batch; when K does not divide it,
the first batch % K ranks take one image more). Each rank's loss is its
slice's share of the global batch's mean, so the gradients summed across
ranks are the global batch's; they are summed by non-blocking MPI
all-reductions started from the optimiser's gradient hook as each
parameter's gradient is ready (the dense layer's long before the
convolutions' backward passes end), and waited for before the updates. Every
rank then applies the same update: the weights stay equal (checked at every
checkpoint). Dropout on a slice draws that slice of the global batch's mask,
so K ranks compute what one process computes, but for the order in which the
weight gradients are summed.

Rank 0 alone prints, writes metrics, TensorBoard events and checkpoints;
validation and test sets are split across the ranks. A checkpoint resumes on
any number of ranks. At start-up the ranks compare their configuration and
data and refuse to train if any differs; an error on one rank aborts them
all (MPI_Abort), and a rank that dies ends the job through the launcher.

Without a launcher (no PMI_SIZE, OMPI_COMM_WORLD_SIZE, ... in the
environment) the world is this process alone and mpi4py is never imported.
Needs the mpi extra: pip install 'pyconv[mpi]' (mpi4py and MPICH's wheels).
"""
import hashlib
import os
import sys
import time

import numpy as np

from ..extras import require
from ..losses import softmax_cross_entropy

SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


def launched_size():
    """The number of processes a launcher started together with this one (1
    when none did): MPICH's and Intel MPI's hydra, Open MPI, MVAPICH, srun."""
    for var in SIZE_VARIABLES:
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    if "SLURM_PROCID" in os.environ and os.environ.get("SLURM_STEP_NUM_TASKS", "").isdigit():
        return int(os.environ["SLURM_STEP_NUM_TASKS"])
    return 1


def shard(n, rank, size):
    """(first, end) of rank's slice of n examples split over size ranks: in
    order, the first n % size ranks one example more."""
    q, r = divmod(n, size)
    first = rank * q + min(rank, r)
    return first, first + q + (rank < r)


class Local:
    """The world of one process: shards are whole, sums are the values."""
    rank, size, comm = 0, 1, None
    is_root = True

    def shard(self, n):
        return 0, n

    def sum(self, values):
        return np.asarray(values, np.float64)

    def attach(self, optimizer):
        pass

    def check_same(self, what):
        pass

    def check_in_sync(self, model, step):
        pass

    def abort(self, code):
        sys.exit(code)


class World(Local):
    """K processes of an MPI communicator."""

    def __init__(self, comm, mpi):
        self.comm, self.mpi = comm, mpi
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self.is_root = self.rank == 0
        self.local_size = comm.Split_type(mpi.COMM_TYPE_SHARED).Get_size()
        self._attached = set()
        self.grads = comm.Dup()          # the gradient sums' own communicator
        self._progress = None
        if mpi.Query_thread() == mpi.THREAD_MULTIPLE and \
                os.environ.get("PYCONV_MPI_PROGRESS", "thread") == "thread":
            from concurrent.futures import ThreadPoolExecutor
            self._progress = ThreadPoolExecutor(1, thread_name_prefix="pyconv-mpi-progress")
        self.wait_seconds = 0.0       # time spent waiting for gradient sums (not hidden)

    def shard(self, n):
        """(first, end) of this rank's slice of n examples."""
        return shard(n, self.rank, self.size)

    def sum(self, values):
        """The sum over the ranks of a few numbers (float64), the same on every rank."""
        a = np.asarray(values, np.float64)
        out = np.empty_like(a)
        self.comm.Allreduce(a, out, op=self.mpi.SUM)
        return out

    def attach(self, optimizer):
        """Sum every gradient across the ranks, started as soon as it is ready."""
        if id(optimizer) not in self._attached:
            optimizer.add_grad_hook(self._start_sum)
            self._attached.add(id(optimizer))

    def _start_sum(self, p):
        """Start summing p.grad across the ranks; returns the wait for it. A
        thread of this process waits on the request meanwhile, which drives
        MPI's progress while the backward pass computes (MPICH moves a
        non-blocking collective only inside MPI calls): measured, it hides
        most of the sum (benchmarks/bench_mpi.py)."""
        if p.grad is None:
            return None
        request = self.grads.Iallreduce(self.mpi.IN_PLACE, p.grad, op=self.mpi.SUM)
        finish = request.Wait
        if self._progress is not None:
            finish = self._progress.submit(request.Wait).result

        def wait():
            t = time.perf_counter()
            finish()
            self.wait_seconds += time.perf_counter() - t
        return wait

    def check_same(self, what):
        """Refuse to go on unless every rank has the same `what`: a dict of
        named values (a dict value: each of its items by name)."""
        flat = {}
        for key, value in what.items():
            items = value.items() if isinstance(value, dict) else [(None, value)]
            for sub, v in items:
                flat[key if sub is None else f"{key} {sub}"] = v
        mine = {k: (_digest(v), repr(v) if len(repr(v)) <= 80 else None)
                for k, v in flat.items()}
        every = self.comm.allgather(mine)
        for key in flat:
            odd = [r for r, e in enumerate(every)
                   if e.get(key, (None,))[0] != every[0].get(key, (None,))[0]]
            if odd:
                r = odd[0]
                shown = (f" ({every[r][key][1]} there, {every[0][key][1]} on rank 0)"
                         if every[r].get(key, (0, None))[1] and every[0][key][1] else "")
                raise ValueError(f"the {self.size} processes were not started alike: rank "
                                 f"{r}'s {key} differs from rank 0's{shown}; start every "
                                 "rank with the same options and data")

    def check_in_sync(self, model, step):
        """The ranks' weights and buffers are equal (a digest of each rank's,
        compared)."""
        arrays = [p.value for p in model.parameters()] + [b for _, b in model.named_buffers()]
        digests = self.comm.allgather(_digest(arrays))
        if len(set(digests)) != 1:
            raise RuntimeError(f"the ranks' weights differ at step {step}: "
                               f"{sorted(set(digests))}")

    def abort(self, code):
        sys.stdout.flush()
        sys.stderr.flush()
        self.comm.Abort(code)


class DataParallel:
    """Data-parallel training over the processes a launcher started (mpiexec,
    srun), wrapped once as Horovod's DistributedOptimizer wraps an optimiser:
    the optimiser gains a gradient hook that sums each gradient across the
    ranks as soon as it is ready. train_step(x, y) takes the global batch, the
    same on every rank; each rank computes its own slice (the model's
    train_step with shard=(first, end, n)), and the loss returned is the
    global batch's. In one process it is the model's own train_step. Layers
    and the model never know the ranks. label_smoothing: of the loss.

    Batch normalisation normalises by the global batch's statistics: each
    rank's sums are summed across the ranks (world.sum), in the forward pass
    and for the input gradient, so K ranks compute what one process computes
    (to the rounding of the sums' order, as the weight gradients)."""

    def __init__(self, model, optimizer, world=None, label_smoothing=0.0):
        self.model, self.optimizer = model, optimizer
        self.world = world or _this_world()
        self.label_smoothing = label_smoothing
        self.world.attach(optimizer)

    def train_step(self, x, y, return_logits=False):
        first, end = self.world.shard(len(y))
        loss, logits = self.step_slice(x[first:end], y[first:end], first, len(y))
        if self.world.size > 1:
            loss = float(self.world.sum([loss])[0])
        return (loss, logits) if return_logits else loss

    def step_slice(self, x, y, first, n):
        """(this slice's share of the loss, its logits): a step on this rank's
        slice x, y of a global batch of n, starting at example `first` (the
        caller cut it, reading only its own rows); the loss is not summed."""
        shard = None if self.world.size == 1 else (first, first + len(y), n)
        return self.model.train_step(x, y, self.optimizer, return_logits=True, shard=shard,
                                     label_smoothing=self.label_smoothing,
                                     sums=None if shard is None else self.world.sum)

    def evaluate(self, x, y):
        """{"loss", "accuracy"} over (x, y), each rank predicting its share."""
        if self.world.size == 1:
            return self.model.evaluate(x, y)
        first, end = self.world.shard(len(y))
        logits = self.model.predict(x[first:end])
        yb = np.asarray(y[first:end]).astype(np.int64)
        loss = softmax_cross_entropy(logits, yb, len(y))[0] if end > first else 0.0
        loss, correct = self.world.sum([loss, np.sum(logits.argmax(axis=1) == yb)])
        return {"loss": float(loss), "accuracy": float(correct / max(len(y), 1))}


def _digest(value):
    h = hashlib.sha256()
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        for a in value:
            h.update(np.ascontiguousarray(a).tobytes())
    elif isinstance(value, np.ndarray):
        h.update(f"{value.dtype}{value.shape}".encode())
        h.update(np.ascontiguousarray(value).tobytes())
    else:
        h.update(repr(value).encode())
    return h.hexdigest()


_WORLD = None


def world():
    """This process's world: a World over MPI's COMM_WORLD when a launcher
    started several processes, else Local (mpi4py never imported)."""
    global _WORLD
    if _WORLD is None:
        if launched_size() > 1:
            mpi = require("mpi", f"training on {launched_size()} processes")[0]
            _WORLD = World(mpi.COMM_WORLD, mpi)
        else:
            _WORLD = Local()
    return _WORLD


_this_world = world     # (DataParallel's argument `world` hides the function)


def current():
    """The world if it has been made (world()), else Local: for error paths,
    which must not start MPI."""
    return _WORLD or Local()


def data_fingerprint(arrays):
    """What the ranks compare of a data set: shapes, dtypes and a digest of
    a sample of its rows (the first, last and every len/64th)."""
    out = {}
    for name, a in arrays.items():
        if a is None:
            continue
        rows = np.unique(np.linspace(0, len(a) - 1, 66).astype(np.int64)) if len(a) else []
        out[name] = (tuple(a.shape), str(a.dtype), _digest(np.asarray(a[rows])))
    return out
