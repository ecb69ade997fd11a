"""TensorFlow's ``tf.nn`` convolution, pooling and LRN ops, as the chapter uses them.

Channels-last by default (``NHWC``; ``NCHW`` and the 1-D/3-D formats too),
filters in TF's ``(*kernel, in, out)`` layout, strides and sizes as TF takes
them (an int, one per spatial axis, or one per axis with 1 for N and C) and
padding ``'SAME'`` (TF's split: the odd extra cell goes after, any stride),
``'VALID'`` or explicit ``[[0, 0], [top, bottom], [left, right], [0, 0]]``.

Nothing is computed here: each op is a layout permutation plus TF's padding
arithmetic around the channels-first engine of :mod:`fastconv.nn`, so the
convolutions go through the dispatcher (``method=``) and the pooling and
LRN ops reuse the same Numba kernels.
"""
from __future__ import annotations

import numbers
import operator

import numpy as np

from . import geometry
from .nn import conv as _conv
from .nn import grad as _grad
from .nn import lrn as _lrn
from .nn import pooling as _pool
from .nn._validate import float_array, prepare, result_dtype

__all__ = ["conv1d", "conv2d", "conv3d", "conv2d_backprop_input", "conv2d_backprop_filter",
           "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "max_pool_with_argmax", "max_pool_grad_with_argmax", "max_pool_grad", "avg_pool_grad",
           "local_response_normalization", "lrn", "lrn_grad"]

#: channels-last and channels-first data formats per number of spatial axes
FORMATS = {1: ("NWC", "NCW"), 2: ("NHWC", "NCHW"), 3: ("NDHWC", "NCDHW")}


# --- arguments -----------------------------------------------------------------------------

def _channels_last(data_format, nd: int) -> bool:
    if data_format not in FORMATS[nd]:
        raise ValueError(f"data_format must be one of {FORMATS[nd]} for {nd}-D spatial data, "
                         f"got {data_format!r}")
    return data_format == FORMATS[nd][0]


def _spatial_axes(nd: int, last: bool) -> list:
    return list(range(1, nd + 1)) if last else list(range(2, nd + 2))


def _tf_ints(value, nd: int, last: bool, name: str, default=None) -> tuple:
    """An int, or 1, ``nd`` or ``nd + 2`` ints (N and C entries 1), as ``nd`` positive ints."""
    if value is None and default is not None:
        return (default,) * nd
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise TypeError(f"{name} must be an int or a list of ints, got {value!r}")
    if isinstance(value, numbers.Integral):
        values = (int(value),) * nd
    else:
        if not hasattr(value, "__iter__"):
            raise TypeError(f"{name} must be an int or a list of ints, got {value!r}")
        items = list(value)
        if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in items):
            raise TypeError(f"{name} must be an int or a list of ints, got {value!r}")
        items = [int(v) for v in items]
        if len(items) == nd + 2:
            outer = (items[0], items[-1] if last else items[1])
            if outer != (1, 1):
                raise ValueError(f"{name} must be 1 on the batch and channel dimensions, got "
                                 f"{value!r}")
            items = [items[a] for a in _spatial_axes(nd, last)]
        elif len(items) == 1:
            items = items * nd
        elif len(items) != nd:
            raise ValueError(f"{name} must have 1, {nd} or {nd + 2} values, got {value!r}")
        values = tuple(items)
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive, got {value!r}")
    return values


def _tf_padding(padding, nd: int, last: bool, spatial, kernel, stride, dilation,
                explicit: bool = True) -> tuple:
    """'SAME', 'VALID' or explicit TF padding as ``(before, after)`` pairs."""
    if isinstance(padding, str):
        if padding == "SAME":
            return tuple(geometry.same_padding(n, k, s, d)
                         for n, k, s, d in zip(spatial, kernel, stride, dilation))
        if padding == "VALID":
            return ((0, 0),) * nd
        raise ValueError(f"padding must be 'SAME', 'VALID'{' or a list of pairs' * explicit}, "
                         f"got {padding!r}")
    if not explicit:
        raise ValueError(f"padding must be 'SAME' or 'VALID' for this op, got {padding!r}")
    try:
        pairs = [tuple(operator.index(v) for v in pair) for pair in padding]
    except TypeError:
        raise ValueError(f"padding must be 'SAME', 'VALID' or {nd + 2} [before, after] pairs, "
                         f"got {padding!r}") from None
    if len(pairs) != nd + 2 or any(len(p) != 2 for p in pairs):
        raise ValueError(f"explicit padding must have {nd + 2} [before, after] pairs, got "
                         f"{padding!r}")
    if pairs[0] != (0, 0) or pairs[-1 if last else 1] != (0, 0):
        raise ValueError(f"explicit padding must be [0, 0] on the batch and channel "
                         f"dimensions, got {padding!r}")
    pairs = tuple(pairs[a] for a in _spatial_axes(nd, last))
    if any(b < 0 or a < 0 for b, a in pairs):
        raise ValueError(f"padding must be non-negative, got {padding!r}")
    return pairs


