"""Augmentation of training batches: random translation (zero padding, then a
random crop back to the image's size, as torchvision's RandomCrop(size,
padding)) and random horizontal flips; and `batch`, a training step's images
gathered, augmented and scaled in one compiled pass.

Seeded and part of a run's state: an Augment draws every batch's offsets and
flips from its own generator, whose state a checkpoint keeps, so a resumed
run is bit for bit the uninterrupted one. The draws are made for the whole
global batch and each process takes its slice, so K processes see the
images one process sees. The images are moved by convcore.gather_batch (no
loop over images in Python).
"""
import numpy as np

import convcore


def batch(x, rows, augment=None, first=0, n=None, divisor=255.0):
    """A training step's images: x[rows] as float32, augmented by `augment`
    (its draws for examples first .. first+len(rows)-1 of a global batch of n,
    default len(rows)) and integer images divided by divisor, as the model's
    prepare would. One compiled pass (convcore.gather_batch) over a uint8 or
    float32 array in memory; other sources (rows read from disk, other
    dtypes) are read and converted to float32 first."""
    rows = np.asarray(rows, np.int64)
    shift, flip = augment.draw(first, len(rows), n) if augment else (None, None)
    src = x
    if not (isinstance(x, np.ndarray) and x.dtype in (np.uint8, np.float32)
            and x.flags.c_contiguous and x.ndim >= 2):
        src, rows = np.asarray(x[rows]), np.arange(len(rows))
        integer = np.issubdtype(src.dtype, np.integer) or src.dtype == np.bool_
        src = src.astype(np.float32) if integer else np.asarray(src, np.float32)
        divisor = divisor if integer else 1.0
    elif x.dtype == np.float32:
        divisor = 1.0
    if src.ndim == 4:
        images = src
    elif src.ndim == 3:                               # (N, H, W): one channel
        images = src[..., None]
    elif shift is None and flip is None:              # not images: a plain gather
        images = src.reshape(len(src), 1, -1, 1)
    else:
        raise ValueError(f"augmentation needs images (N, H, W[, C]), got x {src.shape}")
    out = convcore.gather_batch(images, rows, shift, flip, divisor)
    return out.reshape((len(rows),) + src.shape[1:])


class Augment:
    """shift: translate each image by up to `shift` pixels in each direction
    (the uncovered border is 0); flip: mirror half of the images left to
    right (not for digits or text). seed: of the augmentation's generator."""

    def __init__(self, shift=0, flip=False, seed=0):
        if isinstance(shift, bool) or not isinstance(shift, (int, np.integer)) or shift < 0:
            raise ValueError(f"Augment: shift must be an int >= 0 (pixels), got {shift!r}")
        self.shift, self.flip = int(shift), bool(flip)
        self.rng = np.random.default_rng([seed, 0x417])   # apart from the model's draws

    def __bool__(self):
        return bool(self.shift or self.flip)

    def check(self, image_shape):
        """Refuse a shift that does not fit images of (H, W[, C])."""
        h, w = image_shape[:2]
        if self.shift >= min(h, w):
            raise ValueError(f"Augment: shift {self.shift} does not fit images of {h}x{w}: "
                             f"it must be smaller than both sides (at most {min(h, w) - 1})")

    def draw(self, first, m, n=None):
        """(shift (m, 2), flip (m,)) of examples first..first+m-1 of a global
        batch of n (default m), for convcore.gather_batch: each image moved by
        (dy, dx) in [-shift, shift]^2 after a mirror where flip. Draws for all
        n examples (so every process's generator stays in step)."""
        n = m if n is None else n
        s = self.shift
        offsets = self.rng.integers(0, 2 * s + 1, size=(n, 2))
        flips = self.rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        return (offsets[first:first + m] - s).astype(np.int32), flips[first:first + m]

    def __call__(self, x, first=0, n=None):
        """Examples first..first+len(x)-1 of a global batch of n (default
        len(x)), augmented, in x's dtype; draws for all n examples."""
        out = batch(x, np.arange(len(x)), self, first, n, divisor=1.0)
        return out.astype(np.asarray(x[:0]).dtype, copy=False)

    def config(self):
        return dict(shift=self.shift, flip=self.flip)

    def state(self):
        return self.rng.bit_generator.state

    def load_state(self, state):
        self.rng.bit_generator.state = state
