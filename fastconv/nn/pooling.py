"""Max and average pooling with torch.nn.functional's names, rules and indices.

Channels-first ``(N, C, *spatial)`` or unbatched ``(C, *spatial)`` float32 or
float64 arrays.  The front ends check arguments as torch does and describe
the windows once as a :class:`PoolGeometry`; the layout-free runners
(:func:`run_max_pool`, :func:`run_avg_pool` and their gradients), which
``fastconv.tf`` shares, call the Numba kernels of :mod:`._pool_kernels`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .. import geometry
from . import _pool_kernels as kernels
from ._validate import (batched, dilation_tuple, float_array, int_tuple, prepare, result_dtype,
                        size_tuple, stride_tuple)

__all__ = ["max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "max_pool1d_input", "max_pool2d_input", "max_pool3d_input", "avg_pool1d_input",
           "avg_pool2d_input", "avg_pool3d_input", "max_pool_scatter"]


@dataclass(frozen=True)
class PoolGeometry:
    """Windows of one pooling along each spatial axis, and the output they give.

    ``padding`` holds ``(before, after)`` pairs; torch pads symmetrically, TF's
    'SAME' puts the odd cell after, and ceil_mode lets the last window run past
    the padded input.  ``out_spatial`` is already computed and checked.
    """

    spatial: tuple
    kernel: tuple
    stride: tuple
    dilation: tuple
    padding: tuple
    out_spatial: tuple


def make_geometry(spatial, kernel, stride, dilation, padding, ceil_mode=False) -> PoolGeometry:
    """Describe the windows, refusing a pooling whose output would be empty.

    Examples
    --------
    >>> make_geometry((24, 24), (3, 3), (2, 2), (1, 1), ((1, 1), (1, 1))).out_spatial
    (12, 12)
    """
    out = tuple(geometry.output_size(n, k, p, s, d, ceil_mode)
                for n, k, p, s, d in zip(spatial, kernel, padding, stride, dilation))
    if any(o < 1 for o in out):
        raise ValueError(f"input spatial size {tuple(spatial)} with kernel_size {tuple(kernel)}, "
                         f"stride {tuple(stride)}, padding {tuple(padding)} and dilation "
                         f"{tuple(dilation)} gives output size {out}: output size is too small")
    return PoolGeometry(tuple(spatial), tuple(kernel), tuple(stride), tuple(dilation),
                        tuple(padding), out)


def _planes(shape, spatial) -> tuple:
    """``(N*C, D, H, W)``: the 3-D kernels' view of ``(N, C, *spatial)``."""
    return (shape[0] * shape[1],) + (1,) * (3 - len(spatial)) + tuple(spatial)


def _lift(values, fill) -> tuple:
    return (fill,) * (3 - len(values)) + tuple(values)


def _geometry_args(geo: PoolGeometry):
    pad = _lift([p[0] for p in geo.padding], 0)
    pad_end = _lift([p[1] for p in geo.padding], 0)
    return _lift(geo.kernel, 1), _lift(geo.stride, 1), _lift(geo.dilation, 1), pad, pad_end


def run_max_pool(x: np.ndarray, geo: PoolGeometry, want_indices: bool):
    """Max pooling of a contiguous ``(N, C, *spatial)`` array; indices per plane or None."""
    out_shape = x.shape[:2] + geo.out_spatial
    out = np.empty(out_shape, x.dtype)
    indices = np.empty(out_shape if want_indices else (0,) * (2 + len(geo.spatial)), np.int64)
    if out.size:
        kernel, stride, dilation, pad, _ = _geometry_args(geo)
        kernels.use_threads(out.size * math.prod(kernel))
        kernels.max_pool_forward(x.reshape(_planes(x.shape, geo.spatial)), kernel, stride,
                                 dilation, pad, out.reshape(_planes(out_shape, geo.out_spatial)),
                                 indices.reshape(_planes(indices.shape, indices.shape[2:])),
                                 want_indices)
    return out, (indices if want_indices else None)


def run_max_pool_input(x: np.ndarray, grad_out: np.ndarray, geo: PoolGeometry) -> np.ndarray:
    """Gradient of max pooling for contiguous ``x`` and ``grad_out`` of one dtype."""
    grad_in = np.empty(x.shape, x.dtype)
    if grad_in.size:
        kernel, stride, dilation, pad, _ = _geometry_args(geo)
        kernels.use_threads(grad_out.size * math.prod(kernel) + grad_in.size)
        kernels.max_pool_backward(x.reshape(_planes(x.shape, geo.spatial)),
                                  grad_out.reshape(_planes(grad_out.shape, geo.out_spatial)),
                                  kernel, stride, dilation, pad,
                                  grad_in.reshape(x.shape[0] * x.shape[1], -1))
    return grad_in