def _array(value, nd: int, name: str) -> np.ndarray:
    a = float_array(value, name)
    if a.ndim != nd + 2:
        raise ValueError(f"{name} must be {nd + 2}-D (batch, {nd} spatial axes and channels), "
                         f"got shape {a.shape}")
    return a


def _to_first(a: np.ndarray, last: bool) -> np.ndarray:
    """A channels-first view of a channels-last array (no copy)."""
    return np.moveaxis(a, -1, 1) if last else a


def _from_first(a: np.ndarray, last: bool) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(a, 1, -1) if last else a)


def _layout_shape(shape, last: bool) -> tuple:
    """A channels-first shape in the caller's layout."""
    return (shape[0],) + tuple(shape[2:]) + (shape[1],) if last else tuple(shape)


def _first_shape(shape, last: bool) -> tuple:
    return (shape[0], shape[-1]) + tuple(shape[1:-1]) if last else tuple(shape)


def _filters_to_nn(filters: np.ndarray, nd: int) -> np.ndarray:
    """``(*kernel, in, out)`` -> ``(out, in, *kernel)``."""
    return np.transpose(filters, (nd + 1, nd) + tuple(range(nd)))


def _conv_geometry(nd, x_shape, kernel, strides, padding, data_format, dilations):
    last = _channels_last(data_format, nd)
    stride = _tf_ints(strides, nd, last, "strides")
    dilation = _tf_ints(dilations, nd, last, "dilations", default=1)
    spatial = x_shape[1:-1] if last else x_shape[2:]
    pairs = _tf_padding(padding, nd, last, spatial, kernel, stride, dilation)
    return last, stride, dilation, pairs


# --- convolution ---------------------------------------------------------------------------

def _tf_conv(nd, input, filters, strides, padding, data_format, dilations, method):
    x = _array(input, nd, "input")
    f = float_array(filters, "filters")
    if f.ndim != nd + 2:
        raise ValueError(f"filters must be {nd + 2}-D (*kernel, in_channels, out_channels), got "
                         f"shape {f.shape}")
    last, stride, dilation, pairs = _conv_geometry(nd, x.shape, f.shape[:nd], strides, padding,
                                                   data_format, dilations)
    channels = x.shape[-1] if last else x.shape[1]
    if f.shape[nd] != channels:
        raise ValueError(f"filters expect {f.shape[nd]} input channels (shape {f.shape}), input "
                         f"has {channels} (shape {x.shape})")
    nn_conv = getattr(_conv, f"conv{nd}d")
    out = nn_conv(_to_first(x, last), _filters_to_nn(f, nd), None, stride, pairs, dilation, 1,
                  method)
    return _from_first(out, last)


def conv1d(input, filters, stride, padding, data_format="NWC", dilations=None, method="auto"):
    """1-D convolution (cross-correlation), as ``tf.nn.conv1d``.

    Parameters
    ----------
    input : ndarray
        ``(N, W, C)`` (``'NWC'``) or ``(N, C, W)`` (``'NCW'``), float32 or float64.
    filters : ndarray
        ``(KW, C, O)``.
    stride, dilations : int or list of 1 or 3 ints
    padding : 'SAME', 'VALID' or explicit pairs
    data_format : 'NWC' or 'NCW'
    method : str
        'auto' or a fastconv backend name.

    Examples
    --------
    >>> import numpy as np
    >>> conv1d(np.ones((1, 5, 1)), np.ones((3, 1, 2)), 1, "SAME")[0, :, 0]
    array([2., 3., 3., 3., 2.])
    """
    return _tf_conv(1, input, filters, stride, padding, data_format, dilations, method)


