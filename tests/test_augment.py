"""Augmentation of training batches (pyconv.data.Augment): what it does to an
image, its errors, its seeding, slices of a global batch, and a resumed run
with augmentation on, bit for bit."""
import numpy as np
import pytest

import pyconv
from pyconv.data import Augment


def test_translation_moves_the_image_and_fills_the_border_with_zero():
    x = np.arange(1, 26, dtype=np.uint8).reshape(1, 5, 5)
    aug = Augment(shift=2, seed=0)
    seen = set()
    for _ in range(200):
        y = aug(x)
        assert y.dtype == np.uint8 and y.shape == x.shape
        # a shifted copy: some window of the zero-padded image
        padded = np.pad(x[0], 2)
        where = [(i, j) for i in range(5) for j in range(5)
                 if (padded[i:i + 5, j:j + 5] == y[0]).all()]
        assert where, y
        seen.add(where[0])
    assert len(seen) == 25        # every offset in [-2, 2]^2 drawn


def test_flip_mirrors_left_to_right_and_keeps_channels():
    x = np.random.default_rng(0).random((64, 4, 6, 3)).astype(np.float32)
    y = Augment(flip=True, seed=3)(x)
    flipped = [(yi == xi[:, ::-1]).all() for xi, yi in zip(x, y)]
    kept = [(yi == xi).all() for xi, yi in zip(x, y)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 16 < sum(flipped) < 48


def test_same_seed_same_draws_and_slices_of_a_global_batch_agree():
    x = np.random.default_rng(1).integers(0, 255, (10, 8, 8), dtype=np.uint8)
    whole = Augment(2, True, seed=7)(x)
    a, b = Augment(2, True, seed=7), Augment(2, True, seed=7)
    parts = np.concatenate([a(x[:4], 0, 10), b(x[4:], 4, 10)])
    assert parts.tobytes() == whole.tobytes()
    assert Augment(2, True, seed=8)(x).tobytes() != whole.tobytes()


@pytest.mark.parametrize("make, message", [
    (lambda: Augment(shift=-1), "shift must be an int >= 0"),
    (lambda: Augment(shift=1.5), "shift must be an int >= 0"),
    (lambda: Augment(shift=8).check((8, 10, 1)), "shift 8 does not fit images of 8x10"),
])
def test_bad_augmentations_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_run_with_augmentation_resumes_bit_for_bit(tmp_path):
    from pyconv.train import Trainer
    rng = np.random.default_rng(2)
    x = rng.integers(0, 255, (96, 10, 10), dtype=np.uint8)
    y = rng.integers(0, 3, 96)

    def run(steps, path, resume=False):
        model = pyconv.Sequential([pyconv.layers.Conv2D(4, 3, activation="relu"),
                                   pyconv.layers.Flatten(), pyconv.layers.Dense(3)],
                                  input_shape=(10, 10, 1), seed=1)
        opt = pyconv.optim.Adam(model.parameters(), lr=1e-2)
        t = Trainer(model, opt, (x, y), steps=10, batch_size=16, seed=2, log=lambda m: None,
                    callbacks=[pyconv.callbacks.Checkpoint(str(path), 5)],
                    augment=Augment(2, True, seed=4))
        if resume:
            t.resume(str(path))
        t.steps = steps
        t.run()
        return [p.value.tobytes() for p in t.model.parameters()]

    straight = run(10, tmp_path / "a.npz")
    run(5, tmp_path / "b.npz")
    assert run(10, tmp_path / "b.npz", resume=True) == straight
    plain = pyconv.Sequential([pyconv.layers.Conv2D(4, 3, activation="relu"),
                               pyconv.layers.Flatten(), pyconv.layers.Dense(3)],
                              input_shape=(10, 10, 1), seed=1)
    opt = pyconv.optim.Adam(plain.parameters(), lr=1e-2)
    t = Trainer(plain, opt, (x, y), steps=10, batch_size=16, seed=2, log=lambda m: None)
    t.run()
    assert [p.value.tobytes() for p in plain.parameters()] != straight   # it did augment
