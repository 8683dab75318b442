"""One measurement of an A/B comparison between two installs: a network's
train_step on random data in this process (the tutorial's, or resnet8's),
and its peak memory.

    for r in 1 2 3 4; do
        echo "$(A/bin/python benchmarks/ab_train_step.py 2 50)" \
             "$(B/bin/python benchmarks/ab_train_step.py 2 50)"
    done

Arguments: threads (default 2), batch (default 50), the network (tutorial,
the default, or resnet8: bench_resnet.py's, Adam), the precision (fp32, the
default, or bf16: bench_peers.py's and bench_resnet.py's), what runs (train,
the default: a train_step; or infer: predict on the batch). Prints images/s (the
median of 40 steps, after 5) and the process's max RSS in MB. Each
measurement a fresh process, alternating the installs: on a noisy machine
the pairs say more than a table of medians over rounds.
"""
import os
import resource
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_peers import _pyconv  # noqa: E402  (the same worker as bench_peers)
from bench_resnet import _pyconv as _resnet8  # noqa: E402  (and as bench_resnet)


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    network = sys.argv[3] if len(sys.argv) > 3 else "tutorial"
    precision = sys.argv[4] if len(sys.argv) > 4 else "fp32"
    mode = sys.argv[5] if len(sys.argv) > 5 else "train"
    if network not in ("tutorial", "resnet8"):
        sys.exit(f"ab_train_step.py: the network must be tutorial or resnet8, got {network!r}")
    if precision not in ("fp32", "bf16"):
        sys.exit(f"ab_train_step.py: the precision must be fp32 or bf16, got {precision!r}")
    if mode not in ("train", "infer"):
        sys.exit(f"ab_train_step.py: what runs must be train or infer, got {mode!r}")
    if network == "tutorial":
        step, _ = _pyconv(mode, batch, threads, bf16=precision == "bf16")
    else:
        step, _ = _resnet8(mode, batch, threads, precision)
    for _ in range(5):
        step()
    times = []
    for _ in range(40):
        t = time.perf_counter()
        step()
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{batch / np.median(times):.0f} img/s {rss} MB")


if __name__ == "__main__":
    main()
