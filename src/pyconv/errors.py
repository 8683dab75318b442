"""pyconv's error types: each a ValueError, each message naming the file."""


class DataError(ValueError):
    """An MNIST/IDX file that is missing, broken or does not match its checksum."""


class ModelFileError(ValueError):
    """A saved model or checkpoint that is truncated, tampered with or of an unknown format."""


class WriteError(OSError):
    """A checkpoint, metrics or model file that could not be written: the message
    says which, where, why, and which checkpoint is still good."""


class ShapeError(ValueError):
    """A layer that does not fit the shape of its input (the message names the
    layer, what it expects and what it was given)."""


class MissingExtra(ImportError):
    """An optional feature whose packages are not installed; the message says
    which extra brings them: pip install 'pyconv[onnx]'."""
