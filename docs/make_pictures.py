"""The pictures in the README and docs/: the trained tutorial network's report,
its first layer's kernels and its training curves, and a screenshot of the
report page in headless Chromium (Debian's `chromium`), with the explorer
showing one value being made.

    pyconv train --checkpoint tutorial.npz --metrics tutorial.json     # 20,000 steps
    python docs/make_pictures.py tutorial.npz tutorial.json --data-dir ../shared/data/mnist

writes docs/kernels-tutorial.png, docs/curves-tutorial.png,
docs/report-tutorial.png (the report itself goes to a temporary folder), and
docs/kernels-tutorial-change.png: what training changed in the first layer's
kernels, trained minus their initialisation (the run's seed), and prints how
much that is.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

import pyconv
import pyconv.viz.plot

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model")
    p.add_argument("metrics")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--height", type=int, default=6600, help="screenshot height (pixels)")
    args = p.parse_args(argv)
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("needs Debian's chromium: apt-get install chromium")
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-m", "pyconv", "report", args.model, "--metrics", args.metrics,
               "--out", out] + (["--data-dir", args.data_dir] if args.data_dir else [])
        subprocess.run(cmd, check=True)
        shutil.copy(os.path.join(out, "kernels-0.png"), os.path.join(HERE, "kernels-tutorial.png"))
        shutil.copy(os.path.join(out, "curves.png"), os.path.join(HERE, "curves-tutorial.png"))
        shot = os.path.join(HERE, "report-tutorial.png")
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu",
                        "--hide-scrollbars", f"--window-size=1200,{args.height}",
                        f"--screenshot={shot}", "file://" + os.path.join(out, "index.html")],
                       check=True, capture_output=True)
    change(args.model, args.metrics)
    for name in ("kernels-tutorial.png", "curves-tutorial.png", "report-tutorial.png",
                 "kernels-tutorial-change.png"):
        print(os.path.join(HERE, name))


def change(model_path, metrics_path):
    """The first layer's kernels, trained minus initial, as a picture and in numbers."""
    with open(metrics_path) as f:
        seed = json.load(f)["seed"]
    trained = pyconv.load(model_path)
    start = pyconv.models.tutorial_cnn(seed=seed)
    w, w0 = trained.layers[0].params["w"].value, start.layers[0].params["w"].value.copy()
    d = w - w0
    start.layers[0].params["w"].value[...] = d
    fig = pyconv.viz.plot.kernels(start, 0)
    fig.axes[0].set_title("layer 0: what 20,000 steps added to the random start", fontsize=10)
    fig.savefig(os.path.join(HERE, "kernels-tutorial-change.png"), dpi=pyconv.viz.plot.DPI)

    def neighbours(a):
        return (np.corrcoef(a[:-1].ravel(), a[1:].ravel())[0, 1],
                np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1])
    print(f"layer 0: |trained - start| / |start| = "
          f"{np.linalg.norm(d) / np.linalg.norm(w0):.3f}; correlation with the start "
          f"{np.corrcoef(w.ravel(), w0.ravel())[0, 1]:.3f}; neighbouring weights' correlation "
          "(down, across): the change %.2f, %.2f; the start %.2f, %.2f"
          % (*neighbours(d), *neighbours(w0)))


if __name__ == "__main__":
    main()
