"""Your own images and your own network: shape inference and its errors, every
data form (written here, small), bad data, fit and its callbacks, network
files, uint8 kept in memory, and the CLI for any data."""
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

import pyconv
from pyconv.errors import DataError, ShapeError
from pyconv.layers import Conv2D, Dense, Flatten, MaxPool2D
from pyconv.train.callbacks import EarlyStopping, LearningRateSchedule

from conftest import MNIST_DIR


def run_cli(*args, check=True, cwd=None):
    proc = subprocess.run([sys.executable, "-m", "pyconv", *args], capture_output=True,
                          text=True, cwd=cwd, env=dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR),
                          timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"pyconv {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


# ------------------------------------------------------------ shapes

def test_shapes_are_inferred_from_the_input():
    model = pyconv.Sequential([Conv2D(8, 3), MaxPool2D(2), Conv2D(16, 3, padding="valid"),
                               Flatten(), Dense(5)], input_shape=(20, 18, 3), seed=0)
    assert [layer.output_shape for layer in model.layers] == [
        (20, 18, 8), (10, 9, 8), (8, 7, 16), (896,), (5,)]
    assert [p.value.shape for p in model.parameters()] == [
        (3, 3, 3, 8), (8,), (3, 3, 8, 16), (16,), (896, 5), (5,)]
    assert model.predict(np.zeros((2, 20, 18, 3), np.uint8)).shape == (2, 5)
    text = model.summary()
    assert "(8, 7, 16)" in text and f"total parameters: {896 * 5 + 5 + 1168 + 224:,}" in text


def test_the_built_in_networks_keep_their_initial_weights():
    """The shape-inferred tutorial and grokking networks draw the same weights for
    a seed as the hand-sized ones did (hashes from the previous release)."""
    import hashlib
    for name, seed, digest in (("tutorial", 0, "09f31cfd0adf"), ("tutorial", 5, "ecf5c7fa4852"),
                               ("grokking", 0, "301ed3acfd38")):
        h = hashlib.sha256()
        for p in pyconv.models.MODELS[name](seed=seed).parameters():
            h.update(p.value.tobytes())
        assert h.hexdigest()[:12] == digest, name


@pytest.mark.parametrize("layers, shape, message", [
    ([Dense(4)], (6, 6, 1), r"layer 0 \(Dense\): expects flat features \(D,\), got \(6, 6, 1\): "
                            r"put a Flatten\(\) before it"),
    ([Flatten(), Conv2D(4, 3)], (6, 6, 1), r"layer 1 \(Conv2D\): expects images"),
    ([Conv2D(4, 7, padding="valid")], (5, 5, 1), r"layer 0 \(Conv2D\): kernel_size \(7, 7\) is "
                                                  r"larger than the padded input \(5, 5\)"),
    ([MaxPool2D(2), MaxPool2D(2), MaxPool2D(2, padding="valid")], (3, 3, 2),
     r"layer 2 \(MaxPool2D\): pool_size"),
])
def test_a_layer_that_does_not_fit_is_named(layers, shape, message):
    with pytest.raises(ShapeError, match=message):
        pyconv.Sequential(layers, input_shape=shape)


def test_input_of_another_shape_is_refused_by_name():
    model = pyconv.models.tutorial_cnn()
    with pytest.raises(ShapeError, match=r"predict: x has examples of shape \(32, 32, 3\).*"
                                         r"the model takes \(28, 28, 1\)"):
        model.predict(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(ValueError, match="not built yet"):
        pyconv.Sequential([Dense(3)]).parameters()
    with pytest.raises(ValueError, match="Conv2D: filters must be >= 1, got 0"):
        Conv2D(0, 3)


def test_uint8_images_are_scaled_as_in_training():
    """uint8 in, the same logits as the float32 / 255 the tutorial used; and
    (N, H, W) gains its channel axis."""
    model = pyconv.models.tutorial_cnn(seed=1)
    x = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    want = model.predict(pyconv.data.to_float(x))
    assert model.predict(x).tobytes() == want.tobytes()
    assert model.predict(x[..., None]).tobytes() == want.tobytes()


# ------------------------------------------------------------ data forms

def _write_idx(path, a):
    import struct
    with open(path, "wb") as f:
        f.write(struct.pack(f">I{a.ndim}I", 0x800 | a.ndim, *a.shape) + a.tobytes())


def _arrays(h=9, w=7, n_train=40, n_test=12, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n_train, h, w), dtype=np.uint8),
            rng.integers(0, 3, n_train).astype(np.uint8),
            rng.integers(0, 256, (n_test, h, w), dtype=np.uint8),
            rng.integers(0, 3, n_test).astype(np.uint8))


