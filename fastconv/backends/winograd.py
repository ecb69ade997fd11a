"""Winograd minimal filtering: fewer multiply-adds for small stride-1 kernels.

``F(m, r)`` computes ``m`` outputs of a 1-d correlation with an ``r``-tap kernel
from ``a = m + r - 1`` inputs with ``a`` multiplications instead of ``m r``
(Winograd 1980, Cook-Toom construction; Lavin & Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016)::

    y = A^T [(G g) * (B^T d)]

Nested along two axes, a tile of ``a x a'`` inputs gives ``m x m'`` outputs, and
over many channels the elementwise products become one matrix product per
transform point (see :mod:`fastconv._winograd`): a network layer of ``O x C``
channels runs ``a a' / (m m')`` multiply-adds per output and channel pair
instead of ``r r'`` (F(2x2, 5x5): 9 instead of 25; F(4x4, 3x3): 2.25 instead
of 9), on BLAS, with the transforms fused around the GEMMs in cache.

The transforms are built here, exactly (rational arithmetic), from the
interpolation points ``0, 1, -1, 2, -2`` and infinity, at most ``a = 6`` per axis:
beyond that the transforms' growing coefficients cost float32 more than its
rounding allows.  Errors against the direct sum, float32, unit-variance data:
about 1e-6 relative for ``a = 4``, 1e-5 for ``a = 6``.  Each axis takes the tile
size (:data:`TRANSFORM_SIZES`) the cost model prices cheapest: bigger tiles do
fewer multiply-adds but waste more at the edges of small images.

Offered for stride 1, dilation 1, kernels of 1 to 5 taps per axis (not 1 x 1),
1-d and 2-d, and finite data: a NaN or Inf anywhere in a tile would spread over
the tile's outputs.  Integer inputs are left to the exact backends.  The
transformed weights and the workers' scratch must fit the workspace cap.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field, replace
from fractions import Fraction
from functools import lru_cache

import numpy as np

from .. import _config, _outputs
from .._config import blas_threads
from ..problem import FAST_DTYPES
from . import _compiled, _workers
from .fft import inspect  # noqa: F401  (the same fact decides: NaN/Inf spread over a tile)

NAME = "winograd"
#: correlate() takes ``bias`` and adds it in the output transform
FUSED_BIAS = True

_winograd, UNAVAILABLE_REASON = _compiled.load("_winograd")

#: kernel taps -> the transform sizes ``a`` offered along an axis of that kernel size
TRANSFORM_SIZES = {1: (1,), 2: (4,), 3: (4, 5, 6), 4: (5, 6), 5: (6,)}
#: finite interpolation points, in the order they are used
POINTS = (0, 1, -1, 2, -2)
#: scratch per worker (bytes) the unit size aims for: transformed tiles and products
#: of a unit stay in the core's L2 cache
BLOCK_BYTES = 2 << 20
#: units never hold fewer tiles than this (the GEMMs' row count)
MIN_BLOCK = 128
#: images per batch block: every transform pass runs along this many images at once
#: (8 and 2 MiB units measured fastest on the CIFAR and ResNet layers, of 8/16/32 and 1-3 MiB)
BATCH_BLOCK = 8
CPUS = os.cpu_count() or 1


def available() -> bool:
    return _winograd is not None


def supports(problem) -> bool:
    if problem.dtype not in FAST_DTYPES or problem.ndim > 2 or not problem.is_plain:
        return False
    if problem.has_nonfinite or problem.int_bound is not None:
        return False
    if any(k not in TRANSFORM_SIZES for k in problem.kernel) or math.prod(problem.kernel) == 1:
        return False
    if 0 in problem.out_shape or problem.w_shape[1] == 0:
        return False
    return plan(problem) is not None


def cost(problem) -> float:
    from .. import costs
    return costs.estimate(NAME, problem)


# ---------------------------------------------------------------- transforms

@dataclass(frozen=True)
class Transform:
    """The matrices of ``F(m, r)`` along one axis, float64: ``y = at @ ((g @ k) * (bt @ d))``."""

    m: int
    r: int
    at: np.ndarray = field(repr=False)   # (m, a)
    g: np.ndarray = field(repr=False)    # (a, r)
    bt: np.ndarray = field(repr=False)   # (a, a)

    @property
    def a(self) -> int:
        return self.m + self.r - 1


@lru_cache(maxsize=None)
def transform(m: int, r: int) -> Transform:
    """The Cook-Toom transform ``F(m, r)`` on :data:`POINTS` and infinity, exact.

    ``A^T`` evaluates the output polynomial at the points, ``G`` the kernel's
    (scaled by each point's Lagrange denominator) and ``B^T`` is the unique
    matrix that makes ``A^T [(G g) * (B^T d)]`` the correlation for every
    ``d`` and ``g``, solved in rational arithmetic.

    Examples
    --------
    >>> t = transform(2, 3)
    >>> d, k = np.arange(4.0), np.array([1.0, 2.0, 3.0])
    >>> t.at @ ((t.g @ k) * (t.bt @ d))
    array([ 8., 14.])
    """
    a = m + r - 1
    points = [Fraction(p) for p in POINTS[:a - 1]]
    if len(points) != a - 1:
        raise ValueError(f"F({m}, {r}) needs {a - 1} finite points; {len(POINTS)} are known")
    at = [[Fraction(0)] * a for _ in range(m)]
    g = [[Fraction(0)] * r for _ in range(a)]
    for j, p in enumerate(points):
        scale = math.prod((p - q for q in points if q != p), start=Fraction(1))
        for i in range(m):
            at[i][j] = p ** i
        for k in range(r):
            g[j][k] = p ** k / scale
    at[m - 1][a - 1] = g[a - 1][r - 1] = Fraction(1)      # the point at infinity
    # sum_j at[i][j] g[j][k] bt[j][q] = [q == i + k]: one linear system per column q
    rows = [[at[i][j] * g[j][k] for j in range(a)] for i in range(m) for k in range(r)]
    bt_columns = [_solve(rows, [Fraction(int(q == i + k)) for i in range(m) for k in range(r)])
                  for q in range(a)]
    bt = [[bt_columns[q][j] for q in range(a)] for j in range(a)]
    as_array = lambda rows_: np.array([[float(v) for v in row] for row in rows_])  # noqa: E731
    return Transform(m, r, as_array(at), as_array(g), as_array(bt))


def _solve(rows, rhs):
    """The solution of the consistent, full-column-rank system ``rows @ x = rhs``, exactly."""
    n = len(rows[0])
    aug = [list(row) + [b] for row, b in zip(rows, rhs)]
    r = 0
    for col in range(n):
        pivot = next((i for i in range(r, len(aug)) if aug[i][col] != 0), None)
        if pivot is None:
            raise ArithmeticError("the transform's system is singular")
        aug[r], aug[pivot] = aug[pivot], aug[r]
        aug[r] = [v / aug[r][col] for v in aug[r]]
        for i in range(len(aug)):
            if i != r and aug[i][col] != 0:
                f = aug[i][col]
                aug[i] = [v - f * w for v, w in zip(aug[i], aug[r])]
        r += 1
    if any(aug[i][n] != 0 for i in range(r, len(aug))):
        raise ArithmeticError("the transform's system has no solution")
    return [aug[i][n] for i in range(n)]


# ---------------------------------------------------------------- plans

@dataclass(frozen=True)
class Plan:
    """Transforms per axis (2-d; a 1-d problem has a trivial first axis), tiles and units."""

    transforms: tuple     # (Transform, Transform)
    tiles: tuple          # tiles per axis
    blocks: int           # batch blocks
    images: int           # images per batch block (nb)
    positions: int        # tile positions per unit
    units: int
    workers: int

    @property
    def points(self) -> int:
        return self.transforms[0].a * self.transforms[1].a


def _as_2d(shape):
    """A 1-d problem's spatial shape with a size-1 first axis."""
    return shape if len(shape) == 2 else (1,) + tuple(shape)


def plan(problem, threads=None) -> Plan | None:
    """How :func:`correlate` runs ``problem``: the cheapest transforms under the cost
    model, batch blocks and units; None if the transformed weights and one worker's
    scratch would not fit the workspace cap."""
    return _plan(problem, min(threads or _config.get_num_threads(), CPUS),
                 _config.get_workspace_bytes())


@lru_cache(maxsize=1024)
def _plan(problem, threads, workspace):
    from ..costs import DEFAULT_COEFFICIENTS
    coefs = DEFAULT_COEFFICIENTS[NAME]   # fixed, so that a plan never changes under a cache
    kernel = _as_2d(problem.kernel)
    best = None
    for sizes in itertools.product(*(TRANSFORM_SIZES[k] for k in kernel)):
        transforms = tuple(transform(a - k + 1, k) for a, k in zip(sizes, kernel))
        candidate = _layout(problem, transforms, threads)
        seconds = sum(c * f for c, f in zip(coefs, _features(work(problem, candidate),
                                                             problem)))
        if best is None or seconds < best[0]:
            best = (seconds, candidate)
    chosen = best[1]
    weights = chosen.points * problem.out_channels * problem.w_shape[1]
    blocked = 2 * chosen.blocks * chosen.images * (problem.in_channels + problem.out_channels) \
        * math.prod(problem.spatial)   # batch-blocked input (and output gradient)
    per_worker = _winograd.scratch_size(chosen.transforms[0].a, chosen.transforms[1].a,
                                        problem.in_channels, problem.out_channels,
                                        chosen.positions * chosen.images)
    workers = chosen.workers
    while workers > 1 and (weights + blocked + workers * per_worker) * problem.dtype.itemsize \
            > workspace:
        workers -= 1
    if (weights + blocked + workers * per_worker) * problem.dtype.itemsize > workspace:
        return None
    return replace(chosen, workers=workers)


def _layout(problem, transforms, threads) -> Plan:
    """Batch blocks of up to :data:`BATCH_BLOCK` images, units of about
    :data:`BLOCK_BYTES` of scratch, at least one unit per worker where possible."""
    tiles = tuple(-(-n // t.m) for n, t in zip(_as_2d(problem.out_spatial), transforms))
    positions_total = tiles[0] * tiles[1]
    n = problem.batch
    blocks = -(-n // BATCH_BLOCK)
    images = -(-n // blocks)
    points = transforms[0].a * transforms[1].a
    per_tile = points * (2 + problem.in_channels + problem.out_channels) * problem.dtype.itemsize
    positions = max(max(BLOCK_BYTES // per_tile, MIN_BLOCK) // images, 1)
    positions = min(positions, positions_total)
    if blocks < threads:   # cut the positions finer so that every worker gets a unit
        positions = min(positions, -(-positions_total * blocks // threads))
    units = blocks * -(-positions_total // positions)
    return Plan(transforms, tiles, blocks, images, positions, units, min(threads, units))


def work(problem, p: Plan | None = None) -> dict:
    """What :func:`correlate` does, for the cost model and the choice of transforms.

    ``macs`` (the GEMMs' multiply-adds), ``transformed`` (elements the tile
    transforms write: input tiles per input channel, products per output
    channel, and the batch-blocked copy of the input), ``weights_read``
    (transformed weights the GEMMs read: all of them per unit, from memory
    once they outgrow the cache), ``gemm_calls``, ``units`` and ``workers``.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 8, 8, 8), (8, 8, 3, 3), "float64", padding=1)
    >>> w = work(p, _layout(p, (transform(2, 3), transform(2, 3)), 1))
    >>> w["macs"] / p.macs    # 16 products per 4 outputs instead of 36
    0.4444444444444444
    """
    p = p or plan(problem)
    tiles = p.blocks * p.images * p.tiles[0] * p.tiles[1]
    c, o, g = problem.in_channels, problem.out_channels, problem.groups
    copied = math.prod(problem.x_shape) if p.images > 1 else 0
    weights = p.points * o * (c // g)
    return {"macs": weights * tiles, "transformed": p.points * tiles * (c + o) + copied,
            "weights_read": weights * p.units, "gemm_calls": p.points * g * p.units,
            "units": p.units, "workers": p.workers}


def features(problem) -> tuple:
    """The cost model's features: (1, GEMM multiply-adds, transformed elements, weights
    read, GEMM calls), all but the first per worker and (but the calls) weighted by the
    dtype's cost per element."""
    return _features(work(problem), problem)


def _features(w, problem):
    from ..costs import dtype_weight
    share = dtype_weight(problem) / w["workers"]
    return (1.0, w["macs"] * share, w["transformed"] * share, w["weights_read"] * share,
            w["gemm_calls"] / w["workers"])


# ---------------------------------------------------------------- correlate

def correlate(x, w, problem, out=None, bias=None):
    """Canonical stride-1 correlation by Winograd tiles; ``bias`` is added in the output transform.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 6), (1, 1, 3), "float64")
    >>> correlate(np.arange(6.0).reshape(1, 1, 6), np.ones((1, 1, 3)), p)
    array([[[ 3.,  6.,  9., 12.]]])
    """
    _compiled.bind_blas(_winograd)
    p = plan(problem)
    result = out if out is not None and out.flags.c_contiguous and out.flags.writeable else \
        np.empty(problem.out_shape, problem.dtype)
    threads = _config.get_num_threads()
    with blas_threads(1):  # a threaded BLAS would leave its threads spinning against the workers
        u = transform_weights(w, problem, p.transforms)
        xb = _blocked(x, problem.x_shape, problem.dtype, p, threads)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=problem.dtype).reshape(problem.out_channels)
    args = (xb, u, result.reshape(_nchw(problem.out_shape)), *_matrices(p.transforms, "bt"),
            *_matrices(p.transforms, "at"), p.tiles, _pad_before(problem), p.positions,
            np.zeros(1, np.intp), bias)
    _workers.run(_forward_worker, args, p.workers, threads)
    if out is not None and result is not out:
        out[...] = result
        return out
    return result


def _blocked(a, shape, dtype, p: Plan, threads):
    """``a`` (NCHW-like ``shape``) batch-blocked as ``(blocks, C, H, W, nb)``, by the workers."""
    a = np.ascontiguousarray(a, dtype=dtype)
    nchw = _nchw(shape)
    if p.images == 1:
        return a.reshape(nchw + (1,))
    ab = _outputs.empty((p.blocks, nchw[1], nchw[2] * nchw[3], p.images), dtype)
    _workers.run(_winograd.to_blocked, (a.reshape(nchw[0], nchw[1], -1), ab,
                                        np.zeros(1, np.intp)), min(p.workers, threads), threads)
    return ab.reshape((p.blocks,) + nchw[1:] + (p.images,))


def _forward_worker(xb, u, out4, bt_h, bt_w, at_h, at_w, tiles, pad, positions, counter, bias):
    ld = positions * xb.shape[4]
    scratch = _outputs.empty((_winograd.scratch_size(bt_h.shape[0], bt_w.shape[0], xb.shape[1],
                                                     out4.shape[1], ld),), xb.dtype)
    _winograd.forward(xb, u, out4, scratch, bt_h, bt_w, at_h, at_w, tiles, pad, positions,
                      counter, bias)


def transform_weights(w, problem, transforms):
    """``U = G g G'^T`` for every kernel, as ``(a a', G, O/G, C/G)``: one GEMM with the
    Kronecker product of the two axes' ``G``."""
    gk = np.kron(transforms[0].g, transforms[1].g).astype(problem.dtype)  # (a a', r r')
    w2 = np.ascontiguousarray(w, dtype=problem.dtype).reshape(-1, gk.shape[1])
    g, o, cg = problem.groups, problem.out_channels, problem.w_shape[1]
    return np.ascontiguousarray((gk @ w2.T).reshape(-1, g, o // g, cg))


def weight_gradient(x, gy, problem):
    """Gradient of the loss for the weights of the forward correlation ``problem``.

    The adjoint of the forward pass in its weights: each worker sums
    ``A dY A'^T`` times the transformed input tiles over its units, one GEMM per
    transform point, and ``G'^T dU G`` of the total is the gradient.

    Parameters
    ----------
    x : ndarray, ``problem.x_shape``
        The forward input.
    gy : ndarray, ``problem.out_shape``
        Gradient for the forward output.
    problem : ConvProblem
        The forward problem (one this backend supports).

    Returns
    -------
    ndarray, ``problem.w_shape``

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 6), (1, 1, 3), "float64")
    >>> weight_gradient(np.arange(6.0).reshape(1, 1, 6), np.ones((1, 1, 4)), p)
    array([[[ 6., 10., 14.]]])
    """
    _compiled.bind_blas(_winograd)
    p = plan(problem)
    threads = _config.get_num_threads()
    xb = _blocked(x, problem.x_shape, problem.dtype, p, threads)
    gyb = _blocked(gy, problem.out_shape, problem.dtype, p, threads)
    at = _matrices(p.transforms, "at")
    args = (xb, gyb, *_matrices(p.transforms, "bt"), at[0].T.copy(), at[1].T.copy(),
            (p.points, problem.groups, problem.out_channels // problem.groups, problem.w_shape[1]),
            p.tiles, _pad_before(problem), p.positions, np.zeros(1, np.intp))
    parts = _workers.run(_weight_worker, args, p.workers, threads)
    du = parts[0]
    for part in parts[1:]:
        du += part
    gk = np.kron(p.transforms[0].g, p.transforms[1].g).astype(problem.dtype)
    with blas_threads(1):
        dw = gk.T @ du.reshape(p.points, -1)
    return np.ascontiguousarray(dw.T).reshape(problem.w_shape)


def _weight_worker(xb, gyb, bt_h, bt_w, a_h, a_w, du_shape, tiles, pad, positions, counter):
    du = np.zeros(du_shape, xb.dtype)
    scratch = _outputs.empty((_winograd.scratch_size(bt_h.shape[0], bt_w.shape[0], xb.shape[1],
                                                     gyb.shape[1], positions * xb.shape[4]),),
                             xb.dtype)
    _winograd.weight_gradient(xb, gyb, du, scratch, bt_h, bt_w, a_h, a_w, tiles, pad, positions,
                              counter)
    return du


def _nchw(shape):
    return tuple(shape[:2]) + _as_2d(tuple(shape[2:]))


def _pad_before(problem):
    pad = tuple(p[0] for p in problem.padding)
    return pad if len(pad) == 2 else (0,) + pad


def _matrices(transforms, name):
    return tuple(np.ascontiguousarray(getattr(t, name)) for t in transforms)
