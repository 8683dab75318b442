"""The canonical order of a sum over a batch (convcore.slices): each slice
summed on its own, the slices added in one pairwise tree. Split a batch's
slices among K processes as pyconv does (K a power of two dividing them),
compute each part apart, add the parts pairwise: the very bits of the whole
batch in one call, for every operation that sums over the batch."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convcore
from convcore import reference
from convcore.slices import slice_bounds, tree_sum


def _parts(bounds, ranks):
    """Each rank's (first, end, its own bounds from 0) of the batch's slices."""
    per = (len(bounds) - 1) // ranks
    out = []
    for r in range(ranks):
        b = bounds[r * per:(r + 1) * per + 1]
        out.append((int(b[0]), int(b[-1]), b - b[0]))
    return out


@given(n=st.integers(1, 40), log_parts=st.integers(0, 6), log_chunks=st.integers(0, 6),
       seed=st.integers(0, 2**32 - 1))
def test_the_tree_of_subtrees_is_the_tree(n, log_parts, log_chunks, seed):
    """What lets K processes share the sums: the pairwise tree of 2^p parts
    is the pairwise tree of the trees of its 2^c aligned chunks."""
    parts_n, chunks = 2 ** log_parts, 2 ** min(log_chunks, log_parts)
    rng = np.random.default_rng(seed)
    parts = list((rng.standard_normal((parts_n, n)) * 10.0 ** rng.integers(-3, 4, (parts_n, 1)))
                 .astype(np.float32))
    per = parts_n // chunks
    assert tree_sum([tree_sum(parts[i:i + per]) for i in range(0, parts_n, per)]).tobytes() \
        == tree_sum(parts).tobytes()


def test_slice_bounds_cut_evenly_in_order():
    assert slice_bounds(10, 4).tolist() == [0, 2, 5, 7, 10]
    assert slice_bounds(3, 4).tolist() == [0, 0, 1, 2, 3]
    assert slice_bounds(0, 2).tolist() == [0, 0, 0]


def _ops(rng, n):
    """(name, call(first, end, bounds) -> its results) for every operation that
    sums over the batch, on each of its paths (direct, Winograd, BLAS, dense
    tiles, dense BLAS, fused pool and Adam)."""
    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    xd, wd = arr(n, 7, 6, 16), arr(3, 3, 16, 32)
    dyd = arr(n, 7, 6, 32)
    xw, ww = arr(n, 6, 7, 16), arr(5, 5, 16, 16)
    dyw = arr(n, 6, 7, 16)
    xb, wb = arr(n, 6, 5, 3), arr(3, 3, 3, 5)
    dyb = arr(n, 6, 5, 5)
    yp, am = convcore.conv2d_maxpool_forward(xw, ww, None, 1, "same", True, 2, 2, "same",
                                             return_argmax=True)
    dyp = arr(*yp.shape)
    xl, wl, dyl = arr(n, 40), arr(40, 32), arr(n, 32)
    wt, dyt = arr(40, 10), arr(n, 10)
    ops = {
        "conv direct": lambda f, e, b: convcore.conv2d_backward(
            xd[f:e], wd, dyd[f:e], padding="same", slices=b),
        "conv Winograd": lambda f, e, b: convcore.conv2d_backward(
            xw[f:e], ww, dyw[f:e], padding="same", relu_y=dyw[f:e], slices=b),
        "conv BLAS": lambda f, e, b: convcore.conv2d_backward(
            xb[f:e], wb, dyb[f:e], padding=1, slices=b),
        "conv + pool": lambda f, e, b: convcore.conv2d_maxpool_backward(
            xw[f:e], ww, dyp[f:e], am[f:e], 1, "same", 2, 2, "same", relu_y=yp[f:e],
            slices=b),
        "dense tiles": lambda f, e, b: convcore.linear_backward(xl[f:e], wl, dyl[f:e],
                                                                relu_y=dyl[f:e], slices=b),
        "dense BLAS": lambda f, e, b: convcore.linear_backward(xl[f:e], wt, dyt[f:e], slices=b),
    }

    def adam(f, e, b):
        state = [wl.copy(), np.ones_like(wl), np.ones_like(wl), wl[0].copy(),
                 np.ones_like(wl[0]), np.ones_like(wl[0])]
        convcore.linear_backward_adam(xl[f:e], state[0], dyl[f:e], state[3], state[1],
                                      state[2], state[4], state[5], 1e-3, slices=b)
        return state
    return ops, adam


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 37), log_slices=st.integers(0, 4), log_ranks=st.integers(0, 4),
       seed=st.integers(0, 2**32 - 1))
def test_ranks_holding_whole_slices_sum_to_the_batchs_bits(n, log_slices, log_ranks, seed):
    slices, ranks = 2 ** log_slices, 2 ** min(log_ranks, log_slices)
    bounds = slice_bounds(n, slices)
    ops, _ = _ops(np.random.default_rng(seed), n)
    for name, op in ops.items():
        dx, dw, db = op(0, n, bounds)
        parts = [op(f, e, b) for f, e, b in _parts(bounds, ranks)]
        assert tree_sum([p[1] for p in parts]).tobytes() == dw.tobytes(), name
        assert tree_sum([p[2] for p in parts]).tobytes() == db.tobytes(), name
        if dx is not None:       # each example's own: the same wherever it is computed
            assert np.concatenate([p[0] for p in parts]).tobytes() == dx.tobytes(), name


@pytest.mark.parametrize("slices", [None, 1, 4, 8])
def test_sliced_sums_match_the_reference(slices):
    """The slices change only the rounding: the sums against NumPy's twin
    (convcore.reference, which adds the same slices in the same tree)."""
    rng = np.random.default_rng(3)
    n = 21
    bounds = None if slices is None else slice_bounds(n, slices)
    ops, adam = _ops(rng, n)
    x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((n, 40), (40, 32), (n, 32)))
    got = convcore.linear_backward(x, w, dy, slices=bounds)
    want = reference.linear_backward(x.astype(np.float64), w.astype(np.float64),
                                     dy.astype(np.float64), slices=bounds)
    for g, r in zip(got, want):
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-5)
    x4 = rng.standard_normal((n, 6, 7, 16)).astype(np.float32)
    w4 = rng.standard_normal((5, 5, 16, 16)).astype(np.float32)
    dy4 = rng.standard_normal((n, 6, 7, 16)).astype(np.float32)
    got = convcore.conv2d_backward(x4, w4, dy4, padding="same", slices=bounds)
    want = reference.conv2d_backward(*(a.astype(np.float64) for a in (x4, w4, dy4)),
                                     padding="same", slices=bounds)
    for g, r in zip(got, want):       # Winograd: float32 transforms of ~1000-term sums
        np.testing.assert_allclose(g, r, rtol=0, atol=1e-4 * np.abs(r).max())
    whole = adam(0, n, bounds)
    ref = adam(0, n, None)
    np.testing.assert_allclose(whole[0], ref[0], atol=1e-6)


@pytest.mark.parametrize("bad, why", [
    ([0, 5, 3, 21], "must rise from 0 to the batch size N = 21"),
    ([1, 21], "must rise from 0 to the batch size N = 21"),
    ([0, 20], "must rise from 0 to the batch size N = 21"),
    ([0.0, 21.0], "a 1-D sequence of integers"),
    ([[0, 21]], "a 1-D sequence of integers"),
    ([0], "a 1-D sequence of integers"),
    (list(range(0, 2000)) + [21], "at most 1024"),
])
def test_bad_slices_are_refused_naming_them(bad, why):
    rng = np.random.default_rng(0)
    x, w, dy = (rng.standard_normal(s).astype(np.float32) for s in ((21, 40), (40, 32), (21, 32)))
    xc = rng.standard_normal((21, 6, 5, 3)).astype(np.float32)
    wc = rng.standard_normal((3, 3, 3, 5)).astype(np.float32)
    calls = {
        "linear_backward": lambda: convcore.linear_backward(x, w, dy, slices=bad),
        "linear_forward": lambda: convcore.linear_forward(x, w, slices=bad),
        "conv2d_backward": lambda: convcore.conv2d_backward(xc, wc, xc[..., :1].repeat(5, 3),
                                                            padding=1, slices=bad),
        "conv2d_forward": lambda: convcore.conv2d_forward(xc, wc, padding=1, slices=bad),
    }
    for fn, call in calls.items():
        with pytest.raises(ValueError, match=f"{fn}: slices") as e:
            call()
        assert why in str(e.value), (fn, str(e.value))