def test_a_folder_of_idx_files_of_any_size(tmp_path):
    xtr, ytr, xte, yte = _arrays()
    for name, a in (("train-images-idx3-ubyte", xtr), ("train-labels-idx1-ubyte", ytr),
                    ("t10k-images-idx3-ubyte", xte), ("t10k-labels-idx1-ubyte", yte)):
        _write_idx(tmp_path / name, a)
    ds = pyconv.datasets.load(str(tmp_path))
    assert ds.input_shape == (9, 7, 1) and ds.x_train.dtype == np.uint8
    assert (ds.x_train == xtr).all() and ds.class_names == ["0", "1", "2"]


def test_an_npz_and_a_memory_mapped_npy_folder(tmp_path):
    xtr, ytr, xte, yte = _arrays()
    np.savez(tmp_path / "d.npz", x_train=xtr[..., None], y_train=ytr, x_test=xte[..., None],
             y_test=yte)
    ds = pyconv.datasets.load(str(tmp_path / "d.npz"))
    assert ds.input_shape == (9, 7, 1) and len(ds.y_test) == 12
    folder = tmp_path / "npy"
    folder.mkdir()
    for key, a in zip(("x_train", "y_train", "x_test", "y_test"), (xtr, ytr, xte, yte)):
        np.save(folder / f"{key}.npy", a)
    ds = pyconv.datasets.load(str(folder))
    assert isinstance(ds.x_train, pyconv.datasets.NpyRows) and ds.x_train.shape == xtr.shape
    assert (ds.x_train[5] == xtr[5]).all() and (ds.x_train[[7, 2, 7]] == xtr[[7, 2, 7]]).all()
    assert (np.asarray(ds.x_train[10:20]) == xtr[10:20]).all()
    assert (ds.x_train[10:20][[0, 9]] == xtr[[10, 19]]).all()
    with pytest.raises(IndexError):
        ds.x_train[[40]]
    model = pyconv.Sequential([Flatten(), Dense(3)], seed=0)
    history = model.fit(ds.x_train, ds.y_train, steps=5, batch_size=8,
                        validation_data=(ds.x_test, ds.y_test), verbose=False)
    assert history.history[-1]["step"] == 5
    assert model.predict(ds.x_test).shape == (12, 3)


@pytest.mark.parametrize("change, message", [
    (lambda a: a.update(y_train=a["y_train"].astype(np.float32)), "y_train must be integer"),
    (lambda a: a.update(y_test=a["y_test"][:-1]), "x_test has 12 images but y_test has 11"),
    (lambda a: a.update(x_test=a["x_test"][:, :5]), r"test images are \(5, 7\)"),
    (lambda a: a.pop("y_test"), "missing array"),
])
def test_bad_npz_data_is_a_clear_error(tmp_path, change, message):
    xtr, ytr, xte, yte = _arrays()
    arrays = dict(x_train=xtr, y_train=ytr, x_test=xte, y_test=yte)
    change(arrays)
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        pyconv.datasets.load(str(tmp_path / "d.npz"))


def test_labels_out_of_range_name_the_file(tmp_path):
    xtr, ytr, xte, yte = _arrays()
    np.savez(tmp_path / "d.npz", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
             class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"d.npz: labels must be in \[0, 2\)"):
        pyconv.datasets.load(str(tmp_path / "d.npz"))


