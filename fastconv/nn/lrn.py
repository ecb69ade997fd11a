"""Local response normalisation across channels, and its gradient.

Both torch's ``local_response_norm`` and TensorFlow's ``lrn`` divide each
value by a power of a windowed sum of squares along the channel axis::

    out[c] = x[c] / (bias + scale * sum(x[c - before : c + after + 1] ** 2)) ** beta

torch: ``scale = alpha / size``, ``before = size // 2``, ``after = (size - 1) // 2``,
channels on axis 1; TF: ``scale = alpha``, ``before = after = depth_radius``,
channels last.  The kernels here see any layout as ``(outer, channels,
inner)`` and fuse the sums, the power and the division into one pass, so
torch's chain of five whole-array operations becomes one.
"""
from __future__ import annotations

import math
import numbers

import numba
import numpy as np
from numba import njit, prange

from ._pool_kernels import _u, use_threads
from ._validate import float_array, prepare, result_dtype

__all__ = ["local_response_norm", "local_response_norm_input"]


#: inner positions per tile: a few (channels x TILE) scratch blocks stay in L2
TILE = 512


@njit(cache=True, nogil=True)
def _load(a, o, i0, width, block):
    """``block[c*width + t] = a[o, c, i0 + t]``: one tile as a flat contiguous block."""
    for c in range(a.shape[1]):
        row = a[o, c]
        for t in range(width):
            block[c * width + t] = row[_u(i0 + t)]


@njit(cache=True, nogil=True)
def _store(block, o, i0, width, a):
    for c in range(a.shape[1]):
        row = a[o, c]
        for t in range(width):
            row[_u(i0 + t)] = block[c * width + t]


@njit(cache=True, nogil=True)
def _shifted_sums(src, channels, width, first, last, dst):
    """``dst[c] = sum of src[c + d]`` for ``d`` in ``[first, last]``, channels clipped.

    Flat ``(channels, width)`` blocks; one contiguous loop per shift, on
    slices so the index is provably non-negative and LLVM vectorises it, in
    either layout (channels-last tiles have width 1).
    """
    dst[:channels * width] = 0
    for d in range(first, last + 1):
        c0, c1 = max(0, -d), min(channels, channels - d)
        if c1 <= c0:
            continue
        target = dst[c0 * width:c1 * width]
        source = src[(c0 + d) * width:(c1 + d) * width]
        for j in range(target.shape[0]):
            target[j] += source[j]


@njit(cache=True, nogil=True)
def _norms(block, n, before, after, channels, width, scale, bias, beta, squares, base, power):
    """``base = bias + scale * window sums of squares`` and ``power = base ** beta``.

    Common betas take sqrt chains: they vectorise, a general power does not.
    """
    for j in range(n):
        squares[j] = block[j] * block[j]
    _shifted_sums(squares, channels, width, -before, after, base)
    for j in range(n):
        base[j] = bias + scale * base[j]
    if beta == 0.75:
        for j in range(n):
            power[j] = np.sqrt(base[j] * np.sqrt(base[j]))
    elif beta == 0.5:
        for j in range(n):
            power[j] = np.sqrt(base[j])
    elif beta == 1.0:
        power[:n] = base[:n]
    else:
        for j in range(n):
            power[j] = base[j] ** beta


@njit(cache=True, nogil=True)
def _chunk(chunk, chunks, total):
    return chunk * total // chunks, (chunk + 1) * total // chunks


@njit(cache=True, nogil=True, parallel=True)
def lrn_forward(x, before, after, scale, bias, beta, chunks, out):
    """``out = x / (bias + scale * window sums of squares) ** beta`` on ``(outer, C, inner)``.

    Work items are (outer row, tile of at most TILE inner positions), split
    into ``chunks`` parallel pieces that each own their scratch blocks.
    """
    outer, channels, inner = x.shape
    width = min(inner, TILE)
    tiles = (inner + width - 1) // width
    for chunk in prange(chunks):
        block = np.empty(channels * width, x.dtype)
        squares = np.empty(channels * width, x.dtype)
        base = np.empty(channels * width, x.dtype)
        power = np.empty(channels * width, x.dtype)
        first, last = _chunk(chunk, chunks, outer * tiles)
        for item in range(first, last):
            o, i0 = item // tiles, (item % tiles) * width
            w = min(width, inner - i0)
            n = channels * w
            _load(x, o, i0, w, block)
            _norms(block, n, before, after, channels, w, scale, bias, beta, squares, base, power)
            for j in range(n):
                block[j] = block[j] / power[j]
            _store(block, o, i0, w, out)


