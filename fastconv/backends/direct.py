"""Direct correlation in Numba loops.

Every problem (1-, 2- or 3-D) is viewed as 3-D, ``(N, C, D, H, W)`` with
leading spatial axes of size 1, so one compiled kernel per dtype serves all
dimensionalities, strides, dilations, paddings and groups.

The common case, row and column stride and dilation 1 with a kernel at least
four rows tall, runs :func:`_block_kernel`: a work item is a block of four
output rows over ``_BLOCK_COLS`` columns, accumulated in a per-thread buffer
that stays in L1.  Each input vector it loads feeds all four rows (16
multiply-adds per four loads and four accumulator updates), so the loop runs
on the FMA units rather than the load and store ports that bound a
row-at-a-time loop; the taps only some of the four rows read (the block's
first and last input rows) go row by row.

Everything else runs :func:`_correlate_kernel`: a work item is one output row
segment ``out[b, q, plane, row, j0:j1]``; the outer ``prange`` runs over all
of them, so even one single-channel 2-D image keeps every core busy, and a
long 1-D signal is cut into segments.

In both, the kernel taps that land on input rows (taps on padded rows are
skipped) go in groups of up to four: one vectorised loop adds
``sum_m w_m * row_m[j*s + offset_m]`` over the columns all four reach, and
each tap alone covers its own few columns at the edges, so zero padding is
never materialised and a NaN or Inf reaches exactly the outputs whose window
holds it.

Groups generalise to a channel map ``cmap[q, l]`` (the input channel that the
``l``-th weight slice of output channel ``q`` reads), which lets
:mod:`fastconv.backends.separable` run its 1-D passes through :func:`run`.
A ``(kd, 1, 1)`` kernel over whole planes runs as a ``(1, kd, 1)`` kernel
over rows of ``H*W``.
"""
from __future__ import annotations

import math
import threading
from functools import lru_cache

import numba
import numpy as np
from numba import njit, prange, types, uint64
from numba.core.extending import intrinsic

from .. import _config, _outputs
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


@intrinsic
def _wide_vectors(typingctx):  # pragma: no cover
    """Let LLVM vectorise the calling function's loops with 512-bit registers.

    LLVM's tuning for AVX-512 CPUs prefers 256-bit vectors (clock throttling
    on early parts); measured here, the direct kernels ran 1.1-1.2x faster
    with 512-bit ones.  Numba has no option for the function attribute
    ``prefer-vector-width``, so this intrinsic adds it to the function being
    compiled; on CPUs without 512-bit vectors it changes nothing.
    """
    def codegen(context, builder, sig, args):
        try:  # llvmlite only accepts attributes it knows by name; this one is a key-value pair
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
        except Exception:  # an llvmlite whose attribute sets are not sets: default width
            pass
        return context.get_dummy_value()
    return types.none(), codegen


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
            dst[uint64(db + j)] = dst[uint64(db + j)] + weight * src[uint64(sb + j)]
    else:
        for j in range(lo, hi):
            dst[uint64(db + j)] = dst[uint64(db + j)] + weight * src[uint64(sb + j * sw)]


@njit(**_JIT)
def _zero(dst, db, lo, hi):  # pragma: no cover
    for j in range(lo, hi):
        dst[uint64(db + j)] = 0


