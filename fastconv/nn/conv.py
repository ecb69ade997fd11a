"""Convolution layers with torch.nn.functional's names, arguments and errors.

``conv{1,2,3}d`` are the canonical operation itself (what deep-learning
libraries call convolution is a cross-correlation, the chapter's
``Z[i, j, k] = sum V[l, j*s + m, k*s + n] K[i, l, m, n]``), so each one
validates, builds a :class:`~fastconv.problem.ConvProblem` and hands it to the
dispatcher.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import dispatch
from ..problem import make_problem
from . import _validate


@dataclass(frozen=True)
class ConvArgs:
    """A convolution's validated geometry: one value per spatial axis."""

    stride: tuple
    padding: tuple  # (before, after) pairs
    dilation: tuple
    groups: int


def conv_args(nd: int, x_shape, w_shape, stride, padding, dilation, groups) -> ConvArgs:
    """Check a convolution's arguments against the shapes, the way torch does.

    ``x_shape`` is ``(N, C, *spatial)`` and ``w_shape`` ``(O, C // groups, *kernel)``.
    """
    stride = _validate.stride_tuple(stride, nd)
    dilation = _validate.dilation_tuple(dilation, nd)
    groups = _validate.positive_int(groups, "groups")
    kernel = tuple(w_shape[2:])
    if any(k < 1 for k in kernel):
        raise ValueError(f"weight must have positive spatial sizes, got weight of shape "
                         f"{tuple(w_shape)}")
    pairs = _validate.padding_pairs(padding, nd, kernel, stride, dilation)
    if w_shape[0] % groups:
        raise ValueError(f"given groups={groups}, expected weight to be divisible by {groups} at "
                         f"dimension 0, but got weight of shape {tuple(w_shape)}")
    if w_shape[1] * groups != x_shape[1]:
        raise ValueError(f"given groups={groups}, weight of shape {tuple(w_shape)}, expected input "
                         f"of shape {tuple(x_shape)} to have {w_shape[1] * groups} channels, but "
                         f"got {x_shape[1]} channels instead")
    _validate.check_kernel_fits(x_shape[2:], kernel, pairs, dilation)
    return ConvArgs(stride, pairs, dilation, groups)


def check_weight(w: np.ndarray, nd: int, op: str, name: str = "weight") -> None:
    """``w`` must be ``(out_channels, in_channels // groups, *kernel)``."""
    if w.ndim != nd + 2:
        raise ValueError(f"expected {name} of {op} to be {nd + 2}-D (out_channels, "
                         f"in_channels / groups, *kernel), got {name} of shape {w.shape}")


def correlate(x: np.ndarray, w: np.ndarray, dtype, args: ConvArgs, method: str,
              bias=None) -> np.ndarray:
    """The canonical correlation of ``x`` and ``w`` in ``dtype`` (plus ``bias``) through the dispatcher.

    Empty operands (no batch, no channels) never reach a backend.
    """
    problem = make_problem(x.shape, w.shape, dtype, args.stride, args.padding, args.dilation,
                           args.groups, origin="nn")
    if x.size == 0 or w.size == 0:
        dispatch.resolve_method(method)
        out = np.zeros(problem.out_shape, dtype=problem.dtype)
        if bias is not None:
            out += bias.astype(out.dtype, copy=False).reshape((-1,) + (1,) * problem.ndim)
        return out
    return dispatch.correlate(_validate.prepare(x, dtype), _validate.prepare(w, dtype), problem,
                              method=method, bias=bias)


def _conv(nd: int, op: str, input, weight, bias, stride, padding, dilation, groups, method):
    x = _validate.float_array(input, "input")
    w = _validate.float_array(weight, "weight")
    x, unbatched = _validate.batched(x, nd, "input", op)
    check_weight(w, nd, op)
    args = conv_args(nd, x.shape, w.shape, stride, padding, dilation, groups)
    dtype = _validate.result_dtype(x, w)
    b = None if bias is None else _check_bias(bias, w.shape)
    out = correlate(x, w, dtype, args, method, bias=b)
    return out[0] if unbatched else out


