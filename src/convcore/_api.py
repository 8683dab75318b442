"""convcore's public functions: check inputs, choose the thread count, call the kernels."""
import numpy as np

from . import _add, _bf16, _conv, _dropout, _gather, _im2col, _linear, _norm, _optim, _pool
from . import _checks as chk
from ._alloc import empty
from ._kernels import bf16_kernel as _bf16_kernel
from ._kernels import bf16_supported
from ._kernels import conv_simd as _conv_simd
from ._kernels import linear_simd as _linear_simd
from ._kernels import pool_set as _pool_set
from ._kernels import winograd as _winograd
from ._ops import PRECISIONS
from ._threads import GEMM_TILES, blas_single_thread, get_num_threads
from .slices import checked_bounds as _slices
from .slices import pairs, tree_sum

_X = "(N, H, W, C)"
_W = "(kh, kw, C_in, C_out)"


MAX_SLOTS = 64   # weight-gradient slots of conv2d_backward (memory: slots * K * C_out)
DIRECT_SLOTS = 32   # the same for the direct kernels, whose work items are single images
BF16_SLOTS = 8      # the same for the bf16 kernels (few: each is a fresh page-faulted buffer)


def _direct_slots(slices):
    """The direct kernels' slots: DIRECT_SLOTS for the whole batch, or one a
    slice (a slice's images in order on one thread: the same sum wherever the
    slice is computed)."""
    return DIRECT_SLOTS if slices is None else 1


def _largest(bounds):
    """The largest slice: what picks the kernels when a batch is sliced, so that
    every process slicing the same global batch picks the same ones."""
    return int(np.max(np.diff(bounds))) if len(bounds) > 2 else int(bounds[-1])


def _slice_by_slice(bounds, step, *arrays):
    """step(*arrays[a:b]) for each slice a:b: [each slice's results] (what the
    BLAS paths do with more than one slice: the same shapes on every process)."""
    return [step(*(None if v is None else v[a:b] for v in arrays)) for a, b in pairs(bounds)]


def _stacked(parts, shape):
    """One array of shape from the slices' parts, in order."""
    out = empty(shape)
    n = 0
    for p in parts:
        out[n:n + len(p)] = p
        n += len(p)
    return out


_BF16 = PRECISIONS[1:]   # the precisions whose products take bfloat16 bits


# The shortest sums (kernel height x width x channels) the bf16 kernels run:
# shorter ones gain nothing there (measured: benchmarks/README.md). Forward:
# a first layer's 5x5x1 gains; backward: its dw, whose packing costs more
# than the float32 kernels' whole product, does not; a 1x1 convolution of 32
# channels (resnet8's shortcut) gains (1.3 against 5.0 ms, batch 64).
BF16_MIN_DEPTH = {"forward": 16, "backward": 32}


