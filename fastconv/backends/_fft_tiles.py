"""Copying tiles between the caller's arrays and the FFT backend's buffers.

A :class:`Tiles` is built once per call: it precomputes strided views of
``x`` (the overlapping input tiles that lie wholly inside it along the last
axis) and of ``out`` (the output blocks of whole tiles), so that copying one
chunk costs a few slices and one ``np.copyto`` each way.  Tiles that touch
the zero padding along the last axis are copied one by one.

Chunks are ``(first batch item, end, leading tile indices, first tile, end
tile)``: a run of tiles along the last axis for a block of batch items.
Buffers are laid out ``(batch, tile, channel, *tile_shape)``.

:func:`run_fused` is the other way, for one real plane in and out at stride
1: a compiled loop that takes the tiles one at a time through gather,
FFTW's forward transform, the product with the kernel spectrum, the inverse
transform and the copy of the valid outputs (streamed past the cache when
the output is large), with no Python in between.
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic
from numpy.lib.stride_tricks import as_strided

try:
    from .. import _stream
except ImportError:  # not built: ordinary stores
    _stream = None

#: outputs of at least this many bytes are written with non-temporal stores (the L2 of both
#: cores of this project's benchmark machine: smaller ones may still be in cache when read)
STREAM_MIN_BYTES = 4 << 20
_NO_STREAM = np.zeros(0, np.intp)


def chunks(problem, plan):
    """Every chunk of the call, in order."""
    last = plan.axes[-1].count
    batch = problem.batch
    return [(b, min(b + plan.chunk_batch, batch), lead, t, min(t + plan.chunk_tiles, last))
            for b in range(0, batch, plan.chunk_batch)
            for lead in np.ndindex(*(a.count for a in plan.axes[:-1]))
            for t in range(0, last, plan.chunk_tiles)]


def _clip(start, size, n):
    """Source [lo, hi) inside [0, n) of a window [start, start + size), and its offset."""
    lo, hi = max(start, 0), min(start + size, n)
    return lo, max(hi, lo), lo - start


def _split(array, step, count, size, start, writeable):
    """View of ``count`` windows of ``size`` every ``step`` along the last axis, moved to axis 1."""
    region = array[..., start:]
    stride = region.strides[-1]
    view = as_strided(region, region.shape[:-1] + (count, size),
                      region.strides[:-1] + (step * stride, stride), writeable=writeable)
    return np.moveaxis(view, -2, 1)


class Tiles:
    """Gather input tiles from ``x`` and scatter output tiles into ``out``."""

    def __init__(self, x, out, plan):
        self.x, self.out, self.plan = x, out, plan
        *lead, a = plan.axes
        # leading axes: per tile index, (source slice of x, destination slice, clipped?)
        self.lead_in = [[self._lead_window(t, ax) for t in range(ax.count)] for ax in lead]
        self.lead_out = [[(slice(t * ax.per_tile, t * ax.per_tile + self._count(t, ax)),
                           slice(0, self._count(t, ax) * ax.stride, ax.stride))
                          for t in range(ax.count)] for ax in lead]
        starts = [t * a.step - a.offset for t in range(a.count)]
        inside = [t for t, s in enumerate(starts) if s >= 0 and s + a.size <= a.length]
        self.inside = (inside[0], inside[-1] + 1) if inside else (0, 0)
        self.starts = starts
        self.x_tiles = (_split(x, a.step, len(inside), a.size, starts[inside[0]], False)
                        if inside else None)
        self.full = a.outputs // a.per_tile        # tiles whose outputs are all in range
        self.out_tiles = (_split(out, a.per_tile, self.full, a.per_tile, 0, True)
                          if self.full else None)
        self.last_src = slice(0, a.per_tile * a.stride, a.stride)

    @staticmethod
    def _lead_window(t, ax):
        lo, hi, at = _clip(t * ax.step - ax.offset, ax.size, ax.length)
        return slice(lo, hi), slice(at, at + hi - lo), hi - lo < ax.size

    @staticmethod
    def _count(t, ax):
        return min(ax.per_tile, ax.outputs - t * ax.per_tile)

    def gather(self, xbuf, chunk):
        """Fill ``xbuf`` with the input tiles of ``chunk``."""
        b0, b1, lead, t0, t1 = chunk
        windows = [table[t] for table, t in zip(self.lead_in, lead)]
        src = tuple(w[0] for w in windows)
        dst = tuple(w[1] for w in windows)
        clipped = any(w[2] for w in windows)
        nb = b1 - b0
        if clipped:
            xbuf[:nb, : t1 - t0].fill(0)
        i0, i1 = max(t0, self.inside[0]), min(t1, self.inside[1])
        if i1 > i0:
            k0 = self.inside[0]
            np.copyto(xbuf[(slice(0, nb), slice(i0 - t0, i1 - t0), slice(None)) + dst],
                      self.x_tiles[(slice(b0, b1), slice(i0 - k0, i1 - k0), slice(None)) + src])
        a = self.plan.axes[-1]
        for t in range(t0, t1):
            if i0 <= t < i1:
                continue
            lo, hi, at = _clip(self.starts[t], a.size, a.length)
            tile = xbuf[(slice(0, nb), t - t0, slice(None)) + dst]
            if not clipped:
                tile.fill(0)
            if hi > lo:
                tile[..., at:at + hi - lo] = self.x[(slice(b0, b1), slice(None)) + src][..., lo:hi]

    def scatter(self, ybuf, chunk):
        """Copy the valid, strided outputs of the chunk's tiles from ``ybuf`` into ``out``."""
        b0, b1, lead, t0, t1 = chunk
        windows = [table[t] for table, t in zip(self.lead_out, lead)]
        dst = tuple(w[0] for w in windows)
        src = tuple(w[1] for w in windows)
        nb = b1 - b0
        end = min(t1, self.full)
        if end > t0:
            np.copyto(self.out_tiles[(slice(b0, b1), slice(t0, end), slice(None)) + dst],
                      ybuf[(slice(0, nb), slice(0, end - t0), slice(None)) + src
                           + (self.last_src,)])
        a = self.plan.axes[-1]
        for t in range(max(end, t0), t1):
            start = t * a.per_tile
            count = a.outputs - start
            self.out[(slice(b0, b1), slice(None)) + dst + (slice(start, start + count),)] = \
                ybuf[(slice(0, nb), t - t0, slice(None)) + src
                     + (slice(0, count * a.stride, a.stride),)]