@njit(cache=True, nogil=True, parallel=True)
def lrn_backward(x, grad, y, use_y, before, after, scale, bias, beta, one, chunks, grad_in):
    """Input gradient of :func:`lrn_forward`.

    With ``n[j] = bias + scale * sums[j]`` and ``y[j] = x[j] * n[j]**-beta``::

        grad_in[k] = grad[k] * n[k]**-beta
                     - 2 * scale * beta * x[k] * (sum over j whose window holds k
                                                  of grad[j] * y[j] / n[j])

    and j's window ``[j - before, j + after]`` holds k exactly when j is in
    ``[k - after, k + before]``.  ``y`` is the forward output when ``use_y``
    (TensorFlow's LRNGrad takes it), else it is recomputed.  ``one`` is 1 in
    x's dtype, so float32 arithmetic stays float32.
    """
    outer, channels, inner = x.shape
    width = min(inner, TILE)
    tiles = (inner + width - 1) // width
    factor = -(scale * beta + scale * beta)
    for chunk in prange(chunks):
        block = np.empty(channels * width, x.dtype)
        g = np.empty(channels * width, x.dtype)
        out = np.empty(channels * width, x.dtype)
        squares = np.empty(channels * width, x.dtype)
        base = np.empty(channels * width, x.dtype)
        power = np.empty(channels * width, x.dtype)
        first, last = _chunk(chunk, chunks, outer * tiles)
        for item in range(first, last):
            o, i0 = item // tiles, (item % tiles) * width
            w = min(width, inner - i0)
            n = channels * w
            _load(x, o, i0, w, block)
            _load(grad, o, i0, w, g)
            _norms(block, n, before, after, channels, w, scale, bias, beta, squares, base, power)
            if use_y:
                _load(y, o, i0, w, out)
            for j in range(n):
                power[j] = one / power[j]                      # n ** -beta
                value = out[j] if use_y else block[j] * power[j]
                squares[j] = g[j] * value / base[j]            # grad * y / n
            _shifted_sums(squares, channels, w, -after, before, base)
            for j in range(n):
                out[j] = g[j] * power[j] + factor * block[j] * base[j]
            _store(out, o, i0, w, grad_in)


def _chunks(x3: np.ndarray) -> int:
    items = x3.shape[0] * -(-x3.shape[2] // TILE)
    return min(items, 4 * numba.get_num_threads())


def run_lrn(x3: np.ndarray, before: int, after: int, scale: float, bias: float,
            beta: float) -> np.ndarray:
    """LRN of a contiguous ``(outer, channels, inner)`` array."""
    out = np.empty_like(x3)
    if out.size:
        use_threads(out.size * (before + after + 2))
        kind = x3.dtype.type
        lrn_forward(x3, before, after, kind(scale), kind(bias), kind(beta), _chunks(x3), out)
    return out


def run_lrn_input(x3: np.ndarray, grad3: np.ndarray, y3, before: int, after: int, scale: float,
                  bias: float, beta: float) -> np.ndarray:
    """LRN input gradient on contiguous ``(outer, channels, inner)`` arrays of one dtype."""
    grad_in = np.empty_like(x3)
    if grad_in.size:
        use_threads(grad_in.size * 2 * (before + after + 2))
        kind = x3.dtype.type
        lrn_backward(x3, grad3, x3 if y3 is None else y3, y3 is not None, before, after,
                     kind(scale), kind(bias), kind(beta), kind(1), _chunks(x3), grad_in)
    return grad_in


def check_real(value, name: str) -> float:
    """A finite real number (alpha, beta, k, bias); TypeError or ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return float(value)


def _torch_args(input, size, alpha, beta, k, op):
    x = float_array(input, "input")
    if x.ndim < 3:
        raise ValueError(f"{op} expects input of 3 or more dimensions (N, C, *), got shape "
                         f"{x.shape}")
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"size must be an int, got {size!r}")
    if size < 1:
        raise ValueError(f"size must be positive, got size={size!r}")
    alpha, beta, k = (check_real(v, n) for v, n in ((alpha, "alpha"), (beta, "beta"), (k, "k")))
    window = dict(before=int(size) // 2, after=(int(size) - 1) // 2, scale=alpha / size, bias=k,
                  beta=beta)
    return x, window


def _as3(x: np.ndarray) -> np.ndarray:
    return x.reshape(x.shape[0], x.shape[1], -1)


def local_response_norm(input, size, alpha=1e-4, beta=0.75, k=1.0):
    """Local response normalisation across channels, as ``torch.nn.functional.local_response_norm``.

    ``out[n, c] = x[n, c] / (k + alpha / size * sum(x[n, c'] ** 2)) ** beta`` with
    ``c'`` from ``c - size // 2`` to ``c + (size - 1) // 2`` (clipped to the channels).

    Parameters
    ----------
    input : ndarray
        ``(N, C, *)`` with at least 3 dimensions, float32 or float64.
    size : int
        Channels in each window.
    alpha, beta, k : float
        Scale (divided by ``size``, as torch does), exponent and additive constant.

    Returns
    -------
    ndarray

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 3, 1), dtype=np.float32)
    >>> local_response_norm(x, size=3, alpha=3.0, beta=1.0, k=1.0).ravel()
    array([0.33333334, 0.25      , 0.33333334], dtype=float32)
    """
    x, window = _torch_args(input, size, alpha, beta, k, "local_response_norm")
    x = prepare(x, x.dtype)
    return run_lrn(_as3(x), **window).reshape(x.shape)


def local_response_norm_input(input, grad_output, size, alpha=1e-4, beta=0.75, k=1.0):
    """Gradient of :func:`local_response_norm` for its input.

    Parameters
    ----------
    input : ndarray
        The normalised input, ``(N, C, *)``.
    grad_output : ndarray
        Gradient for the output, same shape.
    size, alpha, beta, k
        As for :func:`local_response_norm`.

    Returns
    -------
    ndarray
        Gradient for ``input``.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 1, 1))
    >>> local_response_norm_input(x, np.ones_like(x), size=1, alpha=1.0, beta=1.0, k=1.0).ravel()
    array([0.])
    """
    x, window = _torch_args(input, size, alpha, beta, k, "local_response_norm_input")
    g = float_array(grad_output, "grad_output")
    if g.shape != x.shape:
        raise ValueError(f"grad_output must have the input's shape {x.shape}, got {g.shape}")
    dtype = result_dtype(x, g)
    x, g = prepare(x, dtype), prepare(g, dtype)
    return run_lrn_input(_as3(x), _as3(g), None, **window).reshape(x.shape)