def _check_bias(bias, w_shape) -> np.ndarray:
    b = _validate.float_array(bias, "bias")
    if b.shape != (w_shape[0],):
        raise ValueError(f"given weight of shape {tuple(w_shape)}, expected bias to be 1-D with "
                         f"{w_shape[0]} elements, but got bias of shape {b.shape}")
    return b


def conv1d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, method="auto"):
    """1-D convolution (cross-correlation) of ``(N, C, L)`` input, as ``torch.nn.functional``.

    Parameters
    ----------
    input : array_like, float32 or float64
        ``(N, C, L)``, or ``(C, L)`` unbatched.
    weight : array_like
        ``(O, C // groups, K)``.
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or tuple
    padding : int, tuple, tuple of (before, after) pairs, 'valid' or 'same'
        'same' (stride 1 only) puts the odd extra padding after, as torch does.
    groups : int
    method : str
        'auto' lets the dispatcher choose; a backend name forces it.

    Returns
    -------
    ndarray
        ``(N, O, L_out)`` in the promoted dtype of ``input`` and ``weight``.

    Examples
    --------
    >>> import numpy as np
    >>> conv1d(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)))
    array([[[1., 3., 5., 7.]]])
    """
    return _conv(1, "conv1d", input, weight, bias, stride, padding, dilation, groups, method)


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, method="auto"):
    """2-D convolution (cross-correlation) of ``(N, C, H, W)`` input, as ``torch.nn.functional``.

    The chapter's ``Z[i, j, k] = sum_{l, m, n} V[l, j*s + m, k*s + n] K[i, l, m, n]``,
    batched, with zero padding, dilation and channel groups.

    Parameters
    ----------
    input : array_like, float32 or float64
        ``(N, C, H, W)``, or ``(C, H, W)`` unbatched.
    weight : array_like
        ``(O, C // groups, KH, KW)``.
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or pair of ints
    padding : int, pair of ints, pair of (before, after) pairs, 'valid' or 'same'
    groups : int
    method : str
        'auto' lets the dispatcher choose; a backend name forces it.

    Returns
    -------
    ndarray
        ``(N, O, H_out, W_out)`` in the promoted dtype of ``input`` and ``weight``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 2, 4, 4), dtype=np.float32)
    >>> conv2d(x, np.ones((3, 2, 3, 3), dtype=np.float32), padding=1).shape
    (1, 3, 4, 4)
    >>> float(conv2d(x, np.ones((1, 2, 3, 3)), padding="same")[0, 0, 1, 1])
    18.0
    """
    return _conv(2, "conv2d", input, weight, bias, stride, padding, dilation, groups, method)


def conv3d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1, method="auto"):
    """3-D convolution (cross-correlation) of ``(N, C, D, H, W)`` input, as ``torch.nn.functional``.

    Parameters
    ----------
    input : array_like, float32 or float64
        ``(N, C, D, H, W)``, or ``(C, D, H, W)`` unbatched.
    weight : array_like
        ``(O, C // groups, KD, KH, KW)``.
    bias : array_like, optional
        ``(O,)``.
    stride, dilation : int or triple of ints
    padding : int, triple of ints, triple of (before, after) pairs, 'valid' or 'same'
    groups : int
    method : str
        'auto' lets the dispatcher choose; a backend name forces it.

    Returns
    -------
    ndarray
        ``(N, O, D_out, H_out, W_out)``.

    Examples
    --------
    >>> import numpy as np
    >>> conv3d(np.ones((1, 1, 3, 3, 3)), np.ones((1, 1, 2, 2, 2)), stride=2).shape
    (1, 1, 1, 1, 1)
    """
    return _conv(3, "conv3d", input, weight, bias, stride, padding, dilation, groups, method)
