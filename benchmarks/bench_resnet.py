"""A residual network with batch normalisation (pyconv's resnet8) in pyconv,
PyTorch and TensorFlow/Keras, same cores, one sitting.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_resnet.py \\
        --out benchmarks/results/resnet-zen3.json

The network: stem conv 3x3 + BN + ReLU; three stages of one basic block
(conv 3x3 + BN + ReLU, conv 3x3 + BN, a 1x1 conv + BN shortcut where the
shape changes, add, ReLU) of --widths channels (default 32, 64, 128, the
built-in resnet8's; 16, 32, 64 is Keras' CIFAR example's), stride 2 into the
second and third; global average pooling; dense 10. 28x28x1 inputs. Training steps
(Adam, batch 64) and inference (batch 256) on 1 and 2 threads; PyTorch in
channels_last (its faster layout on CPUs), Keras in NHWC with a tf.function
step. PyTorch runs in both of its layouts (channels_last and NCHW), and
within each round the faster one counts: its better layout, setting by
setting. Each framework and setting in its own process, in rounds that
interleave the frameworks; each figure is the median over rounds of the
median step time of 20 steps, each ratio the median of the ratios within a
round. Prints a Markdown table.

--precision bf16: every framework in bf16 (pyconv's precision "bf16",
PyTorch's autocast(bfloat16), Keras' mixed_bfloat16), and pyconv in fp32
beside them ("pyconv-fp32"): the ratios are pyconv's bf16 over each.
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_resnet.py \
        --precision bf16 --out benchmarks/results/resnet8-bf16.json
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, markdown_table, write_json  # noqa: E402

SETTINGS = [("train", 64, 1), ("train", 64, 2), ("infer", 256, 1), ("infer", 256, 2)]
WIDTHS = (32, 64, 128)   # --widths
PRECISION = "fp32"       # --precision


def _data(batch):
    rng = np.random.default_rng(0)
    return rng.random((batch, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, batch)


def _pyconv(mode, batch, threads, precision=None):
    import convcore
    import pyconv
    convcore.set_num_threads(threads)
    x, y = _data(batch)
    model = pyconv.models.resnet8(seed=0, widths=WIDTHS).set_precision(precision or PRECISION)
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-3)
    if mode == "train":
        return lambda: model.train_step(x, y, opt), pyconv.__version__
    return lambda: model.predict(x, batch_size=batch), pyconv.__version__


def _torch(mode, batch, threads, layout="channels_last"):
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(0)

    def conv_bn(cin, cout, k, stride):
        return [nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout)]

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.body = nn.Sequential(*conv_bn(cin, cout, 3, stride), nn.ReLU(),
                                      *conv_bn(cout, cout, 3, 1))
            self.short = (nn.Identity() if stride == 1 and cin == cout
                          else nn.Sequential(*conv_bn(cin, cout, 1, stride)))

        def forward(self, x):
            return torch.relu(self.body(x) + self.short(x))

    layers, cin = [*conv_bn(1, WIDTHS[0], 3, 1), nn.ReLU()], WIDTHS[0]
    for i, w in enumerate(WIDTHS):
        layers.append(Block(cin, w, 1 if i == 0 else 2))
        cin = w
    model = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))
    memory_format = {"channels_last": torch.channels_last,
                     "nchw": torch.contiguous_format}[layout]
    model = model.to(memory_format=memory_format)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    xs, ys = _data(batch)
    x = torch.tensor(xs.transpose(0, 3, 1, 2)).contiguous(memory_format=memory_format)
    y = torch.tensor(ys)

    def cast():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if PRECISION == "bf16"
                else contextlib.nullcontext())

    def train():
        model.train()
        opt.zero_grad(set_to_none=True)
        with cast():
            loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        return loss.item()

    def infer():
        model.eval()
        with torch.inference_mode(), cast():
            return model(x).float().numpy()

    return (train if mode == "train" else infer), torch.__version__


def _keras_resnet8(tf):
    L = tf.keras.layers

    def conv_bn(h, filters, k, stride, relu=True):
        h = L.Conv2D(filters, k, stride, "same", use_bias=False)(h)
        h = L.BatchNormalization(momentum=0.9, epsilon=1e-5)(h)
        return L.ReLU()(h) if relu else h

    x = tf.keras.Input((28, 28, 1))
    h = conv_bn(x, WIDTHS[0], 3, 1)
    for i, w in enumerate(WIDTHS):
        stride = 1 if i == 0 else 2
        body = conv_bn(conv_bn(h, w, 3, stride), w, 3, 1, relu=False)
        short = h if stride == 1 and h.shape[-1] == w else conv_bn(h, w, 1, stride, False)
        h = L.ReLU()(L.Add()([body, short]))
    out = L.Dense(10)(L.GlobalAveragePooling2D()(h))
    return tf.keras.Model(x, out)


def _tensorflow(mode, batch, threads):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    if PRECISION == "bf16":
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(0)
    model = _keras_resnet8(tf)
    opt = tf.keras.optimizers.Adam(1e-3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    xs, ys = _data(batch)
    x, y = tf.constant(xs), tf.constant(ys)

    @tf.function
    def train_step():
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    @tf.function
    def infer():
        return model(x, training=False)

    fn = train_step if mode == "train" else infer
    return (lambda: fn().numpy()), tf.__version__


def worker(framework, mode, batch, threads, steps):
    make = {"pyconv": _pyconv, "torch": _torch, "tensorflow": _tensorflow,
            "torch-nchw": lambda *a: _torch(*a, layout="nchw"),
            "pyconv-fp32": lambda *a: _pyconv(*a, precision="fp32")}[framework]
    fn, version = make(mode, batch, threads)
    for _ in range(5):
        fn()
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    return {"framework": framework, "version": version, "mode": mode, "batch": batch,
            "threads": threads, "median_s": med, "images_per_s": batch / med}


def run_worker(framework, mode, batch, threads, steps):
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", framework, mode, str(batch),
           str(threads), str(steps), "--widths", *map(str, WIDTHS), "--precision", PRECISION]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"framework": framework, "error": out.stderr.strip().splitlines()[-1:]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    global WIDTHS, PRECISION
    ap = argparse.ArgumentParser(description="resnet8 in pyconv, PyTorch and TensorFlow")
    ap.add_argument("--worker", nargs=5, metavar=("FW", "MODE", "BATCH", "THREADS", "STEPS"))
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=os.path.join(HERE, "results", "resnet.json"))
    ap.add_argument("--widths", nargs=3, type=int, default=list(WIDTHS),
                    help="the three stages' channels (default: 32 64 128)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: every framework in bf16, pyconv in fp32 too (see above)")
    args = ap.parse_args()
    WIDTHS, PRECISION = tuple(args.widths), args.precision
    if args.worker:
        fw, mode, batch, threads, steps = args.worker
        print(json.dumps(worker(fw, mode, int(batch), int(threads), int(steps))))
        return
    frameworks = ["pyconv", "torch", "tensorflow"]     # torch: its better layout, below
    extra = ["pyconv-fp32"] if PRECISION == "bf16" else []
    frameworks += extra
    rounds = []
    for r in range(args.rounds):
        for mode, batch, threads in SETTINGS:
            for fw in ["pyconv", "torch", "torch-nchw", "tensorflow", *extra]:
                res = run_worker(fw, mode, batch, threads, args.steps)
                res.update(round=r, setting=f"{mode} b{batch} {threads}t")
                rounds.append(res)
                print(json.dumps(res), file=sys.stderr)
    runs, rounds = rounds, _faster_torch_layout(rounds)   # all runs (the JSON); those that count
    rows, summary = [], {}
    for mode, batch, threads in SETTINGS:
        key = f"{mode} b{batch} {threads}t"
        layouts = [x["layout"] for x in rounds if x["setting"] == key and "layout" in x]
        speed = {fw: float(np.median([r["images_per_s"] for r in rounds
                                      if r["setting"] == key and r["framework"] == fw
                                      and "images_per_s" in r])) for fw in frameworks}
        ratio = {fw: float(np.median([
            a["images_per_s"] / b["images_per_s"] for a in rounds for b in rounds
            if a["setting"] == b["setting"] == key and a["round"] == b["round"]
            and a["framework"] == "pyconv" and b["framework"] == fw])) for fw in frameworks[1:]}
        summary[key] = {"images_per_s": speed, "pyconv_over": ratio,
                        "torch_layout_per_round": layouts}
        rows.append([key, *(f"{speed[fw]:,.0f}" for fw in frameworks),
                     *(f"{ratio[fw]:.2f}x" for fw in frameworks[1:]),
                     ", ".join(f"{n} {lay}" for lay, n in sorted(
                         {lay: layouts.count(lay) for lay in layouts}.items()))])
    table = markdown_table(["setting", "pyconv img/s", "PyTorch img/s (better layout)",
                            "TensorFlow img/s", *(["pyconv fp32 img/s"] if extra else []),
                            "pyconv / PyTorch", "pyconv / TensorFlow",
                            *(["pyconv / its fp32"] if extra else []),
                            "PyTorch's better layout (rounds)"], rows)
    print(table)
    write_json(args.out, {"machine": machine(), "widths": WIDTHS, "precision": PRECISION,
                          "summary": summary,
                          "runs": runs, "table": table})


def _faster_torch_layout(runs):
    """runs with PyTorch's two runs of each setting and round ("torch":
    channels_last, "torch-nchw") replaced by the faster one, as "torch" with
    its "layout"."""
    out, pairs = [], {}
    for x in runs:
        if x["framework"] in ("torch", "torch-nchw") and "images_per_s" in x:
            pairs.setdefault((x["setting"], x["round"]), []).append(x)
        elif x["framework"] != "torch-nchw":
            out.append(x)
    for both in pairs.values():
        best = max(both, key=lambda x: x["images_per_s"])
        out.append({**best, "framework": "torch",
                    "layout": "channels_last" if best["framework"] == "torch" else "nchw"})
    return out


if __name__ == "__main__":
    main()
