"""Plain-loop oracles for the nn tests: the chapter's formulas, written out.

Nothing here imports fastconv.  Every function loops over output (or kernel)
positions and sums the products the formula names, in float64, so it can be
read against the chapter line by line:

- ``conv``: Z with stride (and padding, dilation, groups), any number of axes.
- ``grad_weight``: g(G, V, s), the gradient for the kernel.
- ``grad_input``: h(K, V, s), the gradient for the input.
- ``unshared``/``tiled`` and their two gradients.

Padding is given as (before, after) pairs, one per spatial axis.
"""
from __future__ import annotations

import itertools

import numpy as np


def pad(x, padding):
    """Zero-pad the spatial axes of ``(N, C, *spatial)`` by (before, after) pairs."""
    return np.pad(np.asarray(x, dtype=np.float64), ((0, 0), (0, 0)) + tuple(padding))


def out_size(size, kernel, padding, stride, dilation):
    return tuple((n + p[0] + p[1] - (k - 1) * d - 1) // s + 1
                 for n, k, p, s, d in zip(size, kernel, padding, stride, dilation))


def _window(j, m, stride, dilation):
    """Padded input index read by output index ``j`` and tap ``m``: j*s + m*d."""
    return tuple(jj * s + mm * d for jj, mm, s, d in zip(j, m, stride, dilation))