@njit(**_JIT)
def _shared_range(n, lo0, hi0, lo1, hi1, lo2, hi2, lo3, hi3):  # pragma: no cover
    """[lo, hi): the columns all of the first ``n <= 4`` taps' ranges cover."""
    lo, hi = lo0, hi0
    if n > 1:
        lo, hi = max(lo, lo1), min(hi, hi1)
    if n > 2:
        lo, hi = max(lo, lo2), min(hi, hi2)
    if n > 3:
        lo, hi = max(lo, lo3), min(hi, hi3)
    return lo, hi


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
    _wide_vectors()
    lo0, hi0 = _tap_range(j0, j1, o0, sw, width)
    lo1, hi1 = _tap_range(j0, j1, o1, sw, width)
    lo2, hi2 = _tap_range(j0, j1, o2, sw, width)
    lo3, hi3 = _tap_range(j0, j1, o3, sw, width)
    # [lo, hi): the columns every tap reaches, done in one fused loop
    lo, hi = _shared_range(n, lo0, hi0, lo1, hi1, lo2, hi2, lo3, hi3)
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
                dst[uint64(db + j)] = dst[uint64(db + j)] + w0 * src[uint64(s0 + j)]
    elif n == 2:
        if init:
            for j in range(lo, hi):
                dst[uint64(db + j)] = w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
        else:
            for j in range(lo, hi):
                dst[uint64(db + j)] = (dst[uint64(db + j)] + w0 * src[uint64(s0 + j)]
                                       + w1 * src[uint64(s1 + j)])
    elif n == 3:
        if init:
            for j in range(lo, hi):
                dst[uint64(db + j)] = (w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
                                       + w2 * src[uint64(s2 + j)])
        else:
            for j in range(lo, hi):
                dst[uint64(db + j)] = (dst[uint64(db + j)] + w0 * src[uint64(s0 + j)]
                                       + w1 * src[uint64(s1 + j)] + w2 * src[uint64(s2 + j)])
    elif init:
        for j in range(lo, hi):
            dst[uint64(db + j)] = (w0 * src[uint64(s0 + j)] + w1 * src[uint64(s1 + j)]
                                   + w2 * src[uint64(s2 + j)] + w3 * src[uint64(s3 + j)])
    else:
        for j in range(lo, hi):
            dst[uint64(db + j)] = (dst[uint64(db + j)] + w0 * src[uint64(s0 + j)]
                                   + w1 * src[uint64(s1 + j)] + w2 * src[uint64(s2 + j)]
                                   + w3 * src[uint64(s3 + j)])


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


#: output columns of one row-block work item; a compile-time constant, so the
#: four accumulator rows sit at fixed distances and LLVM needs one alias check
_BLOCK_COLS = 512
#: accumulator row stride: not a multiple of 4 KiB, so the rows' loads and stores
#: never falsely depend on each other through 4K aliasing (measured 1.6x slower)
_ACC_ROW = _BLOCK_COLS + 24
#: output rows a row-block work item computes together
_BLOCK_ROWS = 4


