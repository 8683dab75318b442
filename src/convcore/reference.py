"""convcore's functions in plain NumPy: the executable specification.

Written for clarity, not speed, in the seed's slicing style: an image section
is a strided slice of the padded batch, one slice per kernel offset (as in
Chainer's `chainer/utils/conv.py`). Works for float32 and float64 alike (the
tests check it against finite differences in float64). Importable without the
compiled extension. Same layouts as convcore: NHWC images, (kh, kw, C_in,
C_out) kernels, (D_in, D_out) dense weights.
"""
import numpy as np

from ._ops import OPERATIONS
from .geometry import _hw, same_pads, window_pads  # noqa: F401 (same_pads: in __all__)
from .slices import checked_bounds, pairs, tree_sum

__all__ = list(OPERATIONS + ("philox4x32_10", "same_pads"))   # a twin of every operation


def _sections(x, kernel_size, stride, padding, fill=0.0):
    """Padded x and the (n, oh, ow, kh, kw, c) view geometry of its sections."""
    kh, kw = _hw(kernel_size)
    sh, sw = _hw(stride)
    (pt, pb), (pl, pr) = window_pads(x.shape[1:3], (kh, kw), (sh, sw), padding)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill)
    oh = (xp.shape[1] - kh) // sh + 1
    ow = (xp.shape[2] - kw) // sw + 1
    return xp, (kh, kw, sh, sw, oh, ow), (pt, pl)


