"""Pictures (pyconv.viz.plot), the report page (pyconv report) and TensorBoard
scalars (--tensorboard): what the pictures show is read back and compared
with the model's own numbers; the page runs in a real headless Chromium."""
import io
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import pyconv
from pyconv.layers import Conv2D, Dense, Flatten, MaxPool2D

from conftest import MNIST_DIR
from helpers import pyconv as pyconv_cli

matplotlib = pytest.importorskip("matplotlib")
plot = pytest.importorskip("pyconv.viz.plot")
from PIL import Image  # noqa: E402  (after the skip: Pillow comes with the test extra)


def png_of(fig):
    """The figure as saved, read back: (RGB array, the figure) - transforms
    hold for the saved pixels after savefig at the figure's dpi."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=fig.dpi)
    return np.asarray(Image.open(buf).convert("RGB")).astype(int)


def pixel_at(rgb, fig, ax, x, y):
    """The saved PNG's colour at data coordinates (x, y) of ax."""
    px, py = ax.transData.transform((x, y))
    return rgb[int(round(rgb.shape[0] - py)), int(round(px))]


def expected_colour(image, value):
    return (np.array(image.cmap(image.norm(value))[:3]) * 255).round().astype(int)


def _model_with_kernels(c_in, f, k=3):
    model = pyconv.Sequential([Conv2D(f, k, use_bias=False)], input_shape=(8, 8, c_in))
    rng = np.random.default_rng(7)
    model.layers[0].params["w"].value[...] = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0],
                                                        size=(k, k, c_in, f))
    return model


@pytest.mark.parametrize("c_in, f", [(1, 6), (3, 5)])
def test_kernel_grid_shows_the_kernels_weights(c_in, f):
    """Every weight of every kernel, read from the PNG at its cell, has the
    colour of its value on the shared scale (one input channel: kernels in a
    near-square grid; several: a row per input channel, a column per kernel)."""
    model = _model_with_kernels(c_in, f)
    w = model.layers[0].params["w"].value
    fig = plot.kernels(model)
    rgb = png_of(fig)
    ax = fig.axes[0]
    image = ax.images[0]
    assert image.norm.vmin == -1 and image.norm.vmax == 1          # one scale, about 0
    cols = int(np.ceil(np.sqrt(f))) if c_in == 1 else f
    for c in range(c_in):
        for k in range(f):
            cell = c * f + k
            r0, c0 = (cell // cols) * 4, (cell % cols) * 4       # 3x3 cells and 1 gap
            for a in range(3):
                for b in range(3):
                    got = pixel_at(rgb, fig, ax, c0 + b, r0 + a)
                    want = expected_colour(image, w[a, b, c, k])
                    assert np.abs(got - want).max() <= 2, (c, k, a, b, got, want)


def test_feature_maps_of_a_graph_show_every_node():
    """A graph with a skip connection and a branch: a panel for every node
    whose output is an image (the Add and the Concatenate among them), each
    that node's output."""
    from test_graph import skip_and_branch
    model = skip_and_branch(seed=1)
    x = np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)
    fig = plot.feature_maps(model, x)
    images = [(n, y[0]) for n, y in model.node_outputs(model.prepare(x[None, ..., None]))
              if y.ndim == 4]
    titles = [ax.get_title() for ax in fig.axes if ax.images][1:]
    assert len(titles) == len(images) >= 8
    assert any("(Add)" in t for t in titles) and any("(Concatenate)" in t for t in titles)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images][1:]
    for got, (_, y) in zip(shown, images):
        np.testing.assert_array_equal(got, plot.mosaic(y.transpose(2, 0, 1),
                                                       min(y.shape[2], 16)))


def test_feature_maps_are_the_layers_outputs():
    model = pyconv.Sequential([Conv2D(3, 3, activation="relu"), MaxPool2D(2), Flatten(),
                               Dense(2)], input_shape=(6, 6, 1), seed=1)
    x = np.random.default_rng(0).integers(0, 256, (6, 6), dtype=np.uint8)
    fig = plot.feature_maps(model, x)
    conv = model.layers[0](model.prepare(x[None]))
    pool = model.layers[1](conv)
    shown = [ax.images[0].get_array() for ax in fig.axes if ax.images]
    np.testing.assert_array_equal(shown[0], x / np.float32(255))
    for got, y in zip(shown[1:], (conv[0], pool[0])):
        np.testing.assert_array_equal(got, plot.mosaic(y.transpose(2, 0, 1), 3))


