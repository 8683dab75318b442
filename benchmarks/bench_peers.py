"""pyconv against TensorFlow and PyTorch on the tutorial CNN, same cores, one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_peers.py

Measures training-step images/s (batch 50 on 1 and 2 threads, batch 256 on 2)
and inference images/s (model.predict, batch 1000, 2 threads), median of 30
steps on random data, each framework and setting in its own process (thread
pools are fixed at start-up), in rounds that interleave the frameworks; each
figure is the median over the rounds, each ratio the median of the ratios
within a round. TensorFlow and PyTorch are measured when
importable, skipped with a note otherwise. Also: the float32 sgemm peak of the
BLAS convcore uses, measured in the same run, pyconv's fraction of it, the
per-layer breakdown and the peak memory (max RSS) of a training process.
Prints a Markdown table; writes benchmarks/results/peers.json and peers.md.

--isa avx2: every framework held to AVX2 as a CPU without AVX-512 runs it:
OpenBLAS held to its Haswell kernels (OPENBLAS_CORETYPE=Haswell, for pyconv
and the sgemm peak), pyconv on its AVX2 kernels (CONVCORE_MAX_ISA=avx2),
TensorFlow's oneDNN with ONEDNN_MAX_CPU_ISA=AVX2, PyTorch with
ATEN_CPU_CAPABILITY=avx2 and ONEDNN_MAX_CPU_ISA=AVX2; training at batch 50
and 256 and inference at batch 1,000, each on 1 and 2 threads. pyconv on
its BLAS kernels alone (set_kernels("blas"), "pyconv-blas") runs too: what
the AVX2 kernels add.

    env -u OPENBLAS_L2_SIZE python benchmarks/bench_peers.py --isa avx2 \
        --out benchmarks/results/peers-avx2.json

--precision bf16: the same settings in bf16 too: pyconv's precision "bf16"
where the CPU and build run it, else "bf16-emulated" (the version column
says which), TensorFlow's mixed_bfloat16 policy and PyTorch's
autocast(bfloat16), beside the three in fp32, at batch 50 and 256 and
inference at batch 1,000, each on 1 and 2 threads; the ratios are then
pyconv's bf16 over each other. On a CPU without AMX or AVX512-BF16 every framework's
bf16 is emulated (oneDNN converts and multiplies in fp32).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/bench_peers.py \
        --precision bf16 --out benchmarks/results/peers-bf16.json

--baseline PYTHON: also run pyconv as installed for another interpreter
("pyconv-baseline": an earlier commit, say) in the same rounds, the check
that a change slows nothing down.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _common import machine, markdown_table, tf_tutorial_model, write_json  # noqa: E402

TRAIN_MFLOP = 82.0      # per image per training step (forward 27.8 MFLOP)
INFER_MFLOP = 27.8
SETTINGS = [("train", 50, 1), ("train", 50, 2), ("train", 256, 2), ("infer", 1000, 2)]
ALL_SETTINGS = [("train", 50, 1), ("train", 50, 2), ("train", 256, 1), ("train", 256, 2),
                 ("infer", 1000, 1), ("infer", 1000, 2)]
AVX2_ENV = {"OPENBLAS_CORETYPE": "Haswell", "ONEDNN_MAX_CPU_ISA": "AVX2",
            "ATEN_CPU_CAPABILITY": "avx2", "CONVCORE_MAX_ISA": "avx2"}
FRAMEWORKS = ["pyconv", "tensorflow", "torch"]
BF16_FRAMEWORKS = ["pyconv-bf16", "pyconv", "tensorflow-bf16", "tensorflow", "torch-bf16", "torch"]


# ------------------------------------------------------------------ workers

def _pyconv(mode, batch, threads, kernels="auto", bf16=False):
    import convcore
    import pyconv
    convcore.set_num_threads(threads)
    convcore.set_kernels(kernels)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, batch)
    model = pyconv.models.tutorial_cnn(seed=0)
    if bf16:
        try:
            model.set_precision("bf16")
        except ValueError:          # no AMX or AVX512-BF16 (or no kernels for them)
            model.set_precision("bf16-emulated")
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-4)
    vector_set = getattr(convcore._kernels, "vector_set", None)   # (a --baseline may predate it)
    version = (f"{pyconv.__version__} ({vector_set() or 'BLAS'} kernels)" if vector_set
               else pyconv.__version__)
    if bf16:
        version = f"{version[:-1]}, {model.precision})"
    if mode == "train":
        return lambda: model.train_step(x, y, opt), version
    return lambda: model.predict(x, batch_size=batch), version


def _torch(mode, batch, threads, bf16=False):
    import contextlib

    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(3136, 1024), nn.ReLU(), nn.Dropout(0.5), nn.Linear(1024, 10))
    for m in model:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.trunc_normal_(m.weight, std=0.1, a=-0.2, b=0.2)
            nn.init.constant_(m.bias, 0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, eps=1e-8)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(batch, 1, 28, 28)
    y = torch.randint(0, 10, (batch,))

    def cast():
        return (torch.autocast("cpu", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    def train():
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

    return (train if mode == "train" else infer), torch.__version__ + (
        " autocast(bfloat16)" if bf16 else "")


def _tensorflow(mode, batch, threads, bf16=False):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    if bf16:
        tf.keras.mixed_precision.set_global_policy("mixed_bfloat16")
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.random.set_seed(0)
    model = tf_tutorial_model(tf)
    opt = tf.keras.optimizers.Adam(1e-4, epsilon=1e-8)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((batch, 28, 28, 1), dtype=np.float32))
    y = tf.constant(rng.integers(0, 10, batch))

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
    return (lambda: fn().numpy()), tf.__version__ + (" mixed_bfloat16" if bf16 else "")


def worker(framework, mode, batch, threads, steps):
    make = {"pyconv": _pyconv, "torch": _torch, "tensorflow": _tensorflow,
            "pyconv-blas": lambda *a: _pyconv(*a, kernels="blas"),
            "pyconv-bf16": lambda *a: _pyconv(*a, bf16=True),
            "tensorflow-bf16": lambda *a: _tensorflow(*a, bf16=True),
            "torch-bf16": lambda *a: _torch(*a, bf16=True)}[framework]
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
            "threads": threads, "median_s": med, "images_per_s": batch / med,
            "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


# ------------------------------------------------------------------ parent

def sgemm_peak(threads, n=2048, repeats=5):
    """GFLOP/s of the sgemm convcore calls (scipy's OpenBLAS), n x n x n."""
    from scipy.linalg.blas import sgemm
    from threadpoolctl import threadpool_limits
    a = np.asfortranarray(np.random.default_rng(0).random((n, n), dtype=np.float32))
    with threadpool_limits(threads, "blas"):
        sgemm(1.0, a, a)
        best = min(_time(lambda: sgemm(1.0, a, a)) for _ in range(repeats))
    return 2 * n**3 / best / 1e9


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def available(framework):
    if framework.startswith("pyconv"):
        return True
    mod = "tensorflow" if framework.startswith("tensorflow") else "torch"
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec('{mod}') is None)"
    return subprocess.run([sys.executable, "-c", code]).returncode == 0