@njit(**_JIT)
def _flush4(acc, src, j0, j1, width, n,
            s0, s1, s2, s3, o0, o1, o2, o3,
            a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3, d0, d1, d2, d3):  # pragma: no cover
    """Add ``n <= 4`` sources to the four accumulator rows of a row block.

    Source ``t`` is the input row at flat index ``s_t`` read at column
    ``j + o_t``; accumulator row ``r`` (at ``r * _ACC_ROW``, column
    ``j - j0``) adds it with weight ``a_t, b_t, c_t, d_t`` for ``r = 0..3``.
    Each loaded input vector feeds four rows: 4n multiply-adds for n loads and
    four accumulator updates, which keeps the loop on the FMA units instead of
    the load and store ports.
    """
    _wide_vectors()
    lo0, hi0 = _tap_range(j0, j1, o0, 1, width)
    lo1, hi1 = _tap_range(j0, j1, o1, 1, width)
    lo2, hi2 = _tap_range(j0, j1, o2, 1, width)
    lo3, hi3 = _tap_range(j0, j1, o3, 1, width)
    lo, hi = _shared_range(n, lo0, hi0, lo1, hi1, lo2, hi2, lo3, hi3)
    if hi - lo < 8:
        lo = hi = j0
    s0 += o0
    s1 += o1
    s2 += o2
    s3 += o3
    r0, r1, r2, r3 = -j0, _ACC_ROW - j0, 2 * _ACC_ROW - j0, 3 * _ACC_ROW - j0
    # each source alone on the columns outside the shared range (image edges)
    for t in range(n if lo > j0 or hi < j1 else 0):
        s = s0 if t == 0 else s1 if t == 1 else s2 if t == 2 else s3
        tlo = lo0 if t == 0 else lo1 if t == 1 else lo2 if t == 2 else lo3
        thi = hi0 if t == 0 else hi1 if t == 1 else hi2 if t == 2 else hi3
        wa = a0 if t == 0 else a1 if t == 1 else a2 if t == 2 else a3
        wb = b0 if t == 0 else b1 if t == 1 else b2 if t == 2 else b3
        wc = c0 if t == 0 else c1 if t == 1 else c2 if t == 2 else c3
        wd = d0 if t == 0 else d1 if t == 1 else d2 if t == 2 else d3
        for e0, e1 in ((tlo, min(thi, lo)), (max(tlo, hi), thi)):
            _axpy(acc, r0, src, s, wa, e0, e1, 1)
            _axpy(acc, r1, src, s, wb, e0, e1, 1)
            _axpy(acc, r2, src, s, wc, e0, e1, 1)
            _axpy(acc, r3, src, s, wd, e0, e1, 1)
    if hi <= lo:
        return
    if n == 4:
        for j in range(lo, hi):
            v0, v1 = src[uint64(s0 + j)], src[uint64(s1 + j)]
            v2, v3 = src[uint64(s2 + j)], src[uint64(s3 + j)]
            acc[uint64(r0 + j)] = acc[uint64(r0 + j)] + a0 * v0 + a1 * v1 + a2 * v2 + a3 * v3
            acc[uint64(r1 + j)] = acc[uint64(r1 + j)] + b0 * v0 + b1 * v1 + b2 * v2 + b3 * v3
            acc[uint64(r2 + j)] = acc[uint64(r2 + j)] + c0 * v0 + c1 * v1 + c2 * v2 + c3 * v3
            acc[uint64(r3 + j)] = acc[uint64(r3 + j)] + d0 * v0 + d1 * v1 + d2 * v2 + d3 * v3
    elif n == 3:
        for j in range(lo, hi):
            v0, v1, v2 = src[uint64(s0 + j)], src[uint64(s1 + j)], src[uint64(s2 + j)]
            acc[uint64(r0 + j)] = acc[uint64(r0 + j)] + a0 * v0 + a1 * v1 + a2 * v2
            acc[uint64(r1 + j)] = acc[uint64(r1 + j)] + b0 * v0 + b1 * v1 + b2 * v2
            acc[uint64(r2 + j)] = acc[uint64(r2 + j)] + c0 * v0 + c1 * v1 + c2 * v2
            acc[uint64(r3 + j)] = acc[uint64(r3 + j)] + d0 * v0 + d1 * v1 + d2 * v2
    elif n == 2:
        for j in range(lo, hi):
            v0, v1 = src[uint64(s0 + j)], src[uint64(s1 + j)]
            acc[uint64(r0 + j)] = acc[uint64(r0 + j)] + a0 * v0 + a1 * v1
            acc[uint64(r1 + j)] = acc[uint64(r1 + j)] + b0 * v0 + b1 * v1
            acc[uint64(r2 + j)] = acc[uint64(r2 + j)] + c0 * v0 + c1 * v1
            acc[uint64(r3 + j)] = acc[uint64(r3 + j)] + d0 * v0 + d1 * v1
    else:
        for j in range(lo, hi):
            v0 = src[uint64(s0 + j)]
            acc[uint64(r0 + j)] = acc[uint64(r0 + j)] + a0 * v0
            acc[uint64(r1 + j)] = acc[uint64(r1 + j)] + b0 * v0
            acc[uint64(r2 + j)] = acc[uint64(r2 + j)] + c0 * v0
            acc[uint64(r3 + j)] = acc[uint64(r3 + j)] + d0 * v0


