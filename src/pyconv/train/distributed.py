"""Data-parallel training over MPI (mpi4py): one model trained by K processes.

    mpiexec -n 2 pyconv train --batch-size 100         # 50 images a process a step
    srun -n 8 pyconv train --batch-size 400            # under Slurm

Every process (rank) holds the whole model and takes its own slice of every
global batch (`--batch-size` is the global batch; rank k of K takes examples
floor(k n / K) .. floor((k + 1) n / K) - 1). Each rank's loss is its
slice's share of the global batch's mean, so the gradients summed across
ranks are the global batch's; they are summed from the optimiser's gradient
hook as each parameter's gradient is ready (the dense layer's long before
the convolutions' backward passes end), by a thread of each rank while the
backward pass runs, and waited for before the updates. Every rank then
applies the same update: the weights stay equal (checked at every
checkpoint). Dropout on a slice draws that slice of the global batch's mask.

With slices=S (`--slices S`; S a power of two that K divides) every sum over
the batch is cut into S slices summed on their own and added in one
pairwise tree (convcore.slices): each rank computes its slices' subtree and
the ranks add theirs pairwise (World.tree_sum), so K ranks give the very
bits of one process with the same S. Otherwise (slices=1, the default, or a
K that does not divide S) MPI's all-reduction sums them in its own order:
the same bits run after run for the same K, not those of K = 1.

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

from convcore.slices import MAX_SLICES, slice_bounds

from ..extras import require
from ..losses import softmax_cross_entropy
from ..model import SLICES

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
    """(first, end) of rank's slice of n examples split over size ranks, in
    order, as evenly as they go: floor(rank n / size) .. floor((rank + 1) n /
    size), so that for size dividing a batch's slices (convcore.slices) a
    rank's examples are whole slices."""
    return rank * n // size, (rank + 1) * n // size


