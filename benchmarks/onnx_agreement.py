"""ONNX export checked at full size: a trained model's ONNX file run by ONNX
Runtime against pyconv on the 10,000 MNIST test images, and the built-in
networks (random weights) on random inputs.

    pyconv train --checkpoint tutorial.npz            # 20,000 steps
    python benchmarks/onnx_agreement.py tutorial.npz --data-dir ../shared/data/mnist

Prints, and writes to benchmarks/results/onnx-agreement.json: for each model,
the largest |ONNX Runtime - pyconv| over the outputs (absolute, and relative
to the largest output), the images whose classes differ, and both runtimes'
inference speed (images/s, batch 1,000, the same threads).
"""
import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np
import onnxruntime as ort

import convcore
import pyconv
import pyconv.io.onnx

from _common import machine

HERE = os.path.dirname(os.path.abspath(__file__))


def _speed(fn, x, batch=1000):
    fn(x[:batch])
    start = time.perf_counter()
    for i in range(0, len(x), batch):
        fn(x[i:i + batch])
    return len(x) / (time.perf_counter() - start)


def compare(model, x, threads, labels=None):
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.onnx")
        pyconv.io.onnx.export(model, path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    run_onnx = lambda b: session.run(None, {"images": b})[0]    # noqa: E731
    y, y_onnx = model.predict(x), run_onnx(x)
    diff = np.abs(y - y_onnx)
    row = {"model": model.name, "images": len(x), "max_abs_diff": float(diff.max()),
           "max_rel_diff": float(diff.max() / max(1.0, np.abs(y).max())),
           "classes_differ": int(np.sum(y.argmax(1) != y_onnx.argmax(1))),
           "pyconv_images_per_s": _speed(model.predict, x),
           "onnxruntime_images_per_s": _speed(run_onnx, x)}
    if labels is not None:
        row["accuracy_pyconv"] = float(np.mean(y.argmax(1) == labels))
        row["accuracy_onnxruntime"] = float(np.mean(y_onnx.argmax(1) == labels))
    return row


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="a trained model (.npz) on MNIST")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    convcore.set_num_threads(args.threads)
    ds = pyconv.datasets.load("mnist", data_dir=args.data_dir)
    x_test = ds.x_test[..., None]
    rows = [compare(pyconv.load(args.model), x_test, args.threads, ds.y_test)]
    noise = np.random.default_rng(0).integers(0, 256, (2000, 28, 28, 1), dtype=np.uint8)
    for make in (pyconv.models.tutorial_cnn, pyconv.models.grokking_cnn, pyconv.models.lenet5):
        rows.append(compare(make(seed=1), noise, args.threads))
    for row in rows:
        print(json.dumps(row))
    out = {"machine": machine(), "threads": args.threads, "onnxruntime": ort.__version__,
           "command": " ".join(["python", *sys.argv]), "rows": rows}
    with open(os.path.join(HERE, "results", "onnx-agreement.json"), "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
