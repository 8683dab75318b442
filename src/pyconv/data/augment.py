"""Augmentation of training batches: random translation (zero padding, then a
random crop back to the image's size, as torchvision's RandomCrop(size,
padding)) and random horizontal flips.

Seeded and part of a run's state: an Augment draws every batch's offsets and
flips from its own generator, whose state a checkpoint keeps, so a resumed
run is bit for bit the uninterrupted one. The draws are made for the whole
global batch and each process takes its slice, so K processes see the
images one process sees. Each batch is one vectorised gather (no loop over
images); images stay in their dtype (uint8 stays uint8).
"""
import numpy as np


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

    def __call__(self, x, first=0, n=None):
        """Examples first..first+len(x)-1 of a global batch of n (default
        len(x)), augmented; draws for all n examples."""
        n = len(x) if n is None else n
        s = self.shift
        offsets = self.rng.integers(0, 2 * s + 1, size=(n, 2))
        flips = self.rng.random(n) < 0.5 if self.flip else np.zeros(n, bool)
        if not self:
            return x
        offsets, flips = offsets[first:first + len(x)], flips[first:first + len(x)]
        h, w = x.shape[1:3]
        out = np.asarray(x)
        if s:
            padded = np.pad(out, [(0, 0), (s, s), (s, s)] + [(0, 0)] * (x.ndim - 3))
            # every (2s + 1)^2 crop of each padded image, as a view; one gather of whole crops
            crops = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(1, 2))
            out = crops[np.arange(len(x)), offsets[:, 0], offsets[:, 1]]
            out = np.moveaxis(out, -2, 1) if x.ndim == 4 else out       # (N, H, W, C)
            out = np.moveaxis(out, -1, 2) if x.ndim == 4 else out
        if flips.any():
            out = out.copy() if out is x else out
            out[flips] = out[flips][:, :, ::-1]
        return np.ascontiguousarray(out)

    def config(self):
        return dict(shift=self.shift, flip=self.flip)

    def state(self):
        return self.rng.bit_generator.state

    def load_state(self, state):
        self.rng.bit_generator.state = state