def conv2d(input, filters, strides, padding, data_format="NHWC", dilations=None, method="auto"):
    """2-D convolution (cross-correlation), as ``tf.nn.conv2d``.

    Parameters
    ----------
    input : ndarray
        ``(N, H, W, C)`` (``'NHWC'``) or ``(N, C, H, W)`` (``'NCHW'``), float32 or float64.
    filters : ndarray
        ``(KH, KW, C, O)``.
    strides, dilations : int or list of 1, 2 or 4 ints
        With 4, the batch and channel entries must be 1.
    padding : 'SAME', 'VALID' or ``[[0, 0], [top, bottom], [left, right], [0, 0]]``
        'SAME' gives ``ceil(size / stride)`` outputs, the odd padding cell after.
    data_format : 'NHWC' or 'NCHW'
    method : str
        'auto' or a fastconv backend name.

    Returns
    -------
    ndarray
        In ``data_format``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 24, 24, 3), dtype=np.float32)
    >>> conv2d(x, np.ones((5, 5, 3, 64), dtype=np.float32), 1, "SAME").shape
    (1, 24, 24, 64)
    >>> conv2d(x, np.ones((3, 3, 3, 8), dtype=np.float32), [1, 2, 2, 1], "SAME").shape
    (1, 12, 12, 8)
    """
    return _tf_conv(2, input, filters, strides, padding, data_format, dilations, method)


def conv3d(input, filters, strides, padding, data_format="NDHWC", dilations=None,
           method="auto"):
    """3-D convolution (cross-correlation), as ``tf.nn.conv3d``.

    ``input`` is ``(N, D, H, W, C)`` (``'NDHWC'``) or ``(N, C, D, H, W)``
    (``'NCDHW'``), ``filters`` ``(KD, KH, KW, C, O)``; strides, dilations and
    padding as for :func:`conv2d`, with 1, 3 or 5 values.

    Examples
    --------
    >>> import numpy as np
    >>> conv3d(np.ones((1, 4, 4, 4, 1)), np.ones((2, 2, 2, 1, 1)), 2, "VALID").shape
    (1, 2, 2, 2, 1)
    """
    return _tf_conv(3, input, filters, strides, padding, data_format, dilations, method)


def _sizes(value, count_ok, name: str) -> tuple:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise TypeError(f"{name} must be a list of ints, got {value!r}")
    try:
        sizes = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a list of ints, got {value!r}") from None
    if len(sizes) not in count_ok or any(v < 0 for v in sizes):
        raise ValueError(f"{name} must be {' or '.join(map(str, count_ok))} non-negative ints, "
                         f"got {value!r}")
    return sizes


def _check_out_backprop(g, x_shape, filter_shape, stride, pairs, dilation, last) -> None:
    """``out_backprop`` must have the shape conv2d gives (``x_shape`` channels-first)."""
    if x_shape[1] != filter_shape[2]:
        raise ValueError(f"filters expect {filter_shape[2]} input channels (shape "
                         f"{tuple(filter_shape)}), the input has {x_shape[1]}")
    out = geometry.conv_output_shape(x_shape[2:], filter_shape[:2], pairs, stride, dilation)
    expected = _layout_shape((x_shape[0], filter_shape[3]) + out, last)
    if g.shape != expected:
        raise ValueError(f"out_backprop must have the convolution's output shape {expected}, "
                         f"got {g.shape}")


