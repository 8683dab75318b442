"""The seed's two networks."""
import numpy as np

from .layers import Conv2D, Dense, Dropout, Flatten, MaxPool2D, Tanh
from .model import Sequential


def tutorial_cnn(seed=0):
    """The seed's TensorFlow network (the TF "Deep MNIST" tutorial):
    conv 5x5x32 SAME + ReLU, max-pool 2x2, conv 5x5x64 SAME + ReLU, max-pool 2x2,
    dense 1024 + ReLU, dropout 0.5, dense 10. Weights truncated normal (stddev
    0.1), biases 0.1. Train with Adam(lr=1e-4), batch 50."""
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(1, 32, 5, padding="same", activation="relu", rng=rng),
        MaxPool2D(2, padding="same"),
        Conv2D(32, 64, 5, padding="same", activation="relu", rng=rng),
        MaxPool2D(2, padding="same"),
        Flatten(),
        Dense(7 * 7 * 64, 1024, activation="relu", rng=rng),
        Dropout(0.5),
        Dense(1024, 10, rng=rng),
    ], name="tutorial", seed=seed)


def grokking_cnn(seed=0):
    """The seed's NumPy network (Grokking Deep Learning, ch. 10): 16 kernels of
    3x3 at every valid position, tanh, dropout 0.5, dense to 10 outputs, softmax.
    No biases; kernels uniform in [-0.01, 0.01], dense weights in [-0.1, 0.1]."""
    rng = np.random.default_rng(seed)
    return Sequential([
        Conv2D(1, 16, 3, padding="valid", use_bias=False,
               w_init=("uniform", {"low": -0.01, "high": 0.01}), rng=rng),
        Tanh(),
        Flatten(),
        Dropout(0.5),
        Dense(26 * 26 * 16, 10, use_bias=False,
              w_init=("uniform", {"low": -0.1, "high": 0.1}), rng=rng),
    ], name="grokking", seed=seed)


MODELS = {"tutorial": tutorial_cnn, "grokking": grokking_cnn}
