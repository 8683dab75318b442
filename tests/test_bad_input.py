"""Bad input: TypeError or ValueError naming the function and the argument.

Never a crash, never a silently wrong result: float64 is refused, not cast.
"""
import numpy as np
import pytest

import convcore

f32 = np.float32
X = np.ones((2, 6, 6, 3), f32)
W = np.ones((3, 3, 3, 4), f32)
DY = np.ones((2, 4, 4, 4), f32)
P, AM = convcore.maxpool2d_forward(X, 2)
# the fused convolution + max-pool, on the simd kernels (C_out 16) and on BLAS (C_out 4)
W16 = np.ones((3, 3, 3, 16), f32)
P4, AM4 = convcore.conv2d_maxpool_forward(X, W, padding="same", return_argmax=True)
P16, AM16 = convcore.conv2d_maxpool_forward(X, W16, padding="same", return_argmax=True)
XL, WL, DYL = np.ones((5, 7), f32), np.ones((7, 3), f32), np.ones((5, 3), f32)

C3 = np.ones(3, f32)


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


CASES = {
    # batch normalisation and average pooling
    "batchnorm batch of one": (lambda: convcore.batchnorm_forward(X[:1, :1, :1], C3, C3),
                               ValueError, "more than one value per channel"),
    "batchnorm gamma shape": (lambda: convcore.batchnorm_forward(X, C3[:2], C3), ValueError,
                              "gamma"),
    "batchnorm eps 0": (lambda: convcore.batchnorm_forward(X, C3, C3, eps=0), ValueError, "eps"),
    "batchnorm var negative": (lambda: convcore.batchnorm_inference(X, C3, C3, C3, -C3),
                               ValueError, "var"),
    "batchnorm dy shape": (lambda: convcore.batchnorm_backward(X, C3, C3, C3, X[:1]),
                           ValueError, "dy"),
    "avgpool x float64": (lambda: convcore.avgpool2d_forward(X.astype(np.float64)), TypeError,
                          "x"),
    "avgpool dy shape": (lambda: convcore.avgpool2d_backward(P[:, :1], X.shape), ValueError,
                         "dy"),
    # the residual add
    "add b shape": (lambda: convcore.add_forward(X, X[:1]), ValueError, "b"),
    "add a float64": (lambda: convcore.add_forward(X.astype(np.float64), X), TypeError, "a"),
    "add out shape": (lambda: convcore.add_forward(X, X, out=X[:1].copy()), ValueError,
                      "out must have shape"),
    "add out strided": (lambda: convcore.add_forward(X[:, ::2], X[:, ::2], out=X[:, ::2]),
                        TypeError, "out must be a writeable C-contiguous float32"),
    "add out read-only": (lambda: convcore.add_forward(X, X, out=_read_only(X)), TypeError,
                          "read-only"),
    "add_backward relu_y shape": (lambda: convcore.add_backward(X, X[:, :1]), ValueError,
                                  "relu_y"),
    "add_backward dy list": (lambda: convcore.add_backward(X.tolist(), X), TypeError, "dy"),
    "round_bf16 x float64": (lambda: convcore.round_bf16(X.astype(np.float64)), TypeError,
                             "x must be float32"),
    # dtypes and non-arrays
    "conv x float64": (lambda: convcore.conv2d_forward(X.astype(np.float64), W), TypeError, "x"),
    "conv w float64": (lambda: convcore.conv2d_forward(X, W.astype(np.float64)), TypeError, "w"),
    "conv x list": (lambda: convcore.conv2d_forward(X.tolist(), W), TypeError, "x"),
    "conv b int": (lambda: convcore.conv2d_forward(X, W, np.ones(4, np.int32)), TypeError, "b"),
    "im2col x int": (lambda: convcore.im2col(X.astype(np.int64), 3), TypeError, "x"),
    "col2im cols float16": (lambda: convcore.col2im(np.ones((2, 4, 4, 27), np.float16),
                                                    X.shape, 3), TypeError, "cols"),
    "pool x float64": (lambda: convcore.maxpool2d_forward(X.astype(np.float64)), TypeError, "x"),
    "pool argmax int64": (lambda: convcore.maxpool2d_backward(P, AM.astype(np.int64), X.shape),
                          TypeError, "argmax"),
    "linear x None": (lambda: convcore.linear_forward(None, WL), TypeError, "x"),
    "fused forward x float64": (lambda: convcore.conv2d_maxpool_forward(X.astype(np.float64),
                                                                        W), TypeError, "x"),
    "dropout x float64": (lambda: convcore.dropout_forward(X.astype(np.float64), 0.5, 1),
                          TypeError, "x"),
    "dropout rate 1": (lambda: convcore.dropout_forward(X, 1.0, 1), ValueError, "rate"),
    "dropout key negative": (lambda: convcore.dropout_backward(X, 0.5, -1), ValueError, "key"),
    "adam m shape": (lambda: convcore.adam_update(WL.copy(), WL, WL[:2].copy(), WL.copy(),
                                                  1e-3), ValueError, "m"),
    "sgd g float64": (lambda: convcore.sgd_update(WL.copy(), WL.astype(np.float64), WL.copy(),
                                                  0.1), TypeError, "g"),
    "fused adam read-only w": (lambda: convcore.linear_backward_adam(
        XL, np.broadcast_to(WL, WL.shape), DYL, None, WL.copy(), WL.copy(), None, None, 1e-3),
        ValueError, "w"),
    "linear dy float64": (lambda: convcore.linear_backward(XL, WL, DYL.astype(np.float64)),
                          TypeError, "dy"),
    # ndim and shapes
    "conv x 3-d": (lambda: convcore.conv2d_forward(X[0], W), ValueError, "x"),
    "conv w 2-d": (lambda: convcore.conv2d_forward(X, W[0, 0]), ValueError, "w"),
    "conv channels": (lambda: convcore.conv2d_forward(X, W[:, :, :2]), ValueError, "channels"),
    "conv b shape": (lambda: convcore.conv2d_forward(X, W, np.ones(3, f32)), ValueError, "b"),
    "conv w zero dim": (lambda: convcore.conv2d_forward(X, np.ones((3, 3, 3, 0), f32)),
                        ValueError, "w"),
    "conv dy shape": (lambda: convcore.conv2d_backward(X, W, DY[:, :3]), ValueError, "dy"),
    "im2col zero height": (lambda: convcore.im2col(np.ones((1, 0, 4, 1), f32), 1),
                           ValueError, "x"),
    "col2im shape": (lambda: convcore.col2im(np.ones((2, 4, 4, 26), f32), X.shape, 3),
                     ValueError, "cols"),
    "col2im x_shape len": (lambda: convcore.col2im(np.ones((2, 4, 4, 27), f32), (2, 6, 6), 3),
                           ValueError, "x_shape"),
    "col2im x_shape type": (lambda: convcore.col2im(np.ones((2, 4, 4, 27), f32), "2663", 3),
                            TypeError, "x_shape"),
    "col2im x_shape negative": (lambda: convcore.col2im(np.ones((2, 4, 4, 27), f32),
                                                        (2, -6, 6, 3), 3), ValueError, "x_shape"),
    "linear features": (lambda: convcore.linear_forward(XL, WL[:6]), ValueError, "features"),
    "linear b shape": (lambda: convcore.linear_forward(XL, WL, np.ones(4, f32)),
                       ValueError, "b"),
    "linear dy shape": (lambda: convcore.linear_backward(XL, WL, DYL[:4]), ValueError, "dy"),
    "linear x 3-d": (lambda: convcore.linear_forward(X, WL), ValueError, "x"),
    # sizes, strides, padding
    "kernel too large": (lambda: convcore.conv2d_forward(X, np.ones((7, 3, 3, 4), f32)),
                         ValueError, "kernel_size"),
    "kernel too large padded": (lambda: convcore.im2col(X, 9, padding=1), ValueError,
                                "kernel_size"),
    "kernel zero": (lambda: convcore.im2col(X, 0), ValueError, "kernel_size"),
    "kernel triple": (lambda: convcore.im2col(X, (1, 2, 3)), ValueError, "kernel_size"),
    "kernel float": (lambda: convcore.im2col(X, 2.0), TypeError, "kernel_size"),
    "stride zero": (lambda: convcore.conv2d_forward(X, W, stride=0), ValueError, "stride"),
    "stride negative": (lambda: convcore.im2col(X, 2, stride=(1, -1)), ValueError, "stride"),
    "padding negative": (lambda: convcore.conv2d_forward(X, W, padding=-1), ValueError,
                         "padding"),
    "padding word": (lambda: convcore.conv2d_forward(X, W, padding="full"), ValueError,
                     "padding"),
    "padding bool": (lambda: convcore.im2col(X, 2, padding=True), TypeError, "padding"),
    "pool size zero": (lambda: convcore.maxpool2d_forward(X, 0), ValueError, "pool_size"),
    "pool too large": (lambda: convcore.maxpool2d_forward(X, 7), ValueError, "pool_size"),
    "pool padding >= size": (lambda: convcore.maxpool2d_forward(X, 2, padding=2), ValueError,
                             "padding"),
    "pool stride zero": (lambda: convcore.maxpool2d_forward(X, 2, stride=0), ValueError,
                         "stride"),
    # argmax that does not match
    "argmax shape": (lambda: convcore.maxpool2d_backward(P, AM[:, :2], X.shape), ValueError,
                     "argmax"),
    "argmax forged high": (lambda: convcore.maxpool2d_backward(P, AM + 36, X.shape),
                           ValueError, "argmax"),
    "argmax forged negative": (lambda: convcore.maxpool2d_backward(P, AM - 100, X.shape),
                               ValueError, "argmax"),
    "argmax other shape": (lambda: convcore.maxpool2d_backward(P, AM, (2, 3, 3, 3)),
                           ValueError, "x_shape"),
    # an argmax of another geometry whose shape fits: a cell of the neighbouring window
    "argmax other window": (lambda: convcore.maxpool2d_backward(P, AM + 2, X.shape),
                            ValueError, "outside their own pooling window"),
    "argmax other pool": (lambda: convcore.maxpool2d_backward(P, AM, X.shape, 3, 3, "valid"),
                          ValueError, "dy must have shape"),
    "argmax batch mismatch": (lambda: convcore.maxpool2d_backward(P, AM, (3, 6, 6, 3)),
                              ValueError, "x_shape"),
    "fused argmax forged high": (lambda: convcore.conv2d_maxpool_backward(
        X, W16, P16, AM16 + 36, padding="same"), ValueError, "argmax"),
    "fused argmax forged negative, BLAS": (lambda: convcore.conv2d_maxpool_backward(
        X, W, P4, AM4 - 100, padding="same"), ValueError, "argmax"),
    "fused argmax shape": (lambda: convcore.conv2d_maxpool_backward(
        X, W16, P16, AM16[:, :2], padding="same"), ValueError, "argmax"),
    "fused argmax int64": (lambda: convcore.conv2d_maxpool_backward(
        X, W16, P16, AM16.astype(np.int64), padding="same"), TypeError, "argmax"),
    "fused dy channels": (lambda: convcore.conv2d_maxpool_backward(
        X, W16, P4, AM4, padding="same"), ValueError, "dy"),
    "fused relu_y shape": (lambda: convcore.conv2d_maxpool_backward(
        X, W16, P16, AM16, padding="same", relu_y=P16[:1]), ValueError, "relu_y"),
    # sizes that overflow
    "col2im huge x_shape": (lambda: convcore.col2im(np.ones((2, 4, 4, 27), f32),
                                                    (2, 2**40, 2**40, 3), 3), ValueError,
                            "x_shape"),
    "pool huge x_shape": (lambda: convcore.maxpool2d_backward(P, AM, (2, 2**62, 2**62, 3)),
                          ValueError, "x_shape"),
    # window sizes past the kernels' 32-bit ints (found by test_fuzz: an empty
    # batch got as far as the C struct and raised OverflowError)
    "pool size 2**63 + 5": (lambda: convcore.maxpool2d_forward(X[:0], 2**63 + 5,
                                                               padding="same"),
                            ValueError, "pool_size"),
    "stride 2**40": (lambda: convcore.conv2d_forward(X, W, stride=2**40), ValueError,
                     "stride"),
    "padding 2**31": (lambda: convcore.im2col(X, 2, padding=(0, 2**31)), ValueError,
                      "padding"),
    # a batch from a data set: uint8 or float32 images, rows inside it, shapes that agree
    "gather x float64": (lambda: convcore.gather_batch(X.astype(np.float64), np.arange(2)),
                         TypeError, "x must be a uint8 or float32"),
    "gather rows past the end": (lambda: convcore.gather_batch(X, np.array([0, 2])),
                                 ValueError, "rows must be image numbers in [0, 2)"),
    "gather rows float": (lambda: convcore.gather_batch(X, np.array([0.0])), TypeError,
                          "rows must be a numpy array of integers"),
    "gather shift shape": (lambda: convcore.gather_batch(X, np.arange(2), np.zeros((2, 3), int)),
                           ValueError, "shift must have shape (B, 2) = (2, 2)"),
    "gather flip int": (lambda: convcore.gather_batch(X, np.arange(2), None, np.ones(2, int)),
                        TypeError, "flip must be a bool numpy array"),
    "gather divisor 0": (lambda: convcore.gather_batch(X, np.arange(2), divisor=0), ValueError,
                         "divisor must be a finite number > 0"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_naming_the_argument(name):
    call, exc, word = CASES[name]
    with pytest.raises(exc) as info:
        call()
    message = str(info.value)
    assert word in message, message
    from convcore._ops import OPERATIONS
    assert message.split(":")[0] in OPERATIONS, message


def test_every_operation_has_a_bad_input_case():
    """Each operation of the registry is among the functions the cases above reach."""
    from convcore._ops import OPERATIONS
    reached = set()
    for call, exc, _ in CASES.values():
        with pytest.raises(exc) as info:
            call()
        reached.add(str(info.value).split(":")[0])
    assert reached >= set(OPERATIONS), sorted(set(OPERATIONS) - reached)


def test_error_message_says_expected_and_given():
    with pytest.raises(TypeError) as info:
        convcore.conv2d_forward(X, np.ones((3, 3, 1), np.float64))
    assert str(info.value) == ("conv2d_forward: w must be float32 with shape "
                               "(kh, kw, C_in, C_out), got float64 (3, 3, 1)")


def test_non_contiguous_and_read_only_input_is_accepted():
    rng = np.random.default_rng(0)
    big = rng.standard_normal((4, 12, 12, 6)).astype(f32)
    x = big[::2, ::2, ::2, ::2]          # non-contiguous view
    x_ro = np.ascontiguousarray(x)
    x_ro.setflags(write=False)
    w = rng.standard_normal((3, 3, 3, 2)).astype(f32)
    y = convcore.conv2d_forward(x, w)
    np.testing.assert_array_equal(y, convcore.conv2d_forward(x_ro, w))
    np.testing.assert_array_equal(convcore.maxpool2d_forward(x)[0],
                                  convcore.maxpool2d_forward(x_ro)[0])
    wt = np.asfortranarray(rng.standard_normal((7, 3)).astype(f32))
    np.testing.assert_array_equal(convcore.linear_forward(XL, wt),
                                  convcore.linear_forward(XL, np.ascontiguousarray(wt)))


def test_empty_batch_gives_empty_results():
    x = np.ones((0, 6, 6, 3), f32)
    assert convcore.conv2d_forward(x, W).shape == (0, 4, 4, 4)
    dx, dw, db = convcore.conv2d_backward(x, W, np.ones((0, 4, 4, 4), f32))
    assert dx.shape == x.shape and not dw.any() and not db.any()
    y, am = convcore.maxpool2d_forward(x)
    assert y.shape == (0, 3, 3, 3) and am.shape == y.shape
    assert convcore.maxpool2d_backward(y, am, x.shape).shape == x.shape   # pool 2, stride 2
    dx, dw, db = convcore.linear_backward(np.ones((0, 7), f32), WL, np.ones((0, 3), f32))
    assert dx.shape == (0, 7) and not dw.any() and not db.any()
