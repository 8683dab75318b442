"""Shared by the tests: Hypothesis strategies, tolerances, finite differences."""
import contextlib
import os
import subprocess
import sys

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from conftest import MNIST_DIR

U32 = 2.0 ** -24  # float32 unit roundoff


def pyconv(*args, check=True, **kw):
    """The pyconv command in a subprocess, on the tests' MNIST files."""
    env = dict(os.environ, PYCONV_DATA_DIR=MNIST_DIR)
    proc = subprocess.run([sys.executable, "-m", "pyconv", *args], env=env,
                          capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"pyconv {args} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def f32(shape, lo=-2.0, hi=2.0):
    return arrays(np.float32, shape, elements=st.floats(lo, hi, width=32))


def padding_forms(max_pad=3):
    return st.one_of(
        st.integers(0, max_pad),
        st.tuples(st.integers(0, max_pad), st.integers(0, max_pad)),
        st.sampled_from(["valid", "same"]),
    )


@st.composite
def windows(draw, max_hw=9, max_c=4, max_n=3, pool=False):
    """(x_shape, kernel (kh, kw), stride (sh, sw), padding): any legal window,
    from 1x1 up to the whole padded image, strides larger than the kernel included.
    For pooling, explicit padding stays below the pool size."""
    n = draw(st.integers(0, max_n))
    hw = (draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw)))
    c = draw(st.integers(1, max_c))
    pad = draw(padding_forms())
    kernel = []
    for axis in (0, 1):
        if pad == "same":
            lo, hi = 1, hw[axis] + 3          # 'same' pads as much as any kernel needs
        else:
            p = 0 if pad == "valid" else (pad if isinstance(pad, int) else pad[axis])
            lo, hi = (p + 1 if pool else 1), hw[axis] + 2 * p
        kernel.append(draw(st.integers(lo, min(hi, max(lo, 9)))))
    stride = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    return (n, *hw, c), tuple(kernel), stride, pad


def assert_within(got, want, bound, terms, what=""):
    """|got - want| <= 2 (terms + 1) u * bound: the float32 error of a sum of
    `terms` products, where bound = the same computation on absolute values."""
    got = np.asarray(got, np.float64)
    tol = 2.0 * (terms + 1) * U32 * np.asarray(bound, np.float64) + 1e-30
    err = np.abs(got - want)
    bad = ~(err <= tol)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert not bad.any(), (f"{what}: {bad.sum()} entries off; worst error "
                           f"{err[bad].max():.3g} vs tolerance {tol[bad].min():.3g}")


def numeric_grad(f, a, eps):
    """Central differences of the scalar f() with respect to every entry of array a."""
    g = np.zeros(a.shape)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        hi = f()
        a[i] = old - eps
        lo = f()
        a[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


# Winograd F(2x2, 5x5) and F(4x4, 3x3), as in convcore/_conv_winograd.h:
# Y = A^T [(G g G^T) (.) (B^T d B)] A, with 6x6 tiles at a stride of m = 7 - r
# (r: the kernel size); WINO_G and WINO_AT by r
WINO_BT = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                    [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
WINO_G = {
    5: np.array([[1 / 4, 0, 0, 0, 0], [-1 / 6] * 5, [-1 / 6, 1 / 6, -1 / 6, 1 / 6, -1 / 6],
                 [1 / 24, 1 / 12, 1 / 6, 1 / 3, 2 / 3], [1 / 24, -1 / 12, 1 / 6, -1 / 3, 2 / 3],
                 [0, 0, 0, 0, 1]]),
    3: np.array([[1 / 4, 0, 0], [-1 / 6] * 3, [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                 [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]]),
}
WINO_AT = {
    5: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 1]], float),
    3: np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0],
                 [0, 1, -1, 8, -8, 1]], float),
}


