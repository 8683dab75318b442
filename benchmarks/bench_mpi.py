"""Data-parallel scaling on this machine: the tutorial network on K ranks of
1 thread each (mpiexec -n K, pyconv.distributed) against 1 rank, per-rank
batch 50 and 256, in alternating rounds of one sitting.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_mpi.py

For each run, rank 0 reports images/s, the step time, the time each step
waited for gradient sums (communication not hidden behind the backward
pass), and a blocking all-reduce of every gradient timed on its own. A run
with --no-sum (each rank trains alone, no reduction) separates what sharing
the machine costs from what communication costs. Each measurement runs
with --slices 1 (one plain sum, MPI's all-reduce) and 16 (the canonical
order: the same bits on 1 to 16 ranks, pyconv's tree sum). Writes
benchmarks/results/mpi-scaling.json.

--worker runs one measurement (under mpiexec; mpi_netns.py uses it too).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(args):
    import pyconv
    from pyconv.train import distributed
    world = distributed.world()
    if args.sums == "none":
        world.attach = lambda optimizer, canonical=True: None   # each rank alone: compute only
    elif args.sums == "hook":
        world._start_sum = lambda p: (lambda: None)    # the hook's unfused updates, no MPI
    rng = np.random.default_rng(0)
    global_batch = args.batch * world.size
    x = rng.integers(0, 256, (global_batch * 4, 28, 28, 1), dtype=np.uint8)
    y = rng.integers(0, 10, global_batch * 4)
    model = pyconv.models.tutorial_cnn(seed=0)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-4)
    parallel = distributed.DataParallel(model, opt, world, slices=args.slices)

    def step(i):
        rows = slice((i % 4) * global_batch, (i % 4 + 1) * global_batch)
        parallel.train_step(x[rows], y[rows])
    for i in range(args.warmup):
        step(i)
    wait0 = getattr(world, "wait_seconds", 0.0)
    if world.size > 1:
        world.comm.Barrier()
    start = time.perf_counter()
    for i in range(args.steps):
        step(i)
    seconds = (time.perf_counter() - start) / args.steps
    waited = (getattr(world, "wait_seconds", 0.0) - wait0) / args.steps
    row = {"ranks": world.size, "batch_per_rank": args.batch, "sums": args.sums,
           "slices": parallel.slices,
           "step_s": seconds, "images_per_s": global_batch / seconds,
           "wait_s_per_step": waited, "allreduce_s": _allreduce_seconds(world, model),
           "tree_sum_s": _allreduce_seconds(world, model, tree=True)}
    if world.is_root:
        print("RESULT " + json.dumps(row), flush=True)


def _allreduce_seconds(world, model, repeats=10, tree=False):
    """A blocking all-reduce of every gradient, one parameter after another
    (tree: pyconv's tree sum, the canonical order's)."""
    if world.size == 1:
        return 0.0
    grads = [np.ones(p.value.shape, np.float32) for p in model.parameters()]
    world.comm.Barrier()
    start = time.perf_counter()
    for _ in range(repeats):
        for g in grads:
            if tree:
                world.tree_sum(g)
            else:
                world.grads.Allreduce(world.mpi.IN_PLACE, g, op=world.mpi.SUM)
    return (time.perf_counter() - start) / repeats


def run(ranks, batch, steps, sums="mpi", launcher=None, env=None, slices=1):
    """One worker run under mpiexec; its rank 0's result."""
    cmd = launcher or ["mpiexec", "-n", str(ranks), sys.executable]
    cmd = [*cmd, os.path.abspath(__file__), "--worker", "--batch", str(batch), "--steps",
           str(steps), "--sums", sums, "--slices", str(slices)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=env or dict(os.environ, OMP_NUM_THREADS="1")).stdout
    return json.loads(next(line for line in out.splitlines()
                           if line.startswith("RESULT "))[7:])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", action="store_true")
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--sums", choices=("mpi", "hook", "none"), default="mpi",
                   help="mpi: gradients summed (the real thing); hook: the gradient hook "
                   "and its unfused updates, no MPI; none: each rank alone")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--slices", default="1,16",
                   help="the global batch's slices to measure, comma-separated (1: one plain "
                   "sum, MPI's all-reduce; 16: the same bits on 1 to 16 ranks, the tree sum)")
    p.add_argument("--out", default=os.path.join(HERE, "results", "mpi-scaling.json"))
    p.add_argument("--progress", choices=("thread", "calls"), default="thread",
                   help="thread: a thread drives MPI's progress during the backward pass "
                   "(pyconv's default); calls: progress only inside MPI calls")
    args = p.parse_args(argv)
    if args.worker:
        args.slices = int(args.slices)
        return worker(args)
    sys.path.insert(0, HERE)
    from _common import machine
    rows, slicings = [], [int(s) for s in args.slices.split(",")]
    for r in range(args.rounds):
        for batch, steps in ((50, 60), (256, 15)):
            for slices in slicings:
                for ranks, sums in ((1, "mpi"), (2, "mpi"), (2, "hook"), (2, "none")):
                    row = run(ranks, batch, steps, sums, slices=slices, env=dict(
                        os.environ, OMP_NUM_THREADS="1", PYCONV_MPI_PROGRESS=args.progress))
                    row["round"] = r
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    summary = []
    for batch, slices in ((b, s) for b in (50, 256) for s in slicings):
        def best(ranks, sums, batch=batch, slices=slices):
            return max((x for x in rows if x["ranks"] == ranks and x["sums"] == sums
                        and x["batch_per_rank"] == batch and x["slices"] == slices),
                       key=lambda x: x["images_per_s"])
        one, two, hook, alone = best(1, "mpi"), best(2, "mpi"), best(2, "hook"), best(2, "none")
        summary.append({
            "batch_per_rank": batch, "slices": slices, "images_per_s_1": one["images_per_s"],
            "images_per_s_2": two["images_per_s"],
            "ratio": two["images_per_s"] / one["images_per_s"],
            "ratio_without_sums": alone["images_per_s"] / one["images_per_s"],
            "ratio_hook_no_mpi": hook["images_per_s"] / one["images_per_s"],
            "step_ms_1": one["step_s"] * 1e3, "step_ms_2": two["step_s"] * 1e3,
            "step_ms_2_without_sums": alone["step_s"] * 1e3,
            "step_ms_2_hook_no_mpi": hook["step_s"] * 1e3,
            "waited_ms": two["wait_s_per_step"] * 1e3, "allreduce_ms": two["allreduce_s"] * 1e3,
            "tree_sum_ms": two["tree_sum_s"] * 1e3,
            "hidden": 1 - two["wait_s_per_step"] / (two["tree_sum_s"] if slices > 1
                                                    else two["allreduce_s"])})
        print(json.dumps(summary[-1]))
    with open(args.out, "w") as f:
        json.dump({"machine": machine(), "progress": args.progress, "rows": rows,
                   "summary": summary}, f, indent=1)


if __name__ == "__main__":
    main()
