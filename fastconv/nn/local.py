"""The chapter's weight-sharing variants: unshared (locally connected) and tiled convolution.

Unshared: every output position has its own kernel,
``Z[b, i, j, k] = sum_{l, m, n} Vpad[b, l, j*s + m, k*s + n] K[i, j, k, l, m, n]``.
Tiled: output position ``(j, k)`` uses kernel ``(j % t, k % t)`` of a small set,
``Z[b, i, j, k] = sum_{l, m, n} Vpad[b, l, j*s + m, k*s + n] K[i, l, m, n, j % t, k % t]``.

Neither is the canonical correlation, so neither goes through the dispatcher.
Both run on the im2col view of the input (a strided window view, copied once
into a matrix): unshared is one batched matrix product over output
positions, tiled one matrix product per tile.  The gradients are the same
products transposed, the input one followed by a scatter-add of the columns
back onto the image (col2im), one strided add per kernel tap.
"""
from __future__ import annotations

import operator

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .. import geometry
from . import _validate


def _prepare(input, weight, weight_name: str, op: str):
    x = _validate.float_array(input, "input")
    w = _validate.float_array(weight, weight_name)
    x, unbatched = _validate.batched(x, 2, "input", op)
    if w.ndim != 6:
        raise ValueError(f"expected {weight_name} of {op} to be 6-D, got {weight_name} of shape "
                         f"{w.shape}")
    return x, w, unbatched


def _geometry(x_shape, channels: int, kernel, stride, padding, op: str):
    """Validated stride, padding pairs and output size of a 2-D window layer."""
    stride = _validate.stride_tuple(stride, 2)
    pairs = _validate.padding_pairs(padding, 2, kernel, stride, (1, 1))
    if any(k < 1 for k in kernel):
        raise ValueError(f"kernel sizes of {op} must be positive, got {tuple(kernel)}")
    if channels != x_shape[1]:
        raise ValueError(f"weight of {op} expects {channels} input channels, input of shape "
                         f"{tuple(x_shape)} has {x_shape[1]}")
    _validate.check_kernel_fits(x_shape[2:], kernel, pairs, (1, 1))
    out = geometry.conv_output_shape(x_shape[2:], kernel, pairs, stride, (1, 1))
    return stride, pairs, out


def _windows(x: np.ndarray, kernel, stride, pairs) -> np.ndarray:
    """View ``(N, C, OH, OW, KH, KW)`` of the zero-padded input's windows (no copy but the pad)."""
    if any(p != (0, 0) for p in pairs):
        x = np.pad(x, ((0, 0), (0, 0)) + tuple(pairs))
    view = sliding_window_view(x, tuple(kernel), axis=(2, 3))
    return view[:, :, ::stride[0], ::stride[1]]


def _col2im(cols: np.ndarray, x_shape, kernel, stride, pairs, dtype) -> np.ndarray:
    """Sum the columns ``cols[b, j, k, l, m, n]`` back onto an ``x_shape`` image."""
    n, c, h, w = x_shape
    (pt, pb), (pl, pr) = pairs
    oh, ow = cols.shape[1:3]
    image = np.zeros((n, c, h + pt + pb, w + pl + pr), dtype=dtype)
    for m in range(kernel[0]):
        rows = slice(m, m + (oh - 1) * stride[0] + 1, stride[0])
        for q in range(kernel[1]):
            columns = slice(q, q + (ow - 1) * stride[1] + 1, stride[1])
            image[:, :, rows, columns] += cols[:, :, :, :, m, q].transpose(0, 3, 1, 2)
    return np.ascontiguousarray(image[:, :, pt:pt + h, pl:pl + w])


def _size(size, name: str, lengths, op: str) -> tuple:
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__"):
        raise TypeError(f"{name} of {op} must be a sequence of ints, got {size!r}")
    try:
        values = tuple(operator.index(v) for v in size)
    except TypeError:
        raise TypeError(f"{name} of {op} must be a sequence of ints, got {size!r}") from None
    if len(values) not in lengths or any(v < 0 for v in values):
        raise ValueError(f"{name} of {op} must be {' or '.join(map(str, lengths))} non-negative "
                         f"sizes, got {size!r}")
    return values


def _grad_output(grad_output, batch: int, channels: int, out, op: str) -> tuple:
    gy = _validate.float_array(grad_output, "grad_output")
    unbatched = gy.ndim == 3
    gy = gy[np.newaxis] if unbatched else gy
    expected = (batch, channels) + tuple(out)
    if gy.shape != expected:
        raise ValueError(f"grad_output of {op} must have the output's shape {expected}, "
                         f"got {gy.shape}")
    return gy, unbatched


