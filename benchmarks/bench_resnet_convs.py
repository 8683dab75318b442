"""resnet8's convolutions one by one (the built-in's widths 32, 64, 128, batch
64): forward, backward, and backward without dx (dw and db alone), in a
precision, on 1 or more threads; with --baseline, the same calls of another
checkout's convcore (its src/ directory) in the same run, alternating.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_resnet_convs.py \\
        --precision bf16 --threads 1 --baseline /tmp/head/src

Each figure the median of 20 calls in its own process (a fresh one per
checkout and round, rounds alternating), then the median over the rounds;
random data. Prints a Markdown table; a benchmark, not a test: nothing is
asserted.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, markdown_table, median_seconds, write_json  # noqa: E402

# (name, x shape, kernel, C_out, stride): resnet8's convolutions past the stem
LAYERS = [("block 1 conv 3x3", (64, 28, 28, 32), 3, 32, 1),
          ("block 2 conv 3x3 /2", (64, 28, 28, 32), 3, 64, 2),
          ("block 2 shortcut 1x1 /2", (64, 28, 28, 32), 1, 64, 2),
          ("block 2 conv 3x3", (64, 14, 14, 64), 3, 64, 1),
          ("block 3 conv 3x3 /2", (64, 14, 14, 64), 3, 128, 2),
          ("block 3 shortcut 1x1 /2", (64, 14, 14, 64), 1, 128, 2),
          ("block 3 conv 3x3", (64, 7, 7, 128), 3, 128, 1)]


def _layer_ms(convcore, rng, shape, k, cout, stride, precision):
    """Milliseconds [forward, backward, backward without dx] of one layer."""
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((k, k, shape[3], cout), dtype=np.float32) * np.float32(0.1)
    kw = {"stride": stride, "padding": "same", "precision": precision}
    dy = rng.standard_normal(convcore.conv2d_forward(x, w, **kw).shape, dtype=np.float32)
    return [1e3 * median_seconds(f, repeats=20) for f in (
        lambda: convcore.conv2d_forward(x, w, **kw),
        lambda: convcore.conv2d_backward(x, w, dy, **kw),
        lambda: convcore.conv2d_backward(x, w, dy, need_dx=False, **kw))]


def _worker(precision, threads):
    import convcore
    convcore.set_num_threads(threads)
    rng = np.random.default_rng(0)
    return [_layer_ms(convcore, rng, *layer[1:], precision) for layer in LAYERS]


def _run(src, precision, threads):
    env = dict(os.environ, PYTHONPATH=src)
    res = subprocess.run([sys.executable, __file__, "--worker", precision, str(threads)],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--baseline", metavar="SRC", help="another checkout's src/ directory")
    ap.add_argument("--worker", nargs=2, metavar=("PRECISION", "THREADS"))
    ap.add_argument("--out", default=os.path.join(HERE, "results", "resnet-convs.json"))
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(_worker(args.worker[0], int(args.worker[1]))))
        return
    this = os.path.join(os.path.dirname(HERE), "src")
    srcs = {"this": this, **({"baseline": args.baseline} if args.baseline else {})}
    runs = {name: [] for name in srcs}
    for _ in range(args.rounds):
        for name, src in srcs.items():
            runs[name].append(_run(src, args.precision, args.threads))
    ms = {name: np.median(np.array(r), axis=0) for name, r in runs.items()}
    rows = []
    for i, (name, shape, _, cout, _) in enumerate(LAYERS):
        row = [f"{name}: {shape[1]}x{shape[2]}x{shape[3]} -> {cout}"]
        for j in range(3):
            row.append(f"{ms['this'][i][j]:.2f}" + (
                f" ({ms['baseline'][i][j]:.2f})" if "baseline" in ms else ""))
        rows.append(row)
    table = markdown_table([f"layer (batch 64, {args.precision}, {args.threads} thread(s))",
                            "forward (ms)", "backward", "backward, no dx"], rows)
    print(table + ("\n\n(in brackets: the baseline's)" if "baseline" in ms else ""))
    write_json(args.out, {"machine": machine(), "precision": args.precision,
                          "threads": args.threads, "layers": [list(lay) for lay in LAYERS],
                          "ms": {n: m.tolist() for n, m in ms.items()},
                          "baseline": args.baseline, "table": table})


if __name__ == "__main__":
    main()