def _one_hot_model(classes=3):
    """A model whose prediction is the position of its input's largest entry."""
    model = pyconv.Sequential([Dense(classes, use_bias=False)], input_shape=(classes,))
    model.layers[0].params["w"].value[...] = np.eye(classes)
    return model


def test_confusion_matrix_has_the_known_counts():
    y_true = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    y_pred = np.array([0, 1, 0, 1, 1, 2, 0, 2, 1])
    x = np.eye(3, dtype=np.float32)[y_pred]
    model = _one_hot_model()
    fig = plot.confusion(model, x, y_true)
    want = [[2, 1, 0], [0, 2, 0], [1, 1, 2]]
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), want)
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text()
             for t in fig.axes[0].texts}
    assert texts == {(t, p): str(want[t][p]) for t in range(3) for p in range(3)}
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["0 (66.7%)", "1 (100.0%)", "2 (50.0%)"]


def test_mistakes_are_the_most_confident_wrong_predictions():
    model = _one_hot_model()
    x = np.array([[5, 0, 0], [0, 9, 0], [0, 0, 2], [3, 0, 0], [0, 1, 0]], np.float32)
    y = np.array([1, 0, 2, 0, 2])       # wrong: 0 (p high), 1 (highest), 4 (lowest)
    idx, pred, prob = plot.worst_mistakes(model, x, y)
    assert list(idx) == [1, 0, 4] and list(pred) == [1, 0, 1]
    assert prob[0] > prob[1] > prob[2]
    titles = [ax.get_title() for ax in plot.mistakes(model, x, y).axes if ax.get_title()]
    assert titles[0] == f"0 -> 1\n({prob[0]:.2f})"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A short `pyconv train` with --metrics and --tensorboard, as a user runs it."""
    out = tmp_path_factory.mktemp("run")
    pyconv_cli("train", "--model", "grokking", "--steps", "60", "--eval-every", "20",
               "--lr", "0.5", "--checkpoint", str(out / "g.npz"), "--metrics",
               str(out / "run.json"), "--tensorboard", str(out / "tb"))
    return out


def test_curves_show_the_metrics_files_figures(run):
    metrics = json.loads((run / "run.json").read_text())
    *evaluations, test = metrics["history"]
    fig = plot.curves(str(run / "run.json"))
    lines = {(ax.get_ylabel(), line.get_label()): line for ax in fig.axes
             for line in ax.get_lines()}
    for (panel, label), key in [(("loss", "train"), "train_loss"),
                                (("loss", "validation"), "validation_loss"),
                                (("accuracy", "train"), "train_accuracy"),
                                (("accuracy", "validation"), "validation_accuracy"),
                                (("learning rate", "_child0"), "lr")]:
        line = lines[(panel, label)]
        assert list(line.get_xdata()) == [h["step"] for h in evaluations]
        assert list(line.get_ydata()) == [h[key] for h in evaluations]
    point = lines[("accuracy", "test")]
    assert (list(point.get_xdata()), list(point.get_ydata())) == ([60], [test["test_accuracy"]])


def test_tensorboard_reader_reads_back_the_scalars(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    metrics = json.loads((run / "run.json").read_text())
    events = EventAccumulator(str(run / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "accuracy/validation", "learning_rate", "images_per_second",
            "accuracy/test"} <= tags
    for tag, key in [("loss/train", "train_loss"), ("accuracy/validation",
                                                    "validation_accuracy"),
                     ("learning_rate", "lr"), ("accuracy/test", "test_accuracy")]:
        want = [(h["step"], h[key]) for h in metrics["history"] if key in h]
        got = [(e.step, e.value) for e in events.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want]
        np.testing.assert_allclose([v for _, v in got], [v for _, v in want], rtol=1e-6)


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not (chromium and driver):
        pytest.skip("needs the system tool(s) chromium and chromedriver: apt-get install "
                    "chromium chromium-driver")
    opts = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1200,900",
                "--allow-file-access-from-files"):
        opts.add_argument(arg)
    opts.binary_location = chromium
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


def test_report_page_in_a_real_browser(run, tmp_path):
    """pyconv report's page in headless Chromium: every image loaded, no console
    error; a click on a feature-map pixel shows the input window it came from
    and recomputes the value the network computed."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    out = tmp_path / "report"
    printed = pyconv_cli("report", str(run / "g.npz"), "--metrics", str(run / "run.json"),
                         "--out", str(out), "--image", "3").stdout
    assert printed.startswith(f"wrote {out / 'index.html'}: 1 kernel grid, feature maps")
    model = pyconv.load(str(run / "g.npz"))
    x_test = pyconv.datasets.load("mnist", data_dir=MNIST_DIR).x_test
    x = model.prepare(x_test[3:4])
    y = model.layers[0](x)[0]                         # grokking: 3x3 valid, no bias, 16
    driver = _browser()
    try:
        driver.get((out / "index.html").as_uri())
        images = driver.find_elements(By.TAG_NAME, "img")
        assert len(images) == 5           # curves, kernels, feature maps, confusion, mistakes
        assert all(driver.execute_script("return arguments[0].complete && "
                                         "arguments[0].naturalWidth", im) > 0 for im in images)
        Select(driver.find_element(By.ID, "channel")).select_by_value("5")
        fmap = driver.find_element(By.ID, "fmap")
        driver.execute_script("arguments[0].scrollIntoView()", fmap)
        size = fmap.size
        i, j = 7, 19                                        # of the 26 x 26 map
        ActionChains(driver).move_to_element_with_offset(
            fmap, (j + 0.5) * size["width"] / 26 - size["width"] / 2,
            (i + 0.5) * size["height"] / 26 - size["height"] / 2).click().perform()
        shown = driver.find_element(By.ID, "value")
        data = {k: shown.get_attribute(f"data-{k}") for k in ("row", "col", "kernel",
                                                                "computed", "network")}
        assert (data["row"], data["col"], data["kernel"]) == ("7", "19", "5")
        window = [[float(td.get_attribute("data-value")) for td in
                   tr.find_elements(By.TAG_NAME, "td")]
                  for tr in driver.find_elements(By.CSS_SELECTOR, "#window-0 tr")]
        np.testing.assert_allclose(window, x[0, 7:10, 19:22, 0], atol=1e-7)
        assert abs(float(data["computed"]) - y[7, 19, 5]) <= 1e-5
        assert abs(float(data["network"]) - y[7, 19, 5]) <= 1e-6
        assert "the network computed" in shown.text
        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == []
    finally:
        driver.quit()


