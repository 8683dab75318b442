"""Symbolic values for building a model as a graph of layers (after Keras'
functional API): `Input(shape)` is the model's input; calling a layer on one
or more of them records the call and returns the layer's output, whose shape
is known at once (a layer that does not fit its input says so there).

    x = Input((28, 28, 1))
    h = Conv2D(8, 3, activation="relu")(x)
    y = Add()([h, Conv2D(8, 3)(h)])
    model = Model(x, Dense(10)(Flatten()(y)))

Nothing here computes: pyconv.model.Model reads the recorded calls once, in
topological order, and runs them.
"""
from .errors import ShapeError


class Tensor:
    """A symbolic value: the model's input (layer None), or the output of
    `layer` called on `inputs` (a tuple of Tensors). shape: one example's."""
    __slots__ = ("shape", "layer", "inputs", "name")

    def __init__(self, shape, layer=None, inputs=(), name=None):
        self.shape, self.layer, self.inputs, self.name = tuple(shape), layer, tuple(inputs), name

    def __repr__(self):
        made = "Input" if self.layer is None else type(self.layer).__name__
        return f"<Tensor {made} shape={self.shape}>"


def Input(shape, name="input"):
    """The model's input: one example's shape, (H, W, C) images or (D,) features."""
    if isinstance(shape, int) or not isinstance(shape, (tuple, list)) or not shape or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in shape):
        raise ShapeError(f"Input: shape must be (H, W, C) or (D,) of positive ints, "
                         f"got {shape!r}")
    return Tensor(shape, name=str(name))


def call(layer, inputs):
    """The Tensor that `layer` called on `inputs` (a Tensor, or a list of them
    for a merge layer) makes: the recorded call, with its output shape."""
    many = isinstance(inputs, (list, tuple))
    tensors = tuple(inputs) if many else (inputs,)
    kind = type(layer).__name__
    if not tensors or not all(isinstance(t, Tensor) for t in tensors):
        raise TypeError(f"{kind}: call it on an Input or another layer's output (a Tensor), "
                        f"or a list of them for a merge layer, got {inputs!r}")
    if layer.merges != many or (many and len(tensors) < 2):
        want = "a list of two or more Tensors" if layer.merges else "one Tensor"
        raise TypeError(f"{kind}: takes {want}, got {len(tensors) if many else 1}"
                        + (" in a list" if many else ""))
    shapes = [t.shape for t in tensors] if many else tensors[0].shape
    try:
        shape = layer.compute_output_shape(shapes)
    except ShapeError as e:
        raise ShapeError(f"{kind}: {e}") from None
    return Tensor(shape, layer, tensors)
