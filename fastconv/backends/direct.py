"""Direct correlation in Numba loops, no scratch memory.

Every problem (1-, 2- or 3-D) is viewed as 3-D, ``(N, C, D, H, W)`` with
leading spatial axes of size 1, so one compiled kernel per dtype serves all
dimensionalities, strides, dilations, paddings and groups.  A work item is one
output row segment ``out[b, q, plane, row, j0:j1]``; the outer ``prange``
runs over all of them, so even one single-channel 2-D image keeps every core
busy, and a long 1-D signal is cut into segments.  The kernel taps that land
on input rows (taps on padded rows are skipped) go in groups of up to four:
one vectorised loop adds ``sum_m w_m * row_m[j*s + offset_m]`` to the
segment over the columns all four reach, and each tap alone covers its own
few columns at the edges, so zero padding is never materialised.

Groups generalise to a channel map ``cmap[q, l]`` (the input channel that the
``l``-th weight slice of output channel ``q`` reads), which lets
:mod:`fastconv.backends.separable` run its 1-D passes through :func:`run`.
Tall ``(kh, 1)`` kernels (separable's column pass) get a second kernel that
computes two output rows per item from each input row it loads, and a
``(kd, 1, 1)`` kernel over whole planes runs as a tall kernel over rows of
``H*W``.
"""
from __future__ import annotations

import math
import threading
from functools import lru_cache

import numba
import numpy as np
from numba import njit, prange, uint64

from .. import _config
from ..problem import FAST_DTYPES

NAME = "direct"

#: bytes of output row one work item covers: a segment stays in L1 across taps
_SEGMENT_BYTES = 16384
#: shortest segment worth a work item of its own
_MIN_SEGMENT = 256
#: work items per thread wanted before segments get shortened for balance
_ITEMS_PER_THREAD = 8
#: multiply-adds below which waking a second thread costs more than it saves
_SERIAL_MACS = 1 << 17

# The workqueue threading layer aborts when two Python threads launch parallel
# kernels at once; the others (omp, tbb) are thread-safe.
_LAUNCH_LOCK = threading.Lock()


def available() -> bool:
    return True


def supports(problem) -> bool:
    return problem.dtype in FAST_DTYPES and 1 <= problem.ndim <= 3


def cost(problem) -> float:
    from .. import costs
    return costs.estimate(NAME, problem)


_JIT = dict(cache=True, nogil=True, fastmath={"contract"})


