"""im2col + GEMM: lower the correlation to matrix products on BLAS.

Two ways to lay out the lowered input, both built by the Cython kernels of
:mod:`fastconv._im2col` straight from the unpadded input:

``rows`` (the fast path)
    A block of images (or of rows of one image) is copied channels-last,
    then each output position's receptive field becomes one contiguous *row*
    of a row matrix (a few long memcpys).  When the stride along the first
    spatial axis (A) is 1, the A axis is not expanded at all: kernel tap
    ``ka`` along A is the same row matrix shifted by ``ka * dilation`` rows
    along A, so ``K_A`` GEMMs accumulate in BLAS (beta = 1) on a matrix
    ``K_A`` times smaller than full im2col (3-5x less copying for the usual
    layers, 2-3x faster for single-channel images).  BLAS is called
    directly, through the routines scipy exports, in whichever orientation
    is faster: channels-last ``(positions, O)`` for few output channels,
    then transposed into ``out``, or ``(O, positions)`` written straight
    into ``out`` when a block is one image.
``lowered`` (few input channels)
    Where the rows path's GEMMs would be shallow (row length below
    :data:`LOWERED_MAX_ROW_DEPTH`: conv1 of a CIFAR network, single-channel
    images, 1-d signals), each worker lowers one image (or whole output rows
    of one) into a full-depth column matrix that stays in its cache and
    multiplies it straight into ``out`` (and adds an optional bias there),
    taking units from an atomic counter inside one nogil call.
``columns`` (the general fallback)
    Classic im2col, ``(C*K) x (images*P)`` from NCHW, and numpy ``matmul``;
    used where a single row of the output along A would not fit the
    workspace cap (it can split inside a row) or a dimension outgrows BLAS's
    32-bit ints.  :func:`im2col` / :func:`col2im` expose its layout for the
    gradient code.

Gradients: :func:`weight_gradient` and :func:`input_gradient` run a layer's
backward pass as GEMMs on the same lowering (see the section at the end);
``fastconv.nn.grad`` calls them where they pay.

Threads: with a budget of T > 1 and enough blocks, T workers (this thread
and T-1 pooled helpers) take blocks in turn, each doing its own copies and
single-threaded GEMMs, so the copies run in parallel too (up to 30 % faster
than one thread of copies feeding a T-thread BLAS).  Otherwise one thread
runs the blocks and BLAS gets the budget.  OpenMP is not used: parallel
copies between threaded GEMMs fight OpenBLAS's spinning workers (measured
2-6x slower).  Every kernel releases the GIL.

Scratch stays under :func:`fastconv._config.get_workspace_bytes` (all
workers together) and near a cache-friendly size, whatever the batch or
image size.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, replace
from functools import lru_cache

import numpy as np

from .. import _config, _outputs
from .._config import blas_threads
from ..problem import FAST_DTYPES
from . import _compiled, _workers

NAME = "im2col"
#: correlate() takes ``bias`` and adds it while each block of the result is in cache
FUSED_BIAS = True

_im2col, UNAVAILABLE_REASON = _compiled.load("_im2col")

#: scratch per block the planner aims for (bytes) when one thread runs the blocks and
#: BLAS gets the thread budget: large enough for GEMMs that thread well
TARGET_BLOCK_BYTES = 8 << 20
#: scratch per block when the blocks are shared out between workers (one thread of
#: BLAS each): small enough that a block stays in its core's cache
PARALLEL_BLOCK_BYTES = 2 << 20
#: workers are used only when each gets at least this many blocks (so that the
#: last, uneven ones do not leave a core idle for long); blocks are cut finer
#: for that, down to MIN_BLOCK_BYTES
MIN_BLOCKS_PER_WORKER = 2
MIN_BLOCK_BYTES = 256 << 10
#: ... and blocks grow past PARALLEL_BLOCK_BYTES to give each GEMM this many rows
MIN_GEMM_ROWS = 768
#: a block split along A reads ``extra_rows`` rows beyond its own for the shifted
#: taps: it grows (within the cap) to at least this many output rows per extra row
SHIFT_ROWS_PER_EXTRA = 4
#: workers never outnumber the cores, whatever the thread budget says
CPUS = os.cpu_count() or 1
#: from this many output positions per image, blocks are single images written
#: straight into ``out`` (no reordering copy)
PER_IMAGE_MIN_POSITIONS = 1024
#: the A axis is left unexpanded (shifted GEMMs) when each GEMM still reduces over
#: at least this many products: measured faster everywhere here (conv1's 15 included,
#: 1.5-3x for single-channel images), so 1; a knob for tests and odd machines
SHIFT_MIN_DEPTH = 1
#: for at most this many output channels per group, OpenBLAS runs the GEMM 5-20 %
#: faster with its (positions, O) result channels-last, which then costs a
#: transpose into ``out``: worth it from this many products per output
CHANNELS_LAST_MAX_CHANNELS = 64
CHANNELS_LAST_MIN_DEPTH = 256
#: where the rows path's GEMMs would reduce over fewer products than this per group
#: (few input channels: conv1's 3 channels give 15), the ``lowered`` path runs instead:
#: full-depth column blocks built in cache and multiplied straight into ``out``
#: (conv1: 75-deep GEMMs at ~125 GFLOP/s a thread against ~46 for 15-deep).  Measured
#: 1.3-6x faster up to row depth 48 (single channels, 1-d, 3-8 channels, 16ch 3x3),
#: 0.6-0.85x from 80 (16ch 5x5, 32ch 3x3, the ResNet layers, CIFAR conv2)
LOWERED_MAX_ROW_DEPTH = 64
#: column matrix per unit of the lowered path: one image, or whole output rows of one
#: image, of about this size, so that it is still in cache when BLAS reads it
LOWERED_BLOCK_BYTES = 512 << 10


def available() -> bool:
    return _im2col is not None


def supports(problem) -> bool:
    return problem.dtype in FAST_DTYPES and 1 <= problem.ndim <= 3


def cost(problem) -> float:
    from .. import costs
    return costs.estimate(NAME, problem)


# ---------------------------------------------------------------- plans

@dataclass(frozen=True)
class RowsPlan:
    """Channels-last blocks: see the module docstring."""

    x4: tuple          # input viewed as (N, C, A, S), S = H2 * W2
    inner: tuple       # (H2, W2)
    geometry: tuple    # (kernel, stride, dilation, pad, out) along (A, H2, W2), as im2row sees it
    taps: int          # GEMMs per group: K_A when the A axis is shifted, else 1
    channels_last: bool  # GEMM result as (positions, O), BLAS's faster orientation
    dilation_a: int    # row shift between taps, in rows along A
    extra_rows: int    # rows along A a block reads beyond its outputs (shifted taps)
    weights: tuple     # transpose and shape that arrange w as (taps, G, Kg, Og)
    depth: int         # row length G * Kg
    inner_positions: int
    out_channels: int
    itemsize: int
    images: int        # images per block
    a_rows: int        # output rows along A per block
    workspace: int     # bytes of one worker's scratch
    workers: int       # threads sharing the blocks (one BLAS thread each), or 1

    @property
    def blocks(self) -> list:
        """(first image, images, first output row along A, rows) of every block."""
        n, out_rows = self.x4[0], self.geometry[4][0] - self.extra_rows
        return [(b0, min(self.images, n - b0), a0, min(self.a_rows, out_rows - a0))
                for b0 in range(0, n, self.images) for a0 in range(0, out_rows, self.a_rows)]


@dataclass(frozen=True)
class ColumnsPlan:
    """NCHW column matrix, blocks of whole images or position ranges of one image."""

    x5: tuple          # input shape (N, C, D, H, W)
    geometry: tuple    # (kernel, stride, dilation, pad, out), each (d, h, w)
    rows: int          # C * K
    positions: int     # P
    images: int
    span: int          # positions per block (P unless one image is split)
    workspace: int
    workers: int = 1   # always serial: BLAS gets the thread budget


@dataclass(frozen=True)
class LoweredPlan:
    """Units of ``span`` output positions of one image, lowered in cache and multiplied
    straight into ``out`` (see :func:`fastconv._im2col.lowered_gemm`)."""

    x5: tuple          # input shape (N, C, D, H, W)
    geometry: tuple    # (kernel, stride, dilation, pad, out), each (d, h, w)
    rows: int          # C * K
    positions: int     # P
    span: int          # positions per unit: P, or whole output rows
    workspace: int     # bytes of one worker's scratch
    workers: int       # threads taking units (one BLAS thread each), or 1

    @property
    def units(self) -> int:
        return self.x5[0] * -(-self.positions // self.span)


def _pad3(values, fill, layout):
    """Spread per-axis values onto (A, H2, W2): 1-d -> (w, -, -), 2-d -> (h, -, w)."""
    values = tuple(values)
    if layout == 1:
        return (values[0], fill, fill)
    if layout == 2:
        return (values[0], fill, values[1])
    return values


def _lead3(values, fill):
    return (fill,) * (3 - len(values)) + tuple(values)


@lru_cache(maxsize=256)
def plan(problem, workspace: int, threads: int = 1, min_depth: int | None = None):
    """How :func:`correlate` cuts ``problem`` into blocks, for a workspace cap and budget.

    With ``threads > 1`` and enough work the blocks are shared out between
    ``workers`` threads, each with one BLAS thread and ``workspace // workers``
    bytes of scratch; otherwise one thread runs them and BLAS gets the budget.
    The A axis is shifted (not expanded) from rows of ``min_depth`` products
    (default :data:`SHIFT_MIN_DEPTH`).

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((128, 64, 12, 12), (64, 64, 5, 5), "float32", padding=2)
    >>> blocks = plan(p, 256 << 20, threads=2)
    >>> type(blocks).__name__, blocks.taps, blocks.workers
    ('RowsPlan', 5, 2)
    """
    layout = _rows_layout(problem, SHIFT_MIN_DEPTH if min_depth is None else min_depth)
    if min_depth is None and layout.depth // problem.groups < LOWERED_MAX_ROW_DEPTH:
        lowered = _lowered_plan(problem, workspace, threads)
        if lowered is not None:
            return lowered
    if threads > 1:
        shared = _rows_plan(layout, workspace // threads, PARALLEL_BLOCK_BYTES, threads)
        if shared is not None:
            return shared
    rows = _rows_plan(layout, workspace, TARGET_BLOCK_BYTES, 1)
    return rows if rows is not None else _columns_plan(problem, workspace)


# w viewed as (g, og, cg, ka, kh, kw) -> (taps, g, kg, og) or (taps, g, og, kg), kg in the
# row matrix's (ka, kh, kw, cg) order; keyed by (A axis shifted, channels last)
_WEIGHT_ORDER = {(True, True): (3, 0, 4, 5, 2, 1), (True, False): (3, 0, 1, 4, 5, 2),
                 (False, True): (0, 3, 4, 5, 2, 1), (False, False): (0, 1, 3, 4, 5, 2)}


def _rows_layout(problem, min_depth) -> RowsPlan:
    """The rows path's geometry for ``problem``, before any blocking (one block of
    everything, which the planner then cuts)."""
    d, (n, c), item = problem.ndim, problem.x_shape[:2], problem.dtype.itemsize
    o, g = problem.out_channels, problem.groups
    cg = c // g
    size, kernel, stride, dilation, out = (
        _pad3(v, 1, d) for v in (problem.spatial, problem.kernel, problem.stride,
                                 problem.dilation, problem.out_spatial))
    pad = _pad3(tuple(p[0] for p in problem.padding), 0, d)
    inner_taps = kernel[1] * kernel[2]
    shift = stride[0] == 1 and kernel[0] > 1 and inner_taps * cg >= min_depth
    # the orientation BLAS runs faster for few output channels costs a transpose
    # of the output: worth it only when each output sums enough products
    channels_last = (o // g <= CHANNELS_LAST_MAX_CHANNELS
                     and cg * math.prod(kernel) >= CHANNELS_LAST_MIN_DEPTH)
    if shift:  # im2row sees the A axis as kernel 1: one row per padded input row
        extra = (kernel[0] - 1) * dilation[0]
        geometry = ((1, kernel[1], kernel[2]), (1, stride[1], stride[2]),
                    (1, dilation[1], dilation[2]), pad, (out[0] + extra, out[1], out[2]))
        taps, kg = kernel[0], inner_taps * cg
    else:
        extra, geometry = 0, (kernel, stride, dilation, pad, out)
        taps, kg = 1, math.prod(kernel) * cg
    weights = (_WEIGHT_ORDER[shift, channels_last],
               (taps, g, kg, o // g) if channels_last else (taps, g, o // g, kg))
    return RowsPlan(
        x4=(n, c, size[0], size[1] * size[2]), inner=(size[1], size[2]), geometry=geometry,
        taps=taps, channels_last=channels_last, dilation_a=dilation[0], extra_rows=extra,
        weights=weights, depth=g * kg, inner_positions=out[1] * out[2], out_channels=o,
        itemsize=item, images=max(n, 1), a_rows=max(out[0], 1), workspace=0, workers=1)


def _scratch(p: RowsPlan, images: int, a_rows: int) -> int:
    """Bytes one worker needs for blocks of ``images`` x ``a_rows`` output rows."""
    n, c, a_size, plane = p.x4
    o, pin = p.out_channels, p.inner_positions
    k, s, dl = (v[0] for v in p.geometry[:3])
    total = (a_rows + p.extra_rows) * images * pin * p.depth  # the row matrix
    if c > 1 or images > 1:  # the channels-last slab
        slab_rows = min(a_size, (a_rows + p.extra_rows - 1) * s + (k - 1) * dl + 1)
        total += slab_rows * images * plane * c
    if images > 1 or (p.channels_last and o > 1):  # the GEMM result, before it moves to out
        total += o * a_rows * images * pin
    return total * p.itemsize


def _rows_plan(layout, workspace, target, threads):
    """``layout`` cut into blocks of about ``target`` bytes, at most ``workspace`` per
    worker; None where one row along A does not fit (or, with several threads, where
    there is too little work to share out)."""
    n, out_rows, pin = layout.x4[0], layout.a_rows, layout.inner_positions
    per_image = out_rows * pin

    def cut(budget, least_rows=1):
        """(images, rows along A) per block: as much as fits ``budget``, in even shares
        of at least ``least_rows`` output positions where the budget allows."""
        if per_image < PER_IMAGE_MIN_POSITIONS and n > 1:
            images = _largest(lambda i: _scratch(layout, i, out_rows) <= budget, n)
            if images > 1:
                return _balanced(n, images, threads, least=-(-least_rows // per_image)), out_rows
        a_rows = _largest(lambda r: _scratch(layout, 1, r) <= budget, out_rows)
        least = max(-(-least_rows // max(pin, 1)), SHIFT_ROWS_PER_EXTRA * layout.extra_rows)
        return 1, _balanced(out_rows, a_rows, threads, repeats=n, least=least)

    def count(images, a_rows):
        return -(-n // images) * -(-out_rows // a_rows)

    # blocks need enough rows for BLAS's best rate (shared out: one BLAS thread each),
    # and, split along A, enough to make the rows shifted taps read twice negligible
    least_rows = MIN_GEMM_ROWS if threads > 1 else 1
    if per_image >= least_rows or n == 1:
        wide_rows = max(-(-least_rows // max(pin, 1)), SHIFT_ROWS_PER_EXTRA * layout.extra_rows)
        wide = _scratch(layout, 1, min(out_rows, wide_rows))
    else:
        wide = _scratch(layout, min(n, -(-least_rows // max(per_image, 1))), out_rows)
    budget = min(max(min(target, workspace), wide), workspace)
    images, a_rows = cut(budget, least_rows)
    if threads > 1:
        wanted = MIN_BLOCKS_PER_WORKER * threads
        if count(images, a_rows) < wanted:  # cut finer, not below MIN_BLOCK_BYTES
            images, a_rows = cut(max(budget * count(images, a_rows) // wanted, MIN_BLOCK_BYTES))
        if count(images, a_rows) < wanted:
            return None
    scratch = _scratch(layout, images, a_rows)
    if scratch > workspace:
        return None  # even one row along A is too big: the columns path splits rows
    if max(layout.depth, per_image, a_rows * images * pin) > _im2col.BLAS_MAX_DIM:
        return None
    return replace(layout, images=images, a_rows=a_rows, workspace=scratch, workers=threads)


def _balanced(total, most, workers, repeats=1, least=1):
    """Block size for ``repeats`` runs of ``total`` items: at most ``most``, even blocks.

    With several workers, the block count per run (from the fewest, at most
    ``workers`` more, keeping blocks of at least ``least``) that leaves the
    busiest worker the fewest items.
    """
    fewest = -(-total // max(most, 1))
    count = fewest
    if workers > 1:
        finest = max(fewest, total // max(least, 1))
        count = min(range(fewest, min(fewest + workers, finest) + 1),
                    key=lambda k: -(-repeats * k // workers) * -(-total // k))
    return -(-total // count)


def _largest(fits, upper):
    """Largest r in [1, upper] with fits(r) (fits is monotone); 1 if none."""
    lo, hi = 1, upper
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def _lowered_plan(problem, workspace, threads):
    """Units of whole images (or of whole output rows of one image, where an image's
    column matrix outgrows :data:`LOWERED_BLOCK_BYTES`); None where one output row
    does not fit the workspace or a dimension outgrows BLAS's ints."""
    n = problem.batch
    rows = problem.in_channels * math.prod(problem.kernel)
    positions = math.prod(problem.out_spatial)
    width = problem.out_spatial[-1]
    column = rows * problem.dtype.itemsize
    if max(positions, rows) > _im2col.BLAS_MAX_DIM or positions == 0:
        return None
    span = positions
    if span * column > LOWERED_BLOCK_BYTES:  # whole output rows: the fast lowering
        span = min(max(LOWERED_BLOCK_BYTES // column // width, 1) * width, positions)
    units = n * -(-positions // span)
    workers = threads if threads > 1 and units >= MIN_BLOCKS_PER_WORKER * threads else 1
    while span > width and span * column * workers > workspace:
        span = max((span // width // 2) * width, width)
    if span * column * workers > workspace:
        return None
    return LoweredPlan(x5=_x5(problem), geometry=_columns_geometry(problem), rows=rows,
                       positions=positions, span=span, workspace=span * column,
                       workers=workers)


def _columns_plan(problem, workspace):
    n, c = problem.x_shape[:2]
    o = problem.out_channels
    rows = c * math.prod(problem.kernel)
    positions = math.prod(problem.out_spatial)
    column_bytes = max((rows + o) * problem.dtype.itemsize, 1)  # columns + GEMM result
    cap = max(workspace // column_bytes, 1)
    columns = min(cap, max(TARGET_BLOCK_BYTES // column_bytes, positions))
    if columns >= positions:
        images, span = min(max(columns // max(positions, 1), 1), max(n, 1)), positions
    else:  # one image is larger than the cap: split it by output positions
        images, span = 1, columns
    return ColumnsPlan(
        x5=(n, c) + _lead3(problem.spatial, 1),
        geometry=(_lead3(problem.kernel, 1), _lead3(problem.stride, 1),
                  _lead3(problem.dilation, 1), _lead3(tuple(p[0] for p in problem.padding), 0),
                  _lead3(problem.out_spatial, 1)),
        rows=rows, positions=positions, images=images, span=span,
        workspace=images * span * column_bytes)


def work(problem, workspace=None, threads=None) -> dict:
    """What :func:`correlate` does besides multiply-adds, for cost models.

    Returns ``copied`` (elements the lowering writes: channels-last input,
    row or column matrix, output moves), ``accumulated`` (output elements
    the GEMMs write: once per kernel tap where each tap's GEMM adds into the
    output), ``gemm_calls`` (BLAS calls),
    ``blocks``, ``workers`` (threads sharing the blocks, each with one
    BLAS thread; 1 when BLAS gets the whole budget) and ``dispatches``
    (calls from Python into the kernels, each some microseconds: one per
    block, but one per worker on the lowered path, whose blocks and GEMMs
    all run inside that call).

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 6), (1, 1, 3), "float64")
    >>> work(p, threads=1)    # few channels: the lowered path, one full-depth GEMM
    {'copied': 12, 'accumulated': 4, 'gemm_calls': 1, 'blocks': 1, 'workers': 1, 'dispatches': 1}
    >>> p = make_problem((2, 64, 6), (8, 64, 3), "float64")
    >>> work(p, threads=1)    # the rows path, A axis shifted: one GEMM per tap
    {'copied': 1600, 'accumulated': 192, 'gemm_calls': 3, 'blocks': 1, 'workers': 1, 'dispatches': 1}
    """
    if threads is None:
        threads = min(_config.get_num_threads(), CPUS)
    p = plan(problem, _config.get_workspace_bytes() if workspace is None else workspace, threads)
    n, o = problem.batch, problem.out_channels
    outputs = n * o * math.prod(problem.out_spatial)
    if isinstance(p, LoweredPlan):
        return {"copied": p.rows * n * p.positions, "accumulated": outputs,
                "gemm_calls": p.units * problem.groups,
                "blocks": p.units, "workers": p.workers, "dispatches": p.workers}
    if isinstance(p, ColumnsPlan):
        blocks = -(-n // p.images) * -(-p.positions // p.span)
        return {"copied": p.rows * n * p.positions + outputs, "accumulated": outputs,
                "gemm_calls": blocks,
                "blocks": blocks, "workers": 1, "dispatches": blocks}
    copied = sum((na + p.extra_rows) * nb * p.inner_positions for _, nb, _, na in p.blocks)
    copied *= p.depth
    if p.x4[1] > 1 or p.images > 1:
        copied += math.prod(p.x4)
    if p.images > 1 or (p.channels_last and o > 1):
        copied += outputs
    blocks = len(p.blocks)
    return {"copied": copied, "accumulated": outputs * p.taps,
            "gemm_calls": blocks * p.taps * problem.groups, "blocks": blocks,
            "workers": p.workers, "dispatches": blocks}


# ---------------------------------------------------------------- correlate

def correlate(x, w, problem, out=None, bias=None):
    """Canonical correlation by im2col + GEMM.

    ``bias`` (one value per output channel), when given, is added to the
    result: the lowered path fuses it into each block while the block is in
    cache (a separate pass over a large output costs as much as a third of
    conv1's time); the other paths add it afterwards.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 5), (1, 1, 2), "float64")
    >>> correlate(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)), p)
    array([[[1., 3., 5., 7.]]])
    """
    _compiled.bind_blas(_im2col)
    threads = min(_config.get_num_threads(), CPUS)
    blocks = plan(problem, _config.get_workspace_bytes(), threads)
    result = out if out is not None and out.flags.c_contiguous and out.flags.writeable else \
        np.empty(problem.out_shape, problem.dtype)
    if result.size:
        x = np.ascontiguousarray(x, dtype=problem.dtype)
        w = np.ascontiguousarray(w, dtype=problem.dtype)
        out3 = result.reshape(problem.batch, problem.out_channels, -1)
        if problem.w_shape[1] == 0 or 0 in problem.kernel:
            out3.fill(0)
        elif isinstance(blocks, LoweredPlan):
            _run_lowered(x, w, out3, problem, blocks, threads, bias)
            bias = None
        elif isinstance(blocks, ColumnsPlan):
            with blas_threads(threads):
                _run_columns(x, w, out3, problem, blocks)
        else:
            _run_rows(x, w, out3, problem, blocks, threads)
        if bias is not None:
            out3 += np.asarray(bias, dtype=problem.dtype).reshape(-1, 1)
    if out is not None and result is not out:
        out[...] = result
        return out
    return result


def _arrange_weights(w, problem, p):
    """w as (taps, G, Kg, Og) or (taps, G, Og, Kg), Kg in the row matrix's order."""
    o, cg, g = problem.out_channels, problem.w_shape[1], problem.groups
    kernel = _pad3(problem.kernel, 1, problem.ndim)
    w6 = w.reshape((g, o // g, cg) + kernel)
    order, shape = p.weights
    return np.ascontiguousarray(w6.transpose(order)).reshape(shape)


def _run_rows(x, w, out3, problem, p, threads):
    """Run every block: on ``p.workers`` threads with one BLAS thread each, or on
    this thread with BLAS getting the budget."""
    todo = iter(p.blocks)  # a list iterator hands out each block once, thread-safely
    _workers.run(_rows_worker, (x.reshape(p.x4), _arrange_weights(w, problem, p), out3, problem,
                                p, todo), p.workers, threads)


def _rows_worker(x4, weights, out3, problem, p, todo):
    """Lower and multiply blocks taken from ``todo`` until none is left."""
    buffer = _outputs.empty((p.workspace // problem.dtype.itemsize,), problem.dtype)
    pin = p.inner_positions
    for b0, nb, oa0, na in todo:
        rows, free = _lower_block(x4, buffer, problem, p, b0, nb, oa0, na)
        _gemm_into_out(rows, weights, free, out3, b0, nb, oa0 * pin, na * nb * pin, pin,
                       p.dilation_a * nb * pin, p.channels_last)


def _lower_block(x4, buffer, problem, p, b0, nb, oa0, na):
    """The row matrix of one block, built in ``buffer``; returns it and the unused rest."""
    n, c, a_size, plane = p.x4
    pin = p.inner_positions
    kernel, stride, dilation, pad, out_rows = p.geometry
    nr = na + p.extra_rows  # rows along A that im2row fills
    lo = max(oa0 * stride[0] - pad[0], 0)
    hi = min((oa0 + nr - 1) * stride[0] + (kernel[0] - 1) * dilation[0] - pad[0] + 1, a_size)
    hi = max(hi, lo)
    free = buffer
    if c == 1 and nb == 1:
        slab = x4[b0, 0, lo:hi].reshape((hi - lo, 1) + p.inner + (1,))
    else:
        size = (hi - lo) * nb * plane * c
        slab = free[:size].reshape((hi - lo, nb) + p.inner + (c,))
        free = free[size:]
        _im2col.to_channels_last(x4, slab.reshape(hi - lo, nb, plane, c), b0, lo)
    count = nr * nb * pin
    rows = free[:count * p.depth].reshape(count, p.depth)
    _im2col.im2row(slab, rows, kernel, stride, dilation, pad, out_rows, a_size, lo,
                   groups=problem.groups, p0=oa0 * pin, npos=nr * pin)
    return rows, free[count * p.depth:]


def _gemm_into_out(rows, weights, free, out3, b0, nb, p0, m, pin, shift, channels_last):
    """GEMM of one block, straight into ``out`` when the layouts allow, else via ``free``."""
    o = out3.shape[1]
    if channels_last and o == 1 and nb == 1:  # one channel: both layouts coincide
        _im2col.gemm_rows(rows, weights, out3[b0, 0, p0:p0 + m, None], m, shift)
    elif channels_last:
        block = free[:m * o].reshape(m, o)
        _im2col.gemm_rows(rows, weights, block, m, shift)
        _im2col.rows_to_output(block, out3, b0, nb, p0, pin)
    elif nb == 1:  # out3[b0] is (O, P): its rows are ldc = P apart
        _im2col.gemm_rows(rows, weights, out3[b0, :, p0:p0 + m], m, shift, channels_last=False)
    else:
        block = free[:m * o].reshape(o, m)
        _im2col.gemm_rows(rows, weights, block, m, shift, channels_last=False)
        _im2col.columns_to_output(block, out3, b0, nb, p0, pin)


def _run_lowered(x, w, out3, problem, p, threads, bias=None):
    """Every unit of a :class:`LoweredPlan`, the workers taking them from one counter."""
    g = problem.groups
    w3 = w.reshape(g, problem.out_channels // g, -1)
    if bias is not None:
        bias = np.ascontiguousarray(bias, dtype=problem.dtype).reshape(problem.out_channels)
    counter = np.zeros(1, np.intp)
    _workers.run(_lowered_worker, (x.reshape(p.x5), w3, out3, problem, p, counter, bias),
                 p.workers, threads)


def _lowered_worker(x5, w3, out3, problem, p, counter, bias):
    scratch = np.empty(p.workspace // problem.dtype.itemsize, problem.dtype)
    _im2col.lowered_gemm(x5, w3, out3, scratch, *p.geometry, p.span, counter, bias)


def _run_columns(x, w, out3, problem, p):
    n, o, positions = out3.shape
    g = problem.groups
    x5 = x.reshape(p.x5)
    w3 = w.reshape(g, o // g, -1)
    block_columns = p.images * p.span
    buffer = np.empty(p.rows * block_columns, x5.dtype)
    product = np.empty(o * block_columns, x5.dtype)
    for b0, nb, p0, npos, cols in _column_blocks(x5, buffer, p, n, positions):
        ncols = nb * npos
        prod = product[:o * ncols].reshape(g, -1, ncols)
        np.matmul(w3, cols.reshape(g, -1, ncols), out=prod)
        out3[b0:b0 + nb, :, p0:p0 + npos] = prod.reshape(o, nb, npos).transpose(1, 0, 2)


def _column_blocks(x5, buffer, p, n, positions):
    """``(b0, nb, p0, npos, cols)`` per block of a columns plan, ``cols`` lowered in ``buffer``."""
    for b0 in range(0, n, p.images):
        nb = min(p.images, n - b0)
        for p0 in range(0, positions, p.span):
            npos = min(p.span, positions - p0)
            cols = buffer[:p.rows * nb * npos].reshape(p.rows, nb * npos)
            _im2col.im2col(x5, cols, *p.geometry, b0=b0, nb=nb, p0=p0, npos=npos)
            yield b0, nb, p0, npos, cols


# ---------------------------------------------------------------- BLAS


# ---------------------------------------------------------------- im2col / col2im for gradients

def _columns_geometry(problem):
    return (_lead3(problem.kernel, 1), _lead3(problem.stride, 1), _lead3(problem.dilation, 1),
            _lead3(tuple(p[0] for p in problem.padding), 0), _lead3(problem.out_spatial, 1))


def _x5(problem):
    return problem.x_shape[:2] + _lead3(problem.spatial, 1)


def im2col(x, problem, out=None):
    """The full column matrix of ``x`` for ``problem``: ``(C*K, N*P)``.

    Row ``c*K + tap`` (taps in C order), column ``b*P + p``: the classic
    layout the gradient code builds on.  ``out`` (C-contiguous) is
    overwritten when given.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> im2col(np.arange(4.0).reshape(1, 1, 4), p)
    array([[0., 1., 2.],
           [1., 2., 3.]])
    """
    x5 = np.ascontiguousarray(x, dtype=problem.dtype).reshape(_x5(problem))
    shape = (problem.in_channels * math.prod(problem.kernel),
             problem.batch * math.prod(problem.out_spatial))
    cols = np.empty(shape, problem.dtype) if out is None else out
    _im2col.im2col(x5, cols, *_columns_geometry(problem))
    return cols


def col2im(cols, problem, out=None):
    """Adjoint of :func:`im2col`: scatter-add columns into an input-shaped array.

    ``out`` (shape ``problem.x_shape``, C-contiguous) is accumulated into;
    without it a zero array is made.  Entries that came from padding are
    dropped.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> col2im(np.ones((2, 3)), p)
    array([[[1., 2., 2., 1.]]])
    """
    result = np.zeros(problem.x_shape, problem.dtype) if out is None else out
    if not result.flags.c_contiguous:
        raise ValueError("out must be C-contiguous")
    cols = np.ascontiguousarray(cols, dtype=problem.dtype)
    _im2col.col2im(cols, result.reshape(_x5(problem)), *_columns_geometry(problem))
    return result


# ---------------------------------------------------------------- gradients by GEMM
#
# The layers' backward pass as matrix products on the same lowering, rather
# than as correlations with swapped roles (a huge kernel and a tiny output, or
# a handful of output channels, which no backend runs well):
#   weight: dW_g (Og x Kg) = sum over blocks of G_g (Og x m) @ R_g (m x Kg), R the
#           forward's row matrix (shifted along A as in the forward), accumulated
#           per worker and summed;
#   input:  cols_g = W_g^T G_g, then col2im (its adjoint scatter-add), in blocks of
#           whole images that workers share (images never overlap).

#: the weight gradient's GEMM has the row length Kg as a dimension of its small
#: (Og x Kg) result: shifting A (Kg / K_A) is worth its smaller copy only from this
#: row length (conv1's 15 measured 1.5x slower shifted than unshifted 75)
WEIGHT_SHIFT_MIN_DEPTH = 64
#: scratch per block of the input gradient (column matrix + gathered output gradient):
#: it is written by BLAS and read straight back by col2im, so it should stay in cache
INPUT_BLOCK_BYTES = 1 << 20
#: ... but each block's GEMM gets at least this many columns where the workspace allows
INPUT_MIN_COLUMNS = 512


def weight_gradient(x, gy, problem):
    """Gradient of the correlation ``problem`` for its kernel, by GEMM over its row matrix.

    ``dW[o, l, m] = sum_{b, j} G[b, o, j] xpad[b, g(o)*Cg + l, j*s + m*d]``: the
    forward's lowering of ``x``, block by block, times the output gradient.

    Parameters
    ----------
    x : ndarray, ``problem.x_shape``
        The forward input.
    gy : ndarray, ``problem.out_shape``
        Gradient of the loss for the forward output.
    problem : ConvProblem
        The forward correlation.

    Returns
    -------
    ndarray, ``problem.w_shape``

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> weight_gradient(np.arange(4.0).reshape(1, 1, 4), np.ones((1, 1, 3)), p)
    array([[[3., 6.]]])
    """
    _compiled.bind_blas(_im2col)
    dtype = problem.dtype
    if 0 in problem.w_shape or 0 in problem.out_shape:
        return np.zeros(problem.w_shape, dtype)
    threads = min(_config.get_num_threads(), CPUS)
    x = np.ascontiguousarray(x, dtype=dtype)
    gy3 = np.ascontiguousarray(gy, dtype=dtype).reshape(problem.batch, problem.out_channels, -1)
    p = plan(problem, _config.get_workspace_bytes(), threads, WEIGHT_SHIFT_MIN_DEPTH)
    if isinstance(p, ColumnsPlan):
        with blas_threads(threads):
            return _weight_columns(x, gy3, problem, p)
    parts = _workers.run(_weight_rows_worker, (x.reshape(p.x4), gy3, problem, p, iter(p.blocks)),
                         p.workers, threads)
    acc = parts[0]
    for part in parts[1:]:
        acc += part
    g, o, cg = problem.groups, problem.out_channels, problem.w_shape[1]
    order = _WEIGHT_ORDER[p.taps > 1, False]
    w6 = (g, o // g, cg) + _pad3(problem.kernel, 1, problem.ndim)
    acc = acc.reshape(tuple(w6[i] for i in order)).transpose(np.argsort(order))
    return np.ascontiguousarray(acc).reshape(problem.w_shape)


def _weight_rows_worker(x4, gy3, problem, p, todo):
    """Accumulate the weight gradient of the blocks taken from ``todo``: (taps, G, Og, Kg)."""
    g, o, pin = problem.groups, problem.out_channels, p.inner_positions
    acc = np.zeros((p.taps, g, o // g, p.depth // g), problem.dtype)
    buffer = _outputs.empty((p.workspace // problem.dtype.itemsize,), problem.dtype)
    for b0, nb, oa0, na in todo:
        rows, free = _lower_block(x4, buffer, problem, p, b0, nb, oa0, na)
        m, p0 = na * nb * pin, oa0 * pin
        if nb == 1:  # one image's positions are a run of its (O, P) gradient
            grad = gy3[b0, :, p0:p0 + m]
        else:
            grad = free[:o * m].reshape(o, m)
            _im2col.gather_columns(gy3, grad, b0, nb, p0, pin)
        _im2col.gemm_weight(rows, grad, acc, m, p.dilation_a * nb * pin)
    return acc


def _weight_columns(x, gy3, problem, p):
    """The weight gradient on the column matrix (where one row along A outgrows the cap)."""
    n, o, positions = gy3.shape
    g = problem.groups
    acc = np.zeros((1, g, o // g, p.rows // g), problem.dtype)
    x5 = x.reshape(p.x5)
    buffer = _outputs.empty((p.workspace // problem.dtype.itemsize,), problem.dtype)
    for b0, nb, p0, npos, cols in _column_blocks(x5, buffer, p, n, positions):
        ncols = nb * npos
        if nb == 1:
            grad = gy3[b0, :, p0:p0 + npos]
        else:
            grad = buffer[p.rows * ncols:(p.rows + o) * ncols].reshape(o, ncols)
            _im2col.gather_columns(gy3, grad, b0, nb, 0, positions)
        _im2col.gemm_weight(cols, grad, acc, ncols, 0, transposed_rows=True)
    return acc.reshape(problem.w_shape)


@dataclass(frozen=True)
class InputGradientPlan:
    """Blocks of the input gradient by columns: ``images`` whole images, or position
    spans of one image; ``workers`` threads take whole-image units."""

    rows: int          # C * K
    positions: int     # P
    images: int
    span: int
    workspace: int     # bytes of one worker's scratch
    workers: int

    def units(self, n):
        """(first image, images) handed to one worker at a time."""
        return [(b0, min(self.images, n - b0)) for b0 in range(0, n, self.images)]


@lru_cache(maxsize=256)
def input_gradient_plan(problem, workspace: int, threads: int = 1) -> InputGradientPlan:
    """How :func:`input_gradient` blocks ``problem``'s input gradient.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((128, 3, 24, 24), (64, 3, 5, 5), "float32", padding=2)
    >>> blocks = input_gradient_plan(p, 256 << 20, threads=2)
    >>> blocks.rows, blocks.images, blocks.workers
    (75, 3, 2)
    """
    n, o = problem.batch, problem.out_channels
    rows = problem.in_channels * math.prod(problem.kernel)
    positions = math.prod(problem.out_spatial)
    column = (rows + o) * problem.dtype.itemsize
    workers = threads if threads > 1 and n >= MIN_BLOCKS_PER_WORKER * threads else 1
    cap = max(workspace // workers // column, 1)
    columns = min(cap, max(INPUT_BLOCK_BYTES // column, INPUT_MIN_COLUMNS))
    if columns >= positions:
        images, span = min(columns // max(positions, 1), n), positions
        if workers > 1:  # every worker gets at least MIN_BLOCKS_PER_WORKER units
            images = min(images, max(n // (MIN_BLOCKS_PER_WORKER * workers), 1))
    else:
        images, span = 1, columns
    return InputGradientPlan(rows, positions, max(images, 1), max(span, 1),
                             max(images, 1) * max(span, 1) * column, workers)


def input_gradient(gy, w, problem):
    """Gradient of the correlation ``problem`` for its input: ``col2im(W^T G)``.

    Parameters
    ----------
    gy : ndarray, ``problem.out_shape``
        Gradient of the loss for the forward output.
    w : ndarray, ``problem.w_shape``
        The forward kernel.
    problem : ConvProblem
        The forward correlation.

    Returns
    -------
    ndarray, ``problem.x_shape``
        Input positions no window read get 0.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> input_gradient(np.ones((1, 1, 3)), np.array([[[1.0, 2.0]]]), p)
    array([[[1., 3., 3., 2.]]])
    """
    _compiled.bind_blas(_im2col)
    dtype = problem.dtype
    dx = _outputs.empty(problem.x_shape, dtype)  # reused memory: no page faults
    dx.fill(0)
    if dx.size == 0 or 0 in problem.w_shape or 0 in problem.out_shape:
        return dx
    threads = min(_config.get_num_threads(), CPUS)
    p = input_gradient_plan(problem, _config.get_workspace_bytes(), threads)
    g, o = problem.groups, problem.out_channels
    gy3 = np.ascontiguousarray(gy, dtype=dtype).reshape(problem.batch, o, -1)
    w3 = np.ascontiguousarray(w, dtype=dtype).reshape(g, o // g, -1)
    todo = iter(p.units(problem.batch))
    _workers.run(_input_worker, (gy3, w3, dx.reshape(_x5(problem)), problem, p, todo),
                 p.workers, threads)
    return dx


def _input_worker(gy3, w3, dx5, problem, p, todo):
    """col2im(W^T G) of the image units taken from ``todo``, added into ``dx5``."""
    o = gy3.shape[1]
    geometry = _columns_geometry(problem)
    buffer = _outputs.empty((p.workspace // problem.dtype.itemsize,), problem.dtype)
    for b0, nb in todo:
        for p0 in range(0, p.positions, p.span):
            npos = min(p.span, p.positions - p0)
            ncols = nb * npos
            if nb == 1:
                grad = gy3[b0, :, p0:p0 + npos]
            else:
                grad = buffer[p.rows * ncols:(p.rows + o) * ncols].reshape(o, ncols)
                _im2col.gather_columns(gy3, grad, b0, nb, 0, p.positions)
            cols = buffer[:p.rows * ncols].reshape(p.rows, ncols)
            _im2col.gemm_input_columns(w3, grad, cols, ncols)
            _im2col.col2im(cols, dx5, *geometry, b0=b0, nb=nb, p0=p0, npos=npos)
