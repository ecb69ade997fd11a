"""Separable kernels: 1-D passes along each axis instead of the full stencil.

A 2-D kernel slice ``w[o, l]`` is written by SVD as ``sum_r u_r v_r^T``, keeping
the fewest terms whose dropped singular values stay at the dtype's rounding
level; a 3-D slice is used only when it is one outer product ``a x b x c``.
The correlation then runs as 1-D passes, last axis first: the first pass
expands every input channel into one intermediate channel per (output
channel, input channel, term), the middle passes filter those channels one by
one, and the last pass sums them into the output channels.  Every pass is
:func:`fastconv.backends.direct.run` with a thin kernel, so stride, dilation,
padding and groups are handled by the same loops as the direct backend: each
pass applies its own axis's padding, dilation and stride, and keeps only the
rows of the not-yet-filtered axes that the later passes read.

Cost per output point: ``rank * sum(kernel)`` multiply-adds instead of
``prod(kernel)``, so the backend is offered only when that is smaller.
"""
from __future__ import annotations

import math
import threading

import numpy as np

from .. import _config
from ..problem import FAST_DTYPES, make_problem
from . import direct

NAME = "separable"

#: kernel_rank reported for a kernel whose factors could not be computed (NaN/Inf)
NOT_SEPARABLE = 2**31 - 1
#: kernels up to this many elements keep their factors for the next call
_CACHE_ELEMENTS = 1 << 16

_cache = threading.local()


def available() -> bool:
    return True


def supports(problem) -> bool:
    if problem.dtype not in FAST_DTYPES or problem.ndim not in (2, 3):
        return False
    rank = 1 if problem.kernel_rank is None else max(problem.kernel_rank, 1)
    if problem.ndim == 3 and rank > 1:
        return False
    if rank > 1 and problem.has_nonfinite:
        return False  # Inf split over several terms can meet as Inf - Inf = NaN
    if rank * sum(problem.kernel) >= math.prod(problem.kernel):
        return False  # no fewer multiply-adds than the full stencil
    return _workspace_elements(problem, rank) * problem.dtype.itemsize <= \
        _config.get_workspace_bytes()


def cost(problem) -> float:
    from .. import costs
    return costs.estimate(NAME, problem)


def tolerance(dtype, kernel) -> float:
    """Relative Frobenius error a factorisation may leave: rounding level.

    Examples
    --------
    >>> tolerance("float64", (3, 3)) < 1e-13
    True
    """
    return float(10 * np.finfo(np.dtype(dtype)).eps * math.sqrt(math.prod(kernel)))


def inspect(problem, x, w):
    """``problem`` with ``kernel_rank`` set from the data of ``w``.

    The rank is the largest over the kernel's ``(o, c)`` slices; a 3-D kernel
    reports 1 only when every slice is an outer product of three vectors.  For
    a rank above 1 it also records whether ``x`` holds NaN or Inf, which the
    split into several terms would not propagate as the direct sum does.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 8, 8), (1, 1, 3, 3), "float64")
    >>> inspect(p, None, np.ones((1, 1, 3, 3))).kernel_rank
    1
    """
    if problem.dtype not in FAST_DTYPES or problem.ndim not in (2, 3):
        return problem
    rank, _ = factorize(w, problem.dtype)
    facts = {"kernel_rank": rank}
    cheaper = rank * sum(problem.kernel) < math.prod(problem.kernel)
    if problem.ndim == 2 and rank > 1 and cheaper and problem.has_nonfinite is None \
            and x is not None:
        # one term per rank reaches the output; an Inf input would make them cancel as NaN
        facts["has_nonfinite"] = not np.isfinite(x).all()
    return problem.with_facts(**facts)


def factorize(w, dtype):
    """``(rank, factors)`` of a ``(O, Cg, *kernel)`` weight, 2-D or 3-D kernel.

    ``factors[a]`` has shape ``(O, Cg, rank, kernel[a])`` and
    ``w[o, l] ~= sum_r outer(factors[0][o, l, r], factors[1][o, l, r], ...)``
    to :func:`tolerance`.  ``factors`` is None when the kernel is not
    separable to tolerance (3-D of rank above 1, or non-finite values).
    The last factorisation is remembered per thread, so ``inspect`` followed
    by ``correlate`` on the same kernel computes it once.

    Examples
    --------
    >>> rank, (col, row) = factorize(np.outer([1.0, 2.0], [1.0, 0.0, -1.0])[None, None],
    ...                              "float64")
    >>> rank, col.shape, row.shape
    (1, (1, 1, 1, 2), (1, 1, 1, 3))
    """
    dtype = np.dtype(dtype)
    w = np.asarray(w)
    last = getattr(_cache, "last", None)
    if (last is not None and last[0] == dtype and last[1].shape == w.shape
            and np.array_equal(last[1], w)):
        return last[2]
    if not np.isfinite(w).all():
        result = (NOT_SEPARABLE, None)
    elif w.ndim == 4:
        result = _factorize_2d(w, dtype)
    else:
        result = _factorize_3d(w, dtype)
    if w.size <= _CACHE_ELEMENTS:
        _cache.last = (dtype, w.copy(), result)
    return result