def test_without_the_plot_extra_the_commands_say_what_to_install(run, tmp_path):
    code = ("import sys; sys.modules['matplotlib'] = None; sys.modules['tensorboardX'] = None\n"
            "import pyconv.cli\n"
            "sys.exit(pyconv.cli.main(sys.argv[1:]))")
    env = dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR)
    for args, what in [(["report", str(run / "g.npz")], "pyconv report"),
                       (["train", "--model", "grokking", "--steps", "2", "--tensorboard",
                         str(tmp_path / "tb")], "--tensorboard")]:
        proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True,
                              text=True, cwd=tmp_path, env=env)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.strip().endswith(f"{what} needs the 'plot' extra ("
                                            f"{'matplotlib' if what[0] == 'p' else 'tensorboardX'}"
                                            " is not installed): pip install 'pyconv[plot]'")
    trained = subprocess.run([sys.executable, "-c", code, "train", "--model", "grokking",
                              "--steps", "2"], capture_output=True, text=True, cwd=tmp_path,
                             env=env)
    assert trained.returncode == 0 and "test accuracy" in trained.stdout


def test_report_refuses_bad_input_naming_it(run, tmp_path):
    (tmp_path / "bad.json").write_text("{bad")
    cases = [(["--metrics", str(tmp_path / "bad.json")], 2,
              f"{tmp_path / 'bad.json'}: not a metrics file written by pyconv train --metrics"),
             (["--image", "99999"], 2, "--image must be from 0 to 999"),
             (["--out", "/proc/no/such"], 4, "could not make the report's folder /proc/no/such")]
    for extra, code, message in cases:
        proc = pyconv_cli("report", str(run / "g.npz"), "--out", str(tmp_path / "r"), *extra,
                          check=False)
        assert proc.returncode == code and message in proc.stderr, proc.stderr


def test_the_report_of_a_bf16_run_names_its_precision(tmp_path):
    ckpt, metrics = tmp_path / "c.npz", tmp_path / "m.json"
    pyconv_cli("train", "--model", "grokking", "--steps", "4", "--batch-size", "32",
               "--precision", "bf16-emulated", "--no-progress", "--checkpoint", str(ckpt),
               "--metrics", str(metrics))
    pyconv_cli("report", str(ckpt), "--metrics", str(metrics), "--out", str(tmp_path / "r"))
    page = (tmp_path / "r" / "index.html").read_text()
    assert "4 steps of batch 32 in bf16-emulated, test accuracy" in page
