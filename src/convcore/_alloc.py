"""Cache-line-aligned arrays: what convcore allocates its outputs with.

Large arrays come from a pool of memory given back by arrays of the same
size that are gone: a training or inference loop allocates the same sizes
every step, and memory fresh from the OS costs a page fault and a zeroed page
per 4 KB on first touch (resnet8's inference, batch 256: 11% of its time in
the kernel's page clearing before the pool). The pool keeps at most
POOL_LIMIT bytes; smaller arrays come from NumPy (whose allocator reuses
them anyway).
"""
import math
import threading

import numpy as np

ALIGN = 64   # bytes: a cache line, and one AVX-512 vector
POOL_MIN = 1 << 20      # bytes: an array at least this large is pooled
POOL_LIMIT = 512 << 20  # bytes the pool keeps for reuse at most

_free = {}              # size in bytes -> [uint8 arrays of that size, free]
_kept = [0]             # their total bytes
_lock = threading.Lock()


class _Lease:
    """A pooled block lent to the arrays made on it (it is their base): when
    the last of them is gone, the block goes back to the pool."""
    __slots__ = ("block", "__array_interface__")

    def __init__(self, block, start, n):
        self.block = block
        self.__array_interface__ = {"data": (block.__array_interface__["data"][0] + start,
                                             False),
                                    "shape": (n,), "typestr": "|u1", "version": 3}

    def __del__(self):
        try:
            _give_back(self.block)
        except Exception:        # (interpreter shutdown: the module may be gone)
            pass


def _give_back(block):
    with _lock:
        if _kept[0] + block.nbytes <= POOL_LIMIT:
            _free.setdefault(block.nbytes, []).append(block)
            _kept[0] += block.nbytes


def _take(size):
    """A free block of `size` bytes from the pool, or a new one."""
    with _lock:
        blocks = _free.get(size)
        if blocks:
            _kept[0] -= size
            return blocks.pop()
    return np.empty(size, np.uint8)


def pool_bytes():
    """The bytes the pool holds free for reuse (for tests and benchmarks)."""
    return _kept[0]


def empty(shape, dtype=np.float32):
    """An uninitialised C-contiguous array whose data starts on a 64-byte
    boundary. The vector kernels load and store whole cache lines; an array
    that starts mid-line makes every vector access touch two lines (measured:
    up to 15% slower). convcore allocates its outputs this way; pyconv its
    parameters and optimiser state. From POOL_MIN bytes on, from the pool."""
    dtype = np.dtype(dtype)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    n = math.prod(shape) * dtype.itemsize
    if n < POOL_MIN:
        buf = np.empty(n + ALIGN, np.uint8)
        start = -buf.__array_interface__["data"][0] % ALIGN   # (.ctypes.data: 10x slower)
        return buf[start:start + n].view(dtype).reshape(shape)
    block = _take(n + ALIGN)
    start = -block.__array_interface__["data"][0] % ALIGN
    return np.asarray(_Lease(block, start, n)).view(dtype).reshape(shape)


def zeros(shape, dtype=np.float32):
    """empty(shape, dtype) filled with zeros."""
    a = empty(shape, dtype)
    a[...] = 0
    return a