def _wide(w, dtype):
    return np.asarray(w, dtype=np.complex128 if dtype.kind == "c" else np.float64)


def _svd_rank(s, tol):
    """Fewest leading singular values whose dropped tail is within ``tol`` (relative)."""
    # tail[..., r] = norm of s[..., r:]
    tail = np.sqrt(np.cumsum((s * s)[..., ::-1], axis=-1)[..., ::-1])
    tail = np.concatenate([tail, np.zeros(s.shape[:-1] + (1,))], axis=-1)
    ok = tail <= tol * tail[..., :1]
    return np.argmax(ok, axis=-1)  # first r whose tail is small enough


def _factorize_2d(w, dtype):
    kernel = w.shape[2:]
    u, s, vh = np.linalg.svd(_wide(w, dtype), full_matrices=False)
    ranks = _svd_rank(s, tolerance(dtype, kernel))
    rank = int(ranks.max()) if ranks.size else 0
    keep = max(rank, 1)
    col = np.moveaxis(u[..., :keep] * s[..., None, :keep], -1, -2)   # (O, Cg, r, k1)
    row = vh[..., :keep, :]                                           # (O, Cg, r, k2)
    return rank, (col.astype(dtype), row.astype(dtype))


def _factorize_3d(w, dtype):
    """Rank-1 fit by two SVDs (plane axis, then rows x columns), verified by rebuilding."""
    o, cg, k0, k1, k2 = w.shape
    tol = tolerance(dtype, w.shape[2:])
    wide = _wide(w, dtype)
    u0, s0, vh0 = np.linalg.svd(wide.reshape(o, cg, k0, k1 * k2), full_matrices=False)
    rest = vh0[..., 0, :].reshape(o, cg, k1, k2)
    u1, s1, vh1 = np.linalg.svd(rest, full_matrices=False)
    rank = max(int(_svd_rank(s0, tol).max()), int(_svd_rank(s1, tol).max()))
    a = u0[..., :, 0] * s0[..., :1]
    b = u1[..., :, 0] * s1[..., :1]
    c = vh1[..., 0, :]
    rebuilt = a[..., :, None, None] * b[..., None, :, None] * c[..., None, None, :]
    norms = np.linalg.norm(wide.reshape(o, cg, -1), axis=-1)
    errors = np.linalg.norm((wide - rebuilt).reshape(o, cg, -1), axis=-1)
    zero = norms == 0
    if rank > 1 or not np.all(errors <= tol * norms):
        return max(rank, 2), None
    rank = 0 if zero.all() else 1
    factors = tuple(f[:, :, None, :].astype(dtype) for f in (a, b, c))
    return rank, factors


def _needed(problem) -> tuple:
    """Input extent per axis that the output reads (trailing rows may go unread)."""
    return tuple(max(0, min(n, (o - 1) * s + (k - 1) * d - p[0] + 1))
                 for n, o, s, k, d, p in zip(problem.spatial, problem.out_spatial, problem.stride,
                                             problem.kernel, problem.dilation, problem.padding))


def _intermediate_shapes(problem, rank):
    """Spatial shapes after each pass but the last (last axis is filtered first)."""
    needed, out = _needed(problem), problem.out_spatial
    nd = problem.ndim
    return [needed[:axis] + out[axis:] for axis in range(nd - 1, 0, -1)]


def pass_problems(problem) -> list:
    """The 1-D passes :func:`correlate` runs, as direct problems (for the cost model).

    One problem per axis, last axis first, each with every (output channel,
    input channel, rank) combination as an output channel.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 64, 64), (1, 1, 9, 9), "float64", padding=4)
    >>> [q.kernel for q in pass_problems(p)]
    [(1, 9), (9, 1)]
    """
    nd, rank = problem.ndim, problem.kernel_rank or 1
    needed, out = _needed(problem), problem.out_spatial
    channels = problem.out_channels * problem.w_shape[1] * rank
    passes = []
    for axis in range(nd - 1, -1, -1):
        spatial = list(needed[:axis] + out[axis:])
        spatial[axis] = problem.spatial[axis]
        kernel, stride, dilation = [1] * nd, [1] * nd, [1] * nd
        padding = [(0, 0)] * nd
        kernel[axis], stride[axis] = problem.kernel[axis], problem.stride[axis]
        dilation[axis], padding[axis] = problem.dilation[axis], problem.padding[axis]
        passes.append(make_problem((problem.batch, 1, *spatial), (channels, 1, *kernel),
                                   problem.dtype, tuple(stride), tuple(padding),
                                   tuple(dilation)))
    return passes


