"""save/load: same predictions; truncated, tampered and future files refused."""
import json

import numpy as np
import pytest

import pyconv
from pyconv.io.checkpoints import FORMAT_VERSION, load_checkpoint, save_checkpoint


def rewrite(path, **changes):
    """Rewrite a saved .npz with some arrays changed (a consistent zip, new content)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    arrays.update(changes)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture
def model():
    return pyconv.models.tutorial_cnn(seed=3)


def test_saved_model_predicts_the_same(tmp_path, model):
    x = np.random.default_rng(0).random((7, 28, 28, 1), dtype=np.float32)
    path = tmp_path / "m.npz"
    pyconv.save(model, path)
    loaded = pyconv.load(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.architecture() == model.architecture()
    with np.load(path, allow_pickle=False) as f:      # plain arrays, no pickles
        assert json.loads(str(f["architecture"]))["name"] == "tutorial"


def test_checkpoint_restores_optimizer_state(tmp_path, model):
    opt = pyconv.optim.Adam(model.parameters(), lr=1e-3)
    x = np.random.default_rng(0).random((4, 28, 28, 1), dtype=np.float32)
    model.train_step(x, np.arange(4), opt)
    save_checkpoint(tmp_path / "c.npz", model, opt, {"step": 1})
    _, opt2, state = load_checkpoint(tmp_path / "c.npz")
    assert state == {"step": 1} and opt2.t == 1
    for a, b in zip(opt.m + opt.v, opt2.m + opt2.v):
        np.testing.assert_array_equal(a, b)


def test_truncated_file_is_refused(tmp_path, model):
    path = tmp_path / "m.npz"
    pyconv.save(model, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(pyconv.ModelFileError, match="m.npz"):
        pyconv.load(path)


def test_tampered_file_is_refused(tmp_path, model):
    path = tmp_path / "m.npz"
    pyconv.save(model, path)
    with np.load(path, allow_pickle=False) as f:
        w = f["param/0.Conv2D.w"]
    rewrite(path, **{"param/0.Conv2D.w": w * 2})
    with pytest.raises(pyconv.ModelFileError, match="digest"):
        pyconv.load(path)
    raw = bytearray((tmp_path / "m.npz").read_bytes())
    raw[len(raw) // 3] ^= 0xFF                                    # a flipped byte
    path.write_bytes(bytes(raw))
    with pytest.raises(pyconv.ModelFileError):
        pyconv.load(path)


def test_newer_format_version_says_so(tmp_path, model):
    path = tmp_path / "m.npz"
    pyconv.save(model, path)
    rewrite(path, pyconv_format=np.array(FORMAT_VERSION + 1))
    with pytest.raises(pyconv.ModelFileError, match="newer"):
        pyconv.load(path)


def test_not_a_model_file(tmp_path):
    path = tmp_path / "x.npz"
    np.savez(path, a=np.zeros(3))
    with pytest.raises(pyconv.ModelFileError, match="not a pyconv model"):
        pyconv.load(path)
    path.write_bytes(b"hello")
    with pytest.raises(pyconv.ModelFileError, match="x.npz"):
        pyconv.load(path)


def test_save_is_atomic_when_writing_fails(tmp_path, model, monkeypatch):
    path = tmp_path / "m.npz"
    pyconv.save(model, path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        pyconv.save(model, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]    # no temporary left behind
