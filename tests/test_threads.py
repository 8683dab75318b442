"""Thread control, the OpenMP build, and the same bits on 1 and 2 threads."""
import os
import subprocess
import sys

import numpy as np
import pytest

import convcore
from convcore._ops import OPERATIONS


def test_openmp_build():
    """CI's compiler has OpenMP: a serial build there is a packaging bug."""
    if os.environ.get("CONVCORE_ALLOW_SERIAL"):
        pytest.skip("CONVCORE_ALLOW_SERIAL set: a serial build is expected here")
    assert convcore.openmp_enabled(), "convcore was built without OpenMP"


def test_set_and_get_num_threads(threads):
    threads(1)
    assert convcore.get_num_threads() == 1
    threads(3)
    assert convcore.get_num_threads() == (3 if convcore.openmp_enabled() else 1)


@pytest.mark.parametrize("bad, exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                      ("2", TypeError), (True, TypeError)])
def test_set_num_threads_rejects(bad, exc):
    with pytest.raises(exc, match="set_num_threads: n"):
        convcore.set_num_threads(bad)


def test_default_threads_follow_omp_num_threads():
    code = "import convcore; print(convcore.get_num_threads())"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "1"
    env.pop("OMP_NUM_THREADS")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    expected = len(os.sched_getaffinity(0)) if convcore.openmp_enabled() else 1
    assert int(out) == expected


def _all_ops(rng):
    """Every public function at shapes that give many work items and tiles."""
    cut = convcore.slices.slice_bounds
    x = rng.standard_normal((37, 15, 13, 3)).astype(np.float32)
    w = rng.standard_normal((5, 5, 3, 20)).astype(np.float32)
    b = rng.standard_normal(20).astype(np.float32)
    y = convcore.conv2d_forward(x, w, b, padding="same")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    p, am = convcore.maxpool2d_forward(y, 3, 2, "same")
    xl = rng.standard_normal((301, 200)).astype(np.float32)
    wl = rng.standard_normal((200, 130)).astype(np.float32)
    dyl = rng.standard_normal((301, 130)).astype(np.float32)
    cols = convcore.im2col(x, 4, 3, 1)
    # 150 one-image items > 64 slots: several items accumulate in each slot
    xb = rng.standard_normal((150, 16, 16, 2)).astype(np.float32)
    wb = rng.standard_normal((3, 3, 2, 4)).astype(np.float32)
    yb = convcore.conv2d_forward(xb, wb, padding="same", relu=True)
    # the direct kernels (where the CPU has them): 16k channels, 37 images in slots
    xd = rng.standard_normal((37, 9, 11, 16)).astype(np.float32)
    wd = rng.standard_normal((3, 5, 16, 48)).astype(np.float32)
    yd = convcore.conv2d_forward(xd, wd, b[:16].repeat(3), padding="same", relu=True)
    # Winograd (5x5, stride 1, 16k channels in and out): odd sizes, 48 -> 80 channels
    xw = rng.standard_normal((37, 9, 11, 48)).astype(np.float32)
    ww = rng.standard_normal((5, 5, 48, 80)).astype(np.float32)
    yw = convcore.conv2d_forward(xw, ww, b[:16].repeat(5), padding="same", relu=True)
    # Winograd F(4x4, 3x3): 37 images of 9 x 11 (odd tiles), 32 -> 48 channels
    x3 = rng.standard_normal((37, 9, 11, 32)).astype(np.float32)
    w3 = rng.standard_normal((3, 3, 32, 48)).astype(np.float32)
    y3 = convcore.conv2d_forward(x3, w3, b[:16].repeat(3), padding="same", relu=True)
    # the dense tiles: 2 k-blocks, 64- and 16-wide column blocks
    xt = rng.standard_normal((91, 300)).astype(np.float32)
    wt = rng.standard_normal((300, 80)).astype(np.float32)
    yt = convcore.linear_forward(xt, wt, b[:16].repeat(5), relu=True)
    # the fused convolution + max-pool, training (Winograd and direct): 3x3 pools at
    # stride 2 (overlapping: a scatter), 2x2 at stride 2 (a gather)
    fused = []
    for xf, wf, pool, pool_stride in ((xw, ww, 3, 2), (xd, wd, 3, 2), (xw, ww, 2, 2)):
        pf, amf = convcore.conv2d_maxpool_forward(xf, wf, None, 1, "same", True, pool,
                                                  pool_stride, "same", return_argmax=True)
        fused += [pf, amf, *convcore.conv2d_maxpool_backward(xf, wf, pf, amf, 1, "same", pool,
                                                             pool_stride, "same", relu_y=pf,
                                                             slices=cut(37, 8))]
    # dropout: 4 work items of 16384 entries and a ragged end
    xo = rng.standard_normal((3, 20000)).astype(np.float32)
    # the optimiser steps, in place on copies: 300 x 80 parameters
    g = rng.standard_normal(wt.shape).astype(np.float32)
    state = [np.abs(rng.standard_normal(wt.shape)).astype(np.float32) for _ in range(2)]
    adam = [a.copy() for a in (wt, *state)]
    convcore.adam_update(adam[0], g, adam[1], adam[2], 1e-3)
    sgd = [wt.copy(), state[0].copy()]
    convcore.sgd_update(sgd[0], g, sgd[1], 0.1, 0.9)
    fused_adam = [a.copy() for a in (wt, *state, b[:16].repeat(5), state[0][0], state[1][0])]
    dx_adam = convcore.linear_backward_adam(xt, fused_adam[0], yt, fused_adam[3],
                                            fused_adam[1], fused_adam[2], fused_adam[4],
                                            fused_adam[5], 1e-3, relu_y=yt)
    sliced_adam = [a.copy() for a in fused_adam]
    convcore.linear_backward_adam(xt, sliced_adam[0], yt, sliced_adam[3], sliced_adam[1],
                                  sliced_adam[2], sliced_adam[4], sliced_adam[5], 1e-3,
                                  relu_y=yt, slices=cut(91, 16))
    # batch normalisation: 3 x 11 x 13 x 40 (7 blocks of rows, a ragged end), ReLU fused
    xn = rng.standard_normal((3, 11, 13, 40)).astype(np.float32) + 2
    gn, bn = b[:16].repeat(3)[:40] + 1, b[:16].repeat(3)[:40]
    yn, mn, vn = convcore.batchnorm_forward(xn, gn, bn, relu=True)
    norm_back = convcore.batchnorm_backward(xn, gn, mn, vn, xn, relu_beta=bn)
    return {
        "batchnorm_forward": [yn, mn, vn],
        "batchnorm_inference": [convcore.batchnorm_inference(xn, gn, bn, mn, vn + 1)],
        "batchnorm_backward": list(norm_back),
        # 4 work items of 16384 entries and a ragged end
        "add_forward": [convcore.add_forward(xo, dyl[:3, :100].repeat(200, 1), relu=r)
                        for r in (False, True)],
        "add_backward": [convcore.add_backward(xo, relu_y=xo[::-1].copy())],
        "round_bf16": [convcore.round_bf16(xo)],
        "avgpool2d_forward": [convcore.avgpool2d_forward(xn, 3, 2, "same")],
        "avgpool2d_backward": [convcore.avgpool2d_backward(xn[:, ::2, ::2].copy(), xn.shape, 3,
                                                           2, "same")],
        "dropout_forward": [convcore.dropout_forward(xo, 0.3, 2**64 - 5)],
        "dropout_backward": [convcore.dropout_backward(xo, 0.5, 7)],
        "conv2d_maxpool_forward": fused[0::5] + fused[1::5],
        "conv2d_maxpool_backward": fused[2::5] + fused[3::5] + fused[4::5],
        "linear_backward": [*convcore.linear_backward(xt, wt, yt, relu_y=yt),
                            *convcore.linear_backward(xl, wl, dyl),
                            # the batch's sums in slices (convcore.slices)
                            *convcore.linear_backward(xt, wt, yt, relu_y=yt, slices=cut(91, 8)),
                            *convcore.linear_backward(xl, wl, dyl, slices=cut(301, 4))],
        "conv2d_backward": [*convcore.conv2d_backward(xd, wd, yd, padding="same", relu_y=yd),
                            *convcore.conv2d_backward(xw, ww, yw, padding="same", relu_y=yw),
                            *convcore.conv2d_backward(xb, wb, yb, padding="same", relu_y=yb),
                            *convcore.conv2d_backward(x, w, dy, padding="same"),
                            *convcore.conv2d_backward(xd, wd, yd, padding="same", relu_y=yd,
                                                      slices=cut(37, 16)),
                            *convcore.conv2d_backward(xw, ww, yw, padding="same",
                                                      slices=cut(37, 4)),
                            *convcore.conv2d_backward(xb, wb, yb, padding="same",
                                                      slices=cut(150, 8)),
                            *convcore.conv2d_backward(x3, w3, y3, padding="same", relu_y=y3),
                            *convcore.conv2d_backward(x3, w3, y3, padding="same",
                                                      slices=cut(37, 4))],
        "conv2d_forward": [yd, yw, y, y3],
        "im2col": [cols],
        "col2im": [convcore.col2im(cols, x.shape, 4, 3, 1)],
        "maxpool2d_forward": [p, am],
        "maxpool2d_backward": [convcore.maxpool2d_backward(p, am, y.shape, 3, 2, "same")],
        "linear_forward": [yt, convcore.linear_forward(xl, wl, b=dyl[0])],
        "linear_backward_adam": [dx_adam, *fused_adam, *sliced_adam],
        "adam_update": adam,
        "sgd_update": sgd,
        # 300 images of 11 x 13 x 3, moved, some mirrored, from a set of 40
        "gather_batch": [convcore.gather_batch(
            (xn[:, :, :, :3] * 40).astype(np.uint8).repeat(14, axis=0)[:40],
            rng.integers(0, 40, 300), rng.integers(-3, 4, (300, 2)), rng.random(300) < 0.5,
            255.0)],
    }


@pytest.mark.parametrize("kernels_name", ["auto", *convcore.simd_supported()[1:], "blas"])
def test_same_bits_on_one_and_two_threads(threads, kernels, kernels_name):
    """Every operation of the registry, on 1 and 2 threads: the same bits, on
    each kernel set ("auto": the best vector set)."""
    kernels(kernels_name)
    results = []
    for n in (1, 2):
        threads(n)
        results.append(_all_ops(np.random.default_rng(7)))
    assert sorted(results[0]) == sorted(OPERATIONS)
    for name in OPERATIONS:
        for one, two in zip(results[0][name], results[1][name], strict=True):
            assert one.tobytes() == two.tobytes(), name


def test_concurrent_python_threads_get_right_answers():
    """convcore releases the GIL: several Python threads calling it at once."""
    from concurrent.futures import ThreadPoolExecutor
    rng = np.random.default_rng(3)
    cases = [(rng.standard_normal((8, 12, 12, 2)).astype(np.float32),
              rng.standard_normal((3, 3, 2, 5)).astype(np.float32)) for _ in range(8)]
    expected = [convcore.conv2d_backward(x, w, convcore.conv2d_forward(x, w)) for x, w in cases]

    def run(case):
        x, w = case
        return convcore.conv2d_backward(x, w, convcore.conv2d_forward(x, w))

    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(run, cases), expected):
                for g, e in zip(got, want):
                    assert g.tobytes() == e.tobytes()
