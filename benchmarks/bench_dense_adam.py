"""What bounds bf16 training at batch 50: the tutorial's dense layer
(3136 -> 1024, 3.2 M weights) has its backward pass and Adam update
(`linear_backward_adam`) timed in fp32 and bf16, beside the Adam update
alone, each after the caches were flushed (as in a training step, where the
other layers' work pushes the weights and Adam's state out of cache).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_dense_adam.py [--threads 2]

Adam reads and writes the float32 weights and both of its float32 moments
(6 x 12.8 MB a step) whatever the precision of the products: that part
does not get faster in bf16. Prints milliseconds (medians) and the share
of the bf16 call that is the update alone. A benchmark: nothing asserted.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import convcore  # noqa: E402

from _common import machine  # noqa: E402


def median_ms(f, flush, repeats):
    """The median of `repeats` timings of f, each after flush()."""
    times = []
    for _ in range(repeats + 1):
        flush()
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1e3 * float(np.median(times[1:]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    convcore.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    n, d, f = 50, 3136, 1024
    x = rng.standard_normal((n, d), dtype=np.float32)
    w = rng.standard_normal((d, f), dtype=np.float32) * np.float32(0.02)
    dy = rng.standard_normal((n, f), dtype=np.float32)
    b, m_b, v_b = (np.zeros(f, np.float32) for _ in range(3))
    m_w, v_w = np.zeros_like(w), np.zeros_like(w)
    g = np.ones_like(w)
    junk = np.ones(64 << 20, np.float32)        # 256 MB, larger than any cache here

    def flush():
        junk[::16] += 1                         # a write to every cache line

    rows = {}
    for precision in ("fp32", "bf16"):
        rows[precision] = median_ms(lambda p=precision: convcore.linear_backward_adam(
            x, w, dy, b, m_w, v_w, m_b, v_b, 1e-6, precision=p), flush, args.repeats)
    adam = median_ms(lambda: convcore.adam_update(w, g, m_w, v_w, 1e-6), flush, args.repeats)
    m = machine()
    print(f"{m['cpu']}, {m['cores']} cores; dense 3136 -> 1024, batch {n}, "
          f"{args.threads} thread(s), caches flushed before each call:")
    print(f"  linear_backward_adam fp32  {rows['fp32']:7.2f} ms")
    print(f"  linear_backward_adam bf16  {rows['bf16']:7.2f} ms")
    print(f"  adam_update alone          {adam:7.2f} ms  "
          f"({adam / rows['bf16']:.0%} of the bf16 call, {adam / rows['fp32']:.0%} of fp32's)")


if __name__ == "__main__":
    main()
