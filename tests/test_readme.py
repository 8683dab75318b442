"""The README's and the documentation's claims that a test can check: the
Python examples run as written and print what they say, and the README's
option table names exactly the options `pyconv train` has."""
import os
import pathlib
import re
import subprocess
import sys

import pytest

from conftest import MNIST_DIR

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"
DOCS = README.parent / "docs"
pytestmark = pytest.mark.skipif(not README.exists(), reason="no README beside tests/")


def test_python_example_runs_and_prints_what_the_readme_says(tmp_path):
    text = README.read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    said = re.search(r"It prints `(loss [0-9.]+, test accuracy [0-9.]+)`", text).group(1)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR))
    assert proc.returncode == 0, proc.stderr
    got = proc.stdout.strip()
    assert re.fullmatch(r"loss [0-9.]+, test accuracy [0-9.]+", got), got
    # the full MNIST gives the README's accuracy (to BLAS rounding: another OpenBLAS
    # kernel may move a digit); the 5,000-image sample, a line of its form
    if os.path.normpath(MNIST_DIR).endswith(os.path.join("shared", "data", "mnist")):
        assert abs(float(got.rsplit(" ", 1)[1]) - float(said.rsplit(" ", 1)[1])) <= 0.01, got
    assert float(got.rsplit(" ", 1)[1]) > 0.9
    assert (tmp_path / "model.npz").exists()


def test_modern_cnn_example_runs_and_prints_what_the_page_says(tmp_path):
    """docs/modern-cnns.md's example: fast_cnn, AdamW, one-cycle, label
    smoothing and augmentation through fit, one epoch."""
    text = (DOCS / "modern-cnns.md").read_text()
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    said = float(re.search(r"It prints `test accuracy ([0-9.]+)`", text).group(1))
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600, env=dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR))
    assert proc.returncode == 0, proc.stderr
    got = re.fullmatch(r"test accuracy ([0-9.]+)", proc.stdout.strip())
    assert got, proc.stdout
    if os.path.normpath(MNIST_DIR).endswith(os.path.join("shared", "data", "mnist")):
        assert abs(float(got.group(1)) - said) <= 0.003, got.group(0)
    assert float(got.group(1)) > 0.97


def test_option_table_lists_every_train_option():
    from pyconv.cli import build_parser
    parser = build_parser()
    train = parser._subparsers._group_actions[0].choices["train"]
    options = {s for a in train._actions for s in a.option_strings if s.startswith("--")}
    options.discard("--help")
    table = README.read_text().split("| option of `train` |")[1].split("\n\n")[0]
    assert set(re.findall(r"`(--[a-z-]+)", table)) == options


def test_onnx_example_runs_and_prints_what_the_readme_says(tmp_path):
    """docs/onnx.md's commands up to `pyconv export`, then its five lines of
    ONNX Runtime (no pyconv in them) on the exported file."""
    pytest.importorskip("onnxruntime")
    text = (DOCS / "onnx.md").read_text()
    code = next(c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "onnxruntime" in c)
    said = re.search(r"# prints (\w+)", code).group(1)
    examples = README.parent / "examples"
    for cmd in ([sys.executable, str(examples / "make_shapes.py"), "shapes/"],
                [sys.executable, "-m", "pyconv", "train", "--model", str(examples / "lenet5.json"),
                 "--dataset", "shapes/", "--epochs", "20", "--checkpoint", "lenet5.npz"],
                [sys.executable, "-m", "pyconv", "export", "lenet5.npz", "lenet5.onnx"]):
        subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True, timeout=600)
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == said


@pytest.mark.parametrize("page", ["README.md", "docs/python-api.md"])
def test_graph_examples_run(page, tmp_path):
    """Each example that builds a graph (pyconv.Input) runs, and its model
    predicts ten classes."""
    text = (README.parent / page).read_text()
    blocks = [c for c in re.findall(r"```python\n(.*?)```", text, re.S) if "pyconv.Input" in c]
    assert blocks
    for code in blocks:
        check = ("\nimport numpy as np\n"
                 "assert model.predict(np.zeros((2, 28, 28, 1), np.uint8)).shape == (2, 10)\n"
                 "print('ok')")
        proc = subprocess.run([sys.executable, "-c", code + check], cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr
