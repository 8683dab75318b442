"""Fuzz: every public convcore function fed arbitrary arrays and parameters.

Each case runs in a child process (a one-worker process pool), so that a
segmentation fault fails this test, naming the case, instead of killing the
run. A case must either raise TypeError or ValueError naming the function,
or return; when it returns and the NumPy reference accepts the same
arguments, the two must agree.
"""
import concurrent.futures as cf
import multiprocessing as mp

import numpy as np
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes, arrays

from convcore._ops import OPERATIONS

from fuzz_worker import run_case

DTYPES = st.sampled_from([np.float32] * 6 + [np.float64, np.int32, np.int64, np.float16,
                                             np.bool_])


@st.composite
def any_array(draw, max_dims=6):
    """0-d to 6-d arrays, empty ones included; sometimes non-contiguous or read-only."""
    dtype = draw(DTYPES)
    shape = draw(array_shapes(min_dims=0, max_dims=max_dims, min_side=0, max_side=5))
    if dtype == np.float32:
        elements = st.floats(width=32, allow_nan=True, allow_infinity=True)
    elif dtype == np.bool_:
        elements = st.booleans()
    elif np.issubdtype(dtype, np.integer):
        elements = st.integers(-2**31, 2**31 - 1)   # forged argmax values included
    else:
        elements = st.floats(-10, 10, width=16 if dtype == np.float16 else 64)
    a = draw(arrays(dtype, shape, elements=elements))
    if a.ndim and draw(st.booleans()):
        a = np.repeat(a, 2, axis=-1)[..., ::2]      # a non-contiguous view
    if draw(st.booleans()):
        a.setflags(write=False)
    return a


@st.composite
def conv_like(draw, ndim):
    """An array that is plausibly right (float32, right ndim), to get past the first check."""
    shape = draw(st.lists(st.integers(0, 6), min_size=ndim, max_size=ndim))
    return draw(arrays(np.float32, shape, elements=st.floats(-3, 3, width=32)))


SIZES = st.one_of(st.integers(-2, 8), st.sampled_from([2**31, 2**62, 2**63 + 5, -2**63]),
                  st.tuples(st.integers(-1, 7), st.integers(-1, 7)),
                  st.lists(st.integers(0, 3), max_size=3), st.none(), st.floats(0, 3),
                  st.just(True), st.text(max_size=3))
PADDINGS = st.one_of(SIZES, st.sampled_from(["same", "valid", "SAME", "full"]))
PRECISIONS = st.sampled_from(["fp32", "bf16-emulated", "bf16", None, 3])
SHAPES = st.one_of(st.tuples(*[st.integers(-1, 6)] * 4),
                   st.tuples(st.integers(0, 3), st.sampled_from([2**31, 2**40, 2**62]),
                             st.sampled_from([2**31, 2**40, 2**62]), st.integers(1, 3)),
                   st.lists(st.integers(0, 5), max_size=5), st.none(), st.text(max_size=4))
ARR = st.one_of(any_array(), conv_like(4), conv_like(2), conv_like(1))


def arguments(name):
    """Hypothesis strategy of (args, kwargs) for one function."""
    if name == "im2col":
        return st.tuples(st.tuples(ARR, SIZES), st.fixed_dictionaries({}, optional={
            "stride": SIZES, "padding": PADDINGS}))
    if name == "col2im":
        return st.tuples(st.tuples(ARR, SHAPES, SIZES), st.fixed_dictionaries({}, optional={
            "stride": SIZES, "padding": PADDINGS}))
    if name == "conv2d_forward":
        return st.tuples(st.tuples(ARR, ARR), st.fixed_dictionaries({}, optional={
            "b": ARR, "stride": SIZES, "padding": PADDINGS, "relu": st.booleans(),
            "precision": PRECISIONS}))
    if name == "conv2d_backward":
        return st.tuples(st.tuples(ARR, ARR, ARR), st.fixed_dictionaries({}, optional={
            "stride": SIZES, "padding": PADDINGS, "relu_y": ARR, "need_dx": st.booleans(),
            "precision": PRECISIONS}))
    if name == "conv2d_maxpool_forward":
        return st.tuples(st.tuples(ARR, ARR), st.fixed_dictionaries({}, optional={
            "b": ARR, "stride": SIZES, "padding": PADDINGS, "relu": st.booleans(),
            "pool_size": SIZES, "pool_stride": SIZES, "pool_padding": PADDINGS,
            "return_argmax": st.booleans(), "precision": PRECISIONS}))
    if name == "conv2d_maxpool_backward":
        return st.tuples(st.tuples(ARR, ARR, ARR, ARR), st.fixed_dictionaries({}, optional={
            "stride": SIZES, "padding": PADDINGS, "pool_size": SIZES, "pool_stride": SIZES,
            "pool_padding": PADDINGS, "need_dx": st.booleans(), "relu_y": ARR,
            "precision": PRECISIONS}))
    if name in ("dropout_forward", "dropout_backward"):
        rates = st.one_of(st.floats(-1, 2), st.integers(-1, 2), st.none(), st.just(True))
        keys = st.one_of(st.integers(-2, 2**64 + 2), st.floats(0, 3), st.none())
        offsets = st.one_of(st.integers(-2, 2**63), st.floats(0, 3), st.none())
        return st.tuples(st.tuples(ARR, rates, keys), st.fixed_dictionaries({}, optional={
            "offset": offsets}))
    if name == "linear_backward_adam":
        return st.tuples(st.tuples(ARR, ARR, ARR, st.one_of(st.none(), ARR), ARR, ARR,
                                   st.one_of(st.none(), ARR), st.one_of(st.none(), ARR),
                                   st.floats(-1, 1)), st.fixed_dictionaries({}, optional={
                                       "need_dx": st.booleans(), "relu_y": ARR,
                                       "precision": PRECISIONS}))
    if name == "maxpool2d_forward":
        return st.tuples(st.tuples(ARR), st.fixed_dictionaries({}, optional={
            "pool_size": SIZES, "stride": SIZES, "padding": PADDINGS}))
    if name == "maxpool2d_backward":
        return st.tuples(st.tuples(ARR, ARR, SHAPES), st.fixed_dictionaries({}, optional={
            "pool_size": SIZES, "stride": SIZES, "padding": PADDINGS}))
    if name == "avgpool2d_forward":
        return st.tuples(st.tuples(ARR), st.fixed_dictionaries({}, optional={
            "pool_size": SIZES, "stride": SIZES, "padding": PADDINGS}))
    if name == "avgpool2d_backward":
        return st.tuples(st.tuples(ARR, SHAPES), st.fixed_dictionaries({}, optional={
            "pool_size": SIZES, "stride": SIZES, "padding": PADDINGS}))
    epsilons = st.one_of(st.floats(-1, 1), st.integers(-1, 1), st.none(), st.just(True))
    if name in ("batchnorm_forward", "batchnorm_inference"):
        vectors = (ARR, ARR) if name == "batchnorm_forward" else (ARR, ARR, ARR, ARR)
        return st.tuples(st.tuples(ARR, *vectors), st.fixed_dictionaries({}, optional={
            "eps": epsilons, "relu": st.booleans()}))
    if name == "batchnorm_backward":
        return st.tuples(st.tuples(ARR, ARR, ARR, ARR, ARR), st.fixed_dictionaries(
            {}, optional={"eps": epsilons, "need_dx": st.booleans(), "relu_beta": ARR}))
    if name == "linear_forward":
        return st.tuples(st.tuples(ARR, ARR), st.fixed_dictionaries({}, optional={
            "b": ARR, "relu": st.booleans(),
            "precision": PRECISIONS}))
    if name == "linear_backward":
        return st.tuples(st.tuples(ARR, ARR, ARR), st.fixed_dictionaries({}, optional={
            "relu_y": ARR, "need_dx": st.booleans(),
            "precision": PRECISIONS}))
    if name == "gather_batch":
        rows = st.one_of(ARR, arrays(np.int64, st.integers(0, 6), elements=st.integers(-2, 8)))
        return st.tuples(st.tuples(st.one_of(ARR, arrays(np.uint8, st.tuples(
            *[st.integers(0, 4)] * 4))), rows), st.fixed_dictionaries({}, optional={
                "shift": st.one_of(ARR, st.none()), "flip": st.one_of(ARR, st.none()),
                "divisor": st.one_of(st.floats(-1, 300), st.integers(-1, 3), st.none())}))
    if name == "add_forward":
        return st.tuples(st.tuples(ARR, ARR), st.fixed_dictionaries({}, optional={
            "relu": st.booleans()}))
    if name == "round_bf16":
        return st.tuples(st.tuples(ARR), st.just({}))
    if name == "add_backward":
        return st.tuples(st.tuples(ARR), st.fixed_dictionaries({}, optional={
            "relu_y": st.one_of(ARR, st.none())}))
    if name == "adam_update":
        return st.tuples(st.tuples(ARR, ARR, ARR, ARR, st.floats(-1, 1)), st.just({}))
    return st.tuples(st.tuples(ARR, ARR, ARR, st.floats(-1, 1)), st.fixed_dictionaries(
        {}, optional={"momentum": st.floats(-1, 1)}))


