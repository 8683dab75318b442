"""Dropout: the Philox4x32-10 generator against Random123's known answers, the
kernel against convcore.reference bit for bit, and the mask's statistics."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import convcore
import convcore.reference as ref
from convcore import _dropout, _isa

# Random123's kat_vectors: counter (4 words), key (2 words) -> 4 words
KAT = [
    ([0, 0, 0, 0], [0, 0], [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]),
    ([0xffffffff] * 4, [0xffffffff] * 2, [0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd]),
    ([0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344], [0xa4093822, 0x299f31d0],
     [0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1]),
]


@pytest.mark.parametrize("counter, key, want", KAT)
def test_philox_known_answers(counter, key, want):
    assert _dropout.philox4x32_10(counter, key) == want
    assert ref.philox4x32_10(np.array([counter]), key)[0].tolist() == want


@st.composite
def dropout_cases(draw):
    """Shapes from empty to several work items (16384 entries) with ragged
    256-entry batches; rates at and between the edges; any 64-bit key; values
    with signs, zeros, infinities and NaN."""
    shape = tuple(draw(st.lists(st.integers(0, 40), min_size=1, max_size=3)))
    if draw(st.booleans()):
        shape = (draw(st.integers(0, 40000)),)
    rate = draw(st.one_of(st.sampled_from([0.0, 0.1, 0.5, 0.999]), st.floats(0, 0.9999)))
    offset = draw(st.sampled_from([0, 0, draw(st.integers(0, 100000)), 2**40 + 17]))
    return (shape, rate, draw(st.integers(0, 2**64 - 1)), draw(st.integers(0, 2**32 - 1)),
            offset)


@given(dropout_cases())
def test_dropout_equals_reference(case):
    shape, rate, key, seed, offset = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    special = rng.random(shape) < 0.05
    x[special] = rng.choice([0.0, -0.0, np.inf, -np.inf, np.nan], special.sum())
    want = ref.dropout_forward(x, rate, key, offset)
    y = convcore.dropout_forward(x, rate, key, offset)
    assert y.shape == x.shape and y.tobytes() == want.tobytes()
    # the backward pass makes the same mask again from the key
    assert convcore.dropout_backward(x, rate, key, offset).tobytes() == want.tobytes()
    # every kernel set's generator gives the same words (the baseline's: one
    # counter at a time; the vector sets': 2, 4 or 8 a vector)
    keep = np.float32(1 - rate)
    for name in ("baseline", *convcore.simd_supported()):
        y2 = np.empty_like(x)
        _dropout.dropout(x.reshape(-1), y2.reshape(-1), key, keep, np.float32(1 / (1 - rate)),
                         2, _isa.SETS[name], offset)
        assert y2.tobytes() == want.tobytes(), name


@given(n=st.integers(1, 3000), cut=st.integers(0, 3000), rate=st.floats(0, 0.9),
       key=st.integers(0, 2**64 - 1))
def test_dropout_of_the_parts_is_dropout_of_the_whole(n, cut, rate, key):
    """Split a tensor anywhere: each part with its offset drops what the whole
    does (so a batch split across processes drops as one process would)."""
    cut = min(cut, n)
    x = np.random.default_rng(n).standard_normal(n).astype(np.float32)
    whole = convcore.dropout_forward(x, rate, key)
    parts = [convcore.dropout_forward(x[:cut], rate, key),
             convcore.dropout_forward(x[cut:], rate, key, offset=cut)]
    assert np.concatenate(parts).tobytes() == whole.tobytes()


def test_dropout_mask_statistics():
    """Kept with probability 1 - rate, scaled by 1 / (1 - rate); masks of other
    keys independent (they agree on keep^2 + rate^2 of the entries)."""
    n, rate = 2**20, 0.3
    ones = np.ones(n, np.float32)
    a = convcore.dropout_forward(ones, rate, 1)
    b = convcore.dropout_forward(ones, rate, 2)
    assert set(np.unique(a)) == {np.float32(0), np.float32(1 / 0.7)}
    sigma = np.sqrt(n * rate * (1 - rate))
    assert abs(np.count_nonzero(a) - n * (1 - rate)) < 6 * sigma
    agree = np.count_nonzero((a != 0) == (b != 0))
    p = 0.7**2 + 0.3**2
    assert abs(agree - n * p) < 6 * np.sqrt(n * p * (1 - p))
    # neighbouring entries are independent too (no pattern along the counter)
    both = np.count_nonzero((a[1:] != 0) & (a[:-1] != 0))
    assert abs(both - (n - 1) * 0.49) < 6 * np.sqrt(n * 0.49 * 0.51)


@pytest.mark.parametrize("call, exc, word", [
    (lambda: convcore.dropout_forward(np.ones(3), 0.5, 1), TypeError, "x"),
    (lambda: convcore.dropout_forward([1.0], 0.5, 1), TypeError, "x"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), 1.0, 1), ValueError, "rate"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), -0.1, 1), ValueError, "rate"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), float("nan"), 1), ValueError,
     "rate"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), True, 1), TypeError, "rate"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), 0.5, -1), ValueError, "key"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), 0.5, 2**64), ValueError, "key"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), 0.5, 1.5), TypeError, "key"),
    (lambda: convcore.dropout_backward(np.ones(3, np.float16), 0.5, 1), TypeError, "dy"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), 0.5, 1, -1), ValueError, "offset"),
    (lambda: convcore.dropout_forward(np.ones(3, np.float32), 0.5, 1, 0.5), TypeError,
     "offset"),
])
def test_dropout_bad_input(call, exc, word):
    with pytest.raises(exc, match=word):
        call()
