"""bf16: convcore's rounding to bfloat16 against its NumPy twin and against
ml-dtypes (JAX's bfloat16), and what the CPU reports."""
import os

import ml_dtypes
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import convcore
import convcore.reference as ref

BITS = arrays(np.uint32, st.integers(0, 300), elements=st.integers(0, 2**32 - 1))


@settings(max_examples=200, deadline=None)
@given(BITS)
def test_round_bf16_is_the_reference_bits_for_any_float32(u):
    """Every float32 bit pattern (NaNs, infinities, subnormals, -0 included)."""
    x = u.view(np.float32)
    assert convcore.round_bf16(x).tobytes() == ref.round_bf16(x).tobytes()


def test_round_bf16_agrees_with_ml_dtypes_on_a_million_patterns():
    """ml-dtypes rounds to nearest, ties to even, as bf16 hardware converts:
    the same value for every non-NaN input (a NaN stays a NaN in both)."""
    x = np.random.default_rng(5).integers(0, 2**32, 10**6, dtype=np.uint64) \
        .astype(np.uint32).view(np.float32)
    got = convcore.round_bf16(x)
    with np.errstate(invalid="ignore"):
        want = x.astype(ml_dtypes.bfloat16).astype(np.float32)
    nan = np.isnan(x)
    assert got.view(np.uint32)[~nan].tolist() == want.view(np.uint32)[~nan].tolist()
    assert np.isnan(got[nan]).all()


def test_round_bf16_ties_go_to_even_and_overflow_to_infinity():
    one_ulp = 2.0 ** -7        # bfloat16's spacing at 1
    x = np.array([1 + one_ulp / 2, 1 + 1.5 * one_ulp, -(1 + one_ulp / 2),
                  np.finfo(np.float32).max, 3.0e38, -0.0, 1e-40], np.float32)
    y = convcore.round_bf16(x)
    assert y[:3].tolist() == [1.0, 1 + 2 * one_ulp, -1.0]
    assert y[3] == np.inf and y[4] == np.float32(ml_dtypes.bfloat16(3.0e38))
    assert np.signbit(y[5]) and y[5] == 0
    assert 0 < y[6] <= 1e-40      # subnormals are rounded, not flushed
    assert convcore.round_bf16(x[:0]).shape == (0,)
    assert convcore.round_bf16(np.array(1.3, np.float32)).shape == ()


def _cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def test_bf16_supported_reports_what_the_cpu_has():
    """Linux lists a feature in /proc/cpuinfo where the CPU has it and the
    kernel enables its state: the same answer as convcore's own cpuid."""
    flags = _cpu_flags() if os.path.exists("/proc/cpuinfo") else set()
    if os.environ.get("CONVCORE_MAX_ISA", "").lower() not in ("", "avx512"):
        flags = set()
    want = tuple(name for name, flag in (("amx", "amx_bf16"), ("avx512_bf16", "avx512_bf16"))
                 if flag in flags)
    assert convcore.bf16_supported() == want