# --- the fused tile loop ------------------------------------------------------------------

@intrinsic
def _call_c(typingctx, function, a, b, c):
    """Call the C function at address ``function`` as ``void f(a, b, c)`` (integers, pointers).

    The addresses come in as arguments, so the loop below caches like any other
    compiled function (a ctypes function object would pin this process's address).
    """
    signature = types.void(types.intp, types.intp, types.intp, types.intp)

    def codegen(context, builder, sig, args):
        word = ir.IntType(64)
        c_type = ir.FunctionType(ir.VoidType(), [word, word, word])
        pointer = builder.inttoptr(args[0], c_type.as_pointer())
        builder.call(pointer, list(args[1:]))
        return context.get_dummy_value()
    return signature, codegen


@njit(cache=True, nogil=True)
def _fused(x, out, wspec, tile, spec, functions, plans, stream, geometry, first, end):
    """Tiles ``first`` to ``end`` (flat index over batch and tile grid), one at a time.

    ``x`` (batch, n0, n1, n2) and ``out`` (batch, m0, m1, m2) have three spatial
    axes (2-d problems a leading 1); ``geometry[a]`` is (tile size, step, tiles,
    offset) of axis ``a``; stride 1.  Each tile is gathered with its zero padding,
    transformed (``functions[0]`` with ``plans[0]``: FFTW's new-array r2c),
    multiplied by ``wspec``, transformed back into ``tile`` (the other functions
    and plans: one c2r, or the columns' c2c and the c2r of the valid rows), and its
    valid first ``step`` outputs per axis written to ``out``: with ordinary
    stores, or, given the addresses ``stream`` (copy, fence) of
    :mod:`fastconv._stream`, with non-temporal ones (``out``'s rows contiguous).
    Returns 0.0 if every value gathered from ``x`` was finite, else NaN.
    """
    b0, b1, b2 = tile.shape
    n0, n1, n2 = x.shape[1], x.shape[2], x.shape[3]
    m0, m1, m2 = out.shape[1], out.shape[2], out.shape[3]
    itemsize = tile.itemsize
    seen = 0.0
    for flat in range(first, end):
        i2 = flat % geometry[2, 2]
        rest = flat // geometry[2, 2]
        i1 = rest % geometry[1, 2]
        rest //= geometry[1, 2]
        i0 = rest % geometry[0, 2]
        b = rest // geometry[0, 2]
        s0 = i0 * geometry[0, 1] - geometry[0, 3]
        s1 = i1 * geometry[1, 1] - geometry[1, 3]
        s2 = i2 * geometry[2, 1] - geometry[2, 3]
        lo, hi = max(s2, 0), min(s2 + b2, n2)
        for a0 in range(b0):
            r0 = s0 + a0
            for a1 in range(b1):
                r1 = s1 + a1
                if r0 < 0 or r0 >= n0 or r1 < 0 or r1 >= n1 or hi <= lo:
                    tile[a0, a1, :] = 0
                    continue
                tile[a0, a1, :lo - s2] = 0
                seen += _copy_checked(tile[a0, a1, lo - s2:hi - s2], x[b, r0, r1, lo:hi])
                tile[a0, a1, hi - s2:] = 0
        _call_c(functions[0], plans[0], tile.ctypes.data, spec.ctypes.data)
        for f in range(spec.size):
            spec[f] *= wspec[f]
        if functions.size == 3:  # pruned inverse: the columns in place, then the valid rows
            _call_c(functions[1], plans[1], spec.ctypes.data, spec.ctypes.data)
        _call_c(functions[-1], plans[-1], spec.ctypes.data, tile.ctypes.data)
        o0, o1, o2 = i0 * geometry[0, 1], i1 * geometry[1, 1], i2 * geometry[2, 1]
        e0 = min(geometry[0, 1], m0 - o0)
        e1 = min(geometry[1, 1], m1 - o1)
        e2 = min(geometry[2, 1], m2 - o2)
        for a0 in range(e0):
            for a1 in range(e1):
                if stream.size:
                    _call_c(stream[0], out[b, o0 + a0, o1 + a1, o2:].ctypes.data,
                            tile[a0, a1].ctypes.data, e2 * itemsize)
                else:
                    out[b, o0 + a0, o1 + a1, o2:o2 + e2] = tile[a0, a1, :e2]
    if stream.size:
        _call_c(stream[1], 0, 0, 0)
    return seen


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _copy_checked(target, source):
    """Copy ``source`` into ``target``; 0.0 if every value is finite, else NaN.

    The same exact test as ``fft._probe`` (``v * 0`` is NaN only for NaN and
    Inf), made while the values pass through registers anyway.
    """
    seen = 0.0
    for i in range(source.size):
        value = source[i]
        target[i] = value
        seen += value * 0.0
    return seen


def run_fused(plans, x, out, wspec, geometry, first, end, stream=_NO_STREAM):
    """Run the fused loop over tiles ``first`` to ``end`` on a borrowed set of buffers.

    ``plans`` is a :class:`fastconv.backends._fft_plans.TilePlans`; ``stream``
    is :func:`streaming`'s choice.  Returns 0.0 if every value read from ``x``
    was finite, else NaN.
    """
    tile, spec = buffers = plans.buffers()
    try:
        tile3 = tile.reshape((1,) * (3 - tile.ndim) + tile.shape)
        return _fused(x, out, wspec, tile3, spec, plans.functions, plans.handles, stream,
                      geometry, first, end)
    finally:
        plans.keep(buffers)


def streaming(out):
    """The ``stream`` argument of :func:`run_fused` for ``out``.

    Outputs of at least ``STREAM_MIN_BYTES`` with contiguous rows are written
    with non-temporal stores (:mod:`fastconv._stream`, where it is built):
    they would not stay in cache anyway.
    """
    if (_stream is None or out.nbytes < STREAM_MIN_BYTES
            or out.strides[-1] != out.itemsize):
        return _NO_STREAM
    return np.array([_stream.copy_address(), _stream.fence_address()], np.intp)
