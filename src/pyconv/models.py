"""Built-in networks: the TensorFlow tutorial's CNN, Grokking Deep Learning's
(ch. 10), LeNet-5, `fast` (chosen for the time to 99.2% on MNIST) and
`resnet8` (a small residual network with batch normalisation). Each is a
function of the input shape, the class count and the seed; the first two
keep the initial weights they have always had for a seed."""
from .graph import Input
from .layers import (
    Add,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    GlobalAveragePooling2D,
    MaxPool2D,
    ReLU,
    Tanh,
)
from .model import Model, Sequential


def tutorial_cnn(seed=0, input_shape=(28, 28, 1), classes=10):
    """The TensorFlow tutorial's network ("Deep MNIST for Experts"):
    conv 5x5x32 SAME + ReLU, max-pool 2x2, conv 5x5x64 SAME + ReLU, max-pool 2x2,
    dense 1024 + ReLU, dropout 0.5, dense 10. Weights truncated normal (stddev
    0.1), biases 0.1. Train with Adam(lr=1e-4), batch 50."""
    return Sequential([
        Conv2D(32, 5, padding="same", activation="relu"),
        MaxPool2D(2, padding="same"),
        Conv2D(64, 5, padding="same", activation="relu"),
        MaxPool2D(2, padding="same"),
        Flatten(),
        Dense(1024, activation="relu"),
        Dropout(0.5),
        Dense(classes),
    ], input_shape=input_shape, name="tutorial", seed=seed)


def grokking_cnn(seed=0, input_shape=(28, 28, 1), classes=10):
    """Grokking Deep Learning's NumPy network (ch. 10): 16 kernels of
    3x3 at every valid position, tanh, dropout 0.5, dense to 10 outputs, softmax.
    No biases; kernels uniform in [-0.01, 0.01], dense weights in [-0.1, 0.1]."""
    return Sequential([
        Conv2D(16, 3, padding="valid", use_bias=False,
               w_init=("uniform", {"low": -0.01, "high": 0.01})),
        Tanh(),
        Flatten(),
        Dropout(0.5),
        Dense(classes, use_bias=False, w_init=("uniform", {"low": -0.1, "high": 0.1})),
    ], input_shape=input_shape, name="grokking", seed=seed)


def lenet5(seed=0, input_shape=(28, 28, 1), classes=10):
    """LeNet-5 (LeCun et al., 1998) as it is usually trained today: conv 5x5x6
    (SAME on 28x28 input, as for MNIST; VALID on 32x32), max-pool 2, conv 5x5x16,
    max-pool 2, dense 120, dense 84, dense classes; ReLU, Glorot-uniform weights,
    zero biases."""
    first = "same" if tuple(input_shape[:2]) == (28, 28) else "valid"
    init = dict(w_init="glorot_uniform", b_init=("constant", {"value": 0.0}))
    return Sequential([
        Conv2D(6, 5, padding=first, activation="relu", **init),
        MaxPool2D(2),
        Conv2D(16, 5, padding="valid", activation="relu", **init),
        MaxPool2D(2),
        Flatten(),
        Dense(120, activation="relu", **init),
        Dense(84, activation="relu", **init),
        Dense(classes, **init),
    ], input_shape=input_shape, name="lenet5", seed=seed)


def fast_cnn(seed=0, input_shape=(28, 28, 1), classes=10):
    """A small CNN for the shortest time to 99.2% on MNIST on a CPU: conv 5x5x16
    VALID + ReLU, max-pool 2, conv 5x5x32 VALID + ReLU, max-pool 2, dense 128 +
    ReLU, dense classes (the public PyTorch recipe's network, 24 -> 16
    channels and 256 -> 128 units, where convcore's vector kernels run).
    Weights and biases as the tutorial's. Its recipe (pyconv train --model
    fast): 1.5 epochs of batch 128 on all the training images, Adam lr 0.01
    with betas (0.7, 0.9), the one-cycle schedule, label smoothing 0.1."""
    return Sequential([
        Conv2D(16, 5, padding="valid", activation="relu"),
        MaxPool2D(2),
        Conv2D(32, 5, padding="valid", activation="relu"),
        MaxPool2D(2),
        Flatten(),
        Dense(128, activation="relu"),
        Dense(classes),
    ], input_shape=input_shape, name="fast", seed=seed)


_HE = dict(w_init="he_normal", use_bias=False)


def _conv_bn(x, filters, kernel, stride=1, relu=True):
    h = BatchNormalization()(Conv2D(filters, kernel, stride, "same", **_HE)(x))
    return ReLU()(h) if relu else h


def _residual_block(x, filters, stride):
    """conv 3x3 + BN + ReLU, conv 3x3 + BN, plus the shortcut (a 1x1 conv + BN
    where the shape changes), then ReLU: He et al.'s basic block."""
    h = _conv_bn(_conv_bn(x, filters, 3, stride), filters, 3, relu=False)
    short = x if stride == 1 and x.shape[-1] == filters else _conv_bn(x, filters, 1, stride,
                                                                       relu=False)
    return ReLU()(Add()([h, short]))


def resnet8(seed=0, input_shape=(28, 28, 1), classes=10, widths=(32, 64, 128)):
    """A small residual network (He et al., 2016, as in Keras' CIFAR-10 ResNet
    example, depth 8, at twice its widths): a stem conv 3x3 + BN + ReLU, three
    stages of one basic block each (widths 32, 64, 128; stride 2 into the
    second and third), global average pooling, dense classes. Convolutions
    without bias, He-normal weights; batch normalisation with momentum 0.9,
    epsilon 1e-5. (Keras' widths, 16, 32, 64, reach 0.928 on Fashion-MNIST
    with the resnet8 recipe at 15 epochs; these 0.9425 and 0.9432 at its 20,
    seeds 0 and 1.)"""
    x = Input(input_shape)
    h = _conv_bn(x, widths[0], 3)
    for i, filters in enumerate(widths):
        h = _residual_block(h, filters, 1 if i == 0 else 2)
    out = Dense(classes, w_init="glorot_uniform", b_init=("constant", {"value": 0.0}))(
        GlobalAveragePooling2D()(h))
    return Model(x, out, name="resnet8", seed=seed)


MODELS = {"tutorial": tutorial_cnn, "grokking": grokking_cnn, "lenet5": lenet5,
          "fast": fast_cnn, "resnet8": resnet8}
