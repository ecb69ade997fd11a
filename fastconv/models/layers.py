"""The tutorial network's layers as forward/backward pairs on channels-first arrays.

Convolutions, pooling and LRN run through :mod:`fastconv.nn` (and so through
the dispatcher and its backends); the fully connected layers are one matrix
product each, as in every framework.  Each ``*_forward`` returns its output
and what its ``*_backward`` needs; nothing here keeps state.

TensorFlow's SAME max pooling pads the odd cell after the input (3x3/2 on 24
gives 12, padding (0, 1)), which torch's symmetric ``padding=`` cannot say, so
the pooling geometry is built with :func:`fastconv.geometry.same_padding` and
run by the layout-free pooling runners that ``fastconv.tf`` also uses.
Padding cells never win a max.
"""
from __future__ import annotations

import numpy as np

from .. import geometry, nn
from ..nn import pooling as _pooling


def same_pairs(spatial, kernel, stride=1) -> tuple:
    """TensorFlow 'SAME' (before, after) padding for each spatial axis.

    Examples
    --------
    >>> same_pairs((24, 24), 3, 2)
    ((0, 1), (0, 1))
    """
    return tuple(geometry.same_padding(n, kernel, stride) for n in spatial)


def conv_forward(x, w, b, padding):
    """``conv2d(x, w) + b``; ``padding`` as (before, after) pairs."""
    return nn.conv2d(x, w, b, padding=padding)


def conv_backward(x, w, grad_out, padding, need_input=True):
    """Gradients of :func:`conv_forward` for ``(x or None, w, b)``."""
    dw = nn.grad.conv2d_weight(x, w.shape, grad_out, padding=padding)
    db = nn.grad.conv_bias(grad_out)
    dx = nn.grad.conv2d_input(x.shape, w, grad_out, padding=padding) if need_input else None
    return dx, dw, db


def relu(a: np.ndarray) -> np.ndarray:
    """``max(a, 0)`` in place: ``a`` is a fresh layer output owned by the caller."""
    return np.maximum(a, 0, out=a)


def relu_backward(y: np.ndarray, grad_out: np.ndarray) -> np.ndarray:
    """Gradient through a ReLU whose output was ``y`` (0 where ``y`` is 0), in place.

    ``grad_out`` is overwritten: it is a fresh gradient owned by the caller.
    """
    return np.multiply(grad_out, y > 0, out=grad_out)


def max_pool_same(x: np.ndarray, kernel: int, stride: int):
    """TensorFlow SAME max pooling of ``(N, C, H, W)``: output and in-plane argmax."""
    geo = _pooling.make_geometry(x.shape[2:], (kernel,) * 2, (stride,) * 2, (1, 1),
                                 same_pairs(x.shape[2:], kernel, stride))
    return _pooling.run_max_pool(np.ascontiguousarray(x), geo, True)


def max_pool_backward(grad_out: np.ndarray, indices: np.ndarray, in_shape) -> np.ndarray:
    """Route each pooled gradient to its window's maximum (the indices of the forward)."""
    return _pooling.max_pool_scatter(grad_out, indices, in_shape)


def lrn(x: np.ndarray, depth_radius: int, bias: float, alpha: float, beta: float) -> np.ndarray:
    """TensorFlow's ``local_response_normalization`` on channels-first input.

    TF sums ``2*depth_radius + 1`` channels and scales by ``alpha``; torch's
    ``size`` window divides its ``alpha`` by ``size``, hence ``alpha * size``.
    """
    size = 2 * depth_radius + 1
    return nn.local_response_norm(x, size, alpha * size, beta, bias)


def lrn_backward(x: np.ndarray, grad_out: np.ndarray, depth_radius: int, bias: float,
                 alpha: float, beta: float) -> np.ndarray:
    """Gradient of :func:`lrn` for its input ``x``."""
    size = 2 * depth_radius + 1
    return nn.grad.local_response_norm_input(x, grad_out, size, alpha * size, beta, bias)


def dense_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x @ w + b`` for ``x`` of shape (N, in) and ``w`` of shape (in, out), as TF stores it."""
    out = x @ w
    out += b
    return out


def dense_backward(x: np.ndarray, w: np.ndarray, grad_out: np.ndarray, need_input=True):
    """Gradients of :func:`dense_forward` for ``(x or None, w, b)``."""
    dw = x.T @ grad_out
    db = grad_out.sum(axis=0)
    dx = grad_out @ w.T if need_input else None
    return dx, dw, db


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray):
    """Mean softmax cross-entropy and its gradient for the logits.

    Examples
    --------
    >>> loss, grad = softmax_cross_entropy(np.zeros((2, 4)), np.array([0, 3]))
    >>> round(float(loss), 6), grad.shape
    (1.386294, (2, 4))
    """
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_norm
    n = logits.shape[0]
    rows = np.arange(n)
    loss = -log_p[rows, labels].mean(dtype=np.float64)
    grad = np.exp(log_p)
    grad[rows, labels] -= 1
    grad /= n
    return float(loss), grad
