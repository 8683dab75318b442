"""convcore.empty: cache-line-aligned arrays, large ones from a pool of the
memory that arrays of the same size gave back."""
import gc

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

import convcore
from convcore import _alloc


def _address(a):
    return a.__array_interface__["data"][0]


@given(st.integers(0, 3 << 20), st.sampled_from([np.float32, np.int32, np.uint16]))
def test_empty_is_aligned_writable_and_of_the_shape_asked(n, dtype):
    """Both sides of the pool's threshold: aligned to 64 bytes (an empty one
    has no data to align), C-contiguous, writable, every element its own."""
    a = convcore.empty((n // 4, 2, 2)[: 1 + n % 3], dtype)
    assert a.size == 0 or _address(a) % 64 == 0
    assert a.flags.c_contiguous and a.flags.writeable
    assert a.dtype == dtype and a.shape == (n // 4, 2, 2)[: 1 + n % 3]
    a.reshape(-1)[:] = np.arange(a.size) % 100
    assert (a.reshape(-1) == np.arange(a.size) % 100).all()


def test_a_large_array_is_made_on_memory_given_back_and_never_on_memory_in_use():
    """The memory of a large array goes back to the pool when the last array
    on it (a view, a reshape) is gone, and the next array of that size is
    made on it; arrays alive at once never share memory."""
    gc.collect()
    shape = (513, 1024)                  # 2 MB: pooled
    a = convcore.empty(shape)
    where = _address(a)
    view = a.reshape(-1)[100:]
    before = _alloc.pool_bytes()
    del a
    assert _alloc.pool_bytes() == before          # the view still holds it
    del view
    assert _alloc.pool_bytes() > before
    b = convcore.empty(shape)
    c = convcore.empty(shape)
    assert _address(b) == where and _address(c) != where
    b[...] = 1
    c[...] = 2
    assert (b == 1).all() and (c == 2).all()
    small = convcore.empty(10)
    del small                                     # below POOL_MIN: NumPy's own
    assert _alloc.pool_bytes() == before


def test_the_pool_keeps_at_most_its_limit(monkeypatch):
    monkeypatch.setattr(_alloc, "POOL_LIMIT", _alloc.pool_bytes() + (5 << 20))
    arrays = [convcore.empty((1 << 20,)) for _ in range(8)]    # 4 MB each
    del arrays
    assert _alloc.pool_bytes() <= _alloc.POOL_LIMIT