def run_scatter(grad_out: np.ndarray, indices: np.ndarray, in_shape, planes: int) -> np.ndarray:
    """Add each ``grad_out`` value at its flat index within its plane of ``in_shape``.

    ``grad_out`` and ``indices`` are contiguous, of one shape, with ``planes``
    leading elements' worth of independent planes.
    """
    grad_in = np.empty(in_shape, grad_out.dtype)
    if grad_in.size or grad_out.size:
        kernels.use_threads(grad_in.size + grad_out.size)
        bad = kernels.scatter_add(grad_out.reshape(planes, -1), indices.reshape(planes, -1),
                                  grad_in.reshape(planes, -1))
        if bad:
            size = math.prod(in_shape) // max(planes, 1)
            raise ValueError(f"indices hold {bad} value(s) outside [0, {size}), the flat "
                             "positions of one input plane")
    return grad_in


def run_avg_pool(x: np.ndarray, geo: PoolGeometry, count_include_pad: bool) -> np.ndarray:
    """Average pooling of a contiguous ``(N, C, *spatial)`` array."""
    out_shape = x.shape[:2] + geo.out_spatial
    out = np.empty(out_shape, x.dtype)
    if out.size:
        kernel, stride, _, pad, pad_end = _geometry_args(geo)
        kernels.use_threads(out.size * math.prod(kernel))
        kernels.avg_pool_forward(x.reshape(_planes(x.shape, geo.spatial)), kernel, stride, pad,
                                 pad_end, bool(count_include_pad),
                                 out.reshape(_planes(out_shape, geo.out_spatial)))
    return out


def run_avg_pool_input(in_shape, grad_out: np.ndarray, geo: PoolGeometry,
                       count_include_pad: bool) -> np.ndarray:
    """Gradient of average pooling for a contiguous ``grad_out``."""
    grad_in = np.empty(in_shape, grad_out.dtype)
    if grad_in.size:
        kernel, stride, _, pad, pad_end = _geometry_args(geo)
        kernels.use_threads(grad_out.size * math.prod(kernel) + grad_in.size)
        kernels.avg_pool_backward(grad_out.reshape(_planes(grad_out.shape, geo.out_spatial)),
                                  kernel, stride, pad, pad_end, bool(count_include_pad),
                                  grad_in.reshape(_planes(in_shape, geo.spatial)))
    return grad_in


# --- torch front ends ------------------------------------------------------------------------