@njit(**_JIT)
def _groups(count):  # pragma: no cover
    """Sizes of ``count`` taps cut into even groups of at most 4: ``(small, extra)``
    means ``extra`` groups of ``small + 1`` first, then groups of ``small``."""
    ngroups = max(1, (count + 3) // 4)
    return count // ngroups, count % ngroups


@njit(**_JIT)
def _plan_add(plan_n, plan_row, plan_src, plan_off, plan_w, g, row, rel, off,
              wf, wa, kw, rows):  # pragma: no cover
    """Append a source to group ``g``: offsets, and the weights of ``rows`` rows."""
    t = plan_n[g]
    plan_row[g] = row
    plan_src[g, t] = rel
    plan_off[g, t] = off
    for r in range(rows):
        plan_w[g, 4 * r + t] = wf[wa - r * kw]
    plan_n[g] = t + 1


@njit(**_JIT)
def _block_plan(wf, cmap, shape, q, zlo, zhi, ylo, yhi, nr, dd, pw,
                plan_n, plan_row, plan_src, plan_off, plan_w):  # pragma: no cover
    """Schedule of a row block's taps: groups of at most 4 sources; returns their count.

    Input row ``y`` of the block (``0 <= y < kh + 3``, rows ``[ylo, yhi)``
    exist) feeds output row ``r`` through kernel row ``y - r``.  Pass 1: the
    sources all four rows read (``3 <= y < kh``), for :func:`_flush4`
    (``plan_row = -1``, weights ``4*r + t``); pass 2: every other tap, row by
    row, for :func:`_flush` (``plan_row = r``).  Source offsets are relative to
    the block's first input row in image ``b``'s first channel.
    """
    nc, depth, height, width, ncg, kd, kh, kw = shape
    ng = 0
    plo, phi = max(_BLOCK_ROWS - 1, ylo), min(kh, yhi)
    if nr < _BLOCK_ROWS:
        plo = phi = 0
    for r in range(-1, nr):  # -1: pass 1
        if r < 0:
            count = ncg * (zhi - zlo) * max(0, phi - plo) * kw
        else:
            count = 0
            for m in range(max(0, ylo - r), min(kh, yhi - r)):
                count += not (plo <= r + m < phi)
            count *= ncg * (zhi - zlo) * kw
        if count == 0:
            continue
        small, extra = _groups(count)
        want = small + (extra > 0)
        done = 0
        plan_n[ng] = 0
        for l in range(ncg):
            c = cmap[q, l]
            for md in range(zlo, zhi):
                wplane = ((q * ncg + l) * kd + md) * kh
                if r < 0:
                    mlo, mhi = plo, phi
                else:
                    mlo, mhi = max(0, ylo - r), min(kh, yhi - r)
                for m in range(mlo, mhi):
                    if r >= 0 and plo <= r + m < phi:
                        continue
                    y = m if r < 0 else r + m
                    rel = ((c * depth + md * dd) * height + y) * width
                    for mw in range(kw):
                        _plan_add(plan_n, plan_row, plan_src, plan_off, plan_w, ng, r, rel,
                                  mw - pw, wf, (wplane + m) * kw + mw,
                                  kw, _BLOCK_ROWS if r < 0 else 1)
                        if plan_n[ng] == want:
                            ng += 1
                            plan_n[ng] = 0
                            done += 1
                            want = small + (done < extra)
    return ng


@njit(**_JIT)
def _block_run(acc, src, base, j0, j1, width, ng,
               plan_n, plan_row, plan_src, plan_off, plan_w):  # pragma: no cover
    """Add a row block's planned groups to ``acc`` for columns ``[j0, j1)``."""
    for g in range(ng):
        n = plan_n[g]
        s0, s1 = base + plan_src[g, 0], base + plan_src[g, 1]
        s2, s3 = base + plan_src[g, 2], base + plan_src[g, 3]
        o0, o1, o2, o3 = plan_off[g, 0], plan_off[g, 1], plan_off[g, 2], plan_off[g, 3]
        row = plan_row[g]
        if row < 0:
            _flush4(acc, src, j0, j1, width, n, s0, s1, s2, s3, o0, o1, o2, o3,
                    plan_w[g, 0], plan_w[g, 1], plan_w[g, 2], plan_w[g, 3],
                    plan_w[g, 4], plan_w[g, 5], plan_w[g, 6], plan_w[g, 7],
                    plan_w[g, 8], plan_w[g, 9], plan_w[g, 10], plan_w[g, 11],
                    plan_w[g, 12], plan_w[g, 13], plan_w[g, 14], plan_w[g, 15])
        else:
            _flush(acc, row * _ACC_ROW - j0, src, j0, j1, width, 1, n, False,
                   s0, s1, s2, s3, o0, o1, o2, o3,
                   plan_w[g, 0], plan_w[g, 1], plan_w[g, 2], plan_w[g, 3])


@njit(parallel=True, **_JIT)
def _block_kernel(x, w, out, cmap, stride, dilation, pad, threads):  # pragma: no cover
    """``_correlate_kernel`` for row and column stride and dilation 1.

    A work item is a block of four output rows over ``_BLOCK_COLS`` columns,
    accumulated in a small per-thread buffer that stays in L1 and written to
    ``out`` once; the items are split evenly over ``threads`` workers.  The
    schedule of a block (:func:`_block_plan`) is the same for every block
    that the image edges do not clip, so it is rebuilt only when that changes.
    """
    _, nc, depth, height, width = x.shape
    nq, ncg, kd, kh, kw = w.shape
    nb, _, od, oh, ow = out.shape
    shape = (nc, depth, height, width, ncg, kd, kh, kw)
    sd, dd = stride[0], dilation[0]
    pd, ph, pw = pad[0], pad[1], pad[2]
    src = x.reshape(x.size)
    dst = out.reshape(out.size)
    wf = w.reshape(w.size)
    nblock = (oh + _BLOCK_ROWS - 1) // _BLOCK_ROWS
    nseg = (ow + _BLOCK_COLS - 1) // _BLOCK_COLS
    total = nb * nq * od * nblock * nseg
    most = (ncg * kd * kh * kw + 3) // 4 * (_BLOCK_ROWS + 1) + _BLOCK_ROWS + 2
    for worker in prange(threads):
        acc = np.empty(_BLOCK_ROWS * _ACC_ROW, dst.dtype)
        plan_n = np.zeros(most, np.int64)
        plan_row = np.zeros(most, np.int64)
        plan_src = np.zeros((most, 4), np.int64)
        plan_off = np.zeros((most, 4), np.int64)
        plan_w = np.zeros((most, 16), dst.dtype)
        ng = 0
        key = (-1, -1, -1, -1, -1, -1)
        for item in range(worker * total // threads, (worker + 1) * total // threads):
            seg = item % nseg
            rest = item // nseg
            i0 = (rest % nblock) * _BLOCK_ROWS
            plane = rest // nblock  # (b*nq + q)*od + p
            p = plane % od
            q = (plane // od) % nq
            b = plane // (od * nq)
            nr = min(_BLOCK_ROWS, oh - i0)
            j0 = seg * _BLOCK_COLS
            j1 = min(ow, j0 + _BLOCK_COLS)
            zlo, zhi = _tap_range(0, kd, p * sd - pd, dd, depth)
            top = i0 - ph  # input row of the block's y = 0
            ylo, yhi = max(0, -top), min(kh + _BLOCK_ROWS - 1, height - top)
            new_key = (q, zlo, zhi, ylo, yhi, nr)
            if new_key != key:
                key = new_key
                ng = _block_plan(wf, cmap, shape, q, zlo, zhi, ylo, yhi, nr, dd, pw,
                                 plan_n, plan_row, plan_src, plan_off, plan_w)
            for r in range(nr):
                for j in range(j1 - j0):
                    acc[r * _ACC_ROW + j] = 0
            base = ((b * nc * depth + p * sd - pd) * height + top) * width
            _block_run(acc, src, base, j0, j1, width, ng,
                       plan_n, plan_row, plan_src, plan_off, plan_w)
            for r in range(nr):
                d = (plane * oh + i0 + r) * ow
                for j in range(j0, j1):
                    dst[uint64(d + j)] = acc[uint64(r * _ACC_ROW - j0 + j)]


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


def takes_block_path(problem) -> bool:
    """Whether :func:`run` computes ``problem`` with the register-blocked kernel.

    The cost model charges that kernel's multiply-adds apart (they run about
    1.5x faster than the row kernel's).

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> takes_block_path(make_problem((1, 1, 64, 64), (1, 1, 9, 9), "float64"))
    True
    >>> takes_block_path(make_problem((1, 1, 64, 64), (1, 1, 3, 3), "float64"))
    False
    """
    return problem.ndim >= 2 and _blocked(problem.kernel[-2], problem.stride[-2:],
                                          problem.dilation[-2:])


def _blocked(kernel_rows, stride, dilation) -> bool:
    """The blocked kernel's condition: a kernel at least a block tall, unit stride and
    dilation on the last two axes (the one test :func:`run` and the cost model share)."""
    return kernel_rows >= _BLOCK_ROWS and tuple(stride) == (1, 1) and tuple(dilation) == (1, 1)


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
    if _blocked(w5.shape[3], stride[1:], dilation[1:]):
        kernel = _block_kernel
        args = (x5, w5, out5, cmap) + _geometry(stride, dilation, pad) + (threads,)
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
    # the kernels write every output element; large results come from the pool
    # of reused blocks (fresh ones page-fault, see fastconv._outputs)
    result = out if direct_out else _outputs.empty(problem.out_shape, dtype)
    cmap = group_map(problem.out_channels, problem.w_shape[1], problem.groups)
    run(x5, w5, result.reshape(as_3d(problem.out_shape)), cmap, problem.stride,
        problem.dilation, _pad_before(problem.padding))
    if out is None or direct_out:
        return result
    out[...] = result
    return out
