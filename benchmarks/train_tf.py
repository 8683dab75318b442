"""The tutorial network trained by TensorFlow on the same data, split and budget
as `pyconv train` (the baseline for pyconv's figures on Fashion-MNIST and MNIST).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/train_tf.py \\
        --dataset fashion-mnist --data-dir ../shared/data/fashion-mnist [--steps 20000]

Needs tensorflow-cpu. 20,000 steps of 50 shuffled images (the first twelfth of
the training file held out, as pyconv's recipe), Adam 1e-4, intra-op threads
as --threads; the images are scaled to [0, 1] once up front (TensorFlow's
usual input pipeline). Prints the test accuracy and the wall time of the
training steps, and writes them as JSON with --out.
"""
import argparse
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import pyconv  # noqa: E402

from _common import machine, tf_tutorial_model  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="fashion-mnist")
    ap.add_argument("--data-dir")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(args.seed)
    ds = pyconv.datasets.load(args.dataset, data_dir=args.data_dir, progress=False)
    held = len(ds.x_train) // 12
    x = (ds.x_train[held:].astype(np.float32) / 255)[..., None]
    y = ds.y_train[held:].astype(np.int64)
    x_test = (ds.x_test.astype(np.float32) / 255)[..., None]
    model = tf_tutorial_model(tf)
    opt = tf.keras.optimizers.Adam(1e-4, epsilon=1e-8)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(xb, yb):
        with tf.GradientTape() as tape:
            loss = loss_fn(yb, model(xb, training=True))
        opt.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                model.trainable_variables))
        return loss

    rng = np.random.default_rng(args.seed)
    order, pos = rng.permutation(len(x)), 0
    t0 = time.perf_counter()
    for _ in range(args.steps):
        if pos + 50 > len(order):
            order, pos = rng.permutation(len(x)), 0
        idx = order[pos:pos + 50]
        pos += 50
        step(x[idx], y[idx])
    seconds = time.perf_counter() - t0
    logits = np.concatenate([model(x_test[i:i + 1000], training=False).numpy()
                             for i in range(0, len(x_test), 1000)])
    acc = float(np.mean(logits.argmax(1) == ds.y_test))
    result = {"framework": f"tensorflow {tf.__version__}", "dataset": args.dataset,
              "steps": args.steps, "batch_size": 50, "threads": args.threads,
              "test_accuracy": acc, "train_seconds": seconds,
              "images_per_second": args.steps * 50 / seconds, "machine": machine()}
    print(f"test accuracy: {acc:.4f} (tensorflow, {args.dataset}, {args.steps} steps, "
          f"{seconds:.1f} s, {args.steps * 50 / seconds:.0f} images/s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