class Local:
    """The world of one process: shards are whole, sums are the values."""
    rank, size, comm = 0, 1, None
    is_root = True

    def shard(self, n):
        return 0, n

    def sum(self, values):
        return np.asarray(values, np.float64)

    def attach(self, optimizer, canonical=True):
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
        self._attached = {}
        self._scratch = np.empty(0, np.float32)   # the halves received (the sums run in turn)
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

    def attach(self, optimizer, canonical=True):
        """Sum every gradient across the ranks, started as soon as it is ready:
        canonical, in the fixed tree (tree_sum: the same bits as one process
        where each rank holds whole subtrees of the batch's slices), else by
        MPI's all-reduction in whatever order it takes."""
        if id(optimizer) not in self._attached:
            optimizer.add_grad_hook(self._start_sum)
        self._attached[id(optimizer)] = canonical

    def _start_sum(self, p):
        """Start summing p.grad across the ranks; returns the wait for it. A
        thread of this process runs the sum meanwhile (MPICH moves a
        non-blocking collective only inside MPI calls), while the backward
        pass computes: measured, it hides most of the sum
        (benchmarks/bench_mpi.py). Without that thread (no
        MPI_THREAD_MULTIPLE) the canonical sum runs when waited for."""
        if p.grad is None:
            return None
        if all(self._attached.values()):
            run = lambda: self.tree_sum(p.grad)    # noqa: E731
            finish = run if self._progress is None else self._progress.submit(run).result
        else:
            request = self.grads.Iallreduce(self.mpi.IN_PLACE, p.grad, op=self.mpi.SUM)
            finish = request.Wait
            if self._progress is not None:
                finish = self._progress.submit(request.Wait).result

        def wait():
            t = time.perf_counter()
            finish()
            self.wait_seconds += time.perf_counter() - t
        return wait

    def tree_total(self, a):
        """A new array: the sum of a over the ranks in the tree (tree_sum), on
        the main communicator: for the training thread's own sums (batch
        normalisation's), while the progress thread sums gradients."""
        return self.tree_sum(np.array(a, copy=True), self.comm)

    def tree_sum(self, a, comm=None):
        """a := its sum over the ranks (a power of two of them), in place, each
        entry added in the pairwise tree of convcore.slices: ranks 2i and
        2i + 1 first, then pairs of pairs. Recursive halving (each rank ends
        with the sum of its own part of a), then recursive doubling (the
        parts gathered): every entry's additions keep the tree's association,
        and each rank sends and receives about twice a, as a ring does.
        comm: the gradients' communicator unless given."""
        if not a.flags.c_contiguous or a.dtype not in (np.float32, np.float64):
            raise ValueError(f"tree_sum: a must be a contiguous float32 or float64 array, got "
                             f"{a.dtype} {'contiguous' if a.flags.c_contiguous else 'strided'}")
        flat, half = a.reshape(-1), (a.size + 1) // 2
        if comm is not None:
            scratch = np.empty(half, a.dtype)
        else:
            comm = self.grads
            if self._scratch.size < half or self._scratch.dtype != a.dtype:
                self._scratch = np.empty(half, a.dtype)
            scratch = self._scratch
        lo, hi, levels, dist = 0, flat.size, [], 1
        while dist < self.size:
            partner, mid = self.rank ^ dist, (lo + hi) // 2
            keep, give = ((lo, mid), (mid, hi)) if self.rank & dist == 0 else \
                ((mid, hi), (lo, mid))
            got = scratch[:keep[1] - keep[0]]
            comm.Sendrecv(flat[give[0]:give[1]], partner, 0, got, partner, 0)
            mine = flat[keep[0]:keep[1]]
            np.add(mine, got, out=mine)      # a + b == b + a: both ranks hold the same bits
            levels.append((lo, hi, keep, partner))
            lo, hi = keep
            dist *= 2
        for lo, hi, keep, partner in reversed(levels):
            other = (lo, keep[0]) if keep[0] > lo else (keep[1], hi)
            comm.Sendrecv(flat[keep[0]:keep[1]], partner, 1, flat[other[0]:other[1]], partner,
                          1)
        return a

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
    (with slices, in the tree: the same bits; else to the rounding of MPI's
    order).
    slices: the number of slices of every sum over the global batch (see
    above; checked, and 1 with a note on rank 0 where K does not divide it)."""

    def __init__(self, model, optimizer, world=None, label_smoothing=0.0, slices=SLICES):
        self.model, self.optimizer = model, optimizer
        self.world = world or _this_world()
        self.label_smoothing = label_smoothing
        self.slices = _check_slices(slices, self.world)
        self.world.attach(optimizer, canonical=self.slices > 1 or self.world.size == 1)

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
        if self.world.size == 1:
            return self.model.train_step(x, y, self.optimizer, return_logits=True,
                                         label_smoothing=self.label_smoothing,
                                         slices=self.slices)
        per_rank, k = self.slices // self.world.size, self.world.rank
        bounds = slice_bounds(n, self.slices)[k * per_rank:(k + 1) * per_rank + 1] - first \
            if self.slices > 1 else [0, len(y)]
        return self.model.train_step(
            x, y, self.optimizer, return_logits=True, shard=(first, first + len(y), n),
            label_smoothing=self.label_smoothing, slices=bounds,
            sums=self.world.tree_total if self.slices > 1 else self.world.sum)

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


def _check_slices(slices, world):
    """The number of slices a global batch is cut into: `slices`, where the
    ranks hold whole subtrees of them (K a power of two dividing it); else 1,
    the sums in MPI's own order, which rank 0 says."""
    if isinstance(slices, bool) or not isinstance(slices, (int, np.integer)) or \
            not 1 <= slices <= MAX_SLICES:
        raise ValueError(f"DataParallel: slices must be a number of slices from 1 to "
                         f"{MAX_SLICES}, got {slices!r}")
    k = world.size
    if k == 1 or (k & (k - 1) == 0 and slices % k == 0):
        return int(slices)
    if world.is_root:
        why = ("--slices 1 (the default)" if slices == 1 else
               f"{k} is not a power of two" if k & (k - 1) else f"{k} does not divide --slices "
               f"{slices}")
        print(f"pyconv: {k} processes with {why}: the gradients are summed in MPI's own "
              "order, so the weights differ from one process's in the last bits; for the "
              "same bits, run with --slices S (S a multiple of the processes, a power of two) "
              "here and in the one-process run", file=sys.stderr, flush=True)
    return 1


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
