"""What the loop around the steps costs: the training images/s of
`train_step` on one fixed float32 batch against the Trainer on the real data
set (a uint8 batch gathered and scaled every step, augmentation if asked),
and the whole `pyconv train` command (evaluation and checkpoints included),
in one sitting.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_loop.py \\
        --data-dir ../shared/data/mnist --out benchmarks/results/loop-zen3.json

Settings: the tutorial network (batch 50, 2,000 steps; the command evaluates
5,000 validation images every 1,000 steps and writes a checkpoint every
1,000), and `fast` (batch 128, 704 steps, translation by 2 pixels). Rounds
interleave the three ways; each figure is the median over 3 rounds. Across
processes, a busy machine's noise (a few percent) can exceed the loop's
cost, so the Trainer's run also times its own calls of train_step: the
share of its time spent outside them is the loop's cost measured within
one run.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, markdown_table, write_json  # noqa: E402

SETTINGS = {"tutorial": (50, 2000, 0), "fast": (128, 704, 2)}


def fixed_batch(name, data_dir):
    import pyconv
    from pyconv.data import read_mnist_dir
    (x, y), _ = read_mnist_dir(data_dir)
    batch, steps, _ = SETTINGS[name]
    model = pyconv.models.MODELS[name](seed=0)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-3)
    xb = x[:batch, :, :, None].astype(np.float32) / np.float32(255)
    yb = y[:batch].astype(np.int64)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_step(xb, yb, opt)
    return {"images_per_s": steps * batch / (time.perf_counter() - start)}


def trainer(name, data_dir):
    import pyconv
    from pyconv.data import Augment, read_mnist_dir
    from pyconv.train import Trainer
    (x, y), _ = read_mnist_dir(data_dir)
    batch, steps, shift = SETTINGS[name]
    model = pyconv.models.MODELS[name](seed=0)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-3)
    t = Trainer(model, opt, (x, y), steps=steps, batch_size=batch, log=lambda m: None,
                augment=Augment(shift) if shift else None)
    inside = [0.0]            # seconds spent in train_step itself, in the same run
    step = model.train_step

    def timed(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return step(*args, **kwargs)
        finally:
            inside[0] += time.perf_counter() - t0

    model.train_step = timed
    start = time.perf_counter()
    t.run()
    seconds = time.perf_counter() - start
    return {"images_per_s": steps * batch / seconds, "outside_share": 1 - inside[0] / seconds}


def command(name, data_dir):
    batch, steps, shift = SETTINGS[name]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pyconv", "train", "--model", name, "--data-dir",
               data_dir, "--steps", str(steps), "--batch-size", str(batch), "--no-progress",
               "--checkpoint", os.path.join(tmp, "c.npz"), "--metrics",
               os.path.join(tmp, "m.json"), "--augment-shift", str(shift)]
        subprocess.run(cmd, check=True, capture_output=True)
        with open(os.path.join(tmp, "m.json")) as f:
            m = json.load(f)
    return {"images_per_s": steps * batch / m["wall_seconds_this_run"]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--worker", nargs=3, metavar=("WAY", "NAME", "DATA_DIR"))
    ap.add_argument("--data-dir", default=os.path.join(HERE, "..", "..", "shared", "data",
                                                       "mnist"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "loop.json"))
    args = ap.parse_args()
    ways = {"fixed batch": fixed_batch, "Trainer": trainer, "command": command}
    if args.worker:
        way, name, data_dir = args.worker
        print(json.dumps(ways[way](name, data_dir)))
        return
    runs = []
    for r in range(args.rounds):
        for name in SETTINGS:
            for way in ways:
                out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker",
                                      way, name, args.data_dir], check=True,
                                     capture_output=True, text=True)
                runs.append({"round": r, "model": name, "way": way,
                             **json.loads(out.stdout.strip().splitlines()[-1])})
                print(json.dumps(runs[-1]), file=sys.stderr)
    rows = []
    outside = {name: float(np.median([x["outside_share"] for x in runs
                                      if x["model"] == name and x["way"] == "Trainer"]))
               for name in SETTINGS}
    for name in SETTINGS:
        speed = {w: float(np.median([x["images_per_s"] for x in runs
                                     if x["model"] == name and x["way"] == w])) for w in ways}
        rows.append([name, *(f"{speed[w]:,.0f}" for w in ways),
                     f"{1 - speed['Trainer'] / speed['fixed batch']:.1%}",
                     f"{outside[name]:.1%}",
                     f"{1 - speed['command'] / speed['fixed batch']:.1%}"])
    table = markdown_table(["network", "train_step, fixed batch (img/s)", "Trainer (img/s)",
                            "pyconv train, wall (img/s)", "loop's cost",
                            "time outside train_step", "command's cost"], rows)
    print(table)
    write_json(args.out, {"machine": machine(), "runs": runs, "table": table})


if __name__ == "__main__":
    main()
