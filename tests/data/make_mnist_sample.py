"""Write tests/data/mnist-sample: the first 4,000 training and 1,000 test images
of the real MNIST, in its IDX format (gzip), with the SHA-256 of each
decompressed payload in SHA256SUMS. The test suite falls back to this sample
when the full files are absent (a fresh clone anywhere, offline).

    python tests/data/make_mnist_sample.py [MNIST_DIR]   (default ../shared/data/mnist)
"""
import gzip
import hashlib
import os
import struct
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "mnist-sample")
COUNTS = {"train": 4000, "t10k": 1000}


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def idx_bytes(a):
    magic = 0x800 | a.ndim
    return struct.pack(f">I{a.ndim}I", magic, *a.shape) + a.tobytes()


def main(src):
    os.makedirs(OUT, exist_ok=True)
    sums = []
    for prefix, n in COUNTS.items():
        for kind, nd in (("images", 3), ("labels", 1)):
            name = f"{prefix}-{kind}-idx{nd}-ubyte.gz"
            payload = idx_bytes(read_idx(os.path.join(src, name))[:n])
            with open(os.path.join(OUT, name), "wb") as f:   # mtime 0: the same bytes each run
                with gzip.GzipFile(fileobj=f, mode="wb", compresslevel=9, mtime=0) as gz:
                    gz.write(payload)
            sums.append(f"{hashlib.sha256(payload).hexdigest()}  {name}")
    with open(os.path.join(OUT, "SHA256SUMS"), "w") as f:
        f.write("# SHA-256 of each file's decompressed IDX payload\n" + "\n".join(sums) + "\n")
    print("\n".join(sums))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else
         os.path.join(HERE, "..", "..", "..", "shared", "data", "mnist"))
