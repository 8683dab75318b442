"""Each convcore function against convcore.reference at the tutorial's shapes
(and batch normalisation at resnet8's).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_ops.py [--batch 50]

Prints a Markdown table (median milliseconds of convcore with its default
kernels, with them but no Winograd, and with BLAS only, of the reference, and
the speed-up) and writes benchmarks/results/ops.json. A benchmark, not a
test: nothing is asserted.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import convcore  # noqa: E402
import convcore.reference as ref  # noqa: E402

from _common import machine, markdown_table, median_seconds, write_json  # noqa: E402


def cases(n, rng):
    """(name, function, args) at the tutorial network's layers for batch n; the
    function is a convcore name (convcore.reference has the same) or a pair of
    callables (convcore, reference) for the fused operations."""
    def r(*shape, scale=1.0):
        return (rng.standard_normal(shape) * scale).astype(np.float32)
    x1, w1, b1 = r(n, 28, 28, 1), r(5, 5, 1, 32, scale=0.1), r(32)
    y1 = convcore.conv2d_forward(x1, w1, b1, padding="same", relu=True)
    p1, a1 = convcore.maxpool2d_forward(y1, 2, padding="same")
    w2, b2 = r(5, 5, 32, 64, scale=0.1), r(64)
    y2 = convcore.conv2d_forward(p1, w2, b2, padding="same", relu=True)
    p2, a2 = convcore.maxpool2d_forward(y2, 2, padding="same")
    f = p2.reshape(n, -1)
    w3, b3, w4, b4 = convcore.empty((3136, 1024)), r(1024), r(1024, 10, scale=0.1), r(10)
    w3[...] = r(3136, 1024, scale=0.1)
    h = convcore.linear_forward(f, w3, b3, relu=True)
    cols2 = convcore.im2col(p1, 5, 1, "same")
    state = [convcore.zeros(a.shape) for a in (w3, w3, b3, b3)]

    def conv_pool_rows(name, x, w, b, need_dx):
        """A convolution with the pool after it: the inference forward fused,
        and training (forward and backward) as four calls and fused."""
        def infer(mod):
            if mod is convcore:
                return lambda x, w, b: convcore.conv2d_maxpool_forward(
                    x, w, b, 1, "same", True, 2, None, "same")
            return lambda x, w, b: mod.maxpool2d_forward(
                mod.conv2d_forward(x, w, b, 1, "same", relu=True), 2, None, "same")[0]

        def train(mod):   # four separate calls
            def run(x, w, b):
                y = mod.conv2d_forward(x, w, b, 1, "same", relu=True)
                p, am = mod.maxpool2d_forward(y, 2, None, "same")
                dy = mod.maxpool2d_backward(p, am, y.shape, 2, None, "same")
                return mod.conv2d_backward(x, w, dy, 1, "same", need_dx, relu_y=y)
            return run

        def train_fused(x, w, b):
            p, am = convcore.conv2d_maxpool_forward(x, w, b, 1, "same", True, 2, None, "same",
                                                    return_argmax=True)
            return convcore.conv2d_maxpool_backward(x, w, p, am, 1, "same", 2, None, "same",
                                                    need_dx, relu_y=p)

        return [(f"{name} forward (inference)", (infer(convcore), infer(ref)), (x, w, b)),
                (f"{name} training, 4 calls (forward, backward)",
                 (train(convcore), train(ref)), (x, w, b)),
                (f"{name} training, fused (2 calls)", (train_fused, train(ref)), (x, w, b))]

    def bn_rows(hw, c):
        """resnet8's batch normalisation at hw x hw x c (training, with its ReLU)."""
        x, gamma, beta = r(n, hw, hw, c), r(c), r(c)
        _, mean, var = convcore.batchnorm_forward(x, gamma, beta, 1e-5, True)
        return [(f"batchnorm forward {hw}x{hw}x{c} (resnet8)", "batchnorm_forward",
                 (x, gamma, beta, 1e-5, True)),
                (f"batchnorm backward {hw}x{hw}x{c}", "batchnorm_backward",
                 (x, gamma, mean, var, r(n, hw, hw, c), 1e-5, True, beta))]

    def dense_adam(x, w, dy, b, mw, vw, mb, vb):   # the reference: the separate steps
        _, dw, db = ref.linear_backward(x, w, dy, relu_y=dy)
        ref.adam_update(w, dw, mw, vw, 1e-7)
        ref.adam_update(b, db, mb, vb, 1e-7)

    def fused_dense_adam(x, w, dy, b, mw, vw, mb, vb):
        convcore.linear_backward_adam(x, w, dy, b, mw, vw, mb, vb, 1e-7, relu_y=dy)

    return [
        ("im2col conv2 (5x5x32)", "im2col", (p1, 5, 1, "same")),
        ("col2im conv2 (5x5x32)", "col2im", (cols2, p1.shape, 5, 1, "same")),
        ("conv1 forward 5x5x1x32", "conv2d_forward", (x1, w1, b1, 1, "same")),
        ("conv1 backward (no dx)", "conv2d_backward", (x1, w1, y1, 1, "same", False)),
        ("pool1 forward 2x2", "maxpool2d_forward", (y1, 2, None, "same")),
        ("pool1 backward", "maxpool2d_backward", (p1, a1, y1.shape, 2, None, "same")),
        *conv_pool_rows("conv1 + pool1", x1, w1, b1, need_dx=False),
        ("conv2 forward 5x5x32x64", "conv2d_forward", (p1, w2, b2, 1, "same")),
        ("conv2 backward", "conv2d_backward", (p1, w2, y2, 1, "same")),
        *conv_pool_rows("conv2 + pool2", p1, w2, b2, need_dx=True),
        ("pool2 forward 2x2", "maxpool2d_forward", (y2, 2, None, "same")),
        ("pool2 backward", "maxpool2d_backward", (p2, a2, y2.shape, 2, None, "same")),
        ("dense1 forward 3136x1024", "linear_forward", (f, w3, b3)),
        ("dense1 backward", "linear_backward", (f, w3, h)),
        ("dense1 backward + Adam", (fused_dense_adam, dense_adam), (f, w3, h, b3, *state)),
        ("dense2 forward 1024x10", "linear_forward", (h, w4, b4)),
        ("dense2 backward", "linear_backward", (h, w4, r(n, 10))),
        *(row for hw, c in ((28, 32), (14, 64), (7, 128)) for row in bn_rows(hw, c)),
    ]