def _torch_geometry(shape, ndim, kernel_size, stride, padding, dilation, ceil_mode, op):
    """Check torch's pooling arguments for a batched ``shape``; the windows."""
    if any(n == 0 for n in shape[1:]):
        raise ValueError(f"{op} expects non-empty channel and spatial dimensions (an empty "
                         f"batch is fine), got input of shape {shape}")
    kernel = size_tuple(kernel_size, ndim, "kernel_size")
    empty_stride = stride is None or (hasattr(stride, "__len__") and len(stride) == 0)
    stride = kernel if empty_stride else stride_tuple(stride, ndim)
    dilation = dilation_tuple(dilation, ndim)
    pad = int_tuple(padding, ndim, "padding")
    if any(p < 0 for p in pad):
        raise ValueError(f"negative padding is not supported: padding={padding!r}")
    if any(p > k // 2 for p, k in zip(pad, kernel)):
        raise ValueError(f"padding should be at most half of kernel_size, got padding={padding!r}"
                         f" with kernel_size={kernel_size!r}")
    return make_geometry(shape[2:], kernel, stride, dilation, tuple((p, p) for p in pad),
                         bool(ceil_mode))


def _max_pool(ndim, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices):
    op = f"max_pool{ndim}d"
    x, added = batched(float_array(input, "input"), ndim, "input", op)
    geo = _torch_geometry(x.shape, ndim, kernel_size, stride, padding, dilation, ceil_mode, op)
    out, indices = run_max_pool(prepare(x, x.dtype), geo, bool(return_indices))
    if added:
        out = out[0]
        indices = None if indices is None else indices[0]
    return (out, indices) if return_indices else out


def _avg_pool(ndim, input, kernel_size, stride, padding, ceil_mode, count_include_pad):
    op = f"avg_pool{ndim}d"
    x, added = batched(float_array(input, "input"), ndim, "input", op)
    geo = _torch_geometry(x.shape, ndim, kernel_size, stride, padding, 1, ceil_mode, op)
    out = run_avg_pool(prepare(x, x.dtype), geo, count_include_pad)
    return out[0] if added else out


def _grad_output(grad_output, x_shape, geo, added, dtype, op):
    """``grad_output`` checked against the pooling's output shape, batched, contiguous."""
    g = float_array(grad_output, "grad_output")
    expected = x_shape[:2] + geo.out_spatial
    shown = expected[1:] if added else expected
    if g.shape != shown:
        raise ValueError(f"grad_output of {op} must have the output's shape {shown}, "
                         f"got {g.shape}")
    return prepare(g.reshape(expected), dtype)


def _max_pool_input(ndim, input, grad_output, kernel_size, stride, padding, dilation, ceil_mode):
    op = f"max_pool{ndim}d_input"
    x, added = batched(float_array(input, "input"), ndim, "input", op)
    geo = _torch_geometry(x.shape, ndim, kernel_size, stride, padding, dilation, ceil_mode, op)
    dtype = result_dtype(x, np.asarray(grad_output))
    g = _grad_output(grad_output, x.shape, geo, added, dtype, op)
    grad_in = run_max_pool_input(prepare(x, dtype), g, geo)
    return grad_in[0] if added else grad_in


def _input_shape(input_size, ndim, op) -> tuple:
    """A shape from ``input_size`` (a sequence of ints, or an array whose shape to use)."""
    if isinstance(input_size, np.ndarray) and input_size.ndim >= ndim + 1:
        return input_size.shape
    shape = int_tuple(input_size, len(input_size) if hasattr(input_size, "__len__") else 1,
                      "input_size")
    if len(shape) not in (ndim + 1, ndim + 2) or any(n < 0 for n in shape):
        raise ValueError(f"input_size of {op} must be the input's shape, {ndim + 1} or "
                         f"{ndim + 2} non-negative ints, got {input_size!r}")
    return shape


def _avg_pool_input(ndim, input_size, grad_output, kernel_size, stride, padding, ceil_mode,
                    count_include_pad):
    op = f"avg_pool{ndim}d_input"
    shape = _input_shape(input_size, ndim, op)
    added = len(shape) == ndim + 1
    x_shape = (1,) + shape if added else shape
    geo = _torch_geometry(x_shape, ndim, kernel_size, stride, padding, 1, ceil_mode, op)
    g = float_array(grad_output, "grad_output")
    g = _grad_output(g, x_shape, geo, added, g.dtype.newbyteorder("="), op)
    grad_in = run_avg_pool_input(x_shape, g, geo, count_include_pad)
    return grad_in[0] if added else grad_in


def max_pool_scatter(grad_output, indices, input_shape):
    """Gradient of max pooling from the indices it returned.

    Adds each ``grad_output`` value at its window's maximum: ``indices`` are
    flat positions within each ``(n, c)`` input plane, as
    ``max_pool*d(..., return_indices=True)`` (and torch) give them.

    Parameters
    ----------
    grad_output : ndarray
        Gradient for the pooled output, ``(N, C, *out)`` (add the batch axis to
        unbatched arrays: the planes must be unambiguous).
    indices : ndarray of int
        Same shape as ``grad_output``.
    input_shape : sequence of int
        Shape of the pooled input, ``(N, C, *spatial)``.

    Returns
    -------
    ndarray
        Gradient for the input, of shape ``input_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.array([[[1., 3., 2., 0.]]])
    >>> out, idx = max_pool1d(x, 2, return_indices=True)
    >>> max_pool_scatter(np.ones_like(out), idx, x.shape)
    array([[[0., 1., 1., 0.]]])
    """
    g = float_array(grad_output, "grad_output")
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
    if idx.shape != g.shape:
        raise ValueError(f"indices must have grad_output's shape {g.shape}, got {idx.shape}")
    shape = int_tuple(input_shape, len(input_shape), "input_shape") if hasattr(
        input_shape, "__len__") else ()
    if g.ndim < 3 or len(shape) != g.ndim or shape[:2] != g.shape[:2]:
        raise ValueError(f"input_shape must be (N, C, *spatial) with grad_output's (N, C) = "
                         f"{g.shape[:2]} and {g.ndim - 2} spatial sizes, got {input_shape!r}")
    return run_scatter(prepare(g, g.dtype), prepare(idx, np.int64), shape, shape[0] * shape[1])


_MAX_DOC = """{n}-D max pooling, as ``torch.nn.functional.max_pool{n}d``.

    Parameters
    ----------
    input : ndarray
        ``(N, C, {sp})`` or unbatched ``(C, {sp})``, float32 or float64.
    kernel_size, stride, padding, dilation : int or tuple of {n} ints
        Window, step (default: ``kernel_size``), implicit -inf padding on
        both sides (at most half the window), spacing of the taps.
    ceil_mode : bool
        Count a last, partial window that starts inside the input or the
        leading padding.
    return_indices : bool
        Also return each maximum's flat index within its input plane.

    Returns
    -------
    out : ndarray
    indices : ndarray of int64, only with ``return_indices``

    Ties go to the first maximum in row-major window order; a window holding
    NaN gives NaN (indexed at its last NaN, as torch does).

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange({size}, dtype=np.float32).reshape({shape})
    >>> max_pool{n}d(x, 2).shape
    {out}
    """

_AVG_DOC = """{n}-D average pooling, as ``torch.nn.functional.avg_pool{n}d``.

    Parameters
    ----------
    input : ndarray
        ``(N, C, {sp})`` or unbatched ``(C, {sp})``, float32 or float64.
    kernel_size, stride, padding : int or tuple of {n} ints
        Window, step (default: ``kernel_size``), zero padding on both sides
        (at most half the window).
    ceil_mode : bool
        Count a last, partial window that starts inside the input or the
        leading padding.
    count_include_pad : bool
        Divide by the window clipped to the padded input (True) or by the
        number of input cells in it (False).

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange({size}, dtype=np.float32).reshape({shape})
    >>> avg_pool{n}d(x, 2).shape
    {out}
    """

_MAX_INPUT_DOC = """Gradient of ``max_pool{n}d`` for its input.

    Finds every window's maximum again (same rules as the forward pass) and
    adds the window's ``grad_output`` there; see :func:`max_pool_scatter` to
    reuse indices instead.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange({size}, dtype=np.float64).reshape({shape})
    >>> g = max_pool{n}d_input(x, np.ones({out}), 2)
    >>> float(g.sum())
    {count}
    """

_AVG_INPUT_DOC = """Gradient of ``avg_pool{n}d`` for its input.

    ``input_size`` is the pooled input's shape (or the input itself); each
    ``grad_output`` value, divided by its window's divisor, is added to the
    window's input cells.

    Examples
    --------
    >>> import numpy as np
    >>> g = avg_pool{n}d_input({shape}, np.ones({out}), 2)
    >>> float(g.sum())
    {count}
    """

_EXAMPLES = {1: dict(sp="L", size=8, shape=(1, 2, 4), out=(1, 2, 2), count=4.0),
             2: dict(sp="H, W", size=32, shape=(1, 2, 4, 4), out=(1, 2, 2, 2), count=8.0),
             3: dict(sp="D, H, W", size=128, shape=(1, 2, 4, 4, 4), out=(1, 2, 2, 2, 2),
                     count=16.0)}


def max_pool1d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool(1, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool2d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool(2, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def max_pool3d(input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
               return_indices=False):
    return _max_pool(3, input, kernel_size, stride, padding, dilation, ceil_mode, return_indices)


def avg_pool1d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    return _avg_pool(1, input, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool2d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    return _avg_pool(2, input, kernel_size, stride, padding, ceil_mode, count_include_pad)


def avg_pool3d(input, kernel_size, stride=None, padding=0, ceil_mode=False,
               count_include_pad=True):
    return _avg_pool(3, input, kernel_size, stride, padding, ceil_mode, count_include_pad)


def max_pool1d_input(input, grad_output, kernel_size, stride=None, padding=0, dilation=1,
                     ceil_mode=False):
    return _max_pool_input(1, input, grad_output, kernel_size, stride, padding, dilation,
                           ceil_mode)


def max_pool2d_input(input, grad_output, kernel_size, stride=None, padding=0, dilation=1,
                     ceil_mode=False):
    return _max_pool_input(2, input, grad_output, kernel_size, stride, padding, dilation,
                           ceil_mode)


def max_pool3d_input(input, grad_output, kernel_size, stride=None, padding=0, dilation=1,
                     ceil_mode=False):
    return _max_pool_input(3, input, grad_output, kernel_size, stride, padding, dilation,
                           ceil_mode)


def avg_pool1d_input(input_size, grad_output, kernel_size, stride=None, padding=0,
                     ceil_mode=False, count_include_pad=True):
    return _avg_pool_input(1, input_size, grad_output, kernel_size, stride, padding, ceil_mode,
                           count_include_pad)


def avg_pool2d_input(input_size, grad_output, kernel_size, stride=None, padding=0,
                     ceil_mode=False, count_include_pad=True):
    return _avg_pool_input(2, input_size, grad_output, kernel_size, stride, padding, ceil_mode,
                           count_include_pad)


def avg_pool3d_input(input_size, grad_output, kernel_size, stride=None, padding=0,
                     ceil_mode=False, count_include_pad=True):
    return _avg_pool_input(3, input_size, grad_output, kernel_size, stride, padding, ceil_mode,
                           count_include_pad)


for _n in (1, 2, 3):
    globals()[f"max_pool{_n}d"].__doc__ = _MAX_DOC.format(n=_n, **_EXAMPLES[_n])
    globals()[f"avg_pool{_n}d"].__doc__ = _AVG_DOC.format(n=_n, **_EXAMPLES[_n])
    globals()[f"max_pool{_n}d_input"].__doc__ = _MAX_INPUT_DOC.format(n=_n, **_EXAMPLES[_n])
    globals()[f"avg_pool{_n}d_input"].__doc__ = _AVG_INPUT_DOC.format(n=_n, **_EXAMPLES[_n])
del _n