_pool = None


def _executor():
    global _pool
    if _pool is None:
        _pool = cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
    return _pool


TIMEOUT = 60   # seconds: every fuzz case is tiny; one that runs this long is a hang


def _kill_pool():
    global _pool
    for proc in list(getattr(_pool, "_processes", {}).values()):
        proc.kill()
    _pool.shutdown(wait=False, cancel_futures=True)
    _pool = None


def call_isolated(name, args, kwargs):
    global _pool
    future = _executor().submit(run_case, name, args, kwargs)
    try:
        return future.result(timeout=TIMEOUT)
    except cf.process.BrokenProcessPool:
        _pool = None
        pytest.fail(f"convcore.{name} CRASHED the process on args={args!r} kwargs={kwargs!r}")
    except cf.TimeoutError:
        _kill_pool()
        pytest.fail(f"convcore.{name} did not return within {TIMEOUT} s on args={args!r} "
                    f"kwargs={kwargs!r}")


def _agree(name, out, args, kwargs):
    import convcore.reference as ref
    if name in ("adam_update", "sgd_update", "linear_backward_adam"):   # in place
        return
    try:
        with np.errstate(all="ignore"):
            want = getattr(ref, name)(*[np.asarray(a) if isinstance(a, np.ndarray) else a
                                        for a in args], **kwargs)
    except Exception:  # noqa: BLE001 - the reference is a specification, not a validator
        return
    got = out if isinstance(out, tuple) else (out,)
    want = want if isinstance(want, tuple) else (want,)
    for g, w in zip(got, want):
        if g is None or w is None:
            continue
        assert g.shape == np.shape(w), f"{name}: shape {g.shape} != reference {np.shape(w)}"
        if g.dtype == np.int32 or name.startswith("maxpool") or name == "im2col":
            np.testing.assert_array_equal(g, w)
        else:
            finite = np.isfinite(w) & np.isfinite(g)
            np.testing.assert_allclose(g[finite], np.asarray(w)[finite], rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("name", OPERATIONS)
def test_fuzz_never_crashes(name):
    # no shrinking: a hung case would cost TIMEOUT seconds per shrink step;
    # the case is reported as generated
    @settings(max_examples=150, deadline=None, database=None,
              phases=(Phase.explicit, Phase.reuse, Phase.generate))
    @given(arguments(name))
    def fuzz(case):
        args, kwargs = case
        kind, message, out = call_isolated(name, args, kwargs)
        assert kind in ("ok", "TypeError", "ValueError"), \
            f"convcore.{name} raised {kind}: {message} on {args!r} {kwargs!r}"
        if kind != "ok":
            assert message.startswith(name) or message.startswith("set_num_threads"), message
            return
        _agree(name, out, args, kwargs)

    fuzz()


def teardown_module(module):
    if _pool is not None:
        _pool.shutdown()