def conv2d_backprop_input(input_sizes, filters, out_backprop, strides, padding,
                          data_format="NHWC", dilations=None, method="auto"):
    """Gradient of :func:`conv2d` for its input, as ``tf.compat.v1.nn.conv2d_backprop_input``.

    Parameters
    ----------
    input_sizes : list of 4 ints (in ``data_format``), or 2 (height, width)
    filters : ndarray
        ``(KH, KW, C, O)``.
    out_backprop : ndarray
        Gradient for the output, in ``data_format``.
    strides, padding, data_format, dilations, method
        As given to :func:`conv2d`.

    Examples
    --------
    >>> import numpy as np
    >>> g = conv2d_backprop_input([1, 5, 5, 1], np.ones((3, 3, 1, 1)), np.ones((1, 3, 3, 1)),
    ...                           2, "SAME")
    >>> g[0, :, :, 0]
    array([[1., 2., 1., 2., 1.],
           [2., 4., 2., 4., 2.],
           [1., 2., 1., 2., 1.],
           [2., 4., 2., 4., 2.],
           [1., 2., 1., 2., 1.]])
    """
    f = float_array(filters, "filters")
    g = _array(out_backprop, 2, "out_backprop")
    if f.ndim != 4:
        raise ValueError(f"filters must be 4-D (KH, KW, in_channels, out_channels), got shape "
                         f"{f.shape}")
    last = _channels_last(data_format, 2)
    sizes = _sizes(input_sizes, (2, 4), "input_sizes")
    if len(sizes) == 2:
        sizes = _layout_shape((g.shape[0], f.shape[2]) + sizes, last)
    x_shape = _first_shape(sizes, last)
    _, stride, dilation, pairs = _conv_geometry(2, sizes, f.shape[:2], strides, padding,
                                                data_format, dilations)
    _check_out_backprop(g, x_shape, f.shape, stride, pairs, dilation, last)
    dx = _grad.conv2d_input(x_shape, _filters_to_nn(f, 2), _to_first(g, last), stride, pairs,
                            dilation, 1, method)
    return _from_first(dx, last)


def conv2d_backprop_filter(input, filter_sizes, out_backprop, strides, padding,
                           data_format="NHWC", dilations=None, method="auto"):
    """Gradient of :func:`conv2d` for its filters, as ``tf.compat.v1.nn.conv2d_backprop_filter``.

    Parameters
    ----------
    input : ndarray
        The forward input, in ``data_format``.
    filter_sizes : list of 4 ints
        ``(KH, KW, C, O)``.
    out_backprop : ndarray
        Gradient for the output, in ``data_format``.
    strides, padding, data_format, dilations, method
        As given to :func:`conv2d`.

    Examples
    --------
    >>> import numpy as np
    >>> conv2d_backprop_filter(np.ones((1, 4, 4, 1)), [3, 3, 1, 2], np.ones((1, 4, 4, 2)),
    ...                        1, "SAME")[:, :, 0, 0]
    array([[ 9., 12.,  9.],
           [12., 16., 12.],
           [ 9., 12.,  9.]])
    """
    x = _array(input, 2, "input")
    g = _array(out_backprop, 2, "out_backprop")
    sizes = _sizes(filter_sizes, (4,), "filter_sizes")
    last, stride, dilation, pairs = _conv_geometry(2, x.shape, sizes[:2], strides, padding,
                                                   data_format, dilations)
    _check_out_backprop(g, _first_shape(x.shape, last), sizes, stride, pairs, dilation, last)
    dw = _grad.conv2d_weight(_to_first(x, last), (sizes[3], sizes[2]) + sizes[:2],
                             _to_first(g, last), stride, pairs, dilation, 1, method)
    return np.ascontiguousarray(np.transpose(dw, (2, 3, 1, 0)))


# --- pooling -------------------------------------------------------------------------------

def _pool_geometry(nd, x_shape, ksize, strides, padding, data_format, explicit=True):
    last = _channels_last(data_format, nd)
    kernel = _tf_ints(ksize, nd, last, "ksize")
    stride = _tf_ints(strides, nd, last, "strides")
    spatial = x_shape[1:-1] if last else x_shape[2:]
    pairs = _tf_padding(padding, nd, last, spatial, kernel, stride, (1,) * nd, explicit)
    if any(p >= k for pair, k in zip(pairs, kernel) for p in pair):
        raise ValueError(f"explicit padding must be smaller than ksize {kernel}, got {padding!r}")
    return last, _pool.make_geometry(spatial, kernel, stride, (1,) * nd, pairs)


def _max_pool(nd, input, ksize, strides, padding, data_format):
    x = _array(input, nd, "input")
    last, geo = _pool_geometry(nd, x.shape, ksize, strides, padding, data_format)
    out, _ = _pool.run_max_pool(prepare(_to_first(x, last), x.dtype), geo, False)
    return _from_first(out, last)


