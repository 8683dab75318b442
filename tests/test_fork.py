"""convcore in processes forked after the parent ran it on two threads.

GNU libgomp's thread team does not survive fork(): without care, the child's
first parallel region hangs forever. convcore then runs on one thread in the
child (saying so once); results keep their bits, since they are the same on
any thread count. Each child runs under a timeout: a hang fails the test.
"""
import multiprocessing as mp
import warnings

import numpy as np
import pytest

import convcore
import pyconv

pytestmark = pytest.mark.skipif(not convcore.openmp_enabled(),
                                reason="a serial build has no thread team to lose")

TIMEOUT = 60
RNG = np.random.default_rng(0)
X = RNG.random((6, 28, 28, 1), dtype=np.float32)
W = RNG.standard_normal((5, 5, 16, 32)).astype(np.float32)
XC = RNG.random((4, 12, 12, 16), dtype=np.float32)
MODEL = pyconv.models.tutorial_cnn(seed=0)


def _work(_=None):
    """conv2d_forward and predict; with the warnings the call raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        y = convcore.conv2d_forward(XC, W, padding="same")
        logits = MODEL.predict(X)
    return (y, logits, convcore.get_num_threads(),
            [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)])


def _child(queue):
    queue.put(_work())


@pytest.fixture
def parent_on_two_threads(threads):
    threads(2)
    return _work()


def test_forked_process_does_not_hang_and_gives_the_same_bits(parent_on_two_threads):
    want_y, want_logits, _, _ = parent_on_two_threads
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    try:
        y, logits, n_threads, said = queue.get(timeout=TIMEOUT)
    except Exception:  # noqa: BLE001 - queue.Empty: the child hung
        proc.kill()
        pytest.fail(f"the forked child did not answer within {TIMEOUT} s (hung)")
    proc.join(TIMEOUT)
    assert proc.exitcode == 0
    assert n_threads == 1
    assert len(said) == 1 and "forked" in said[0] and "spawn" in said[0]
    assert y.tobytes() == want_y.tobytes() and logits.tobytes() == want_logits.tobytes()


def test_fork_pool_predicts_without_hanging(parent_on_two_threads):
    want_y, want_logits, _, _ = parent_on_two_threads
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map_async(_work, range(4)).get(timeout=TIMEOUT)
    for y, logits, n_threads, _ in results:
        assert n_threads == 1
        assert y.tobytes() == want_y.tobytes() and logits.tobytes() == want_logits.tobytes()


def test_spawned_process_keeps_its_threads(parent_on_two_threads):
    """A spawned child is a new process: its default thread count, not 1."""
    from convcore._threads import _default_threads
    with mp.get_context("spawn").Pool(1) as pool:
        n_threads = pool.apply_async(convcore.get_num_threads).get(timeout=TIMEOUT)
    assert n_threads == _default_threads()