def _workspace_elements(problem, rank) -> int:
    """Intermediate elements of one (image, output channel) block."""
    per = problem.w_shape[1] * rank
    return sum(per * math.prod(shape) for shape in _intermediate_shapes(problem, rank))


def correlate(x, w, problem, out=None):
    """Canonical correlation by 1-D passes over a separable kernel.

    Falls back to :mod:`direct` for a kernel that is not separable to
    tolerance (3-D of rank above 1, non-finite weights) and for several terms
    over non-finite data, so the result is always the canonical correlation.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 3, 4), (1, 1, 2, 2), "float64")
    >>> correlate(np.arange(12.0).reshape(1, 1, 3, 4), np.ones((1, 1, 2, 2)), p)
    array([[[[10., 14., 18.],
             [26., 30., 34.]]]])
    """
    dtype = problem.dtype
    rank, factors = factorize(w, dtype)
    if factors is None or (rank > 1 and problem.has_nonfinite):
        return direct.correlate(x, w, problem, out=out)
    x5 = np.ascontiguousarray(x, dtype=dtype).reshape(direct.as_3d(problem.x_shape))
    direct_out = (out is not None and out.dtype == dtype and out.flags.c_contiguous
                  and out.shape == problem.out_shape)
    result = out if direct_out else np.empty(problem.out_shape, dtype)
    out5 = result.reshape(direct.as_3d(problem.out_shape))
    for b0, b1, o0, o1 in _blocks(problem, factors[0].shape[2]):
        _run_passes(x5[b0:b1], factors, problem, out5[b0:b1, o0:o1], o0)
    if out is None or direct_out:
        return result
    out[...] = result
    return out


def _blocks(problem, rank):
    """(batch, output channel) blocks whose intermediates fit the workspace cap.

    Whole batches when they fit; otherwise one image at a time in runs of output
    channels, so every block's output stays a contiguous slice.
    """
    n, o = problem.out_shape[:2]
    per_channel = max(1, _workspace_elements(problem, rank) * problem.dtype.itemsize)
    fit = max(1, _config.get_workspace_bytes() // per_channel)
    if fit >= n * o:
        return [(0, n, 0, o)]
    step = min(o, fit)
    return [(b, b + 1, c, min(o, c + step)) for b in range(n) for c in range(0, o, step)]


def _run_passes(x5, factors, problem, out5, o0):
    """One pass per spatial axis, last first, for output channels ``o0:o0+out5.shape[1]``."""
    nd = problem.ndim
    lead = 3 - nd
    nb, no = out5.shape[:2]
    cg = problem.w_shape[1]
    og = problem.out_channels // problem.groups
    rank = factors[0].shape[2]
    q = no * cg * rank
    shapes = _intermediate_shapes(problem, rank)
    source = x5
    for step, axis in enumerate(range(nd - 1, -1, -1)):
        first, last = step == 0, axis == 0
        taps = factors[axis][o0:o0 + no]                  # (no, cg, rank, k)
        kernel5 = [1, 1, 1]
        kernel5[lead + axis] = taps.shape[-1]
        if last:
            weights = taps.reshape((no, cg * rank) + tuple(kernel5))
            cmap = (np.arange(no)[:, None] * (cg * rank) + np.arange(cg * rank)[None, :])
            dest = out5
        else:
            weights = taps.reshape((q, 1) + tuple(kernel5))
            cmap = np.arange(q)[:, None]
            dest = np.empty((nb, q) + (1,) * lead + shapes[step], out5.dtype)
        if first:  # intermediate channel (o, l, r) reads input channel g(o) * Cg + l
            outs = np.arange(o0, o0 + no)
            chan = (outs // og)[:, None] * cg + np.arange(cg)[None, :]
            chan = np.repeat(chan.reshape(-1), rank)
            cmap = chan.reshape(no, -1) if last else chan[:, None]
        stride, dilation, pad = [1, 1, 1], [1, 1, 1], [0, 0, 0]
        stride[lead + axis] = problem.stride[axis]
        dilation[lead + axis] = problem.dilation[axis]
        pad[lead + axis] = problem.padding[axis][0]
        direct.run(source, np.ascontiguousarray(weights), dest,
                   np.ascontiguousarray(cmap, dtype=np.int64), stride, dilation, pad)
        source = dest