BASELINE_PYTHON = None   # --baseline


def run_worker(framework, mode, batch, threads, steps):
    python, fw = ((BASELINE_PYTHON, "pyconv") if framework == "pyconv-baseline"
                  else (sys.executable, framework))
    cmd = [python, os.path.abspath(__file__), "--worker", fw, mode, str(batch),
           str(threads), str(steps)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return {"framework": framework, "error": out.stderr.strip().splitlines()[-1:]}
    return {**json.loads(out.stdout.strip().splitlines()[-1]), "framework": framework}


def main():
    ap = argparse.ArgumentParser(description="pyconv vs TensorFlow vs PyTorch")
    ap.add_argument("--worker", nargs=5, metavar=("FW", "MODE", "BATCH", "THREADS", "STEPS"))
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=5,
                    help="interleaved rounds over all frameworks (medians over the rounds)")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "peers.json"))
    ap.add_argument("--isa", choices=("native", "avx2"), default="native",
                    help="avx2: every framework held to AVX2 (see the module's docstring)")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: each framework in bf16 too (see the module's docstring)")
    ap.add_argument("--baseline", metavar="PYTHON",
                    help="also run pyconv as installed for this interpreter (pyconv-baseline)")
    args = ap.parse_args()
    if args.worker:
        fw, mode, batch, threads, steps = args.worker
        print(json.dumps(worker(fw, mode, int(batch), int(threads), int(steps))))
        return
    if args.isa == "avx2" and any(os.environ.get(k) != v for k, v in AVX2_ENV.items()):
        # OpenBLAS picks its kernels when it loads: start again with the variables set
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **AVX2_ENV})
    global SETTINGS, FRAMEWORKS, BASELINE_PYTHON
    if args.isa == "avx2":
        SETTINGS = ALL_SETTINGS
        FRAMEWORKS = ["pyconv", "pyconv-blas", "tensorflow", "torch"]
    if args.precision == "bf16":
        FRAMEWORKS = BF16_FRAMEWORKS
        SETTINGS = ALL_SETTINGS
    if args.baseline:
        BASELINE_PYTHON = args.baseline
        FRAMEWORKS = [*FRAMEWORKS, "pyconv-baseline"]

    m = machine()
    peak = {1: 0.0, 2: 0.0}
    notes = []
    frameworks = []
    for fw in FRAMEWORKS:
        if available(fw):
            frameworks.append(fw)
        else:
            notes.append(f"{fw}: not installed, skipped (pip install tensorflow-cpu "
                         "torch==2.13.0)")
    # Rounds interleave the frameworks, so that a slow spell of this shared
    # machine hits all of them alike. The table gives each setting's median over
    # the rounds, and each ratio is the median of the ratios within a round
    # (the two runs minutes apart at most), which a slow spell cannot bias.
    runs = {}      # (framework, mode, batch, threads) -> one result per round (None: failed)
    peak_rounds = {1: [], 2: []}
    for _ in range(args.rounds):
        for t in peak:   # the peak is measured in every round too; the best counts
            peak_rounds[t].append(sgemm_peak(t))
            peak[t] = max(peak_rounds[t])
        for mode, batch, threads in SETTINGS:
            for fw in frameworks:
                r = run_worker(fw, mode, batch, threads, args.steps)
                if "error" in r:
                    notes.append(f"{fw} {mode} b{batch} t{threads}: failed: {r['error']}")
                    r = None
                runs.setdefault((fw, mode, batch, threads), []).append(r)

    def speed(key):
        vals = [r["images_per_s"] for r in runs.get(key, []) if r]
        return float(np.median(vals)) if vals else None

    def ratio(key_a, key_b):
        vals = [a["images_per_s"] / b["images_per_s"]
                for a, b in zip(runs.get(key_a, []), runs.get(key_b, [])) if a and b]
        return float(np.median(vals)) if vals else None

    header = ["", *[f"{'train' if m_ == 'train' else 'inference'} b{b}, {t} thread{'s' * (t > 1)}"
                    for m_, b, t in SETTINGS]]
    rows = []
    for fw in FRAMEWORKS:
        cells = [f"{speed((fw, *s)):,.0f} img/s" if speed((fw, *s)) else "-" for s in SETTINGS]
        version = next((r["version"] for k, rs in runs.items() for r in rs
                        if r and k[0] == fw), "")
        rows.append([f"{fw} {version}", *cells])
    ratios = {}
    base = FRAMEWORKS[0]      # pyconv (pyconv-bf16 with --precision bf16)
    for peer in [fw for fw in FRAMEWORKS if fw != base]:
        cells = []
        for s in SETTINGS:
            q = ratio((base, *s), (peer, *s))
            ratios[f"{base}/{peer} {s[0]} b{s[1]} t{s[2]}"] = q
            cells.append(f"{q:.2f}x" if q else "-")
        rows.append([f"{base} / {peer}", *cells])
    cells = []
    for mode, batch, threads in SETTINGS:
        v = speed(("pyconv", mode, batch, threads))
        flops = (TRAIN_MFLOP if mode == "train" else INFER_MFLOP) * 1e6
        cells.append(f"{v * flops / 1e9:.0f} GFLOP/s = {v * flops / 1e9 / peak[threads]:.0%} "
                     "of peak" if v else "-")
    rows.append(["pyconv fraction of sgemm peak", *cells])
    scaling = ratio(("pyconv", "train", 50, 2), ("pyconv", "train", 50, 1))
    # the control: how far sgemm itself scaled on this machine, round by round
    sgemm_scaling = float(np.median([b / a for a, b in zip(peak_rounds[1], peak_rounds[2])]))

    from bench_layers import breakdown
    layers = breakdown(50, threads=2) if args.isa == "native" else {}
    total = sum(v["forward"] + v["backward"] for v in layers.values())
    layer_rows = [(n, f"{v['forward']:.2f}", f"{v['backward']:.2f}",
                   f"{100 * (v['forward'] + v['backward']) / total:.0f}%")
                  for n, v in layers.items()]
    mem_rows = [(f"{fw}", f"{max(r['max_rss_mb'] for r in rs if r):.0f} MB")
                for (fw, mode, b, t), rs in runs.items()
                if (mode, b, t) == ("train", 50, 2) and any(rs)]

    lines = [
        f"Machine: {m['cpu']}, {m['cores']} cores; BLAS: {'; '.join(m['blas'])}",
        *([f"Held to AVX2: {', '.join(f'{k}={v}' for k, v in AVX2_ENV.items())}"]
          if args.isa == "avx2" else []),
        f"OPENBLAS_CORETYPE={m['OPENBLAS_CORETYPE']}, OPENBLAS_L2_SIZE={m['OPENBLAS_L2_SIZE']}; "
        f"sgemm peak (scipy OpenBLAS, 2048^3): {peak[1]:.0f} GFLOP/s on 1 thread, "
        f"{peak[2]:.0f} on 2",
        f"Median of {args.steps} steps, random data; {args.rounds} rounds interleaving the "
        f"frameworks: each figure the median over the rounds, each ratio the median of the "
        f"ratios within a round; training {TRAIN_MFLOP} MFLOP/image, inference {INFER_MFLOP}.",
        "",
        markdown_table(header, rows), "",
        (f"pyconv 2 threads / 1 thread (train b50): {scaling:.2f}x; OpenBLAS sgemm (2048^3) "
         f"in the same rounds: {sgemm_scaling:.2f}x" if scaling else ""), "",
        *(["Per-layer breakdown, pyconv train step, batch 50, 2 threads (ms):", "",
           markdown_table(["layer", "forward", "backward", "share"], layer_rows), ""]
          if layer_rows else []),
        "Peak memory (max RSS of the process, train b50, 2 threads):", "",
        markdown_table(["framework", "max RSS"], mem_rows), "",
        *[f"Note: {n}" for n in notes],
    ]
    text = "\n".join(lines)
    print(text)
    write_json(args.out, {"machine": m, "isa": args.isa, "precision": args.precision,
                          "held_to_avx2": AVX2_ENV if args.isa == "avx2" else None,
                          "sgemm_peak_gflops": peak, "steps": args.steps,
                          "rounds": args.rounds,
                          "results": [r for rs in runs.values() for r in rs if r],
                          "sgemm_gflops_per_round": peak_rounds,
                          "median_ratios": ratios, "pyconv_2t_over_1t": scaling,
                          "sgemm_2t_over_1t": sgemm_scaling,
                          "layers_ms": layers, "notes": notes})
    with open(args.out.replace(".json", ".md"), "w") as f:
        f.write(text + "\n")


if __name__ == "__main__":
    main()