@njit(**_JIT)
def _tap_range(j0, j1, off, sw, width):  # pragma: no cover
    """Output columns ``[lo, hi)`` of ``[j0, j1)`` where ``0 <= j*sw + off < width``."""
    lo = j0
    if off < 0:
        lo = max(lo, (sw - 1 - off) // sw)
    hi = min(j1, (width - 1 - off) // sw + 1)
    return lo, max(lo, hi)


@njit(**_JIT)
def _axpy(dst, db, src, sb, weight, lo, hi, sw):  # pragma: no cover
    """``dst[db + j] += weight * src[sb + j*sw]`` for ``lo <= j < hi``, flat arrays."""
    # unsigned indices skip numba's negative-index wraparound, so LLVM vectorises;
    # flat arrays and offsets instead of row views avoid a reference-count
    # update per view, an atomic that every core would fight over
    if sw == 1:
        for j in range(lo, hi):
            dst[uint64(db + j)] += weight * src[uint64(sb + j)]
    else:
        for j in range(lo, hi):
            dst[uint64(db + j)] += weight * src[uint64(sb + j * sw)]


@njit(**_JIT)
def _zero(dst, db, lo, hi):  # pragma: no cover
    for j in range(lo, hi):
        dst[uint64(db + j)] = 0


@njit(**_JIT)
def _flush(dst, db, src, j0, j1, width, sw, n, init,
           s0, s1, s2, s3, o0, o1, o2, o3, w0, w1, w2, w3):  # pragma: no cover
    """Add ``n <= 4`` taps to the output segment ``dst[db + j0 : db + j1]``.

    Tap ``m`` reads the input row starting at flat index ``s_m`` at column
    ``j*sw + o_m`` with weight ``w_m``.  Fused taps cost one load and store of
    ``dst`` per element instead of one per tap; that traffic, not the
    multiplies, bounds a tap-by-tap loop.  With ``init`` the segment is
    overwritten instead of added to, which saves zeroing it first.
    """
    lo0, hi0 = _tap_range(j0, j1, o0, sw, width)
    lo1, hi1 = _tap_range(j0, j1, o1, sw, width)
    lo2, hi2 = _tap_range(j0, j1, o2, sw, width)
    lo3, hi3 = _tap_range(j0, j1, o3, sw, width)
    # [lo, hi): the columns every tap reaches, done in one fused loop
    lo, hi = lo0, hi0
    if n > 1:
        lo, hi = max(lo, lo1), min(hi, hi1)
    if n > 2:
        lo, hi = max(lo, lo2), min(hi, hi2)
    if n > 3:
        lo, hi = max(lo, lo3), min(hi, hi3)
    if sw != 1 or hi - lo < 8:
        lo = hi = j0  # too little shared: every tap on its own
    if init:
        _zero(dst, db, j0, lo)
        _zero(dst, db, max(lo, hi), j1)
    # each tap alone on its columns outside the shared range
    s0 += o0
    s1 += o1
    s2 += o2
    s3 += o3
    _axpy(dst, db, src, s0, w0, lo0, min(hi0, lo), sw)
    _axpy(dst, db, src, s0, w0, max(lo0, hi), hi0, sw)
    if n > 1:
        _axpy(dst, db, src, s1, w1, lo1, min(hi1, lo), sw)
        _axpy(dst, db, src, s1, w1, max(lo1, hi), hi1, sw)
    if n > 2:
        _axpy(dst, db, src, s2, w2, lo2, min(hi2, lo), sw)
        _axpy(dst, db, src, s2, w2, max(lo2, hi), hi2, sw)
    if n > 3:
        _axpy(dst, db, src, s3, w3, lo3, min(hi3, lo), sw)
        _axpy(dst, db, src, s3, w3, max(lo3, hi), hi3, sw)
    if hi <= lo:
        return
    if n == 1:
        if init:
            for j in range(lo, hi):
                dst[uint64(db + j)] = w0 * src[uint64(s0 + j)]
        else:
            for j in range(lo, hi):
                dst[uint64(db + j)] += w0 * src[uint64(s0 + j)]
    elif n == 2:
        if init:
            for j in range(lo, hi):
                dst[uint64(db + j)] = w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
        else:
            for j in range(lo, hi):
                dst[uint64(db + j)] += w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
    elif n == 3:
        if init:
            for j in range(lo, hi):
                dst[uint64(db + j)] = (w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
                                       + w2 * src[uint64(s2 + j)])
        else:
            for j in range(lo, hi):
                dst[uint64(db + j)] += (w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
                                        + w2 * src[uint64(s2 + j)])
    elif init:
        for j in range(lo, hi):
            dst[uint64(db + j)] = (w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
                                   + w2 * src[uint64(s2 + j)] + w3 * src[uint64(s3 + j)])
    else:
        for j in range(lo, hi):
            dst[uint64(db + j)] += (w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
                                    + w2 * src[uint64(s2 + j)] + w3 * src[uint64(s3 + j)])


@njit(parallel=True, **_JIT)
def _correlate_kernel(x, w, out, cmap, stride, dilation, pad, segment):  # pragma: no cover
    """The canonical correlation (see :func:`run`) into ``out``, ``segment`` columns per item."""
    _, nc, depth, height, width = x.shape
    nq, ncg, kd, kh, kw = w.shape
    nb, _, od, oh, ow = out.shape
    sd, sh, sw = stride[0], stride[1], stride[2]
    dd, dh, dw = dilation[0], dilation[1], dilation[2]
    pd, ph, pw = pad[0], pad[1], pad[2]
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    nseg = (ow + segment - 1) // segment
    for item in prange(nb * nq * od * oh * nseg):
        seg = item % nseg
        row = item // nseg  # flat index of the output row: ((b*nq + q)*od + p)*oh + i
        i = row % oh
        p = (row // oh) % od
        q = (row // (oh * od)) % nq
        b = row // (oh * od * nq)
        j0 = seg * segment
        j1 = min(ow, j0 + segment)
        db = row * ow
        # kernel rows that land inside the input (padding rows add nothing)
        zlo, zhi = _tap_range(0, kd, p * sd - pd, dd, depth)
        ylo, yhi = _tap_range(0, kh, i * sh - ph, dh, height)
        ntaps = ncg * (zhi - zlo) * (yhi - ylo) * kw
        if ntaps == 0:
            _zero(dst, db, j0, j1)
            continue
        # taps go in groups of at most 4, sized evenly (9 taps: 3+3+3, not 4+4+1)
        ngroups = (ntaps + 3) // 4
        small, extra = ntaps // ngroups, ntaps % ngroups
        want = small + (extra > 0)
        done = 0
        n = 0
        s0 = s1 = s2 = s3 = 0
        o0 = o1 = o2 = o3 = 0
        w0 = w1 = w2 = w3 = w[q, 0, 0, 0, 0]
        for l in range(ncg):
            c = cmap[q, l]
            for md in range(zlo, zhi):
                for mh in range(ylo, yhi):
                    start = (((b * nc + c) * depth + p * sd + md * dd - pd) * height
                             + i * sh + mh * dh - ph) * width
                    for mw in range(kw):
                        off = mw * dw - pw
                        weight = w[q, l, md, mh, mw]
                        if n == 0:
                            s0, o0, w0 = start, off, weight
                        elif n == 1:
                            s1, o1, w1 = start, off, weight
                        elif n == 2:
                            s2, o2, w2 = start, off, weight
                        else:
                            s3, o3, w3 = start, off, weight
                        n += 1
                        if n == want:
                            _flush(dst, db, src, j0, j1, width, sw, n, done == 0,
                                   s0, s1, s2, s3, o0, o1, o2, o3, w0, w1, w2, w3)
                            done += 1
                            n = 0
                            want = small + (done < extra)


@njit(**_JIT)
def _flush_pair(dst, da, db, src, j0, j1, init,
                s0, s1, s2, s3, a0, a1, a2, a3, b0, b1, b2, b3):  # pragma: no cover
    """Add 4 full-width input rows ``s`` to output rows ``da`` (weights ``a``) and ``db`` (``b``).

    Each input row loaded once feeds both outputs: a tall kernel reads half as
    many rows from L2 per output as a row-at-a-time loop.
    """
    if init:
        for j in range(j0, j1):
            v0, v1 = src[uint64(s0 + j)], src[uint64(s1 + j)]
            v2, v3 = src[uint64(s2 + j)], src[uint64(s3 + j)]
            dst[uint64(da + j)] = a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            dst[uint64(db + j)] = b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
    else:
        for j in range(j0, j1):
            v0, v1 = src[uint64(s0 + j)], src[uint64(s1 + j)]
            v2, v3 = src[uint64(s2 + j)], src[uint64(s3 + j)]
            dst[uint64(da + j)] += a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            dst[uint64(db + j)] += b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3


@njit(**_JIT)
def _row_tap(dst, d0, src, s0, weight, j0, j1, init):  # pragma: no cover
    """``dst[d0 + j] (+)= weight * src[s0 + j]`` over ``[j0, j1)``: one full-width tap."""
    if init:
        for j in range(j0, j1):
            dst[uint64(d0 + j)] = weight * src[uint64(s0 + j)]
    else:
        for j in range(j0, j1):
            dst[uint64(d0 + j)] += weight * src[uint64(s0 + j)]


@njit(parallel=True, **_JIT)
def _vertical_kernel(x, w, out, cmap, ph, segment):  # pragma: no cover
    """``_correlate_kernel`` for a (1, kh, 1) kernel, stride and dilation 1, full-width rows.

    A work item is a pair of output rows ``i, i + 1``.  The input rows both
    read (tap ``m`` for row ``i``, tap ``m - 1`` for row ``i + 1``) go through
    :func:`_flush_pair` in groups of 4, each row loaded once for both outputs;
    the few others (the row only one output reads, a group's remainder, an odd
    last output row) go one tap at a time.  No input value is multiplied by a
    weight the kernel does not have, so NaN and Inf reach exactly the outputs
    whose window holds them.  Kept small on purpose: compile time counts.
    """
    _, nc, depth, height, width = x.shape
    nq, ncg, _, kh, _ = w.shape
    nb, _, od, oh, ow = out.shape
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    npair = (oh + 1) // 2
    nseg = (ow + segment - 1) // segment
    chan_stride = depth * height * width
    for item in prange(nb * nq * od * npair * nseg):
        seg = item % nseg
        rest = item // nseg
        i = 2 * (rest % npair)
        plane = rest // npair  # ((b*nq + q)*od + p)
        p = plane % od
        q = (plane // od) % nq
        b = plane // (od * nq)
        j0 = seg * segment
        j1 = min(ow, j0 + segment)
        da = (plane * oh + i) * ow
        db = da + ow
        two = i + 1 < oh
        base0 = (b * nc * depth + p) * height * width
        # rows both outputs read; without a second output, every row of the first
        ylo = max(0, i - ph + 1) if two else max(0, i - ph)
        yhi = min(height, i + kh - ph)
        n = 0
        init_a = init_b = True
        s0 = s1 = s2 = s3 = 0
        a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = w[q, 0, 0, 0, 0]
        for l in range(ncg):
            base = base0 + cmap[q, l] * chan_stride
            for y in range(ylo, yhi):
                m = y - i + ph
                start = base + y * width
                if not two:
                    _row_tap(dst, da, src, start, w[q, l, 0, m, 0], j0, j1, init_a)
                    init_a = False
                    continue
                if n == 0:
                    s0, a0, b0 = start, w[q, l, 0, m, 0], w[q, l, 0, m - 1, 0]
                elif n == 1:
                    s1, a1, b1 = start, w[q, l, 0, m, 0], w[q, l, 0, m - 1, 0]
                elif n == 2:
                    s2, a2, b2 = start, w[q, l, 0, m, 0], w[q, l, 0, m - 1, 0]
                else:
                    s3, a3, b3 = start, w[q, l, 0, m, 0], w[q, l, 0, m - 1, 0]
                n += 1
                if n == 4:
                    if init_a != init_b:  # an edge row started one output already
                        _zero(dst, da if init_a else db, j0, j1)
                        init_a = init_b = False
                    _flush_pair(dst, da, db, src, j0, j1, init_a,
                                s0, s1, s2, s3, a0, a1, a2, a3, b0, b1, b2, b3)
                    init_a = init_b = False
                    n = 0
            if two:
                # the row only output i reads (tap 0) and the row only i + 1 reads (tap kh - 1)
                y = i - ph
                if 0 <= y < height:
                    _row_tap(dst, da, src, base + y * width, w[q, l, 0, 0, 0], j0, j1, init_a)
                    init_a = False
                y = i + kh - ph
                if 0 <= y < height:
                    _row_tap(dst, db, src, base + y * width, w[q, l, 0, kh - 1, 0], j0, j1,
                             init_b)
                    init_b = False
        for t in range(n):  # the last group's remainder
            start = s0 if t == 0 else s1 if t == 1 else s2
            wa = a0 if t == 0 else a1 if t == 1 else a2
            wb = b0 if t == 0 else b1 if t == 1 else b2
            _row_tap(dst, da, src, start, wa, j0, j1, init_a)
            _row_tap(dst, db, src, start, wb, j0, j1, init_b)
            init_a = init_b = False
        if init_a:
            _zero(dst, da, j0, j1)
        if init_b and two:
            _zero(dst, db, j0, j1)


@lru_cache(maxsize=256)
def group_map(out_channels: int, per_group: int, groups: int) -> np.ndarray:
    """Channel map of a grouped correlation: ``cmap[o, l] = g(o) * Cg + l``.

    Cached: the returned array is shared, read it only.

    Examples
    --------
    >>> group_map(4, 1, 2)
    array([[0],
           [0],
           [1],
           [1]])
    """
    group_of = np.arange(out_channels) // (out_channels // groups)
    return np.ascontiguousarray(group_of[:, None] * per_group + np.arange(per_group)[None, :],
                                dtype=np.int64)


def as_3d(shape, spatial_fill=1) -> tuple:
    """``(N, C, *spatial)`` widened to ``(N, C, D, H, W)`` with leading 1s."""
    return tuple(shape[:2]) + (spatial_fill,) * (5 - len(shape)) + tuple(shape[2:])


def _widen(values: tuple, fill: int) -> tuple:
    """Per-axis values of a 1-, 2- or 3-D problem as 3 values, leading axes plain."""
    return (fill,) * (3 - len(values)) + values


@lru_cache(maxsize=256)
def _geometry(stride: tuple, dilation: tuple, pad_before: tuple) -> tuple:
    """Stride, dilation and leading padding (3 values each) as the kernel's int64 arrays."""
    return tuple(np.array(v, dtype=np.int64) for v in (stride, dilation, pad_before))


def _segment_length(out_shape, itemsize: int, threads: int, taps: int) -> int:
    """Output columns per work item: a segment that stays in L1 while its tap
    groups pass over it, longer when one group does all (less per-item work),
    shorter when there are too few rows to give every thread several items."""
    ow = out_shape[-1]
    limit = _SEGMENT_BYTES * (4 if taps <= 4 else 1)
    segment = max(1, min(ow, limit // itemsize))
    rows = math.prod(out_shape[:-1])
    wanted = _ITEMS_PER_THREAD * threads
    if threads > 1 and rows * -(-ow // segment) < wanted and ow > _MIN_SEGMENT:
        segment = max(_MIN_SEGMENT, -(-ow * rows // wanted))
    return segment


def _needs_lock() -> bool:
    try:
        return numba.threading_layer() == "workqueue"
    except ValueError:  # no parallel kernel has run yet: the layer is not chosen
        return True


def run(x5, w5, out5, cmap, stride, dilation, pad_before) -> None:
    """Run the kernel on 5-D C-contiguous arrays of one dtype, writing ``out5``.

    ``out5[b, q, p, i, j] = sum_{l, m} x5[b, cmap[q, l], p*s0 + m0*d0 - pad0,
    i*s1 + m1*d1 - pad1, j*s2 + m2*d2 - pad2] * w5[q, l, m]`` with
    out-of-range input treated as zero.  ``pad_before`` may be negative (start
    further into the input); the output extent is ``out5``'s shape.  Used by
    :mod:`fastconv.backends.separable` for its 1-D passes.
    """
    stride, dilation, pad = _widen(tuple(stride), 1), _widen(tuple(dilation), 1), \
        _widen(tuple(pad_before), 0)
    x5, w5, out5, stride, dilation, pad = _planes_as_rows(x5, w5, out5, stride, dilation, pad)
    taps = math.prod(w5.shape[1:])
    macs = out5.size * taps
    threads = 1 if macs < _SERIAL_MACS else min(_config.get_num_threads(),
                                                numba.config.NUMBA_NUM_THREADS)
    if _is_vertical(x5, w5, out5, stride, dilation, pad):
        pairs = out5.shape[:3] + (-(-out5.shape[3] // 2), out5.shape[4])
        kernel = _vertical_kernel
        args = (x5, w5, out5, cmap, pad[1], _segment_length(pairs, out5.itemsize, threads, taps))
    else:
        kernel = _correlate_kernel
        args = (x5, w5, out5, cmap) + _geometry(stride, dilation, pad) \
            + (_segment_length(out5.shape, out5.itemsize, threads, taps),)
    # numba's thread count is thread-local: each calling thread sets its own
    numba.set_num_threads(threads)
    if _needs_lock():
        with _LAUNCH_LOCK:
            kernel(*args)
    else:
        kernel(*args)


def _planes_as_rows(x5, w5, out5, stride, dilation, pad):
    """A (kd, 1, 1) kernel over whole planes is a (1, kd, 1) kernel over rows of H*W."""
    if (w5.shape[2] > 1 and w5.shape[3:] == (1, 1) and stride[1:] == (1, 1)
            and pad[1:] == (0, 0) and x5.shape[3:] == out5.shape[3:]):
        plane = x5.shape[3] * x5.shape[4]
        return (x5.reshape(x5.shape[:2] + (1, x5.shape[2], plane)),
                w5.reshape(w5.shape[:2] + (1, w5.shape[2], 1)),
                out5.reshape(out5.shape[:2] + (1, out5.shape[2], plane)),
                (1, stride[0], 1), (1, dilation[0], 1), (0, pad[0], 0))
    return x5, w5, out5, stride, dilation, pad


def _is_vertical(x5, w5, out5, stride, dilation, pad) -> bool:
    """A tall (1, kh, 1) kernel at stride and dilation 1 over full rows: the paired-row kernel.

    Worth it once the rows both outputs of a pair read fill a group of 4.
    """
    return (w5.shape[1] * (w5.shape[3] - 1) >= 4 and w5.shape[2] == 1 and w5.shape[4] == 1
            and stride == (1, 1, 1) and dilation[1] == 1 and pad[0] == 0 and pad[2] == 0
            and x5.shape[2] == out5.shape[2] and x5.shape[4] == out5.shape[4])


@lru_cache(maxsize=256)
def _pad_before(padding) -> tuple:
    return tuple(p[0] for p in padding)


def correlate(x, w, problem, out=None):
    """Canonical correlation by direct summation (see :mod:`fastconv.problem`).

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 5), (1, 1, 2), "float64")
    >>> correlate(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)), p)
    array([[[1., 3., 5., 7.]]])
    """
    dtype = problem.dtype
    x5 = np.ascontiguousarray(x, dtype=dtype).reshape(as_3d(problem.x_shape))
    w5 = np.ascontiguousarray(w, dtype=dtype).reshape(as_3d(problem.w_shape))
    direct_out = (out is not None and out.dtype == dtype and out.flags.c_contiguous
                  and out.shape == problem.out_shape)
    # np.zeros, not np.empty: calloc hands large outputs fresh zero pages, while
    # malloc'd ones were measured to page-fault 7x slower for the first calls of
    # a process (50 ms against 7 ms for a 2048x2048 float64 image)
    result = out if direct_out else np.zeros(problem.out_shape, dtype)
    cmap = group_map(problem.out_channels, problem.w_shape[1], problem.groups)
    run(x5, w5, result.reshape(as_3d(problem.out_shape)), cmap, problem.stride,
        problem.dilation, _pad_before(problem.padding))
    if out is None or direct_out:
        return result
    out[...] = result
    return out
