"""Train from a data set larger than it needs in memory: a folder of .npy files
(read a batch at a time by pyconv.datasets.NpyRows), here --gb gigabytes of
random 28x28 uint8 images written by this script (in blocks, never all in
memory), then `pyconv train` on it for a few hundred steps under
/usr/bin/time -v: the maximum resident set against the file size.

    python benchmarks/large_data_train.py --folder /tmp/pyconv-2gb [--gb 2] [--steps 300]
"""
import argparse
import os
import re
import subprocess
import sys

import numpy as np


def write(folder, gb, seed=0):
    n = int(gb * 2**30) // (28 * 28)
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = np.lib.format.open_memmap(os.path.join(folder, "x_train.npy"), "w+", np.uint8,
                                  (n, 28, 28))
    for i in range(0, n, 100_000):             # in blocks: never the whole set in memory
        x[i:i + 100_000] = rng.integers(0, 256, x[i:i + 100_000].shape, dtype=np.uint8)
    x.flush()
    del x
    np.save(os.path.join(folder, "y_train.npy"), rng.integers(0, 10, n).astype(np.uint8))
    np.save(os.path.join(folder, "x_test.npy"), rng.integers(0, 256, (1000, 28, 28), np.uint8))
    np.save(os.path.join(folder, "y_test.npy"), rng.integers(0, 10, 1000).astype(np.uint8))
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--folder", required=True)
    ap.add_argument("--gb", type=float, default=2.0)
    ap.add_argument("--steps", type=int, default=300)
    args = ap.parse_args()
    n = write(args.folder, args.gb)
    size = os.path.getsize(os.path.join(args.folder, "x_train.npy"))
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "pyconv", "train", "--dataset",
           args.folder, "--steps", str(args.steps), "--validation-split", "0.001",
           "--eval-every", str(args.steps), "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    print(proc.stdout.strip())
    print(f"{n:,} training images, x_train.npy {size / 2**30:.2f} GiB; maximum resident set "
          f"{rss / 1024:.0f} MiB ({rss * 1024 / size:.1%} of the file)")


if __name__ == "__main__":
    main()