def shapes_folder(root, n=24, size=16, seed=0):
    """examples/make_shapes.py's colour shapes: n per class, size x size."""
    import importlib.util
    path = os.path.join(os.path.dirname(__file__), "..", "examples", "make_shapes.py")
    spec = importlib.util.spec_from_file_location("make_shapes", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return pathlib.Path(module.make_shapes(str(root), n, size, seed))


def test_an_image_folder_with_a_held_out_fraction(tmp_path):
    pytest.importorskip("PIL")
    shapes_folder(tmp_path)
    ds = pyconv.datasets.load(str(tmp_path), test_split=0.25, seed=3)
    assert ds.class_names == ["bar", "disc", "square"]      # sorted, as ImageFolder
    assert ds.input_shape == (16, 16, 3) and len(ds.y_test) == 18 and len(ds.y_train) == 54
    assert np.bincount(ds.y_test).tolist() == [6, 6, 6]
    resized = pyconv.datasets.load(str(tmp_path), image_size=(8, 12))
    assert resized.input_shape == (8, 12, 3)


def test_bad_image_folders_are_clear_errors(tmp_path):
    pytest.importorskip("PIL")
    from PIL import Image
    shapes_folder(tmp_path / "a", n=3)
    os.makedirs(tmp_path / "a" / "empty")
    with pytest.raises(DataError, match="class folder 'empty' holds no images"):
        pyconv.datasets.load(str(tmp_path / "a"))
    shapes_folder(tmp_path / "b", n=3)
    Image.new("RGB", (20, 16)).save(tmp_path / "b" / "bar" / "big.png")
    with pytest.raises(DataError, match=r"big.png: image of shape \(16, 20\).*--image-size"):
        pyconv.datasets.load(str(tmp_path / "b"))
    shapes_folder(tmp_path / "c", n=3)
    (tmp_path / "c" / "disc" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        pyconv.datasets.load(str(tmp_path / "c"))
    with pytest.raises(DataError, match="neither a registered data set"):
        pyconv.datasets.load(str(tmp_path / "nothing-here"))


def test_fashion_mnist_is_registered_and_checked():
    folder = os.path.join(os.path.dirname(MNIST_DIR), "fashion-mnist")
    if not os.path.isdir(folder):
        pytest.skip("needs the Fashion-MNIST files (../shared/data/fashion-mnist)")
    ds = pyconv.datasets.load("fashion-mnist", data_dir=pathlib.Path(folder))
    assert ds.x_train.shape == (60000, 28, 28) and ds.class_names[9] == "Ankle boot"
    reg = pyconv.datasets.REGISTRY["fashion-mnist"]
    for name in reg.files:
        assert pyconv.datasets.checksum_ok(reg, name, os.path.join(folder, name))


# ------------------------------------------------------------ fit and callbacks

def _separable(n=400, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8)
    y = (x[:, :4].astype(int).sum((1, 2, 3)) > x[:, 4:].astype(int).sum((1, 2, 3))).astype(int)
    return x, y


def test_a_data_dir_without_the_files_is_an_error_not_a_download(tmp_path):
    with pytest.raises(DataError, match=r"missing fashion-mnist file\(s\) train-images"):
        pyconv.datasets.load("fashion-mnist", data_dir=tmp_path)


def test_fit_learns_and_evaluates():
    x, y = _separable()
    model = pyconv.Sequential([Flatten(), Dense(2)], seed=0)
    history = model.fit(x[:300], y[:300], epochs=20, batch_size=20, lr=3e-2,
                        validation_split=0.2, verbose=False)
    assert model.input_shape == (8, 8, 1)                 # built from the data
    assert [h["step"] for h in history.history] == [12 * k for k in range(1, 21)]
    result = model.evaluate(x[300:], y[300:])             # chance: 0.5; this run: 0.85
    assert result["accuracy"] > 0.8 and result["loss"] < 0.45
    classes, probs = model.predict_classes(x[300:])
    assert (classes == model.predict(x[300:]).argmax(1)).all() and (probs >= 0.5).all()


def test_schedules_and_early_stopping():
    sched = LearningRateSchedule("cosine", 1.0, 100)
    assert sched.rate(0) == 1.0 and abs(sched.rate(50) - 0.5) < 1e-12 and sched.rate(100) == 0
    step = LearningRateSchedule("step", 1.0, 90, gamma=0.5)
    assert [step.rate(s) for s in (0, 29, 30, 60)] == [1.0, 1.0, 0.5, 0.25]
    x, y = _separable()
    model = pyconv.Sequential([Flatten(), Dense(2)], seed=0)
    stop = EarlyStopping(patience=2, min_delta=0.5)      # no gain is ever that large
    history = model.fit(x, y, steps=1000, batch_size=20, eval_every=10, validation_split=0.1,
                        callbacks=[stop], verbose=False)
    assert history.trainer.step == 30 and len(history.history) == 3


def test_resume_with_a_schedule_and_early_stopping_is_bit_identical(tmp_path):
    """A cosine schedule and early stopping's state, a checkpoint at step 20 of
    40: resumed from it, the same weights and history as straight through."""
    from pyconv.train import Trainer
    from pyconv.train.callbacks import Checkpoint, Evaluate
    x, y = _separable(240)

    def trainer(stop_at, path, resume=False):
        model = pyconv.Sequential([Conv2D(4, 3), Flatten(), Dense(2)], input_shape=(8, 8, 1),
                                  seed=2)
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
        cbs = [Evaluate(10), LearningRateSchedule("cosine", 1e-2, 40),
               EarlyStopping(patience=10), Checkpoint(str(path), 20)]
        t = Trainer(model, opt, (x[:200], y[:200]), steps=40, batch_size=16,
                    validation=(x[200:], y[200:]), seed=1, callbacks=cbs, log=lambda m: None)
        if resume:
            t.resume(str(path))
        t.steps = stop_at      # stop there, as if interrupted (the schedule keeps its 40)
        t.run()
        return t

    straight = trainer(40, tmp_path / "a.npz")
    trainer(20, tmp_path / "b.npz")
    resumed = trainer(40, tmp_path / "b.npz", resume=True)
    untimed = [[{k: v for k, v in h.items() if k != "images_per_second"} for h in t.history]
               for t in (resumed, straight)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 4
    assert resumed.callbacks[2].state() == straight.callbacks[2].state()
    for p, q in zip(straight.model.parameters(), resumed.model.parameters()):
        assert p.value.tobytes() == q.value.tobytes()


# ------------------------------------------------------------ network files

def test_network_file_errors_name_the_file_and_the_layer(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"input_shape": [8, 8, 1], "layers": [{"type": "Conv2D"}]}))
    with pytest.raises(ValueError, match=r"bad.json: layer 0 \(Conv2D\): .*filters"):
        pyconv.load_network(str(bad))
    bad.write_text(json.dumps({"input_shape": [8, 8, 1], "layers": [{"type": "Conv3D"}]}))
    with pytest.raises(ValueError, match="bad.json: layer 0: unknown type 'Conv3D'"):
        pyconv.load_network(str(bad))
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a valid network file"):
        pyconv.load_network(str(bad))


def test_saved_model_records_what_it_needs(tmp_path):
    model = pyconv.models.lenet5(input_shape=(16, 16, 3), classes=3)
    model.class_names = ["bar", "disc", "square"]
    pyconv.save(model, tmp_path / "m.npz")
    back = pyconv.load(tmp_path / "m.npz")
    assert back.input_shape == (16, 16, 3) and back.class_names == model.class_names
    assert back.architecture() == model.architecture()


# ------------------------------------------------------------ the CLI on your own data

def test_cli_trains_a_network_file_on_an_image_folder_and_predicts(tmp_path):
    """LeNet-5 from a JSON file on 32x32 colour shapes: well above chance, and
    `pyconv predict` on PNGs gives the classes that evaluate counts as right."""
    pytest.importorskip("PIL")
    folder = shapes_folder(tmp_path / "shapes", n=40, size=32, seed=1)
    net = tmp_path / "lenet.json"
    arch = pyconv.models.lenet5(input_shape=(32, 32, 3), classes=3).architecture()
    net.write_text(json.dumps({"layers": arch["layers"]}))
    ckpt = tmp_path / "m.npz"
    out = run_cli("train", "--model", str(net), "--dataset", str(folder), "--steps", "150",
                  "--eval-every", "50", "--checkpoint", str(ckpt), "--no-progress").stdout
    acc = float(out.split("test accuracy: ")[1].split()[0])
    assert acc > 0.8, out
    ev = json.loads(run_cli("evaluate", str(ckpt), "--dataset", str(folder)).stdout)
    assert ev["test_accuracy"] == pytest.approx(acc)
    files = sorted(str(p) for p in (folder / "disc").glob("*.png"))[:5]
    lines = run_cli("predict", str(ckpt), *files).stdout.strip().splitlines()
    assert len(lines) == 5 and all(line.startswith(f) for line, f in zip(lines, files))
    assert sum(": disc (" in line for line in lines) >= 4
    summary = run_cli("summary", str(net), check=False).returncode
    assert summary == 2          # no input_shape in the file: said, not guessed
    assert "(28, 28, 6)" in run_cli("summary", "lenet5").stdout


def test_cli_predicts_from_an_npy_of_images(tmp_path):
    """`pyconv predict MODEL x.npy`: one line per image, the model's own classes."""
    model = pyconv.models.lenet5(input_shape=(28, 28, 1), classes=10)
    pyconv.save(model, tmp_path / "m.npz")
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "x.npy", x)
    lines = run_cli("predict", str(tmp_path / "m.npz"), str(tmp_path / "x.npy")).stdout
    classes, probs = model.predict_classes(x)
    assert lines.strip().splitlines() == [f"{tmp_path / 'x.npy'}[{i}]: {c} ({p:.3f})"
                                          for i, (c, p) in enumerate(zip(classes, probs))]


