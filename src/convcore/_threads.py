"""How many OpenMP threads the kernels use, decided once (after scikit-learn).

Default: OMP_NUM_THREADS if set, else the cores this process may run on.
set_num_threads(n) overrides it. BLAS is kept single-threaded while convcore
runs (see blas_single_thread) so that the two thread pools never nest.
"""
import os
import threading
from contextlib import contextmanager

_lock = threading.Lock()
_n_threads = None


def _default_threads():
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n >= 1:
            return n
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


# Dense products are cut into this many tiles, one single-threaded sgemm each.
# It is the machine's core count, fixed for the process and independent of the
# thread setting, so that results keep the same bits on any thread count.
GEMM_TILES = max(1, os.cpu_count() or 1)


def set_num_threads(n):
    """Use n threads (an int >= 1) in every convcore kernel from now on."""
    from ._checks import integer
    n = integer("set_num_threads", "n", n, 1)
    global _n_threads
    _n_threads = n


def get_num_threads():
    """The number of threads the kernels will use (1 in a serial build)."""
    from ._openmp_info import openmp_enabled
    global _n_threads
    if _n_threads is None:
        _n_threads = _default_threads()
    return _n_threads if openmp_enabled() else 1


_controller = None
_depth = 0
_restore = []     # BLAS thread counts to put back on the outermost exit


@contextmanager
def blas_single_thread():
    """Limit BLAS to one thread while convcore's OpenMP threads call it.

    The limit is set on the outermost entry and lifted on the outermost exit,
    so that concurrent callers from several Python threads nest correctly.
    """
    global _controller, _depth, _restore
    with _lock:
        if _controller is None:
            from threadpoolctl import ThreadpoolController
            _controller = ThreadpoolController().select(user_api="blas")
        if _depth == 0:
            _restore = [lib.num_threads for lib in _controller.lib_controllers]
            for lib, n in zip(_controller.lib_controllers, _restore):
                if n != 1:
                    lib.set_num_threads(1)
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                for lib, n in zip(_controller.lib_controllers, _restore):
                    if n != 1:
                        lib.set_num_threads(n)