def im2col(x, kernel_size, stride=1, padding=0):
    xp, (kh, kw, sh, sw, oh, ow), _ = _sections(x, kernel_size, stride, padding)
    n, c = x.shape[0], x.shape[3]
    cols = np.empty((n, oh, ow, kh, kw, c), x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
    return cols.reshape(n, oh, ow, kh * kw * c)


def col2im(cols, x_shape, kernel_size, stride=1, padding=0):
    x = np.zeros(x_shape, cols.dtype)
    xp, (kh, kw, sh, sw, oh, ow), (pt, pl) = _sections(x, kernel_size, stride, padding)
    n, h, w, c = x_shape
    cols = cols.reshape(n, oh, ow, kh, kw, c)
    for i in range(kh):
        for j in range(kw):
            xp[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :] += cols[:, :, :, i, j, :]
    return xp[:, pt:pt + h, pl:pl + w, :].copy()


def _multiplied(precision, *arrays):
    """The operands as `precision` multiplies them: bf16-emulated rounds each
    to bfloat16 (their products are then exact in float32); an operand given
    as bfloat16 bits (uint16) is their values."""
    if precision == "fp32":
        return arrays
    return tuple(widen_bits(a) if np.asarray(a).dtype == np.uint16
                 else round_bf16(a).astype(np.asarray(a).dtype) for a in arrays)   # (float64 stays)


def widen_bits(h):
    """bfloat16 bits (uint16) -> their values, float32."""
    return (np.asarray(h).astype(np.uint32) << np.uint32(16)).view(np.float32)


def narrow_bits(x):
    """x -> the bfloat16 bits (uint16) of round_bf16(x)."""
    return (round_bf16(x).view(np.uint32) >> np.uint32(16)).astype(np.uint16)


def conv2d_forward(x, w, b=None, stride=1, padding=0, relu=False, slices=None,
                   precision="fp32", out_bf16=False):
    checked_bounds("conv2d_forward", slices, len(x))
    x, w = _multiplied(precision, x, w)
    cols = im2col(x, w.shape[:2], stride, padding)
    y = cols @ w.reshape(-1, w.shape[3])
    if b is not None:
        y = y + b
    y = np.maximum(y, 0) if relu else y
    return narrow_bits(y) if out_bf16 else y


def conv2d_backward(x, w, dy, stride=1, padding=0, need_dx=True, relu_y=None, slices=None,
                    precision="fp32", need_db=True):
    """slices: dw and db are each slice's sums added in the pairwise tree;
    need_db=False: db None."""
    x, w, dy = _multiplied(precision, x, w, dy)
    if relu_y is not None:
        dy = np.where(relu_y > 0, dy, 0)
    cols = im2col(x, w.shape[:2], stride, padding)
    k, cout = cols.shape[-1], w.shape[3]
    dw, db = _sliced_sums("conv2d_backward", slices, len(x), lambda a, b: (
        (cols[a:b].reshape(-1, k).T @ dy[a:b].reshape(-1, cout)).reshape(w.shape),
        dy[a:b].sum(axis=(0, 1, 2))))
    dx = None
    if need_dx:
        dx = col2im(dy @ w.reshape(k, cout).T, x.shape, w.shape[:2], stride, padding)
    return dx, dw, db if need_db else None


def maxpool2d_forward(x, pool_size=2, stride=None, padding=0):
    stride = pool_size if stride is None else stride
    xp, (kh, kw, sh, sw, oh, ow), (pt, pl) = _sections(x, pool_size, stride, padding)
    n, h, w, c = x.shape
    # the flat index ih * w + iw of every padded cell (-1 for padding)
    rows = np.arange(xp.shape[1])[:, None] - pt
    cols = np.arange(xp.shape[2])[None, :] - pl
    inside = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    index = np.where(inside, rows * w + cols, -1)
    best = np.full((n, oh, ow, c), np.nan, x.dtype)
    arg = np.full((n, oh, ow, c), -1, np.int64)
    for i in range(kh):  # visit the window cells in row-major order
        for j in range(kw):
            v = xp[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :]
            idx = index[i:i + sh * oh:sh, j:j + sw * ow:sw][None, :, :, None]
            real = idx >= 0
            none_yet = arg < 0
            # a later cell wins only if strictly larger, or NaN over a number
            wins = real & (none_yet | (v > best) | (np.isnan(v) & ~np.isnan(best)))
            best = np.where(wins, v, best)
            arg = np.where(wins, idx, arg)
    return best, arg.astype(np.int32)


def maxpool2d_backward(dy, argmax, x_shape, pool_size=2, stride=None, padding=0):
    """dx: each dy added at its window's argmax. Refuses (ValueError) an argmax
    entry outside its own window of the given pool over x_shape."""
    n, h, w, c = x_shape
    (kh, kw), (sh, sw) = _hw(pool_size), _hw(pool_size if stride is None else stride)
    (pt, _), (pl, _) = window_pads((h, w), (kh, kw), (sh, sw), padding)
    oh, ow = np.indices(dy.shape[1:3])
    top, left = (oh * sh - pt)[None, :, :, None], (ow * sw - pl)[None, :, :, None]
    ih, iw = argmax // w, argmax % w
    if not ((argmax >= 0) & (ih < h) & (ih >= top) & (ih < top + kh) & (iw >= left)
            & (iw < left + kw)).all():
        raise ValueError("maxpool2d_backward: an argmax entry lies outside its own window")
    dx = np.zeros((n, h * w, c), dy.dtype)
    ni, _, _, ci = np.indices(dy.shape)
    np.add.at(dx, (ni.ravel(), argmax.ravel(), ci.ravel()), dy.ravel())
    return dx.reshape(x_shape)


def conv2d_maxpool_forward(x, w, b=None, stride=1, padding=0, relu=False, pool_size=2,
                           pool_stride=None, pool_padding=0, return_argmax=False, slices=None,
                           precision="fp32", out_bf16=False):
    x, w = _multiplied(precision, x, w)
    y, argmax = maxpool2d_forward(conv2d_forward(x, w, b, stride, padding, relu, slices),
                                  pool_size,
                                  pool_stride, pool_padding)
    return (y, argmax) if return_argmax else narrow_bits(y) if out_bf16 else y


def conv2d_maxpool_backward(x, w, dy, argmax, stride=1, padding=0, pool_size=2,
                            pool_stride=None, pool_padding=0, need_dx=True, relu_y=None,
                            slices=None, precision="fp32"):
    """relu_y: the pooled output; the ReLU's mask at each window's winner.
    bf16-emulated: the pooled dy is rounded (once: its sums are not)."""
    x, w, dy = _multiplied(precision, x, w, dy)
    y_shape = conv2d_forward(x[:0], w, None, stride, padding).shape
    y_shape = (x.shape[0], *y_shape[1:])
    dy_conv = maxpool2d_backward(dy if relu_y is None else np.where(relu_y > 0, dy, 0),
                                 argmax, y_shape, pool_size, pool_stride, pool_padding)
    return conv2d_backward(x, w, dy_conv, stride, padding, need_dx, slices=slices)


def linear_forward(x, w, b=None, relu=False, slices=None, precision="fp32"):
    checked_bounds("linear_forward", slices, len(x))
    x, w = _multiplied(precision, x, w)
    y = x @ w
    if b is not None:
        y = y + b
    return np.maximum(y, 0) if relu else y


def linear_backward(x, w, dy, need_dx=True, relu_y=None, slices=None, precision="fp32"):
    """slices: dw and db are each slice's sums added in the pairwise tree."""
    x, w, dy = _multiplied(precision, x, w, dy)
    if relu_y is not None:
        dy = np.where(relu_y > 0, dy, 0)
    dw, db = _sliced_sums("linear_backward", slices, len(x),
                          lambda a, b: (x[a:b].T @ dy[a:b], dy[a:b].sum(axis=0)))
    return (dy @ w.T if need_dx else None), dw, db


def _sliced_sums(fn, slices, n, sums):
    """The pairwise tree's sums of sums(a, b) (a tuple of arrays) over the slices a:b."""
    parts = [sums(lo, hi) for lo, hi in pairs(checked_bounds(fn, slices, n))]
    return tuple(tree_sum([p[i] for p in parts]) for i in range(len(parts[0])))


def linear_backward_adam(x, w, dy, b, m_w, v_w, m_b, v_b, lr_t, beta1=0.9, beta2=0.999,
                         eps=1e-8, need_dx=True, relu_y=None, slices=None, precision="fp32"):
    """linear_backward, then adam_update of w and b (b and its state may be None),
    in place; returns dx."""
    dx, dw, db = linear_backward(x, w, dy, need_dx, relu_y, slices, precision)
    adam_update(w, dw, m_w, v_w, lr_t, beta1, beta2, eps)
    if b is not None:
        adam_update(b, db, m_b, v_b, lr_t, beta1, beta2, eps)
    return dx


def _inside_counts(x_shape, pool_size, stride, padding):
    """The padded batch's geometry and, per window, how many of its cells are in the image."""
    ones = np.ones((1, *x_shape[1:3], 1))
    op, geo, pads = _sections(ones, pool_size, stride, padding)
    kh, kw, sh, sw, oh, ow = geo
    count = sum(op[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :] for i in range(kh)
                for j in range(kw))
    return geo, pads, count


def avgpool2d_forward(x, pool_size=2, stride=None, padding=0):
    """The mean of each window's cells inside the image (padding not counted)."""
    stride = pool_size if stride is None else stride
    xp, (kh, kw, sh, sw, oh, ow), _ = _sections(x, pool_size, stride, padding)
    _, _, count = _inside_counts(x.shape, pool_size, stride, padding)
    total = sum(xp[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :] for i in range(kh)
                for j in range(kw))
    return (total / count).astype(x.dtype)


def avgpool2d_backward(dy, x_shape, pool_size=2, stride=None, padding=0):
    stride = pool_size if stride is None else stride
    (kh, kw, sh, sw, oh, ow), (pt, pl), count = _inside_counts(x_shape, pool_size, stride,
                                                               padding)
    n, h, w, c = x_shape
    xp, _, _ = _sections(np.zeros(x_shape, dy.dtype), pool_size, stride, padding)
    share = dy / count
    for i in range(kh):
        for j in range(kw):
            xp[:, i:i + sh * oh:sh, j:j + sw * ow:sw, :] += share
    return xp[:, pt:pt + h, pl:pl + w, :].astype(dy.dtype)


def batchnorm_forward(x, gamma, beta, eps=1e-5, relu=False, out_bf16=False):
    """(y, mean, var): statistics per channel over N, H, W; var biased; y as
    bfloat16 bits with out_bf16."""
    if x.shape[0] * x.shape[1] * x.shape[2] < 2:
        raise ValueError("batchnorm_forward: needs more than one value per channel")
    mean = x.mean(axis=(0, 1, 2), dtype=np.float64)
    var = ((x - mean) ** 2).mean(axis=(0, 1, 2))
    y = batchnorm_inference(x, gamma, beta, mean, var, eps, relu, out_bf16)
    return y, mean.astype(x.dtype), var.astype(x.dtype)


def batchnorm_inference(x, gamma, beta, mean, var, eps=1e-5, relu=False, out_bf16=False):
    y = (x - mean) / np.sqrt(var + eps) * gamma + beta
    y = (np.maximum(y, 0) if relu else y).astype(x.dtype)
    return narrow_bits(y) if out_bf16 else y


def _affine32(x, gamma, beta, mean, var, eps):
    """y = (x - mean) * scale + beta in float32 operations, scale = gamma /
    sqrt(var + eps) rounded once to float32: the bits convcore's batch
    normalisation writes (its ReLU's mask is y > 0)."""
    f = np.float32
    scale = (np.asarray(gamma, np.float64) / np.sqrt(np.asarray(var, f).astype(np.float64)
                                                     + eps)).astype(f)
    return (np.asarray(x, f) - np.asarray(mean, f)) * scale + np.asarray(beta, f)


def add_forward(a, b, relu=False, out=None, out_bf16=False):
    """out_bf16: y's bfloat16 bits, but float32 y where relu and a value > 0
    has bits 0 (the backward's mask, read from the bits, would lose it)."""
    y = a + b
    y = np.maximum(y, 0) if relu else y
    bits = narrow_bits(y) if out_bf16 and out is None else None
    if bits is not None and not (relu and ((y > 0) & (bits == 0)).any()):
        return bits
    if out is None:
        return y
    out[...] = y
    return out


def add_backward(dy, relu_y=None):
    """relu_y: the forward's output, or its bfloat16 bits (uint16)."""
    if relu_y is not None and np.asarray(relu_y).dtype == np.uint16:
        relu_y = widen_bits(relu_y)
    return dy if relu_y is None else dy * (relu_y > 0)


def batchnorm_backward(x, gamma, mean, var, dy, eps=1e-5, need_dx=True, relu_beta=None,
                       totals=None, out_bf16=False):
    """relu_beta: the forward's beta (relu=True): dy where its float32 output
    (batchnorm_inference's arithmetic, float32 in and out) is > 0. out_bf16:
    dx as bfloat16 bits."""
    if relu_beta is not None:
        dy = np.where(_affine32(x, gamma, relu_beta, mean, var, eps) > 0, dy, 0)
    m = x.shape[0] * x.shape[1] * x.shape[2]
    xhat = (x - mean) / np.sqrt(var + eps)
    dbeta = dy.sum(axis=(0, 1, 2))
    dgamma = (dy * xhat).sum(axis=(0, 1, 2))
    tm, tg, tb = (m, dgamma, dbeta) if totals is None else totals
    dx = gamma / np.sqrt(var + eps) * (dy - tb / tm - xhat * tg / tm) if need_dx else None
    dx = None if dx is None else dx.astype(x.dtype)
    return (narrow_bits(dx) if out_bf16 and dx is not None else dx, dgamma.astype(x.dtype),
            dbeta.astype(x.dtype))


def adam_update(p, g, m, v, lr_t, beta1=0.9, beta2=0.999, eps=1e-8, decay=0.0):
    p *= 1 - decay
    m += (g - m) * (1 - beta1)
    v += (g * g - v) * (1 - beta2)
    p -= lr_t * m / (np.sqrt(v) + eps)


def sgd_update(p, g, buf, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    g = g + weight_decay * p
    if momentum:
        buf *= momentum
        buf += g
        p -= lr * (g + momentum * buf if nesterov else buf)
    else:
        p -= lr * g


_M32 = np.uint64(0xFFFFFFFF)


def philox4x32_10(counters, key):
    """Philox4x32-10 (Salmon et al., SC 2011; Random123): counters (n, 4) and a
    key of 2 (32-bit words) -> (n, 4) uint32 random words."""
    c = [np.asarray(counters, np.uint64)[:, i] for i in range(4)]
    k0, k1 = np.uint64(key[0]), np.uint64(key[1])
    for r in range(10):
        if r:
            k0, k1 = (k0 + np.uint64(0x9E3779B9)) & _M32, (k1 + np.uint64(0xBB67AE85)) & _M32
        p0, p1 = np.uint64(0xD2511F53) * c[0], np.uint64(0xCD9E8D57) * c[2]
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & _M32, (p0 >> np.uint64(32)) ^ c[3] ^ k1,
             p0 & _M32]
    return np.stack(c, axis=1).astype(np.uint32)


def dropout_forward(x, rate, key, offset=0):
    """x * mask: entry 256 q + 64 l + j takes word l of counter (64 q + j, 0, 0)
    (2 words, then 2 zero words) under the key's two 32-bit halves; it is kept
    if (word >> 8) 2^-24 < 1 - rate, then scaled by 1 / (1 - rate), else
    multiplied by 0. The mask is float32: use float32 x for convcore's bits.
    x's entry i is entry offset + i of that mask."""
    first = offset // 256                       # the first batch x's entries take
    n, batches = x.size, -(-(offset + x.size) // 256) - first
    j = np.arange(64 * first, 64 * (first + batches), dtype=np.uint64)
    counters = np.stack([j & _M32, j >> np.uint64(32), 0 * j, 0 * j], axis=1)
    key = np.uint64(key)
    words = philox4x32_10(counters, (key & _M32, key >> np.uint64(32)))
    words = words.reshape(batches, 64, 4).transpose(0, 2, 1).reshape(-1)
    words = words[offset - 256 * first:][:n]
    keep = np.float32(1.0 - rate)
    kept = (words >> 8).astype(np.float32) < keep * np.float32(2**24)
    mask = np.where(kept, np.float32(1.0 / (1.0 - rate)), np.float32(0))
    with np.errstate(invalid="ignore"):     # inf * 0 = NaN, as a multiplied mask gives
        return x * mask.reshape(x.shape)


def dropout_backward(dy, rate, key, offset=0):
    return dropout_forward(dy, rate, key, offset)


def gather_batch(x, rows, shift=None, flip=None, divisor=1.0):
    x = np.asarray(x)[np.asarray(rows, np.int64)]
    b, h, w = x.shape[:3]
    out = np.zeros(x.shape, np.float32)
    shift = np.zeros((b, 2), np.int64) if shift is None else np.asarray(shift, np.int64)
    for i, (dy, dx) in enumerate(shift):
        # out[i, r, c] = x[i, r + dy, c + dx] where that is inside
        r0, r1 = max(0, -dy), min(h, h - dy)
        c0, c1 = max(0, -dx), min(w, w - dx)
        if r0 < r1 and c0 < c1:
            out[i, r0:r1, c0:c1] = x[i, r0 + dy:r1 + dy, c0 + dx:c1 + dx]
    if flip is not None:   # then column w takes column W - 1 - w
        out = np.where(np.asarray(flip)[:, None, None, None], out[:, :, ::-1], out)
    return out / np.float32(divisor)


def round_bf16(x):
    """To the nearest bfloat16 value, ties to even: add 0x7fff plus the last
    kept bit, cut the low 16 bits; a NaN is made quiet before the cut."""
    u = np.asarray(x, np.float32).view(np.uint32)
    nan = (u & np.uint32(0x7fffffff)) > np.uint32(0x7f800000)
    up = u + np.uint32(0x7fff) + ((u >> np.uint32(16)) & np.uint32(1))
    kept = np.where(nan, u | np.uint32(0x00400000), up) & np.uint32(0xffff0000)
    return kept.astype(np.uint32).view(np.float32)
