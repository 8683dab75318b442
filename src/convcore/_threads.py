"""How many OpenMP threads the kernels use, decided once (after scikit-learn).

Default: OMP_NUM_THREADS if set, else the cores this process may run on.
set_num_threads(n) overrides it. BLAS is kept single-threaded while convcore
runs (see blas_single_thread) so that the two thread pools never nest.

Fork: GNU libgomp's thread team does not survive fork(); a child that opens
a parallel region after its parent did hangs forever. So a process forked
after convcore ran on several threads runs convcore on one thread, and says
so once (a RuntimeWarning). Children started with "spawn" or "forkserver"
are new processes and use every thread.
"""
import os
import threading
import warnings
from contextlib import contextmanager

_lock = threading.Lock()
_n_threads = None
_team_started = False    # this process has run a kernel on more than one thread
_forked_after_team = False   # ... and this is a child forked after that
_warned_fork = False


def _after_fork_in_child():
    global _forked_after_team
    _forked_after_team = _forked_after_team or _team_started


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


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
    """The number of threads the kernels will use (1 in a serial build, and in
    a process forked after its parent ran convcore on several threads)."""
    from ._openmp_info import openmp_enabled
    global _n_threads, _team_started
    if _n_threads is None:
        _n_threads = _default_threads()
    if not openmp_enabled() or _n_threads == 1:
        return 1
    if _forked_after_team:
        _warn_fork()
        return 1
    _team_started = True
    return _n_threads


def _warn_fork():
    global _warned_fork
    if not _warned_fork:
        _warned_fork = True
        warnings.warn(
            f"convcore: this process was forked after its parent ran convcore on several "
            f"threads; OpenMP's thread team does not survive fork, so convcore runs on 1 "
            f"thread here (not {_n_threads}). Start workers with multiprocessing's 'spawn' "
            f"or 'forkserver' method to use every thread.", RuntimeWarning, stacklevel=4)


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