def test_cli_refuses_a_network_that_does_not_fit_the_data(tmp_path):
    net = tmp_path / "net.json"
    net.write_text(json.dumps({"layers": [{"type": "Flatten"}, {"type": "Dense", "units": 7}]}))
    proc = run_cli("train", "--model", str(net), "--steps", "2", check=False)
    assert proc.returncode == 2 and "the data set has 10 classes" in proc.stderr
    assert "make the last layer Dense(10)" in proc.stderr


def test_cli_trains_a_graph_network_file_resumes_and_exports(tmp_path):
    """examples/residual.json (a residual block and two concatenated branches)
    on 32x32 colour shapes: trains well above chance; stopped at step 40 and
    resumed to 80, the same weights as 80 straight; exported to ONNX."""
    pytest.importorskip("PIL")
    folder = shapes_folder(tmp_path / "shapes", n=40, size=32, seed=2)
    net = str(pathlib.Path(__file__).resolve().parent.parent / "examples" / "residual.json")
    if not os.path.exists(net):
        pytest.skip("examples/ is not beside tests/")
    common = ("--model", net, "--dataset", str(folder), "--eval-every", "40", "--no-progress",
              "--lr", "3e-3")
    out = run_cli("train", *common, "--steps", "80", "--checkpoint",
                  str(tmp_path / "a.npz")).stdout
    assert float(out.split("test accuracy: ")[1].split()[0]) > 0.6, out
    run_cli("train", *common, "--steps", "40", "--checkpoint", str(tmp_path / "b.npz"))
    run_cli("train", *common, "--steps", "80", "--checkpoint", str(tmp_path / "b.npz"),
            "--resume")
    a, b = (np.load(tmp_path / f"{k}.npz") for k in "ab")
    params = [k for k in a.files if k.startswith("param/")]
    assert len(params) == 12 and all(a[k].tobytes() == b[k].tobytes() for k in params)
    if importlib.util.find_spec("onnx"):
        said = run_cli("export", str(tmp_path / "a.npz"), str(tmp_path / "a.onnx")).stdout
        assert said.startswith(f"wrote {tmp_path / 'a.onnx'}")