def conv(x, w, stride, padding, dilation, groups=1):
    """Z[b, i, j] = sum_{l, m} Vpad[b, g(i)*Cg + l, j*s + m*d] K[i, l, m]."""
    xp = pad(x, padding)
    w = np.asarray(w, dtype=np.float64)
    n, o, cg, kernel = x.shape[0], w.shape[0], w.shape[1], w.shape[2:]
    out = out_size(x.shape[2:], kernel, padding, stride, dilation)
    z = np.zeros((n, o) + out)
    for b, i in itertools.product(range(n), range(o)):
        first = (i // (o // groups)) * cg
        for j in itertools.product(*map(range, out)):
            for m in itertools.product(*map(range, kernel)):
                v = xp[(b, slice(first, first + cg)) + _window(j, m, stride, dilation)]
                z[(b, i) + j] += np.dot(v, w[(i, slice(None)) + m])
    return z


def grad_weight(x, g, w_shape, stride, padding, dilation, groups=1):
    """g(G, V, s)[i, l, m] = sum_{b, j} G[b, i, j] Vpad[b, g(i)*Cg + l, j*s + m*d]."""
    xp = pad(x, padding)
    o, cg, kernel = w_shape[0], w_shape[1], w_shape[2:]
    dw = np.zeros(w_shape)
    for i in range(o):
        first = (i // (o // groups)) * cg
        for m in itertools.product(*map(range, kernel)):
            for j in itertools.product(*map(range, g.shape[2:])):
                v = xp[(slice(None), slice(first, first + cg)) + _window(j, m, stride, dilation)]
                dw[(i, slice(None)) + m] += g[(slice(None), i) + j] @ v
    return dw


def grad_input(x_shape, w, g, stride, padding, dilation, groups=1):
    """h(K, V, s)[b, c, p] = sum over (i, j, m) with j*s + m*d = p of K[i, c - g(i)*Cg, m] G[b, i, j].

    Accumulated in padded coordinates (each output j sends G * K to the
    inputs its window read), then the padding is cut off.
    """
    w = np.asarray(w, dtype=np.float64)
    o, cg, kernel = w.shape[0], w.shape[1], w.shape[2:]
    padded = tuple(n + p[0] + p[1] for n, p in zip(x_shape[2:], padding))
    dxp = np.zeros(tuple(x_shape[:2]) + padded)
    for i in range(o):
        first = (i // (o // groups)) * cg
        for j in itertools.product(*map(range, g.shape[2:])):
            for m in itertools.product(*map(range, kernel)):
                index = (slice(None), slice(first, first + cg)) + _window(j, m, stride, dilation)
                dxp[index] += np.outer(g[(slice(None), i) + j], w[(i, slice(None)) + m])
    crop = tuple(slice(p[0], p[0] + n) for n, p in zip(x_shape[2:], padding))
    return dxp[(slice(None), slice(None)) + crop]


def unshared(x, k, stride, padding):
    """Z[b, i, j, k] = sum_{l, m, n} Vpad[b, l, j*s + m, k*s + n] K[i, j, k, l, m, n]."""
    xp = pad(x, padding)
    o, oh, ow, c, kh, kw = k.shape
    z = np.zeros((x.shape[0], o, oh, ow))
    for b, i, j, q in itertools.product(range(x.shape[0]), range(o), range(oh), range(ow)):
        patch = xp[b, :, j * stride[0]:j * stride[0] + kh, q * stride[1]:q * stride[1] + kw]
        z[b, i, j, q] = np.sum(patch * k[i, j, q])
    return z


def tiled_as_unshared(k, out):
    """The unshared weight of a tiled one: position (j, q) gets kernel (j % t, q % t)."""
    o, c, kh, kw, ta, tb = k.shape
    full = np.zeros((o,) + tuple(out) + (c, kh, kw))
    for j, q in itertools.product(range(out[0]), range(out[1])):
        full[:, j, q] = k[:, :, :, :, j % ta, q % tb]
    return full


def tiled(x, k, stride, padding):
    """Z[b, i, j, q] = sum_{l, m, n} Vpad[b, l, j*s + m, q*s + n] K[i, l, m, n, j % t, q % t]."""
    xp = pad(x, padding)
    o, c, kh, kw, ta, tb = k.shape
    oh, ow = out_size(x.shape[2:], (kh, kw), padding, stride, (1, 1))
    z = np.zeros((x.shape[0], o, oh, ow))
    for b, i, j, q in itertools.product(range(x.shape[0]), range(o), range(oh), range(ow)):
        patch = xp[b, :, j * stride[0]:j * stride[0] + kh, q * stride[1]:q * stride[1] + kw]
        z[b, i, j, q] = np.sum(patch * k[i, :, :, :, j % ta, q % tb])
    return z


def unshared_grad_weight(x, g, k_shape, stride, padding):
    """dK[i, j, q, l, m, n] = sum_b G[b, i, j, q] Vpad[b, l, j*s + m, q*s + n]."""
    xp = pad(x, padding)
    o, oh, ow, c, kh, kw = k_shape
    dk = np.zeros(k_shape)
    for i, j, q in itertools.product(range(o), range(oh), range(ow)):
        for b in range(x.shape[0]):
            patch = xp[b, :, j * stride[0]:j * stride[0] + kh, q * stride[1]:q * stride[1] + kw]
            dk[i, j, q] += g[b, i, j, q] * patch
    return dk


def unshared_grad_input(x_shape, k, g, stride, padding):
    """dV: each output (b, i, j, q) sends G[b, i, j, q] K[i, j, q] back onto its window."""
    o, oh, ow, c, kh, kw = k.shape
    h, w = x_shape[2:]
    dxp = np.zeros(tuple(x_shape[:2]) + (h + sum(padding[0]), w + sum(padding[1])))
    for b, i, j, q in itertools.product(range(x_shape[0]), range(o), range(oh), range(ow)):
        dxp[b, :, j * stride[0]:j * stride[0] + kh, q * stride[1]:q * stride[1] + kw] += \
            g[b, i, j, q] * k[i, j, q]
    return dxp[:, :, padding[0][0]:padding[0][0] + h, padding[1][0]:padding[1][0] + w]


def tiled_grad_weight(x, g, k_shape, stride, padding):
    """dK[..., a, b] collects the unshared weight gradient of every position of tile (a, b)."""
    o, c, kh, kw, ta, tb = k_shape
    full = unshared_grad_weight(x, g, (o,) + g.shape[2:] + (c, kh, kw), stride, padding)
    dk = np.zeros(k_shape)
    for j, q in itertools.product(range(g.shape[2]), range(g.shape[3])):
        dk[:, :, :, :, j % ta, q % tb] += full[:, j, q]
    return dk
