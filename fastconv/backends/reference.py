"""The oracle: the canonical correlation in plain NumPy, obviously correct.

One pass per kernel tap: take the strided slice of the padded input that the
tap multiplies and contract it with that tap's weights over the channels of
its group.  Accumulates in float64/complex128 (int64 for integers, longdouble
for longdouble) and casts at the end.  Slow, and meant to be: it is the
definition every other backend is tested against.
"""
from __future__ import annotations

import itertools

import numpy as np

NAME = "reference"


def available() -> bool:
    return True


def supports(problem) -> bool:
    return True


def cost(problem) -> float:
    from .. import costs
    return costs.estimate(NAME, problem)


def accumulator_dtype(dtype) -> np.dtype:
    """The wide dtype the reference sums in for a given compute dtype."""
    dtype = np.dtype(dtype)
    if dtype.kind in "biu":
        return np.dtype(np.int64)
    if dtype == np.longdouble or dtype == np.clongdouble:
        return dtype
    return np.dtype(np.complex128 if dtype.kind == "c" else np.float64)


def correlate(x, w, problem, out=None):
    """Canonical correlation of ``x`` with ``w`` as described by ``problem``.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 5), (1, 1, 2), "float64")
    >>> correlate(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)), p)
    array([[[1., 3., 5., 7.]]])
    """
    acc = accumulator_dtype(problem.dtype)
    n, c = problem.x_shape[:2]
    o, cg = problem.w_shape[:2]
    g = problem.groups
    og = o // g
    xpad = np.pad(np.asarray(x, dtype=acc), ((0, 0), (0, 0)) + tuple(problem.padding))
    xpad = xpad.reshape((n, g, cg) + xpad.shape[2:])
    wg = np.asarray(w, dtype=acc).reshape((g, og, cg) + tuple(problem.kernel))
    total = np.zeros((n, g, og) + tuple(problem.out_spatial), dtype=acc)
    for tap in itertools.product(*(range(k) for k in problem.kernel)):
        window = (slice(None),) * 3 + tuple(
            slice(m * d, m * d + (size - 1) * s + 1, s)
            for m, d, s, size in zip(tap, problem.dilation, problem.stride, problem.out_spatial))
        # total[b, g, o, ...] += sum_l xpad[b, g, l, ...] * w[g, o, l, tap]
        total += np.einsum("bgl...,gol->bgo...", xpad[window], wg[(Ellipsis,) + tap])
    result = total.reshape(problem.out_shape).astype(problem.dtype, copy=False)
    if out is None:
        return result
    out[...] = result
    return out