# column -> set_kernels(name, winograd)
KERNEL_SETS = {"auto": ("auto", True), "direct": ("auto", False), "blas": ("blas", True)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "ops.json"))
    args = ap.parse_args()
    if args.threads:
        convcore.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    rows, records = [], []
    for name, fn, a in cases(args.batch, rng):
        core, reference = (fn if isinstance(fn, tuple)
                           else (getattr(convcore, fn), getattr(ref, fn)))
        # convcore's default kernels, without Winograd, and BLAS only, alternated
        # call by call so that a slow spell of the machine hits all alike
        t = {col: [] for col in KERNEL_SETS}
        for _ in range(22):
            for col, setting in KERNEL_SETS.items():
                convcore.set_kernels(*setting)
                t0 = time.perf_counter()
                core(*a)
                t[col].append(time.perf_counter() - t0)
        t = {k: float(np.median(v[2:])) for k, v in t.items()}
        convcore.set_kernels("auto")
        t_ref = median_seconds(lambda reference=reference, a=a: reference(*a), repeats=5)
        rows.append((name, f"{t['auto'] * 1e3:.2f}", f"{t['direct'] * 1e3:.2f}",
                     f"{t['blas'] * 1e3:.2f}", f"{t_ref * 1e3:.2f}", f"{t_ref / t['auto']:.1f}x"))
        records.append({"op": name, "convcore_ms": t["auto"] * 1e3,
                        "convcore_no_winograd_ms": t["direct"] * 1e3,
                        "convcore_blas_ms": t["blas"] * 1e3, "reference_ms": t_ref * 1e3,
                        "speedup": t_ref / t["auto"]})
    m = machine()
    print(f"convcore vs convcore.reference, batch {args.batch}, "
          f"{convcore.get_num_threads()} threads, OpenMP {convcore.openmp_enabled()}, "
          f"simd kernels {convcore.simd_supported()}")
    print(f"CPU: {m['cpu']} ({m['cores']} cores); BLAS: {'; '.join(m['blas'])}")
    print(f"OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']} OPENBLAS_L2_SIZE={m['OPENBLAS_L2_SIZE']}\n")
    print(markdown_table(["operation", "convcore ms", "convcore ms, no Winograd",
                          "convcore ms, BLAS kernels", "reference ms", "speed-up"], rows))
    write_json(args.out, {"batch": args.batch, "threads": convcore.get_num_threads(),
                          "machine": m, "ops": records})


if __name__ == "__main__":
    main()
