"""Plain loop oracles for pooling, LRN and TensorFlow-layout convolution.

Written from the definitions (torch's documented rules, TensorFlow's and the
chapter's formulas), one output element at a time, sharing no code with
fastconv: slow, obvious, and only for small arrays.
"""
from __future__ import annotations

import itertools
import math

import numpy as np


def torch_pool_size(n, k, pad, stride, dilation=1, ceil_mode=False):
    """torch's pooling output size along one axis (symmetric padding)."""
    span = n + 2 * pad - dilation * (k - 1) - 1
    out = (math.ceil(span / stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= n + pad:
        out -= 1  # the last window must start inside the input or the left padding
    return out


def tf_same_pads(n, k, stride, dilation=1):
    """TensorFlow's SAME: ceil(n / stride) outputs, the odd padding cell after."""
    out = math.ceil(n / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - n, 0)
    return total // 2, total - total // 2


def max_pool(x, kernel, stride, pads, dilation, out_spatial):
    """Max pooling of ``(N, C, *spatial)`` with torch's rules; values and in-plane indices.

    ``pads`` are the leading paddings.  Taps are visited in row-major window
    order; a strictly greater value or a NaN replaces the running maximum,
    which starts at -inf with the window's first position inside the input.
    """
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    out = np.empty((n, c) + tuple(out_spatial), x.dtype)
    idx = np.empty(out.shape, np.int64)
    for b, ch in itertools.product(range(n), range(c)):
        plane = x[b, ch]
        for o in itertools.product(*(range(m) for m in out_spatial)):
            starts = [oi * s - p for oi, s, p in zip(o, stride, pads)]
            first = []
            for st, d in zip(starts, dilation):
                while st < 0:
                    st += d
                first.append(st)
            best, where = -np.inf, _flat(first, spatial)
            for taps in itertools.product(*(range(k) for k in kernel)):
                pos = [st + t * d for st, t, d in zip(starts, taps, dilation)]
                if any(p < 0 or p >= size for p, size in zip(pos, spatial)):
                    continue
                v = plane[tuple(pos)]
                if v > best or np.isnan(v):
                    best, where = v, _flat(pos, spatial)
            out[(b, ch) + o] = best
            idx[(b, ch) + o] = where
    return out, idx


def _flat(pos, spatial):
    flat = 0
    for p, size in zip(pos, spatial):
        flat = flat * size + p
    return flat


def avg_pool(x, kernel, stride, pads, pads_end, out_spatial, count_include_pad):
    """Average pooling with torch's divisor: the window clipped to the padded input, or
    the cells inside the input; a window with no input cell gives 0."""
    n, c = x.shape[:2]
    spatial = x.shape[2:]
    out = np.zeros((n, c) + tuple(out_spatial), x.dtype)
    for b, ch in itertools.product(range(n), range(c)):
        for o in itertools.product(*(range(m) for m in out_spatial)):
            total, cells, extent = 0.0, 0, 1
            for axis, (oi, k, s, p, pe) in enumerate(zip(o, kernel, stride, pads, pads_end)):
                start = oi * s - p
                extent *= min(start + k, spatial[axis] + pe) - start
            for taps in itertools.product(*(range(k) for k in kernel)):
                pos = [oi * s - p + t for oi, s, p, t in zip(o, stride, pads, taps)]
                if all(0 <= q < size for q, size in zip(pos, spatial)):
                    total += float(x[(b, ch) + tuple(pos)])
                    cells += 1
            if cells:
                out[(b, ch) + o] = total / (extent if count_include_pad else cells)
    return out


def max_pool_input(x, grad_out, kernel, stride, pads, dilation):
    """Gradient of :func:`max_pool`: each output gradient added at its window's index."""
    _, idx = max_pool(x, kernel, stride, pads, dilation, grad_out.shape[2:])
    grad = np.zeros(x.shape, grad_out.dtype)
    for b, ch in itertools.product(range(x.shape[0]), range(x.shape[1])):
        flat = grad[b, ch].reshape(-1)
        for g, i in zip(grad_out[b, ch].ravel(), idx[b, ch].ravel()):
            flat[i] += g
    return grad


def lrn_torch(x, size, alpha, beta, k):
    """torch's local_response_norm: channels on axis 1, window c - size//2 .. c + (size-1)//2,
    ``div = (k + alpha * mean of the squares over size channels) ** beta``."""
    out = np.empty_like(x)
    channels = x.shape[1]
    for c in range(channels):
        lo, hi = max(0, c - size // 2), min(channels, c + (size - 1) // 2 + 1)
        sqr = np.zeros(x.shape[:1] + x.shape[2:], np.float64)
        for cc in range(lo, hi):
            sqr += x[:, cc].astype(np.float64) ** 2
        out[:, c] = x[:, c] / (k + alpha * sqr / size) ** beta
    return out


def lrn_tf(x, depth_radius, bias, alpha, beta):
    """The chapter's formula over the last axis::

        sqr_sum[a, b, c, d] = sum(input[a, b, c, d - depth_radius : d + depth_radius + 1] ** 2)
        output = input / (bias + alpha * sqr_sum) ** beta
    """
    out = np.empty_like(x)
    for a, b, c, d in itertools.product(*(range(n) for n in x.shape)):
        window = x[a, b, c, max(0, d - depth_radius):d + depth_radius + 1].astype(np.float64)
        out[a, b, c, d] = x[a, b, c, d] / (bias + alpha * np.sum(window ** 2)) ** beta
    return out


def conv_nhwc(x, filters, stride, pads, dilation):
    """The chapter's Z for channels-last data and TF filters ``(*kernel, in, out)``.

    ``Z[b, j..., i] = sum_{l, m...} Vpad[b, j*s + m*d..., l] K[m..., l, i]``.
    """
    nd = x.ndim - 2
    kernel = filters.shape[:nd]
    padded = np.pad(x.astype(np.float64), [(0, 0)] + list(pads) + [(0, 0)])
    out_spatial = [(padded.shape[1 + a] - (kernel[a] - 1) * dilation[a] - 1) // stride[a] + 1
                   for a in range(nd)]
    out = np.zeros((x.shape[0],) + tuple(out_spatial) + (filters.shape[-1],))
    for b in range(x.shape[0]):
        for j in itertools.product(*(range(m) for m in out_spatial)):
            for m in itertools.product(*(range(k) for k in kernel)):
                pos = tuple(jj * s + mm * d for jj, s, mm, d in zip(j, stride, m, dilation))
                out[(b,) + j] += padded[(b,) + pos] @ filters[m].astype(np.float64)
    return out
