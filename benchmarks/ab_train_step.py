"""One measurement of an A/B comparison between two installs: the tutorial
network's train_step on random data in this process, and its peak memory.

    for r in 1 2 3 4; do
        echo "$(A/bin/python benchmarks/ab_train_step.py 2 50)" \
             "$(B/bin/python benchmarks/ab_train_step.py 2 50)"
    done

Arguments: threads (default 2), batch (default 50). Prints images/s (the
median of 40 steps, after 5) and the process's max RSS in MB. Each
measurement a fresh process, alternating the installs: on a noisy machine
the pairs say more than a table of medians over rounds.
"""
import resource
import sys
import time

import numpy as np

import convcore
import pyconv


def main():
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    batch = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    convcore.set_num_threads(threads)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = pyconv.models.tutorial_cnn(seed=0)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-4)
    for _ in range(5):
        model.train_step(x, y, opt)
    times = []
    for _ in range(40):
        t = time.perf_counter()
        model.train_step(x, y, opt)
        times.append(time.perf_counter() - t)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    print(f"{batch / np.median(times):.0f} img/s {rss} MB")


if __name__ == "__main__":
    main()
