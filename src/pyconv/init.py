"""Weight initialisers: each returns a float32 array of `shape` drawn from `rng`."""
import numpy as np


def _fans(shape):
    """(fan_in, fan_out) of a dense (D_in, D_out) or conv (kh, kw, C_in, C_out) weight."""
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return receptive * shape[-2], receptive * shape[-1]


def truncated_normal(shape, rng, stddev=0.1, mean=0.0):
    """Normal values redrawn until within two standard deviations (TensorFlow's rule)."""
    out = rng.normal(mean, stddev, size=shape)
    while True:
        bad = np.abs(out - mean) > 2 * stddev
        if not bad.any():
            return out.astype(np.float32)
        out[bad] = rng.normal(mean, stddev, size=int(bad.sum()))


def constant(shape, rng=None, value=0.0):
    return np.full(shape, value, np.float32)


def uniform(shape, rng, low=-0.05, high=0.05):
    return rng.uniform(low, high, size=shape).astype(np.float32)


def glorot_uniform(shape, rng):
    fan_in, fan_out = _fans(shape)
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return uniform(shape, rng, -limit, limit)


def he_normal(shape, rng):
    fan_in, _ = _fans(shape)
    return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)


INITIALISERS = {f.__name__: f for f in (truncated_normal, constant, uniform, glorot_uniform,
                                         he_normal)}


def make(spec, shape, rng):
    """Initialise from a spec: a name, or (name, {keyword arguments})."""
    name, kwargs = (spec, {}) if isinstance(spec, str) else spec
    if name not in INITIALISERS:
        raise ValueError(f"unknown initialiser {name!r}; expected one of {sorted(INITIALISERS)}")
    return INITIALISERS[name](tuple(shape), rng, **kwargs)