def _avg_pool(nd, input, ksize, strides, padding, data_format):
    x = _array(input, nd, "input")
    last, geo = _pool_geometry(nd, x.shape, ksize, strides, padding, data_format, False)
    # TF's SAME windows average only the cells inside the input
    out = _pool.run_avg_pool(prepare(_to_first(x, last), x.dtype), geo, False)
    return _from_first(out, last)


_POOL_DOC = """{n}-D {kind} pooling, as ``tf.nn.{kind}_pool{n}d``.

    Parameters
    ----------
    input : ndarray
        ``{fmt}`` (default) or channels-first, float32 or float64.
    ksize, strides : int or list of 1, {n} or {n2} ints
        With {n2}, the batch and channel entries must be 1.
    padding : {pad}
        'SAME' gives ``ceil(size / stride)`` outputs, the odd padding cell
        after; {same}
    data_format : {formats}

    Examples
    --------
    >>> import numpy as np
    >>> {kind}_pool{n}d(np.ones({shape}, dtype=np.float32), 3, 2, "SAME").shape
    {out}
    """


def max_pool1d(input, ksize, strides, padding, data_format="NWC"):
    return _max_pool(1, input, ksize, strides, padding, data_format)


def max_pool2d(input, ksize, strides, padding, data_format="NHWC"):
    return _max_pool(2, input, ksize, strides, padding, data_format)


def max_pool3d(input, ksize, strides, padding, data_format="NDHWC"):
    return _max_pool(3, input, ksize, strides, padding, data_format)


def avg_pool1d(input, ksize, strides, padding, data_format="NWC"):
    return _avg_pool(1, input, ksize, strides, padding, data_format)


def avg_pool2d(input, ksize, strides, padding, data_format="NHWC"):
    return _avg_pool(2, input, ksize, strides, padding, data_format)


def avg_pool3d(input, ksize, strides, padding, data_format="NDHWC"):
    return _avg_pool(3, input, ksize, strides, padding, data_format)


for _n in (1, 2, 3):
    _shape = (1,) + (24,) * _n + (4,)
    _common = dict(n=_n, n2=_n + 2, fmt=FORMATS[_n][0], formats=" or ".join(map(repr, FORMATS[_n])),
                   shape=_shape, out=(1,) + (12,) * _n + (4,))
    globals()[f"max_pool{_n}d"].__doc__ = _POOL_DOC.format(
        kind="max", pad="'SAME', 'VALID' or explicit pairs",
        same="padding cells never win.", **_common)
    globals()[f"avg_pool{_n}d"].__doc__ = _POOL_DOC.format(
        kind="avg", pad="'SAME' or 'VALID'",
        same="a window averages only its cells inside the input.", **_common)
del _n, _shape, _common


def max_pool_with_argmax(input, ksize, strides, padding, output_dtype=np.int64,
                         include_batch_in_index=False):
    """2-D max pooling of NHWC input and each maximum's flat index, as TF's ``max_pool_with_argmax``.

    A maximum at ``[b, y, x, c]`` gets index ``((b * height + y) * width + x) * channels + c``,
    without the ``b`` term unless ``include_batch_in_index``.  Ties go to the
    first maximum in row-major window order; a window holding NaN gives NaN.

    Parameters
    ----------
    input : ndarray
        ``(N, H, W, C)``, float32 or float64.
    ksize, strides : int or list of 1, 2 or 4 ints
    padding : 'SAME' or 'VALID'
    output_dtype : np.int32 or np.int64
    include_batch_in_index : bool

    Returns
    -------
    output, argmax : ndarray

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1., 5., 5., 2.]).reshape(1, 2, 2, 1)
    >>> out, argmax = max_pool_with_argmax(x, 2, 2, "VALID")
    >>> float(out[0, 0, 0, 0]), int(argmax[0, 0, 0, 0])
    (5.0, 1)
    """
    dtype = np.dtype(output_dtype)
    if dtype not in (np.dtype(np.int32), np.dtype(np.int64)):
        raise TypeError(f"output_dtype must be int32 or int64, got {output_dtype!r}")
    x = _array(input, 2, "input")
    _, geo = _pool_geometry(2, x.shape, ksize, strides, padding, "NHWC", False)
    out, idx = _pool.run_max_pool(prepare(_to_first(x, True), x.dtype), geo, True)
    batch, height, width, channels = x.shape
    # in-plane index y*W + x  ->  ((b*H + y)*W + x)*C + c
    idx = idx * channels + np.arange(channels).reshape(1, -1, 1, 1)
    if include_batch_in_index:
        idx += (np.arange(batch) * (height * width * channels)).reshape(-1, 1, 1, 1)
    if dtype == np.int32 and idx.size and idx.max() > np.iinfo(np.int32).max:
        raise ValueError("argmax does not fit output_dtype=int32; use int64")
    return _from_first(out, True), _from_first(idx, True).astype(dtype, copy=False)


