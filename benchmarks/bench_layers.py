"""Per-layer breakdown of a tutorial_cnn training step (forward and backward of
each layer, and the optimiser step), median over steps. The layers run as
Sequential.train_step runs them (model.steps(optimizer), the plan from
pyconv.fusion): each Conv2D with the MaxPool2D after it as one fused step, each
Dense with its fused Adam update. Each step's backward includes its
parameters' Adam update (the optimiser's grad_ready); "finish_step" is what is
left to it.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_layers.py [--batch 50]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import convcore  # noqa: E402
import pyconv  # noqa: E402
from pyconv.losses import softmax_cross_entropy  # noqa: E402

from _common import markdown_table  # noqa: E402


def breakdown(batch, n_steps=20, threads=None, seed=0):
    if threads:
        convcore.set_num_threads(threads)
    rng = np.random.default_rng(seed)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = pyconv.models.tutorial_cnn(seed)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-4)
    steps = model.steps(opt)
    names = [f"{i} {type(step.op).__name__}" for i, step in enumerate(steps)]
    times = {n: {"forward": [], "backward": []} for n in names}
    times["loss"] = {"forward": [], "backward": []}
    times["finish_step"] = {"forward": [], "backward": []}
    for _ in range(n_steps + 3):    # as Sequential.train_step, one step at a time
        h, ctxs = x, []
        for n, step in zip(names, steps):
            t = time.perf_counter()
            h, ctx = step.op.forward(h, training=True)
            ctxs.append(ctx)
            times[n]["forward"].append(time.perf_counter() - t)
        t = time.perf_counter()
        _, d = softmax_cross_entropy(h, y)
        times["loss"]["forward"].append(time.perf_counter() - t)
        opt.begin_step()
        for n, step, ctx in zip(reversed(names), reversed(steps), reversed(ctxs)):
            t = time.perf_counter()
            d = step.op.backward(ctx, d, step.need_dx)
            for p in step.op.ready_params():
                opt.grad_ready(p)
            times[n]["backward"].append(time.perf_counter() - t)
        t = time.perf_counter()
        opt.finish_step()
        times["finish_step"]["forward"].append(time.perf_counter() - t)
    med = {n: {k: float(np.median(v[3:])) * 1e3 if v else 0.0 for k, v in d.items()}
           for n, d in times.items()}
    return med


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int)
    args = ap.parse_args()
    med = breakdown(args.batch, threads=args.threads)
    total = sum(v["forward"] + v["backward"] for v in med.values())
    rows = [(n, f"{v['forward']:.2f}", f"{v['backward']:.2f}",
             f"{100 * (v['forward'] + v['backward']) / total:.0f}%") for n, v in med.items()]
    rows.append(("total", "", "", f"{total:.1f} ms = {args.batch / total * 1e3:.0f} img/s"))
    print(f"tutorial_cnn step, batch {args.batch}, {convcore.get_num_threads()} threads")
    print(markdown_table(["layer", "forward ms", "backward ms", "share"], rows))


if __name__ == "__main__":
    main()
