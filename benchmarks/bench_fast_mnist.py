"""Time to 99.2% on MNIST: `pyconv train --model fast` against the public
PyTorch recipe (benchmarks/fast_mnist_torch.py), seeds 0, 1, 2, in one
sitting, interleaved; and pyconv's longer recipe (more epochs, translation).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_fast_mnist.py \\
        --data-dir ../shared/data/mnist --out benchmarks/results/fast-mnist-zen3.json

Each run is its own process. pyconv's figure is the whole command's wall
time (start-up, reading the IDX files into memory, training, the test
accuracy); PyTorch's is its script's time from the first step to the test
accuracy (its start-up and data loading not counted). The longer recipe:
`pyconv train --model fast --epochs 6 --augment-shift 2` (--long).
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, markdown_table, write_json  # noqa: E402


def pyconv_run(data_dir, seed, extra=()):
    metrics = os.path.join(HERE, "results", f".fast-{seed}.json")
    cmd = [sys.executable, "-m", "pyconv", "train", "--model", "fast", "--data-dir", data_dir,
           "--seed", str(seed), "--no-progress", "--metrics", metrics, *extra]
    start = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    with open(metrics) as f:
        m = json.load(f)
    os.remove(metrics)
    return {"framework": "pyconv", "seed": seed, "test_accuracy": m["test_accuracy"],
            "seconds": wall, "train_seconds": m["train_seconds"], "steps": m["steps"],
            "command": " ".join(["pyconv", *cmd[3:-2]])}


def torch_run(data_dir, seed):
    out = subprocess.run([sys.executable, os.path.join(HERE, "fast_mnist_torch.py"),
                          "--data-dir", data_dir, "--seed", str(seed)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--long", action="store_true", help="also the longer recipe")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "fast-mnist.json"))
    args = ap.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = []
    for seed in seeds:
        for run in (torch_run, pyconv_run):
            runs.append(run(args.data_dir, seed))
            print(json.dumps(runs[-1]), file=sys.stderr)
    if args.long:
        for seed in seeds:
            r = pyconv_run(args.data_dir, seed, ("--epochs", "6", "--augment-shift", "2"))
            runs.append({**r, "framework": "pyconv (6 epochs, translation)"})
            print(json.dumps(runs[-1]), file=sys.stderr)
    rows = []
    for fw in dict.fromkeys(r["framework"] for r in runs):
        mine = [r for r in runs if r["framework"] == fw]
        rows.append([fw, ", ".join(f"{r['test_accuracy']:.4f}" for r in mine),
                     f"{np.mean([r['test_accuracy'] for r in mine]):.4f}",
                     ", ".join(f"{r['seconds']:.1f}" for r in mine),
                     f"{np.mean([r['seconds'] for r in mine]):.1f}"])
    torch_s = np.mean([r["seconds"] for r in runs if r["framework"].startswith("PyTorch")])
    fast_s = np.mean([r["seconds"] for r in runs if r["framework"] == "pyconv"])
    table = markdown_table(["recipe", "test accuracy (seeds " + args.seeds + ")", "mean",
                            "seconds", "mean s"], rows)
    print(table)
    print(f"pyconv fast / PyTorch recipe time: {fast_s / torch_s:.2f}")
    write_json(args.out, {"machine": machine(), "runs": runs, "table": table,
                          "time_ratio": fast_s / torch_s})


if __name__ == "__main__":
    main()