def max_pool_grad_with_argmax(input, grad, argmax, ksize, strides, padding,
                              include_batch_in_index=False):
    """Gradient of :func:`max_pool_with_argmax`, as ``tf.raw_ops.MaxPoolGradWithArgmax``.

    Adds every ``grad`` value at the input position its ``argmax`` names.

    Parameters
    ----------
    input : ndarray
        The pooled NHWC input (its shape and dtype are used).
    grad : ndarray
        Gradient for the pooled output.
    argmax : ndarray of int
        As :func:`max_pool_with_argmax` returned it, same shape as ``grad``.
    ksize, strides, padding, include_batch_in_index
        As given to :func:`max_pool_with_argmax`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1., 5., 5., 2.]).reshape(1, 2, 2, 1)
    >>> out, argmax = max_pool_with_argmax(x, 2, 2, "VALID")
    >>> max_pool_grad_with_argmax(x, np.ones_like(out), argmax, 2, 2, "VALID").ravel()
    array([0., 1., 0., 0.])
    """
    x = _array(input, 2, "input")
    g = _array(grad, 2, "grad")
    _, geo = _pool_geometry(2, x.shape, ksize, strides, padding, "NHWC", False)
    expected = (x.shape[0],) + geo.out_spatial + (x.shape[-1],)
    if g.shape != expected:
        raise ValueError(f"grad must have the pooled output's shape {expected}, got {g.shape}")
    idx = np.asarray(argmax)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"argmax must be an integer array, got dtype {idx.dtype}")
    if idx.shape != expected:
        raise ValueError(f"argmax must have the pooled output's shape {expected}, got "
                         f"{idx.shape}")
    batch = x.shape[0]
    idx = idx.astype(np.int64)
    if include_batch_in_index and batch:
        idx = idx - (np.arange(batch) * (x.size // batch)).reshape(-1, 1, 1, 1)
    dtype = result_dtype(x, g)
    return _pool.run_scatter(prepare(g, dtype), np.ascontiguousarray(idx), x.shape, batch)


def max_pool_grad(orig_input, orig_output, grad, ksize, strides, padding, data_format="NHWC"):
    """Gradient of :func:`max_pool2d`, as ``tf.raw_ops.MaxPoolGrad``.

    Routes each ``grad`` value to its window's first maximum (found again in
    ``orig_input``; ``orig_output`` is only checked for shape).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([1., 5., 5., 2.]).reshape(1, 2, 2, 1)
    >>> max_pool_grad(x, max_pool2d(x, 2, 2, "VALID"), np.ones((1, 1, 1, 1)), 2, 2, "VALID").ravel()
    array([0., 1., 0., 0.])
    """
    x = _array(orig_input, 2, "orig_input")
    g = _array(grad, 2, "grad")
    last, geo = _pool_geometry(2, x.shape, ksize, strides, padding, data_format)
    first = _first_shape(x.shape, last)
    expected = _layout_shape(first[:2] + geo.out_spatial, last)
    for name, shape in (("grad", g.shape), ("orig_output", np.shape(orig_output))):
        if shape != expected:
            raise ValueError(f"{name} must have the pooled output's shape {expected}, got {shape}")
    dtype = result_dtype(x, g)
    dx = _pool.run_max_pool_input(prepare(_to_first(x, last), dtype),
                                  prepare(_to_first(g, last), dtype), geo)
    return _from_first(dx, last)


def avg_pool_grad(orig_input_shape, grad, ksize, strides, padding, data_format="NHWC"):
    """Gradient of :func:`avg_pool2d`, as ``tf.raw_ops.AvgPoolGrad``.

    Examples
    --------
    >>> import numpy as np
    >>> avg_pool_grad([1, 3, 3, 1], np.ones((1, 2, 2, 1)), 2, 2, "SAME")[0, :, :, 0]
    array([[0.25, 0.25, 0.5 ],
           [0.25, 0.25, 0.5 ],
           [0.5 , 0.5 , 1.  ]])
    """
    shape = _sizes(orig_input_shape, (4,), "orig_input_shape")
    g = _array(grad, 2, "grad")
    last, geo = _pool_geometry(2, shape, ksize, strides, padding, data_format, False)
    first = _first_shape(shape, last)
    expected = _layout_shape(first[:2] + geo.out_spatial, last)
    if g.shape != expected:
        raise ValueError(f"grad must have the pooled output's shape {expected}, got {g.shape}")
    dx = _pool.run_avg_pool_input(first, prepare(_to_first(g, last), g.dtype), geo, False)
    return _from_first(dx, last)


# --- local response normalisation ----------------------------------------------------------

def _lrn_args(input, depth_radius, bias, alpha, beta, name="input"):
    x = float_array(input, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must be 4-D (batch, height, width, depth), got shape {x.shape}")
    if isinstance(depth_radius, bool) or not isinstance(depth_radius, numbers.Integral):
        raise TypeError(f"depth_radius must be an int, got {depth_radius!r}")
    if depth_radius < 0:
        raise ValueError(f"depth_radius must be non-negative, got {depth_radius!r}")
    window = dict(before=int(depth_radius), after=int(depth_radius),
                  scale=_lrn.check_real(alpha, "alpha"), bias=_lrn.check_real(bias, "bias"),
                  beta=_lrn.check_real(beta, "beta"))
    return x, window


def _rows(x: np.ndarray) -> np.ndarray:
    """``(N*H*W, depth, 1)``: the LRN kernels' view of channels-last data."""
    return x.reshape(-1, x.shape[-1], 1)


def local_response_normalization(input, depth_radius=5, bias=1, alpha=1, beta=0.5):
    """Local response normalisation over the last axis, as ``tf.nn.local_response_normalization``.

    The chapter's formula::

        sqr_sum[a, b, c, d] = sum(input[a, b, c, d - depth_radius : d + depth_radius + 1] ** 2)
        output = input / (bias + alpha * sqr_sum) ** beta

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 1, 1, 3), dtype=np.float32)
    >>> local_response_normalization(x, depth_radius=1, bias=1.0, alpha=1.0, beta=1.0).ravel()
    array([0.33333334, 0.25      , 0.33333334], dtype=float32)
    """
    x, window = _lrn_args(input, depth_radius, bias, alpha, beta)
    x = prepare(x, x.dtype)
    return _lrn.run_lrn(_rows(x), **window).reshape(x.shape)


lrn = local_response_normalization


def lrn_grad(input_grads, input_image, output_image, depth_radius=5, bias=1, alpha=1, beta=0.5):
    """Gradient of :func:`local_response_normalization`, as ``tf.raw_ops.LRNGrad``.

    Parameters
    ----------
    input_grads : ndarray
        Gradient for the output, ``(N, H, W, depth)``.
    input_image, output_image : ndarray
        The forward input and output.
    depth_radius, bias, alpha, beta
        As given to :func:`local_response_normalization`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 1, 1, 1))
    >>> y = local_response_normalization(x, 0, 1.0, 1.0, 1.0)
    >>> lrn_grad(np.ones_like(x), x, y, 0, 1.0, 1.0, 1.0).ravel()
    array([0.])
    """
    x, window = _lrn_args(input_image, depth_radius, bias, alpha, beta, "input_image")
    g = float_array(input_grads, "input_grads")
    y = float_array(output_image, "output_image")
    for name, a in (("input_grads", g), ("output_image", y)):
        if a.shape != x.shape:
            raise ValueError(f"{name} must have input_image's shape {x.shape}, got {a.shape}")
    dtype = result_dtype(x, g, y)
    x, g, y = (prepare(a, dtype) for a in (x, g, y))
    return _lrn.run_lrn_input(_rows(x), _rows(g), _rows(y), **window).reshape(x.shape)
