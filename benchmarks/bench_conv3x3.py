"""The 3x3 convolutions of residual blocks: the direct vector kernel against
Winograd F(4x4, 3x3), forward and backward (dx and dw), on the vector set
this CPU runs, at resnet8's shapes.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_conv3x3.py \\
        --out benchmarks/results/conv3x3-zen3.json

Batch 128, stride 1, 'same' padding, random data; each figure the median of
15 calls on the threads convcore uses (2 on this project's machine). Prints a
Markdown table; a benchmark, not a test: nothing is asserted.
"""
import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convcore  # noqa: E402

from _common import machine, markdown_table, median_seconds, write_json  # noqa: E402

# (image side, channels in = out): resnet8's stride-1 3x3 convolutions at its
# widths 16, 32, 64 (Keras') and 32, 64, 128 (the built-in's)
SHAPES = [(28, 16), (14, 32), (7, 64), (28, 32), (14, 64), (7, 128)]


def _times(x, w, dy, winograd):
    """Median milliseconds of the forward and the backward pass."""
    convcore.set_kernels("simd", winograd=winograd)
    return [1e3 * median_seconds(lambda: convcore.conv2d_forward(x, w, padding="same")),
            1e3 * median_seconds(lambda: convcore.conv2d_backward(x, w, dy, padding="same"))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "conv3x3.json"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows, results = [], []
    for side, c in SHAPES:
        x = rng.standard_normal((args.batch, side, side, c)).astype(np.float32)
        w = (rng.standard_normal((3, 3, c, c)) * 0.1).astype(np.float32)
        dy = rng.standard_normal((args.batch, side, side, c)).astype(np.float32)
        ms = {wino: _times(x, w, dy, wino) for wino in (False, True)}
        convcore.set_kernels("auto")
        flops = 2 * args.batch * side * side * 9 * c * c / 1e9
        results.append({"side": side, "channels": c, "direct_ms": ms[False],
                        "winograd_ms": ms[True]})
        rows.append([f"{side}x{side}, {c} -> {c}",
                     f"{ms[False][0]:.2f} ({flops / ms[False][0] * 1e3:.0f} GFLOP/s)",
                     f"{ms[True][0]:.2f}", f"{ms[False][0] / ms[True][0]:.2f}x",
                     f"{ms[False][1]:.2f}", f"{ms[True][1]:.2f}",
                     f"{ms[False][1] / ms[True][1]:.2f}x"])
    table = markdown_table([f"shape (batch {args.batch})", "forward, direct (ms)",
                            "forward, Winograd", "speed-up", "backward, direct",
                            "backward, Winograd", "speed-up"], rows)
    print(table)
    write_json(args.out, {"machine": machine(), "threads": convcore.get_num_threads(),
                          "kernels": convcore.simd_supported()[:1], "results": results,
                          "table": table})


if __name__ == "__main__":
    main()