# ---------------------------------------------------------------------------
# unshared convolution: K[i, j, k, l, m, n] = (O, OH, OW, C, KH, KW)

def _unshared_check(x_shape, w_shape, stride, padding, op):
    o, wh, ww, c, kh, kw = w_shape
    stride, pairs, out = _geometry(x_shape, c, (kh, kw), stride, padding, op)
    if (wh, ww) != out:
        raise ValueError(f"weight of shape {tuple(w_shape)} has kernels for a {wh}x{ww} output, "
                         f"but input of shape {tuple(x_shape)} with stride {stride} and padding "
                         f"{pairs} gives a {out[0]}x{out[1]} output")
    return stride, pairs, out


def _weight_grad_args(input, weight_size, grad_output, stride, padding, check, op):
    """Validated operands of a weight gradient, cast to the result dtype.

    Returns ``(x, w_shape, gy, stride, pairs, out, dtype)``; ``check`` is the
    variant's geometry check (:func:`_unshared_check` or :func:`_tiled_check`).
    """
    x = _validate.float_array(input, "input")
    x, _ = _validate.batched(x, 2, "input", op)
    w_shape = _size(weight_size, "weight_size", (6,), op)
    stride, pairs, out = check(x.shape, w_shape, stride, padding, op)
    gy, _ = _grad_output(grad_output, x.shape[0], w_shape[0], out, op)
    dtype = _validate.result_dtype(x, gy)
    return (x.astype(dtype, copy=False), w_shape, gy.astype(dtype, copy=False), stride, pairs,
            out, dtype)


def _input_grad_args(input_size, weight, grad_output, stride, padding, check, op):
    """Validated operands of an input gradient, cast to the result dtype.

    Returns ``(unbatched, x_shape, w, gy, stride, pairs, out, dtype)``.
    """
    size = _size(input_size, "input_size", (4, 3), op)
    w = _validate.float_array(weight, "weight")
    if w.ndim != 6:
        raise ValueError(f"expected weight of {op} to be 6-D, got weight of shape {w.shape}")
    x_shape = size if len(size) == 4 else (1,) + size
    stride, pairs, out = check(x_shape, w.shape, stride, padding, op)
    gy, _ = _grad_output(grad_output, x_shape[0], w.shape[0], out, op)
    dtype = _validate.result_dtype(w, gy)
    return (len(size) == 3, x_shape, w.astype(dtype, copy=False), gy.astype(dtype, copy=False),
            stride, pairs, out, dtype)


def _position_major(x, kernel, stride, pairs) -> np.ndarray:
    """Columns as ``(OH*OW, N, C*KH*KW)``: one matrix per output position."""
    win = _windows(x, kernel, stride, pairs)
    n, c, oh, ow = win.shape[:4]
    return win.transpose(2, 3, 0, 1, 4, 5).reshape(oh * ow, n, c * kernel[0] * kernel[1])


def unshared_conv2d(input, weight, stride=1, padding=0):
    """Unshared (locally connected) 2-D convolution: one kernel per output position.

    The chapter's ``Z[i, j, k] = sum_{l, m, n} V[l, j*s + m, k*s + n] K[i, j, k, l, m, n]``,
    batched, with zero padding.

    Parameters
    ----------
    input : array_like, float32 or float64
        ``(N, C, H, W)`` or unbatched ``(C, H, W)``.
    weight : array_like
        ``(O, OH, OW, C, KH, KW)``: out channel, output row, output column,
        in channel, kernel row, kernel column.  ``(OH, OW)`` must be the
        output size.
    stride : int or pair of ints
    padding : int, pair, pair of (before, after) pairs, 'valid' or 'same'

    Returns
    -------
    ndarray
        ``(N, O, OH, OW)``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 2, 5, 5))
    >>> unshared_conv2d(x, np.ones((3, 3, 3, 2, 3, 3))).shape
    (1, 3, 3, 3)
    """
    x, w, unbatched = _prepare(input, weight, "weight", "unshared_conv2d")
    stride, pairs, (oh, ow) = _unshared_check(x.shape, w.shape, stride, padding, "unshared_conv2d")
    dtype = _validate.result_dtype(x, w)
    o, kernel = w.shape[0], w.shape[4:]
    cols = _position_major(x.astype(dtype, copy=False), kernel, stride, pairs)
    kernels = w.astype(dtype, copy=False).transpose(1, 2, 3, 4, 5, 0).reshape(oh * ow, -1, o)
    out = np.matmul(cols, kernels)                       # (P, N, O)
    out = np.ascontiguousarray(out.reshape(oh, ow, -1, o).transpose(2, 3, 0, 1))
    return out[0] if unbatched else out