def _abs_tiles(x, top, left, oh, ow, m):
    """|B^T| |d| |B| of every 6x6 input tile d of x (N, H, W, C) padded by
    top/left (tiles at stride m over the (oh, ow) output): (N, th, tw, 6, 6, C)."""
    n, h, wd, c = x.shape
    th, tw = -(-oh // m), -(-ow // m)
    xp = np.zeros((n, m * th + 6 - m, m * tw + 6 - m, c))
    rows, cols = min(h, xp.shape[1] - top), min(wd, xp.shape[2] - left)
    xp[:, top:top + rows, left:left + cols] = np.abs(x[:, :rows, :cols])
    tiles = np.lib.stride_tricks.sliding_window_view(xp, (6, 6), axis=(1, 2))[:, ::m, ::m]
    bt = np.abs(WINO_BT)
    return np.einsum("ai,ntscij,bj->ntsabc", bt, tiles, bt, optimize=True)


def winograd_bound(x, w, b, top, left, oh, ow):
    """The Winograd computation of conv(x, w) + b on absolute values, every
    matrix and array replaced by its absolute value: |computed - exact| is at
    most (its depth) * u times this, the componentwise bound of a bilinear
    algorithm in floating point (the transforms scale values by up to
    10 * 10 and 7 * 7, or 10 * 10 and 21 * 21 for 3x3 kernels, so it can
    exceed the direct sum's bound). x (N, H, W, C) padded by top/left, w
    (r, r, C, F), r = 5 or 3; returns (N, oh, ow, F)."""
    n, r = x.shape[0], w.shape[0]
    m = 7 - r
    th, tw = -(-oh // m), -(-ow // m)
    v = _abs_tiles(x, top, left, oh, ow, m)
    g, at = np.abs(WINO_G[r]), np.abs(WINO_AT[r])
    u = np.einsum("ai,ijcf,bj->abcf", g, np.abs(np.asarray(w, float)), g, optimize=True)
    mm = np.einsum("ntsabc,abcf->ntsabf", v, u, optimize=True)
    y = np.einsum("pa,ntsabf,qb->ntpsqf", at, mm, at, optimize=True)
    y = y.reshape(n, m * th, m * tw, w.shape[3])[:, :oh, :ow]
    return y + (0 if b is None else np.abs(np.asarray(b, float)))


def winograd_dw_bound(x, dy, top, left, r):
    """The same for the weight gradient, dW = G^T [sum over tiles of
    (A dY A^T) (.) (B^T d B)] G: x (N, H, W, C) padded by top/left, dy
    (N, OH, OW, F), r the kernel size (5 or 3); returns (r, r, C, F)."""
    n, oh, ow, f = dy.shape
    m = 7 - r
    th, tw = -(-oh // m), -(-ow // m)
    v = _abs_tiles(x, top, left, oh, ow, m)
    d = np.zeros((n, m * th, m * tw, f))
    d[:, :oh, :ow] = np.abs(dy)
    d = d.reshape(n, th, m, tw, m, f)
    a = np.abs(WINO_AT[r]).T
    dt = np.einsum("ip,ntpsqf,jq->ntsijf", a, d, a, optimize=True)
    mm = np.einsum("ntsijc,ntsijf->ijcf", v, dt, optimize=True)
    g = np.abs(WINO_G[r])
    return np.einsum("ia,ijcf,jb->abcf", g, mm, g, optimize=True)


@contextlib.contextmanager
def using_kernels(name, winograd=True, strict=False):
    """convcore.set_kernels(name, winograd, strict) inside the block, restored
    after (for @given tests, where a function-scoped fixture would be shared)."""
    import convcore
    from convcore import _kernels
    before = _kernels.settings()
    convcore.set_kernels(name, winograd, strict)
    try:
        yield
    finally:
        convcore.set_kernels(*before)


def no_bf16(feature="AMX-BF16 and AVX512-BF16"):
    """Why a test of the native bf16 kernels skips: the CPU lacks `feature`,
    or CONVCORE_MAX_ISA leaves it out (as on a CPU without it). ("CPU
    lacks": the one skip CI lets through.)"""
    from pyconv.precision import cpu_name
    cap = os.environ.get("CONVCORE_MAX_ISA")
    return f"CPU lacks {feature} " + (f"(CONVCORE_MAX_ISA={cap}: as on a CPU without it)"
                                      if cap else f"({cpu_name()})")


def cpu_flags():
    """The CPU's flags as Linux lists them in /proc/cpuinfo ("flags" on x86-64,
    "Features" on ARM64)."""
    with open("/proc/cpuinfo") as f:
        return next(line for line in f if line.startswith(("flags", "Features"))).split()
