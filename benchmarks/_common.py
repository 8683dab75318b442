"""Shared by the benchmark scripts: timing, machine description, table output."""
import json
import os
import platform
import time

import numpy as np


def median_seconds(fn, repeats=15, warmup=2, min_time=0.0):
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start < min_time:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def machine():
    """CPU, core count, versions and which BLAS kernel runs (threadpoolctl)."""
    import scipy.linalg.cython_blas  # noqa: F401 - load the BLAS convcore calls
    from threadpoolctl import threadpool_info
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    blas = [f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} "
            f"({os.path.basename(i.get('filepath', ''))}, {i.get('num_threads')} threads)"
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {
        "cpu": cpu, "cores": len(os.sched_getaffinity(0)), "python": platform.python_version(),
        "numpy": np.__version__, "blas": blas,
        "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE", "(unset)"),
        "OPENBLAS_L2_SIZE": os.environ.get("OPENBLAS_L2_SIZE", "(unset)"),
    }


def markdown_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def write_json(path, payload):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(tmp, path)


def tf_tutorial_model(tf):
    """The tutorial network in Keras, initialised as the tutorial (and pyconv) does."""
    init = dict(kernel_initializer=tf.keras.initializers.TruncatedNormal(stddev=0.1),
                bias_initializer=tf.keras.initializers.Constant(0.1))
    L = tf.keras.layers
    return tf.keras.Sequential([
        tf.keras.Input((28, 28, 1)),
        L.Conv2D(32, 5, padding="same", activation="relu", **init),
        L.MaxPool2D(2, padding="same"),
        L.Conv2D(64, 5, padding="same", activation="relu", **init),
        L.MaxPool2D(2, padding="same"), L.Flatten(),
        L.Dense(1024, activation="relu", **init), L.Dropout(0.5), L.Dense(10, **init)])