def unshared_conv2d_weight(input, weight_size, grad_output, stride=1, padding=0):
    """Gradient of :func:`unshared_conv2d` for its weight.

    ``dK[i, j, k, l, m, n] = sum_b G[b, i, j, k] Vpad[b, l, j*s + m, k*s + n]``.

    Examples
    --------
    >>> import numpy as np
    >>> unshared_conv2d_weight(np.ones((1, 1, 3, 3)), (1, 2, 2, 1, 2, 2), np.ones((1, 1, 2, 2)))[0, 0, 0]
    array([[[1., 1.],
            [1., 1.]]])
    """
    x, w_shape, gy, stride, pairs, out, dtype = _weight_grad_args(
        input, weight_size, grad_output, stride, padding, _unshared_check, "unshared_conv2d_weight")
    cols = _position_major(x, w_shape[4:], stride, pairs)
    o, oh, ow = w_shape[:3]
    gp = gy.transpose(2, 3, 1, 0).reshape(oh * ow, o, -1)   # (P, O, N)
    dw = np.matmul(gp, cols)                                                         # (P, O, CKK)
    dw = dw.reshape((oh, ow, o) + w_shape[3:]).transpose(2, 0, 1, 3, 4, 5)
    return np.ascontiguousarray(dw)


def unshared_conv2d_input(input_size, weight, grad_output, stride=1, padding=0):
    """Gradient of :func:`unshared_conv2d` for its input.

    ``dV[b, l, p, q] = sum_{i, j, k, m, n: j*s + m = p, k*s + n = q} G[b, i, j, k] K[i, j, k, l, m, n]``
    (in padded coordinates, then cropped).

    Examples
    --------
    >>> import numpy as np
    >>> unshared_conv2d_input((1, 1, 3, 3), np.ones((1, 2, 2, 1, 2, 2)), np.ones((1, 1, 2, 2)))[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    unbatched, x_shape, w, gy, stride, pairs, out, dtype = _input_grad_args(
        input_size, weight, grad_output, stride, padding, _unshared_check, "unshared_conv2d_input")
    o, oh, ow, c, kh, kw = w.shape
    gp = gy.transpose(2, 3, 0, 1).reshape(oh * ow, -1, o)                               # (P, N, O)
    kernels = w.transpose(1, 2, 0, 3, 4, 5).reshape(oh * ow, o, -1)
    cols = np.matmul(gp, kernels).reshape(oh, ow, -1, c, kh, kw)                       # (P, N, CKK)
    dx = _col2im(cols.transpose(2, 0, 1, 3, 4, 5), x_shape, (kh, kw), stride, pairs, dtype)
    return dx[0] if unbatched else dx


# ---------------------------------------------------------------------------
# tiled convolution: K[i, l, m, n, a, b] = (O, C, KH, KW, t, t)

def _tiled_check(x_shape, w_shape, stride, padding, op):
    return _geometry(x_shape, w_shape[1], w_shape[2:4], stride, padding, op)


def _tile_rows(cols: np.ndarray, a: int, b: int, tiles) -> np.ndarray:
    """The im2col rows ``(N * positions, C*KH*KW)`` of the positions that use tile (a, b)."""
    part = cols[:, a::tiles[0], b::tiles[1]]
    return part.reshape(-1, part.shape[3] * part.shape[4] * part.shape[5])


def _batch_major(x, kernel, stride, pairs) -> np.ndarray:
    """Columns as ``(N, OH, OW, C, KH, KW)`` (a copy)."""
    return np.ascontiguousarray(_windows(x, kernel, stride, pairs).transpose(0, 2, 3, 1, 4, 5))


def tiled_conv2d(input, weight, stride=1, padding=0):
    """Tiled 2-D convolution: output position ``(j, k)`` uses kernel ``(j % t, k % t)``.

    The chapter's ``Z[i, j, k] = sum_{l, m, n} V[l, j*s + m, k*s + n] K[i, l, m, n, j % t, k % t]``,
    batched, with zero padding.  ``t = 1`` is ordinary convolution; ``t`` as
    large as the output is unshared convolution.

    Parameters
    ----------
    input : array_like, float32 or float64
        ``(N, C, H, W)`` or unbatched ``(C, H, W)``.
    weight : array_like
        ``(O, C, KH, KW, t, t)`` (``(..., t_rows, t_cols)`` for rectangular tiles).
    stride : int or pair of ints
    padding : int, pair, pair of (before, after) pairs, 'valid' or 'same'

    Returns
    -------
    ndarray
        ``(N, O, OH, OW)``.

    Examples
    --------
    >>> import numpy as np
    >>> tiled_conv2d(np.ones((1, 1, 4, 4)), np.ones((2, 1, 3, 3, 2, 2)), padding=1).shape
    (1, 2, 4, 4)
    """
    x, w, unbatched = _prepare(input, weight, "weight", "tiled_conv2d")
    stride, pairs, out = _tiled_check(x.shape, w.shape, stride, padding, "tiled_conv2d")
    dtype = _validate.result_dtype(x, w)
    cols = _batch_major(x.astype(dtype, copy=False), w.shape[2:4], stride, pairs)
    w = w.astype(dtype, copy=False)
    o, tiles = w.shape[0], w.shape[4:]
    result = np.empty((x.shape[0], o) + out, dtype=dtype)
    for a in range(min(tiles[0], out[0])):
        for b in range(min(tiles[1], out[1])):
            rows = _tile_rows(cols, a, b, tiles)
            part = rows @ w[..., a, b].reshape(o, -1).T                      # (N*P_ab, O)
            target = result[:, :, a::tiles[0], b::tiles[1]]
            target[...] = part.reshape(target.shape[:1] + target.shape[2:] + (o,)).transpose(0, 3, 1, 2)
    return result[0] if unbatched else result


def tiled_conv2d_weight(input, weight_size, grad_output, stride=1, padding=0):
    """Gradient of :func:`tiled_conv2d` for its weight.

    ``dK[i, l, m, n, a, b] = sum over b, j % t = a, k % t = b of G[., i, j, k] Vpad[., l, j*s + m, k*s + n]``;
    tiles no output position uses get 0.

    Examples
    --------
    >>> import numpy as np
    >>> dw = tiled_conv2d_weight(np.ones((1, 1, 3, 3)), (1, 1, 2, 2, 2, 2), np.ones((1, 1, 2, 2)))
    >>> dw[0, 0, :, :, 0, 0]
    array([[1., 1.],
           [1., 1.]])
    """
    x, w_shape, gy, stride, pairs, out, dtype = _weight_grad_args(
        input, weight_size, grad_output, stride, padding, _tiled_check, "tiled_conv2d_weight")
    cols = _batch_major(x, w_shape[2:4], stride, pairs)
    o, tiles = w_shape[0], w_shape[4:]
    dw = np.zeros(w_shape, dtype=dtype)
    for a in range(min(tiles[0], out[0])):
        for b in range(min(tiles[1], out[1])):
            g_ab = gy[:, :, a::tiles[0], b::tiles[1]].transpose(1, 0, 2, 3).reshape(o, -1)
            dw[..., a, b] = (g_ab @ _tile_rows(cols, a, b, tiles)).reshape(w_shape[:4])
    return dw


def tiled_conv2d_input(input_size, weight, grad_output, stride=1, padding=0):
    """Gradient of :func:`tiled_conv2d` for its input.

    Examples
    --------
    >>> import numpy as np
    >>> tiled_conv2d_input((1, 1, 3, 3), np.ones((1, 1, 2, 2, 1, 1)), np.ones((1, 1, 2, 2)))[0, 0]
    array([[1., 2., 1.],
           [2., 4., 2.],
           [1., 2., 1.]])
    """
    unbatched, x_shape, w, gy, stride, pairs, out, dtype = _input_grad_args(
        input_size, weight, grad_output, stride, padding, _tiled_check, "tiled_conv2d_input")
    o, c, kh, kw, ta, tb = w.shape
    cols = np.empty((x_shape[0],) + out + (c, kh, kw), dtype=dtype)
    for a in range(min(ta, out[0])):
        for b in range(min(tb, out[1])):
            g_ab = gy[:, :, a::ta, b::tb].transpose(0, 2, 3, 1)            # (N, Pa, Pb, O)
            part = g_ab.reshape(-1, o) @ w[..., a, b].reshape(o, -1)
            cols[:, a::ta, b::tb] = part.reshape(g_ab.shape[:3] + (c, kh, kw))
    dx = _col2im(cols, x_shape, (kh, kw), stride, pairs, dtype)
    return dx[0] if unbatched else dx