def _rounded(fn, precision, depth, *arrays, way="backward"):
    """(bf16, *operands): the bf16 kernel that multiplies (_blas.gemm_prec's
    number; 0: the float32 ones) and the checked operands as they go to it:
    as they are ("fp32", and "bf16", whose kernels round as they pack), or
    rounded to bfloat16 ("bf16-emulated", and "bf16" where the layer's sums
    are shorter than BF16_MIN_DEPTH[way]: the same arithmetic, on the float32
    kernels, which are faster there); None stays None."""
    if isinstance(precision, str) and precision == "fp32":
        return (0, *arrays)
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ValueError(f"{fn}: precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "bf16":
        kernel = _bf16_kernel(fn)
        if depth >= BF16_MIN_DEPTH[way]:
            return (kernel, *arrays)
    return (0, *(None if a is None else round_bf16(a) for a in arrays))


def _dy_rounded(precision, bf16, dy, in_kernel):
    """(dy, round_dy): the output gradient of a backward whose other operands
    _rounded has prepared, rounded as they are (bf16-emulated, and bf16 on the
    float32 kernels), or where the direct kernels take it (in_kernel) as it is,
    with round_dy True: they round each image's as they read it (the same
    values, one pass over dy less)."""
    if precision == "fp32" or bf16:
        return dy, False
    return (dy, True) if in_kernel else (round_bf16(dy), False)


def _inner(bf16):
    """The precision of a call made on operands _rounded has prepared."""
    return "bf16" if bf16 else "fp32"


# A layer's input or output in bfloat16 (inference in bf16: the next layer
# rounds its input so anyway) is a uint16 array of the values' top 16 bits.

def _input(fn, x, ndim, layout, bits):
    """x float32, or where bits (a forward's input) also uint16: bfloat16
    bits (_widened); C-contiguous (chk.array's checks)."""
    if bits and isinstance(x, np.ndarray) and x.dtype == np.uint16:
        return chk.array(fn, "x", x, ndim, layout, dtype=np.uint16)
    return chk.array(fn, "x", x, ndim, layout)


def _widened(fn, x, precision, depth, way="forward", name="x"):
    """(x, xh): float32 x as it is, (x, None); x's bfloat16 bits (uint16, with
    precision bf16 or bf16-emulated only) as they are, (None, x), where the
    bf16 kernels take them (_rounded's choice), else widened to float32."""
    if x.dtype != np.uint16:
        return x, None
    if not isinstance(precision, str) or precision not in _BF16:
        raise TypeError(f"{fn}: {name} must be float32, got uint16 {x.shape} (uint16 is taken as "
                        f"bfloat16 bits with precision 'bf16' or 'bf16-emulated' only, "
                        f"got precision {precision!r})")
    if precision == "bf16" and depth >= BF16_MIN_DEPTH[way]:
        return None, x
    return widen_bits(x), None


def widen_bits(h):
    """bfloat16 bits (uint16) -> their values as float32 (exact; one
    compiled pass)."""
    h = np.asarray(h)
    h = h if h.flags.c_contiguous else h.copy()
    y = empty(h.shape)
    _bf16.widen_bits(h.reshape(-1), y.reshape(-1).view(np.uint32), get_num_threads())
    return y


def narrow_bits(x):
    """float32 -> the bfloat16 bits (uint16) of round_bf16(x) (one compiled
    pass)."""
    x = np.asarray(x, np.float32)
    x = x if x.flags.c_contiguous else x.copy()
    y = empty(x.shape, np.uint16)
    _bf16.narrow_bits(x.reshape(-1), y.reshape(-1), get_num_threads(), bool(bf16_supported()))
    return y


def _dy_checks(fn, dy, relu_y, want, desc, bits=False):
    """An output gradient dy (with bits, uint16: its bfloat16 bits) and the
    optional ReLU output relu_y, both of shape want."""
    dy = chk.array(fn, "dy", dy, len(want), desc, **({"dtype": np.uint16} if bits else {}))
    if dy.shape != want:
        raise ValueError(f"{fn}: dy must have shape {want} to match x and w, got {dy.shape}")
    if relu_y is not None:
        relu_y = chk.array(fn, "relu_y", relu_y, len(want), desc)
        if relu_y.shape != want:
            raise ValueError(f"{fn}: relu_y must have the shape of dy {want}, "
                             f"got {relu_y.shape}")
    return dy, relu_y


def _group(positions):
    """Images per work item of the im2col path: enough rows (>= 256) for an
    efficient sgemm, few enough that the item's im2col scratch stays near the
    core's cache. Depends on the shapes only, never on the thread count."""
    return max(1, -(-256 // max(positions, 1)))


def _conv_checks(fn, x, w, stride, padding, b=None, bits=False):
    x = _input(fn, x, 4, _X, bits)
    w = chk.array(fn, "w", w, 4, _W)
    kh, kw, cin, cout = w.shape
    if kh < 1 or kw < 1 or cin < 1 or cout < 1:
        raise ValueError(f"{fn}: w must have every dimension >= 1, got shape {w.shape}")
    if x.shape[3] != cin:
        raise ValueError(f"{fn}: x has {x.shape[3]} channels but w expects C_in = {cin} "
                         f"(x {x.shape}, w {w.shape})")
    g = chk.window(fn, x.shape, (kh, kw), stride, padding, "kernel_size")
    if b is not None:
        b = chk.array(fn, "b", b, 1, f"({cout},)")
        if b.shape[0] != cout:
            raise ValueError(f"{fn}: b must have shape ({cout},) to match w, got {b.shape}")
    n = x.shape[0]
    chk.size(fn, "the output", n, g["OH"], g["OW"], cout)
    k = kh * kw * cin
    group = _group(g["OH"] * g["OW"])
    chk.size(fn, "the im2col scratch", group, g["OH"], g["OW"], k)
    chk.blas_dims(fn, K=k, C_out=cout, rows=group * g["OH"] * g["OW"])
    return x, w.reshape(k, cout), b, g, group


def im2col(x, kernel_size, stride=1, padding=0):
    """Image sections: (N, H, W, C) -> (N, OH, OW, kh*kw*C), rows ordered (kh, kw, C).

    cols @ w.reshape(-1, C_out) is the convolution of x with w (kh, kw, C, C_out).
    """
    fn = "im2col"
    x = chk.array(fn, "x", x, 4, _X)
    g = chk.window(fn, x.shape, kernel_size, stride, padding, "kernel_size")
    if x.shape[3] < 1:
        raise ValueError(f"{fn}: x must have at least one channel, got shape {x.shape}")
    k = g["KH"] * g["KW"] * g["C"]
    chk.size(fn, "cols", x.shape[0], g["OH"], g["OW"], k)
    cols = empty((x.shape[0], g["OH"], g["OW"], k))
    _im2col.im2col(x, cols, g, get_num_threads())
    return cols


def col2im(cols, x_shape, kernel_size, stride=1, padding=0):
    """The adjoint of im2col: scatter-add sections back into an (N, H, W, C) image."""
    fn = "col2im"
    cols = chk.array(fn, "cols", cols, 4, "(N, OH, OW, kh*kw*C)")
    x_shape = chk.shape_tuple(fn, "x_shape", x_shape, 4)
    if x_shape[3] < 1:
        raise ValueError(f"{fn}: x_shape must have at least one channel, got {x_shape}")
    chk.size(fn, "x_shape", *x_shape)
    g = chk.window(fn, x_shape, kernel_size, stride, padding, "kernel_size")
    want = (x_shape[0], g["OH"], g["OW"], g["KH"] * g["KW"] * g["C"])
    if cols.shape != want:
        raise ValueError(f"{fn}: cols must have shape {want} for x_shape {x_shape}, "
                         f"got {cols.shape}")
    dx = empty(x_shape)
    _im2col.col2im(cols, dx, g, get_num_threads())
    return dx


def conv2d_forward(x, w, b=None, stride=1, padding=0, relu=False, slices=None,
                   precision="fp32", out_bf16=False):
    """y = conv(x, w) + b, NHWC: (N, H, W, C_in) * (kh, kw, C_in, C_out) -> (N, OH, OW, C_out).

    relu=True fuses max(y, 0) into the same pass (y >= 0 then marks the ReLU mask).
    slices: the bounds [0, ..., N] of the batch's slices (pyconv's canonical
    order, _slices.pxd); each image's output is the same with or without them.
    precision: "fp32"; "bf16": the operands x and w (in a backward pass dy
    too) rounded to bfloat16 (round_bf16's bits) and multiplied by the CPU's
    bf16 kernels (AMX, else AVX512-BF16: _bf16_gemm.h), summed in float32;
    a ValueError where the CPU has neither; or "bf16-emulated": the same
    operands rounded, then multiplied by the float32 kernels, which is exact
    (a product of two bfloat16 values fits in float32), and summed in
    float32: the same arithmetic on any CPU, at fp32's speed less the
    rounding passes. The bias is added in float32 (its gradient summed from
    dy in float32: in bf16-emulated, the rounded dy). The same for every
    product below. With precision bf16 or bf16-emulated, x may also be given
    as bfloat16 bits (uint16: what out_bf16 makes), the same as their values
    in float32. out_bf16 (precision bf16 or bf16-emulated): y as the bfloat16
    bits of round_bf16(y) (uint16), written so by the kernels: for a next
    layer that rounds its input to bfloat16 anyway (inference in bf16).
    """
    fn = "conv2d_forward"
    _bits_out(fn, out_bf16, precision)
    x, w2, b, g, group = _conv_checks(fn, x, w, stride, padding, b, bits=True)
    n = x.shape[0]
    x, xh = _widened(fn, x, precision, w2.shape[0])
    bf16, x, w2 = _rounded(fn, precision, w2.shape[0], x, w2, way="forward")
    w = w2.reshape(w.shape)
    bounds = _slices(fn, slices, n)
    y_shape = (n, g["OH"], g["OW"], w2.shape[1])
    kernels = None if bf16 else _conv_simd(fn, g, w2.shape[1], need_dx=False)
    if kernels is None and len(bounds) > 2:   # BLAS: the same calls on every process
        y = _stacked(_slice_by_slice(bounds, lambda xs: conv2d_forward(
            xs, w, b, stride, padding, relu, precision=_inner(bf16)), x if xh is None else xh),
            y_shape)
        return narrow_bits(y) if out_bf16 else y
    if bf16:
        y = empty(y_shape, np.uint16 if out_bf16 else np.float32)
        _conv.conv2d_forward_bf16(x, w2, b, None if out_bf16 else y, g, group,
                                  get_num_threads(), bool(relu), bf16, g, xh=xh,
                                  yb=y if out_bf16 else None)
        return y
    y = empty(y_shape)
    if kernels is not None:
        _conv.conv2d_forward_direct(x, w2, b, y, g, get_num_threads(), kernels, bool(relu),
                                    _winograd(g))
    else:
        with blas_single_thread():
            _conv.conv2d_forward(x, w2, b, y, g, group, get_num_threads(), bool(relu))
    return narrow_bits(y) if out_bf16 else y


def _bits_out(fn, out_bf16, precision, return_argmax=False):
    """Refuse out_bf16 outside the bf16 precisions, or with an argmax."""
    if out_bf16 and (return_argmax or precision not in _BF16):
        raise ValueError(f"{fn}: out_bf16=True needs precision 'bf16' or 'bf16-emulated' and "
                         f"no argmax, got precision {precision!r}, "
                         f"return_argmax={return_argmax!r}")


def _conv_pool_checks(fn, x, w, stride, padding, b, pool_size, pool_stride, pool_padding,
                      bits=False):
    """_conv_checks, then the pool's window over the convolution's output:
    (x, w2, b, g, pg, pool_stride), pool_stride defaulting to pool_size."""
    x, w2, b, g, _ = _conv_checks(fn, x, w, stride, padding, b, bits)
    if pool_stride is None:
        pool_stride = pool_size
    y_shape = (x.shape[0], g["OH"], g["OW"], w2.shape[1])
    pg = chk.window(fn, y_shape, pool_size, pool_stride, pool_padding, "pool_size", pool=True,
                    stride_name="pool_stride", padding_name="pool_padding")
    return x, w2, b, g, pg, pool_stride


def conv2d_maxpool_forward(x, w, b=None, stride=1, padding=0, relu=False, pool_size=2,
                           pool_stride=None, pool_padding=0, return_argmax=False, slices=None,
                           precision="fp32", out_bf16=False):
    """maxpool2d_forward(conv2d_forward(x, w, b, stride, padding, relu), pool_size,
    pool_stride, pool_padding) in one pass: with the vector kernels each image's
    convolution output stays in cache and only the pooled result is written.
    The same bits as the two calls. Returns y, or (y, argmax) with
    return_argmax=True (for training: conv2d_maxpool_backward takes it).
    slices, precision, x as bfloat16 bits: as conv2d_forward's. out_bf16
    (precision bf16 or bf16-emulated, no argmax): y as the bfloat16 bits of
    round_bf16(y) (uint16), written so by the kernels: for a next layer that
    rounds its input to bfloat16 anyway (inference in bf16)."""
    fn = "conv2d_maxpool_forward"
    x, w2, b, g, pg, pool_stride = _conv_pool_checks(fn, x, w, stride, padding, b, pool_size,
                                                     pool_stride, pool_padding, bits=True)
    _bits_out(fn, out_bf16, precision, return_argmax)
    n = x.shape[0]
    x, xh = _widened(fn, x, precision, w2.shape[0])
    bf16, x, w2 = _rounded(fn, precision, w2.shape[0], x, w2, way="forward")
    w = w2.reshape(w.shape)
    cout = w2.shape[1]
    kernels = None if bf16 else _conv_simd(fn, g, cout, need_dx=False)
    if kernels is None and not bf16:
        y = conv2d_forward(x, w, b, stride, padding, relu, slices)
        y, argmax = maxpool2d_forward(y, pool_size, pool_stride, pool_padding)
        return (y, argmax) if return_argmax else narrow_bits(y) if out_bf16 else y
    _slices(fn, slices, n)
    chk.size(fn, "the pooled output", n, pg["OH"], pg["OW"], cout)
    out_shape = (n, pg["OH"], pg["OW"], cout)
    out = empty(out_shape, np.uint16) if out_bf16 and bf16 else empty(out_shape)
    argmax = empty(out_shape, np.int32) if return_argmax else None
    if bf16:
        _conv.conv2d_forward_bf16(x, w2, b, None if out_bf16 else out, g,
                                  _group(g["OH"] * g["OW"]), get_num_threads(), bool(relu), bf16,
                                  pg, _pool_set(), argmax, xh=xh, yb=out if out_bf16 else None)
        return (out, argmax) if return_argmax else out
    _conv.conv2d_maxpool_forward_direct(x, w2, b, out, g, pg, get_num_threads(), kernels,
                                        bool(relu), _winograd(g), argmax)
    return (out, argmax) if return_argmax else narrow_bits(out) if out_bf16 else out


def conv2d_maxpool_backward(x, w, dy, argmax, stride=1, padding=0, pool_size=2,
                            pool_stride=None, pool_padding=0, need_dx=True, relu_y=None,
                            slices=None, precision="fp32"):
    """Gradients (dx, dw, db) of conv2d_maxpool_forward from its input x,
    kernels w, the gradient dy of its pooled output and the argmax it returned
    (the convolution and pool arguments as given to it), all as
    conv2d_backward(x, w, maxpool2d_backward(dy, argmax, ...)) gives them (the
    same bits), without writing the convolution-sized gradient.

    relu_y: the pooled output y of a relu=True forward; the ReLU's mask is
    taken at each window's winner, where y holds the convolution's value.
    slices, precision: as conv2d_backward's.
    """
    fn = "conv2d_maxpool_backward"
    x, w2, _, g, pg, _ = _conv_pool_checks(fn, x, w, stride, padding, None, pool_size,
                                           pool_stride, pool_padding)
    cout = w2.shape[1]
    y_shape = (x.shape[0], g["OH"], g["OW"], cout)
    want = (x.shape[0], pg["OH"], pg["OW"], cout)
    dy, relu_y = _dy_checks(fn, dy, relu_y, want, "(N, PH, PW, C_out)")
    argmax = chk.array(fn, "argmax", argmax, 4, "(N, PH, PW, C_out)", dtype=np.int32)
    if argmax.shape != want:
        raise ValueError(f"{fn}: argmax must have the shape of dy {want}, got {argmax.shape}")
    bf16, x, w2 = _rounded(fn, precision, w2.shape[0], x, w2)
    w = w2.reshape(w.shape)
    bounds = _slices(fn, slices, x.shape[0])
    kernels = None if bf16 else _conv_simd(fn, g, cout, need_dx)
    dy, round_dy = _dy_rounded(precision, bf16, dy, kernels is not None)
    flipped = _flipped(g, w) if bf16 and need_dx and len(bounds) == 2 else None
    if flipped is not None:   # the pool's backward inside the bf16 kernels' work items
        chk.size(fn, "the convolution's output", *y_shape)   # (its bf16 copy)
        dx, dw, db = empty(x.shape), empty(w2.shape), empty(cout)
        n_bad = _conv.conv2d_maxpool_backward_bf16(
            x, w2, flipped[0], dy, argmax, dx, dw, db, g, flipped[1], pg,
            _group(g["OH"] * g["OW"]), _group(x.shape[1] * x.shape[2]), BF16_SLOTS,
            get_num_threads(), relu_y, bf16, _pool_set())
        if n_bad:
            raise ValueError(_argmax_window_message(fn, n_bad))
        return dx, dw.reshape(w.shape), db
    if kernels is None:   # the pool's backward (through the ReLU), then BLAS
        chk.size(fn, "the convolution's output", *y_shape)
        dy_conv = empty(y_shape)
        n_bad = _pool.maxpool2d_backward(dy, argmax, dy_conv, pg, get_num_threads(), _pool_set(),
                                         relu_y)
        if n_bad:
            raise ValueError(_argmax_window_message(fn, n_bad))
        return conv2d_backward(x, w, dy_conv, stride, padding, need_dx, slices=slices,
                               precision=_inner(bf16))
    dx = empty(x.shape) if need_dx else None
    dw = empty(w2.shape)
    db = empty(cout)
    n_bad = _conv.conv2d_maxpool_backward_direct(x, w2, dy, argmax, dx, dw, db, g, pg,
                                                 _direct_slots(slices), get_num_threads(), kernels,
                                                 bounds, relu_y, _winograd(g), round_dy)
    if n_bad:
        raise ValueError(_argmax_window_message(fn, n_bad))
    return dx, dw.reshape(w.shape), db


def conv2d_backward(x, w, dy, stride=1, padding=0, need_dx=True, relu_y=None, slices=None,
                    precision="fp32", need_db=True):
    """Gradients of conv2d_forward: (dx, dw, db) from the input x, kernels w and dy.

    need_dx=False skips the input gradient (a first layer) and returns None for it.
    need_db=False (a convolution without bias) returns None for db (the bf16
    kernels then skip its sum, a pass over dy).
    relu_y: the output y of a relu=True forward; dy is then taken through the
    ReLU (masked by y > 0) inside the kernel.
    slices: the bounds [0, ..., N] of the batch's slices: dw and db are each
    slice's sums added in the pairwise tree (_slices.pxd), the same bits
    wherever the slices are computed; None: one slice.
    precision: as conv2d_forward's (dy rounded too; the ReLU's mask is relu_y's);
    x may be given as bfloat16 bits as there (what the forward read: a
    layer's input handed over in bfloat16), and so may dy (a batch norm's
    dx handed over so: batchnorm_backward's out_bf16), dx still float32.
    """
    fn = "conv2d_backward"
    x, w2, _, g, group = _conv_checks(fn, x, w, stride, padding, bits=True)
    want = (x.shape[0], g["OH"], g["OW"], w2.shape[1])
    shape = x.shape
    x, xh, dy, dyh, relu_y = _backward_bits(fn, x, dy, relu_y, want, precision, w2.shape[0],
                                            need_db)
    bf16, x, w2 = _rounded(fn, precision, w2.shape[0], x, w2)
    w = w2.reshape(w.shape)
    bounds = _slices(fn, slices, shape[0])
    kernels = None if bf16 else _conv_simd(fn, g, w2.shape[1], need_dx)
    dy, round_dy = _dy_rounded(precision, bf16, dy, kernels is not None)
    if kernels is None and len(bounds) > 2:
        parts = _slice_by_slice(bounds, lambda xs, dys, rys: conv2d_backward(
            xs, w, dys, stride, padding, need_dx, rys, precision=_inner(bf16),
            need_db=need_db), x if xh is None else xh, dy if dyh is None else dyh, relu_y)
        dx = _stacked([p[0] for p in parts], shape) if need_dx else None
        return (dx, tree_sum([p[1] for p in parts]),
                tree_sum([p[2] for p in parts]) if need_db else None)
    dx = empty(shape) if need_dx else None
    dw = empty(w2.shape)
    db = empty(w2.shape[1])
    if kernels is not None:
        _conv.conv2d_backward_direct(x, w2, dy, dx, dw, db, g, _direct_slots(slices),
                                     get_num_threads(),
                                     kernels, bounds, relu_y, _winograd(g), round_dy)
        return dx, dw.reshape(w.shape), db if need_db else None
    flipped = _flipped(g, w) if bf16 and need_dx else None
    phases = _phases(g, w) if bf16 and need_dx and flipped is None else None
    if bf16 and (flipped is not None or phases is not None or not need_dx):
        wt, gt = flipped or (None, g)
        dy_bits = np.empty(want, np.uint16) if phases is not None and dyh is None else None
        _conv.conv2d_backward_bf16(x, w2, wt, dy, dx if phases is None else None, dw, db,
                                   g, gt, group, _group(shape[1] * shape[2]), BF16_SLOTS,
                                   get_num_threads(), relu_y, bf16, dy_bits, need_db, xh, dyh)
        if phases is not None:
            _phase_dx(phases, g, dy_bits if dyh is None else dyh, dx, bf16)
        return dx, dw.reshape(w.shape), db if need_db else None
    with blas_single_thread():
        _conv.conv2d_backward(widen_bits(xh) if x is None else x, w2,
                              widen_bits(dyh) if dy is None else dy, dx, dw, db, g, group,
                              MAX_SLOTS, get_num_threads(), relu_y, bf16)
    return dx, dw.reshape(w.shape), db if need_db else None


def _backward_bits(fn, x, dy, relu_y, want, precision, depth, need_db):
    """conv2d_backward's (x, xh, dy, dyh, relu_y): x and dy float32, or
    bfloat16 bits (xh, dyh) where the bf16 kernels take them (_widened; dy's
    only without a bias gradient or a ReLU to apply), else widened."""
    dyh = dy if isinstance(dy, np.ndarray) and dy.dtype == np.uint16 else None
    dy, relu_y = _dy_checks(fn, dy, relu_y, want, "(N, OH, OW, C_out)", bits=dyh is not None)
    x, xh = _widened(fn, x, precision, depth, way="backward")
    dy, dyh = _widened(fn, dy, precision, depth, way="backward", name="dy")
    if dyh is not None and (need_db or relu_y is not None):
        dy, dyh = widen_bits(dyh), None
    return x, xh, dy, dyh, relu_y


def _flipped(g, w):
    """(wt, gt): the input gradient of a stride-1 convolution as a forward one,
    dy convolved with the flipped kernels wt (kh*kw*C_out, C_in) over the
    window gt (its one phase, _phase); None where the stride or a padding
    wider than the kernel does not allow it."""
    return _phase(g, w, 0, 0) if (g["SH"], g["SW"]) == (1, 1) else None


def _phase_taps(size, k, s, pad, out, a):
    """One axis of a phase (_phase): (taps, gt's padding, its output length) of
    the input positions a, a + s, ...: the taps k0 > k1 > ... of the kernel that
    reach them (a + pad = tap mod s), as a stride-1 convolution over dy's
    `out` positions; None where its padding would be negative or as wide as
    its kernel (the general path then)."""
    r, c = (a + pad) % s, (a + pad) // s
    taps = list(range(r, k, s))[::-1]
    q = len(range(a, size, s))
    top = len(taps) - 1 - c
    bottom = q - 1 + len(taps) - out - top
    if taps and not (0 <= top < len(taps) and 0 <= bottom < len(taps)):
        return None
    return taps, top, q


def _descending(taps, step):
    """The taps k0 > k1 > ... (step apart) of _phase_taps as a slice of the
    kernel's axis: a view of w, where a list of them would copy it."""
    stop = taps[-1] - step
    return slice(taps[0], stop if stop >= 0 else None, -step)


def _phase(g, w, a, b):
    """(wt, gt): the input gradient at the input's rows a, a + SH, ... and
    columns b, b + SW, ... as a stride-1 forward convolution of dy with the
    taps that reach them, flipped, wt (taps_h * taps_w * C_out, C_in), over
    the window gt; (None, None) where no tap reaches them (their dx is 0);
    None where the phase does not fit a forward window."""
    rows = _phase_taps(g["H"], g["KH"], g["SH"], g["PT"], g["OH"], a)
    cols = _phase_taps(g["W"], g["KW"], g["SW"], g["PL"], g["OW"], b)
    if rows is None or cols is None:
        return None
    (th, top, qh), (tw, left, qw) = rows, cols
    if not th or not tw:
        return None, None
    taps = w[_descending(th, g["SH"]), _descending(tw, g["SW"])]   # a view: one copy, below
    wt = np.ascontiguousarray(taps.transpose(0, 1, 3, 2)).reshape(-1, w.shape[2])
    gt = {"H": g["OH"], "W": g["OW"], "C": w.shape[3], "KH": len(th), "KW": len(tw),
          "SH": 1, "SW": 1, "PT": top, "PL": left, "OH": qh, "OW": qw}
    return wt, gt


def _phases(g, w):
    """The input gradient of a strided convolution as one stride-1 convolution
    of dy per phase (a, b) of the input's rows and columns (_phase): [(a, b,
    wt, gt)]; None where a phase does not fit a forward window or its sums
    would be too short for the bf16 kernels, and for a 1x1 kernel (the
    general path's product is all there is to its dx)."""
    if w.shape[3] < BF16_MIN_DEPTH["forward"] or g["KH"] * g["KW"] == 1:
        return None
    out = []
    for a in range(min(g["SH"], g["H"])):
        for b in range(min(g["SW"], g["W"])):
            p = _phase(g, w, a, b)
            if p is None:
                return None
            out.append((a, b, *p))
    return out


def _phase_dx(phases, g, dy_bits, dx, bf16):
    """dx of a strided convolution (window g) from _phases: each phase's
    convolution of dy (bf16's forward kernel, reading dy's bfloat16 bits, as
    conv2d_backward_bf16 made them: through the ReLU) into its rows and
    columns of dx."""
    sh, sw = g["SH"], g["SW"]
    for a, b, wt, gt in phases:
        if wt is None:
            dx[:, a::sh, b::sw] = 0
            continue
        _conv.conv2d_forward_bf16(None, wt, None, dx, gt, _group(gt["OH"] * gt["OW"]),
                                  get_num_threads(), False, bf16, gt, phase=(a, b, sh, sw),
                                  xh=dy_bits)


def maxpool2d_forward(x, pool_size=2, stride=None, padding=0):
    """Max over windows: (N, H, W, C) -> (y, argmax), both (N, OH, OW, C).

    argmax holds the flat index ih * W + iw of each window's winner (int32);
    ties go to the first maximum in row-major window order, padding never wins.
    """
    fn = "maxpool2d_forward"
    x = chk.array(fn, "x", x, 4, _X)
    if stride is None:
        stride = pool_size
    g = chk.window(fn, x.shape, pool_size, stride, padding, "pool_size", pool=True)
    if x.shape[3] < 1:
        raise ValueError(f"{fn}: x must have at least one channel, got shape {x.shape}")
    if x.shape[1] * x.shape[2] > chk.INT_MAX:
        raise ValueError(f"{fn}: x has {x.shape[1] * x.shape[2]} cells per image, more than "
                         f"the int32 argmax can index ({chk.INT_MAX})")
    shape = (x.shape[0], g["OH"], g["OW"], x.shape[3])
    chk.size(fn, "the output", *shape)
    y = empty(shape)
    argmax = empty(shape, np.int32)
    _pool.maxpool2d_forward(x, y, argmax, g, get_num_threads(), _pool_set())
    return y, argmax


def _pool_backward_checks(fn, dy, x_shape, pool_size, stride, padding):
    """(x_shape, window) of a pool's backward: x_shape a legal shape whose pool
    of this geometry has dy's shape."""
    x_shape = chk.shape_tuple(fn, "x_shape", x_shape, 4)
    chk.size(fn, "x_shape", *x_shape)
    g = chk.window(fn, x_shape, pool_size, pool_size if stride is None else stride, padding,
                   "pool_size", pool=True)
    want = (x_shape[0], g["OH"], g["OW"], x_shape[3])
    if dy.shape != want:
        raise ValueError(f"{fn}: dy must have shape {want} (the pool of pool_size="
                         f"{pool_size!r}, stride={stride!r}, padding={padding!r} over x_shape "
                         f"{x_shape}), got {dy.shape}")
    return x_shape, g


def maxpool2d_backward(dy, argmax, x_shape, pool_size=2, stride=None, padding=0):
    """Scatter-add each dy to its window's argmax: returns dx of shape x_shape.

    pool_size, stride and padding: as given to maxpool2d_forward. dy and
    argmax must have the shape that window gives over x_shape, and every
    argmax entry must lie in its own window (else ValueError: the argmax is
    not from this forward, and its gradient would be silently wrong)."""
    fn = "maxpool2d_backward"
    dy = chk.array(fn, "dy", dy, 4, "(N, OH, OW, C)")
    argmax = chk.array(fn, "argmax", argmax, 4, "(N, OH, OW, C)", dtype=np.int32)
    x_shape, g = _pool_backward_checks(fn, dy, x_shape, pool_size, stride, padding)
    want = dy.shape
    if argmax.shape != want:
        raise ValueError(f"{fn}: argmax must have the shape of dy {want}, "
                         f"got {argmax.shape}")
    dx = empty(x_shape)
    n_bad = _pool.maxpool2d_backward(dy, argmax, dx, g, get_num_threads(), _pool_set())
    if n_bad:
        raise ValueError(_argmax_window_message(fn, n_bad))
    return dx


def avgpool2d_forward(x, pool_size=2, stride=None, padding=0):
    """Mean over windows: (N, H, W, C) -> (N, OH, OW, C). Padded cells do not
    count (a window's mean is over its cells inside the image, as ONNX's
    AveragePool by default). A global average pool is pool_size = (H, W)."""
    fn = "avgpool2d_forward"
    x = chk.array(fn, "x", x, 4, _X)
    g = chk.window(fn, x.shape, pool_size, pool_size if stride is None else stride, padding,
                   "pool_size", pool=True)
    if x.shape[3] < 1:
        raise ValueError(f"{fn}: x must have at least one channel, got shape {x.shape}")
    shape = (x.shape[0], g["OH"], g["OW"], x.shape[3])
    chk.size(fn, "the output", *shape)
    y = empty(shape)
    _pool.avgpool2d_forward(x, y, g, get_num_threads())
    return y


def avgpool2d_backward(dy, x_shape, pool_size=2, stride=None, padding=0):
    """dx of shape x_shape: each dy spread evenly over its window's cells inside
    the image. pool_size, stride and padding: as given to avgpool2d_forward."""
    fn = "avgpool2d_backward"
    dy = chk.array(fn, "dy", dy, 4, "(N, OH, OW, C)")
    x_shape, g = _pool_backward_checks(fn, dy, x_shape, pool_size, stride, padding)
    dx = empty(x_shape)
    _pool.avgpool2d_backward(dy, dx, g, get_num_threads())
    return dx


def _argmax_window_message(fn, n_bad):
    return (f"{fn}: argmax has {n_bad} entries outside their own pooling window: it is not "
            "the argmax of this pool's forward pass (another input shape, pool size, "
            "stride or padding)")


def add_forward(a, b, relu=False, out=None, out_bf16=False):
    """y = a + b, both float32 of one shape (a residual connection's add);
    relu=True: max(y, 0) in the same pass (as NumPy's maximum: NaN stays NaN).
    The same bits as NumPy's a + b (and maximum). out: a C-contiguous float32
    array of a's shape to write y into (and return), else a new one.
    out_bf16: y as the bfloat16 bits of round_bf16(y) (uint16, a new array:
    not with out), for layers that multiply in bf16; add_backward reads the
    ReLU's mask from them. Except where relu and a sum in (0, 2^-134] would
    round to +0 and lose its mask: y is float32 then."""
    fn = "add_forward"
    a = chk.array(fn, "a", a, getattr(a, "ndim", 0), "(...)")
    b = chk.array(fn, "b", b, a.ndim, f"{a.shape} (that of a)")
    if b.shape != a.shape:
        raise ValueError(f"{fn}: b must have the shape of a {a.shape}, got {b.shape}")
    if out_bf16 and out is not None:
        raise ValueError(f"{fn}: out_bf16=True writes a new uint16 array; it cannot go to "
                         f"out (float32), got out {_described(out)}")
    if out_bf16:
        bits = empty(a.shape, np.uint16)
        lost = _add.add_forward_bits(a.reshape(-1), b.reshape(-1), bits.reshape(-1), bool(relu),
                                     get_num_threads(), bool(bf16_supported()))
        if not (relu and lost):
            return bits
    y = empty(a.shape) if out is None else _out(fn, out, a.shape)
    _add.add_forward(a.reshape(-1), b.reshape(-1), y.reshape(-1), bool(relu),
                     get_num_threads())
    return y


def _out(fn, out, shape):
    """A caller's output array, checked: float32, C-contiguous, of the shape."""
    if not isinstance(out, np.ndarray) or out.dtype != np.float32 \
            or not out.flags.c_contiguous or not out.flags.writeable:
        raise TypeError(f"{fn}: out must be a writeable C-contiguous float32 numpy array of "
                        f"shape {shape}, got {_described(out)}")
    if out.shape != shape:
        raise ValueError(f"{fn}: out must have shape {shape}, got {out.shape}")
    return out


def _described(a):
    """What a bad `out` is, for the message: its type, or its flags, dtype, shape."""
    if not isinstance(a, np.ndarray):
        return type(a).__name__
    layout = "C-contiguous" if a.flags.c_contiguous else "not C-contiguous"
    return f"{'' if a.flags.writeable else 'read-only '}{layout} {a.dtype} {a.shape}"


def add_backward(dy, relu_y=None):
    """The gradient of each input of add_forward: dy itself, or with relu_y
    (the output of a relu=True forward) dy * (relu_y > 0), as NumPy gives it;
    relu_y may be that output's bfloat16 bits (out_bf16's), the same mask."""
    fn = "add_backward"
    dy = chk.array(fn, "dy", dy, getattr(dy, "ndim", 0), "(...)")
    if relu_y is None:
        return dy
    bits = isinstance(relu_y, np.ndarray) and relu_y.dtype == np.uint16
    relu_y = chk.array(fn, "relu_y", relu_y, dy.ndim, f"{dy.shape} (that of dy)",
                       **({"dtype": np.uint16} if bits else {}))
    if relu_y.shape != dy.shape:
        raise ValueError(f"{fn}: relu_y must have the shape of dy {dy.shape}, "
                         f"got {relu_y.shape}")
    dx = empty(dy.shape)
    (_add.add_backward_bits if bits else _add.add_backward)(
        dy.reshape(-1), relu_y.reshape(-1), dx.reshape(-1), get_num_threads())
    return dx


def _linear_checks(fn, x, w, b=None, bits=False):
    x = _input(fn, x, 2, "(N, D_in)", bits)
    w = chk.array(fn, "w", w, 2, "(D_in, D_out)")
    if w.shape[0] < 1 or w.shape[1] < 1:
        raise ValueError(f"{fn}: w must have both dimensions >= 1, got shape {w.shape}")
    if x.shape[1] != w.shape[0]:
        raise ValueError(f"{fn}: x has {x.shape[1]} features but w expects D_in = "
                         f"{w.shape[0]} (x {x.shape}, w {w.shape})")
    if b is not None:
        b = chk.array(fn, "b", b, 1, f"({w.shape[1]},)")
        if b.shape[0] != w.shape[1]:
            raise ValueError(f"{fn}: b must have shape ({w.shape[1]},) to match w, "
                             f"got {b.shape}")
    chk.blas_dims(fn, N=x.shape[0], D_in=w.shape[0], D_out=w.shape[1])
    return x, w, b


def linear_forward(x, w, b=None, relu=False, slices=None, precision="fp32"):
    """y = x @ w + b: (N, D_in) @ (D_in, D_out) -> (N, D_out); relu=True fuses max(y, 0).
    slices: as conv2d_forward's (the kernels are picked by the largest slice);
    precision, x as bfloat16 bits: as conv2d_forward's."""
    fn = "linear_forward"
    x, w, b = _linear_checks(fn, x, w, b, bits=True)
    n = x.shape[0]
    x, xh = _widened(fn, x, precision, w.shape[0])
    bf16, x, w = _rounded(fn, precision, w.shape[0], x, w, way="forward")
    bounds = _slices(fn, slices, n)
    kernels = None if bf16 else _linear_simd(fn, _largest(bounds), w.shape[1], forward=True)
    y = empty((n, w.shape[1]))
    if kernels is not None:
        _linear.linear_forward_tiles(x, w, b, y, get_num_threads(), kernels, bool(relu))
        return y
    with blas_single_thread():
        _linear.linear_forward(x, w, b, y, GEMM_TILES, get_num_threads(), bounds, bool(relu),
                               bf16, xh)
    return y


def linear_backward(x, w, dy, need_dx=True, relu_y=None, slices=None, precision="fp32"):
    """Gradients of linear_forward: (dx, dw, db); dx is None if need_dx is False.

    relu_y: the output y of a relu=True forward; dy is then masked by y > 0 first.
    slices: as conv2d_backward's (the kernels are picked by the largest slice);
    precision: as conv2d_backward's.
    """
    fn = "linear_backward"
    x, w, _ = _linear_checks(fn, x, w)
    want = (x.shape[0], w.shape[1])
    dy, relu_y = _dy_checks(fn, dy, relu_y, want, "(N, D_out)")
    bf16, x, w, dy = _rounded(fn, precision, w.shape[0], x, w, dy)
    bounds = _slices(fn, slices, x.shape[0])
    kernels = None if bf16 else _linear_simd(fn, _largest(bounds), w.shape[1])
    dx = empty(x.shape) if need_dx else None
    dw = empty(w.shape)
    db = empty(w.shape[1])
    if kernels is not None:
        dym = empty(want)
        dyT = empty((want[1], -(-want[0] // 16) * 16))
        _linear.linear_backward_tiles(x, w, dy, dx, dw, db, get_num_threads(), kernels, dym,
                                      dyT, bounds, relu_y)
        return dx, dw, db
    scratch = empty(want) if relu_y is not None else None
    with blas_single_thread():
        _linear.linear_backward(x, w, dy, dx, dw, db, GEMM_TILES, get_num_threads(), bounds,
                                relu_y, scratch, bf16)
    return dx, dw, db


def linear_backward_adam(x, w, dy, b, m_w, v_w, m_b, v_b, lr_t, beta1=0.9, beta2=0.999,
                         eps=1e-8, need_dx=True, relu_y=None, slices=None, precision="fp32"):
    """linear_backward, then adam_update of w (state m_w, v_w) and b (m_b, v_b;
    b and its state may be None), in one pass where the simd kernels apply:
    each block of w's gradient is applied while in cache, never stored. The
    same bits as the separate calls. Returns dx (None if need_dx is False).
    slices, precision: as linear_backward's (bf16-emulated: the separate
    calls; w's rounded copy is multiplied, w itself updated)."""
    fn = "linear_backward_adam"
    _update_checks(fn, w, w, {"m_w": m_w, "v_w": v_w}, p_name="w")   # updated in place:
    if b is not None:                                                 # no copies allowed
        _update_checks(fn, b, b, {"m_b": m_b, "v_b": v_b}, p_name="b")
    x, w, _ = _linear_checks(fn, x, w)
    want = (x.shape[0], w.shape[1])
    dy, relu_y = _dy_checks(fn, dy, relu_y, want, "(N, D_out)")
    if b is not None and b.shape != (w.shape[1],):
        raise ValueError(f"{fn}: b must have shape ({w.shape[1]},) to match w, got {b.shape}")
    bounds = _slices(fn, slices, x.shape[0])
    bf16 = _rounded(fn, precision, w.shape[0])[0]
    if bf16 and len(bounds) == 2:      # the update fused into the bf16 product
        dx = empty(x.shape) if need_dx else None
        scratch = empty(want) if relu_y is not None else None
        _linear.linear_backward_adam_bf16(x, w, dy, dx, b, m_w, v_w, m_b, v_b, float(lr_t),
                                          float(beta1), float(beta2), float(eps),
                                          get_num_threads(), relu_y, scratch, bf16, _pool_set())
        return dx
    kernels = _linear_simd(fn, _largest(bounds), w.shape[1])
    if kernels is None or precision != "fp32":
        dx, dw, db = linear_backward(x, w, dy, need_dx, relu_y, slices, precision)
        adam_update(w, dw, m_w, v_w, lr_t, beta1, beta2, eps)
        if b is not None:
            adam_update(b, db, m_b, v_b, lr_t, beta1, beta2, eps)
        return dx
    dx = empty(x.shape) if need_dx else None
    dym = empty(want)
    dyT = empty((want[1], -(-want[0] // 16) * 16))
    _linear.linear_backward_adam_tiles(x, w, dy, dx, b, m_w, v_w, m_b, v_b, float(lr_t),
                                       float(beta1), float(beta2), float(eps),
                                       get_num_threads(), kernels, dym, dyT, bounds, relu_y)
    return dx


def _update_checks(fn, p, g, states, p_name="p"):
    """Parameters and their state must be float32, C-contiguous (updated in place)."""
    arrays = {p_name: p, "g": g, **states}
    for name, a in arrays.items():
        if not isinstance(a, np.ndarray) or a.dtype != np.float32:
            got = f"{a.dtype} {a.shape}" if isinstance(a, np.ndarray) else type(a).__name__
            raise TypeError(f"{fn}: {name} must be a float32 numpy array, got {got}")
        if a.shape != p.shape:
            raise ValueError(f"{fn}: {name} must have the shape of {p_name} {p.shape}, "
                             f"got {a.shape}")
        if name != "g" and (not a.flags.c_contiguous or not a.flags.writeable):
            raise ValueError(f"{fn}: {name} is updated in place and must be a writeable "
                             "C-contiguous array")
    return np.ascontiguousarray(g).reshape(-1)


def _dropout_args(fn, name, a, rate, key, offset):
    a = chk.array(fn, name, a, getattr(a, "ndim", 0), "(...)")   # any shape
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, (int, float, np.floating,
                                                                    np.integer)):
        raise TypeError(f"{fn}: rate must be a number in [0, 1), got {type(rate).__name__} "
                        f"{rate!r}")
    if not 0 <= rate < 1:
        raise ValueError(f"{fn}: rate must be in [0, 1), got {rate!r}")
    key = chk.integer(fn, "key", key, 0)
    if key >= 2**64:
        raise ValueError(f"{fn}: key must be in [0, 2**64), got {key}")
    offset = chk.integer(fn, "offset", offset, 0)
    if offset > 2**62:
        raise ValueError(f"{fn}: offset must be at most 2**62, got {offset}")
    keep = 1.0 - float(rate)
    return a, key, np.float32(keep), np.float32(1.0 / keep), offset


def dropout_forward(x, rate, key, offset=0):
    """Inverted dropout: y = x * mask, each entry kept with probability 1 - rate
    and scaled by 1 / (1 - rate), else multiplied by 0. The mask is drawn from
    Philox4x32-10 with the 64-bit key: the same for the same key and shape on
    any thread count, and made again by dropout_backward (never stored).
    offset: x is part of a larger tensor, from its entry `offset` on (C
    order), and takes that part of the larger tensor's mask: a shard of a
    batch, split across processes, drops what the whole batch would."""
    x, key, keep, scale, offset = _dropout_args("dropout_forward", "x", x, rate, key, offset)
    y = empty(x.shape)
    _dropout.dropout(x.reshape(-1), y.reshape(-1), key, keep, scale, get_num_threads(),
                     _pool_set(), offset)
    return y


def dropout_backward(dy, rate, key, offset=0):
    """dx = dy * the mask of dropout_forward(x, rate, key, offset), x of dy's shape."""
    dy, key, keep, scale, offset = _dropout_args("dropout_backward", "dy", dy, rate, key,
                                                 offset)
    dx = empty(dy.shape)
    _dropout.dropout(dy.reshape(-1), dx.reshape(-1), key, keep, scale, get_num_threads(),
                     _pool_set(), offset)
    return dx


def _unit(fn, name, v):
    if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not 0 <= v < 1:
        raise ValueError(f"{fn}: {name} must be a number in [0, 1), got {v!r}")
    return float(v)


def adam_update(p, g, m, v, lr_t, beta1=0.9, beta2=0.999, eps=1e-8, decay=0.0):
    """One fused Adam step in place (TensorFlow's ApplyAdam); lr_t is bias-corrected.
    decay: p *= 1 - decay first (AdamW's decoupled weight decay: lr * weight_decay)."""
    g = _update_checks("adam_update", p, g, {"m": m, "v": v})
    _optim.adam_update(p.reshape(-1), g, m.reshape(-1), v.reshape(-1), float(lr_t),
                       float(beta1), float(beta2), float(eps), _unit("adam_update", "decay",
                                                                     decay), get_num_threads(),
                       _pool_set())


def sgd_update(p, g, buf, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
    """One SGD step in place, as PyTorch's: g' = g + weight_decay * p; buf =
    momentum * buf + g'; p -= lr * buf (nesterov: p -= lr * (g' + momentum * buf))."""
    g = _update_checks("sgd_update", p, g, {"buf": buf})
    if not weight_decay >= 0:
        raise ValueError(f"sgd_update: weight_decay must be >= 0, got {weight_decay!r}")
    _optim.sgd_update(p.reshape(-1), g, buf.reshape(-1), float(lr), float(momentum),
                      bool(nesterov), float(weight_decay), get_num_threads())


def _channels(fn, x, named):
    """x (N, H, W, C) as rows (N H W, C), and each named (C,) vector checked.
    x float32, or uint16: the bfloat16 bits of its values (a bf16 network's
    batch norm reads its input so), which the kernels widen as they read."""
    x = _input(fn, x, 4, _X, bits=True)
    c = x.shape[3]
    if c < 1:
        raise ValueError(f"{fn}: x must have at least one channel, got shape {x.shape}")
    out = []
    for name, v in named.items():
        v = chk.array(fn, name, v, 1, f"({c},)")
        if v.shape != (c,):
            raise ValueError(f"{fn}: {name} must have shape ({c},) to match the channels of "
                             f"x {x.shape}, got {v.shape}")
        out.append(v)
    return x, x.reshape(-1, c), out


def _x_or_bits(rows):
    """(x, None) or (None, bits), as _norm's functions take them."""
    return (None, rows) if rows.dtype == np.uint16 else (rows, None)


def _eps(fn, eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not eps > 0:
        raise ValueError(f"{fn}: eps must be a number > 0, got {eps!r}")
    return float(eps)


def batchnorm_forward(x, gamma, beta, eps=1e-5, relu=False, out_bf16=False):
    """Batch normalisation in training: (y, mean, var), y = (x - mean) /
    sqrt(var + eps) * gamma + beta (then ReLU if relu), with each channel's mean
    and biased variance over the batch's N H W cells. The sums run in a fixed
    order: the same bits on any thread count. out_bf16: y as the bfloat16
    bits of round_bf16(y) (uint16), written so by the kernel: for a next
    layer that multiplies in bf16 (it rounds its input so anyway). x may be
    uint16, the bfloat16 bits of its values (what conv2d_forward's out_bf16
    makes): the bits of the same call on widen_bits(x), half the bytes read."""
    fn = "batchnorm_forward"
    x, rows, (gamma, beta) = _channels(fn, x, {"gamma": gamma, "beta": beta})
    eps = _eps(fn, eps)
    if rows.shape[0] < 2:
        raise ValueError(f"{fn}: x must have more than one value per channel (N H W >= 2) "
                         f"for batch statistics, got shape {x.shape}")
    y, mean, var = _norm_out(x, out_bf16), empty(gamma.shape), empty(gamma.shape)
    out, bits = _norm_outs(y, rows)
    xf, xh = _x_or_bits(rows)
    _norm.batchnorm_forward(xf, gamma, beta, eps, bool(relu), out, mean, var,
                            get_num_threads(), _pool_set(), bits, xh)
    return y, mean, var


def _norm_out(x, out_bf16):
    """A batch normalisation's output for x: float32, or (out_bf16) its bits."""
    return empty(x.shape, np.uint16 if out_bf16 else np.float32)


def _norm_outs(y, rows):
    """(y, None) or (None, bits), as _norm's functions take them, viewed as rows."""
    y = y.reshape(rows.shape)
    return (None, y) if y.dtype == np.uint16 else (y, None)


def batchnorm_inference(x, gamma, beta, mean, var, eps=1e-5, relu=False, out_bf16=False):
    """Batch normalisation on given statistics (the running ones): y = (x -
    mean) * scale + beta, scale = gamma / sqrt(var + eps), then ReLU if relu:
    the bits of batchnorm_forward's output for the same statistics (out_bf16,
    and x as bfloat16 bits: as batchnorm_forward's)."""
    fn = "batchnorm_inference"
    x, rows, (gamma, beta, mean, var) = _channels(
        fn, x, {"gamma": gamma, "beta": beta, "mean": mean, "var": var})
    eps = _eps(fn, eps)
    if (var < 0).any():
        raise ValueError(f"{fn}: var must be >= 0, got a minimum of {var.min()}")
    scale = (gamma / np.sqrt(var.astype(np.float64) + eps)).astype(np.float32)
    y = _norm_out(x, out_bf16)
    out, bits = _norm_outs(y, rows)
    xf, xh = _x_or_bits(rows)
    _norm.batchnorm_inference(xf, mean, scale, beta, bool(relu), out, get_num_threads(),
                              _pool_set(), bits, xh)
    return y


def batchnorm_backward(x, gamma, mean, var, dy, eps=1e-5, need_dx=True, relu_beta=None,
                       totals=None, out_bf16=False):
    """Gradients (dx, dgamma, dbeta) of batchnorm_forward(x, gamma, beta, eps,
    relu) from its input x, its batch statistics (mean, var) and dy; dx None
    where need_dx is False.

    relu_beta: the forward's beta where it ran with relu=True: dy is taken
    through that ReLU, whose mask (y > 0) is made again from x, mean, var,
    gamma and beta as the forward made y (the same bits; its output is not
    read, one pass's array fewer).

    totals = (count, dgamma, dbeta) of the whole batch where x is one
    process's slice of it (its statistics the whole batch's): dx is then this
    slice's part of the whole batch's gradient; the dgamma and dbeta returned
    are still this slice's (their sums over the slices are the totals).

    out_bf16: dx as the bfloat16 bits of round_bf16(dx) (uint16), for a bf16
    convolution before it, which rounds its dy so anyway. x: as the
    forward's, float32 or its bfloat16 bits (dy float32)."""
    fn = "batchnorm_backward"
    named = {"gamma": gamma, "mean": mean, "var": var}
    if relu_beta is not None:
        named["relu_beta"] = relu_beta
    x, rows, checked = _channels(fn, x, named)
    gamma, mean, var = checked[:3]
    relu_beta = checked[3] if relu_beta is not None else None
    eps = _eps(fn, eps)
    dy, _ = _dy_checks(fn, dy, None, x.shape, _X)
    if totals is not None:
        totals = _totals(fn, totals, gamma.shape[0], rows.shape[0])
    dx = _norm_out(x, out_bf16) if need_dx else None
    out, bits = _norm_outs(dx, rows) if need_dx else (None, None)
    dgamma, dbeta = empty(gamma.shape), empty(gamma.shape)
    xf, xh = _x_or_bits(rows)
    _norm.batchnorm_backward(xf, gamma, mean, var, eps, dy.reshape(rows.shape), relu_beta,
                             out, dgamma, dbeta, get_num_threads(), _pool_set(), totals, bits,
                             xh)
    return dx, dgamma, dbeta


def _totals(fn, totals, c, m):
    """(count, dgamma (C,), dbeta (C,)) as one float64 array, count >= m."""
    try:
        count, dg, db = totals
        flat = np.concatenate([[count], np.asarray(dg, np.float64).reshape(-1),
                               np.asarray(db, np.float64).reshape(-1)]).astype(np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{fn}: totals must be (count, dgamma, dbeta), got "
                        f"{type(totals).__name__}") from None
    if flat.shape != (1 + 2 * c,) or not flat[0] >= max(m, 1) or not np.isfinite(flat[0]):
        raise ValueError(f"{fn}: totals must be (count >= {max(m, 1)}, dgamma ({c},), dbeta "
                         f"({c},)), got count {flat[0] if flat.size else None} and "
                         f"{flat.size} numbers")
    return flat


def gather_batch(x, rows, shift=None, flip=None, divisor=1.0):
    """A batch from a data set in memory, as float32 (len(rows), H, W, C):
    image rows[b] of x, mirrored left to right where flip[b], moved by
    shift[b] = (dy, dx) pixels, divided by divisor:

        out[b, h, w] = x[rows[b], h + dy, v + dx] / divisor,  v = W-1-w if flip[b] else w

    and 0 where that pixel lies outside the image. x: uint8 or float32 (N, H,
    W, C); rows: integers in [0, N); shift: integers (B, 2) or None (no
    move); flip: booleans (B,) or None; divisor > 0 (255: pixels to [0, 1]).
    One pass: the gather, the augmentation and the scaling of a training step."""
    fn = "gather_batch"
    if not isinstance(x, np.ndarray) or x.dtype not in (np.uint8, np.float32):
        got = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise TypeError(f"{fn}: x must be a uint8 or float32 numpy array with shape {_X}, "
                        f"got {got}")
    x = chk.array(fn, "x", x, 4, _X, x.dtype)
    rows = chk.integers(fn, "rows", rows, 1, "(B,)")
    n, b = x.shape[0], rows.shape[0]
    if b and (rows.min() < 0 or rows.max() >= n):
        bad = rows[(rows < 0) | (rows >= n)][0]
        raise ValueError(f"{fn}: rows must be image numbers in [0, {n}) (x has {n} images), "
                         f"got {bad}")
    if shift is not None:
        shift = chk.integers(fn, "shift", shift, 2, "(B, 2)")
        if shift.shape != (b, 2):
            raise ValueError(f"{fn}: shift must have shape (B, 2) = ({b}, 2), got "
                             f"{shift.shape}")
        if b and np.abs(shift).max() > 2**30:
            raise ValueError(f"{fn}: shift must be pixels within 2**30, got "
                             f"{np.abs(shift).max()}")
        shift = shift.astype(np.int32)
    if flip is not None:
        if not isinstance(flip, np.ndarray) or flip.dtype != np.bool_ or flip.shape != (b,):
            got = f"{flip.dtype} {flip.shape}" if isinstance(flip, np.ndarray) else \
                type(flip).__name__
            raise TypeError(f"{fn}: flip must be a bool numpy array of shape (B,) = ({b},), "
                            f"got {got}")
        flip = np.ascontiguousarray(flip).view(np.uint8)
    if isinstance(divisor, bool) or not isinstance(divisor, (int, float, np.floating,
                                                            np.integer)) \
            or not np.isfinite(divisor) or not divisor > 0:
        raise ValueError(f"{fn}: divisor must be a finite number > 0, got {divisor!r}")
    chk.size(fn, "the batch", b, *x.shape[1:])
    out = empty((b,) + x.shape[1:])
    _gather.gather_batch(x, rows, shift, flip, float(divisor), out, get_num_threads())
    return out



def round_bf16(x):
    """x (float32, any shape) rounded to the nearest bfloat16 value, ties to
    even, as float32: the operands a bf16 multiply sees (bfloat16 keeps
    float32's exponent and the top 7 of its 23 mantissa bits). NaN stays NaN,
    infinities stay, finite values past bfloat16's largest (3.39e38) become
    infinities. The same bits as convcore.reference.round_bf16."""
    fn = "round_bf16"
    x = chk.array(fn, "x", x, getattr(x, "ndim", 0), "(...)")
    y = empty(x.shape)
    _bf16.round_bf16(x.reshape(-1), y.reshape(-1), get_num_threads())
    return y
