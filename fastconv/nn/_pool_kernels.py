"""Numba kernels of max and average pooling, forward and backward.

Every kernel works on ``(planes, D, H, W)`` arrays: batch and channels merged
into one axis of independent planes (run in parallel), and 1-D and 2-D
pooling as 3-D pooling with unit leading axes, so one compiled kernel per
dtype serves all three.  Geometry arrives as 3-tuples: window ``kernel``,
``stride``, ``dilation`` and the leading padding ``pad`` (the trailing
padding only matters to the output shape and to average pooling's divisor,
``pad_end``).  Inside a plane the loop over output columns is innermost, so
each window tap streams along a row.

The rules are torch's CPU ones: a window's first tap inside the input seeds
the maximum and its index, a later tap replaces it when strictly greater or
NaN (so ties keep the first maximum in row-major window order and a NaN
always wins, the last NaN of the window giving the index); an average
divides by the window clipped to the padded input (``count_include_pad``)
or by the cells inside the input.
"""
from __future__ import annotations

import numba
import numpy as np
from numba import njit, prange

from .. import _config


#: elementary steps worth one more thread; below it, waking a worker costs more than it saves
GRAIN = 1 << 16


def use_threads(work: int) -> None:
    """Let Numba's parallel loops use this thread's fastconv budget, as far as ``work`` merits."""
    budget = min(_config.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    numba.set_num_threads(max(1, min(budget, work // GRAIN)))


@njit(cache=True, nogil=True)
def _u(index):
    """An index known to be non-negative, as unsigned.

    Numba wraps negative signed indices around at run time; in a short
    inner loop that check costs three times the work itself.
    """
    return np.uint64(index)


@njit(cache=True, nogil=True)
def _first_inside(start, dilation):
    """First tap position ``start + k*dilation`` that is not negative."""
    if start >= 0:
        return start
    return start + ((-start + dilation - 1) // dilation) * dilation


@njit(cache=True, nogil=True)
def _column_range(offset, stride, width, out_width):
    """Output columns ``ox`` whose tap ``ox*stride + offset`` lies in ``[0, width)``."""
    lo = 0
    if offset < 0:
        lo = (-offset + stride - 1) // stride
    if width - 1 - offset < 0:
        return lo, lo
    hi = min(out_width, (width - 1 - offset) // stride + 1)
    return lo, max(lo, hi)


@njit(cache=True, nogil=True)
def _max_row(x, p, oz, oy, kernel, stride, dilation, pad, columns, best, tap, want_taps):
    """Maximum of every window of output row (oz, oy) of plane ``p``.

    ``columns[kx]`` holds the output columns whose tap ``kx`` lies inside the
    input.  With ``want_taps``, ``tap[ox]`` (float64) also gets the winner's
    flat in-plane index plus the leading column padding, or -1 while no tap
    beat -inf.  The update is arithmetic on purpose: as a select, LLVM turns
    it into a branch that random data mispredicts half the time.
    """
    _, depth, height, width = x.shape
    z_start = oz * stride[0] - pad[0]
    y_start = oy * stride[1] - pad[1]
    best[:] = -np.inf
    tap[:] = -1
    for kz in range(kernel[0]):
        z = z_start + kz * dilation[0]
        if z < 0 or z >= depth:
            continue
        for ky in range(kernel[1]):
            y = y_start + ky * dilation[1]
            if y < 0 or y >= height:
                continue
            row = x[p, z, y]
            for kx in range(kernel[2]):
                offset = kx * dilation[2] - pad[2]
                lo, hi = columns[kx, 0], columns[kx, 1]
                if want_taps:
                    # index of the tap at column ox, once ox*stride - pad is added
                    number = np.float64((z * height + y) * width + kx * dilation[2])
                    for ox in range(lo, hi):
                        o, i = _u(ox), _u(ox * stride[2] + offset)
                        value, current = row[i], best[o]
                        take = (value > current) | (value != value)
                        best[o] = value if take else current
                        held = tap[o]
                        tap[o] = held + (number - held) * np.float64(take)
                else:
                    for ox in range(lo, hi):
                        o, i = _u(ox), _u(ox * stride[2] + offset)
                        value, current = row[i], best[o]
                        take = (value > current) | (value != value)
                        best[o] = value if take else current


@njit(cache=True, nogil=True)
def _columns(kernel, stride, dilation, pad, width, out_width):
    """``[lo, hi)`` output columns whose window column ``kx`` lies inside the input."""
    columns = np.empty((kernel, 2), np.int64)
    for kx in range(kernel):
        columns[kx, 0], columns[kx, 1] = _column_range(kx * dilation - pad, stride, width,
                                                       out_width)
    return columns


@njit(cache=True, nogil=True)
def _tap_indices(x_shape, oz, oy, stride, dilation, pad, tap, idx):
    """Flat in-plane indices from :func:`_max_row`'s taps (torch's seed for -1)."""
    _, depth, height, width = x_shape
    for ox in range(idx.shape[0]):
        number = tap[ox]
        if number >= 0:
            idx[ox] = np.int64(number) + ox * stride[2] - pad[2]
        else:
            # no tap beat -inf: torch keeps the window's first position inside the input
            z = _first_inside(oz * stride[0] - pad[0], dilation[0])
            y = _first_inside(oy * stride[1] - pad[1], dilation[1])
            idx[ox] = (z * height + y) * width + _first_inside(ox * stride[2] - pad[2],
                                                               dilation[2])


@njit(cache=True, nogil=True, parallel=True)
def max_pool_forward(x, kernel, stride, dilation, pad, out, indices, want_indices):
    """``out[p] = max over windows``; ``indices[p]`` too when ``want_indices``."""
    planes, out_depth, out_height, out_width = out.shape
    columns = _columns(kernel[2], stride[2], dilation[2], pad[2], x.shape[3], out_width)
    for p in prange(planes):
        best = np.empty(out_width, x.dtype)
        tap = np.empty(out_width, np.float64)
        for oz in range(out_depth):
            for oy in range(out_height):
                _max_row(x, p, oz, oy, kernel, stride, dilation, pad, columns, best, tap,
                         want_indices)
                out[p, oz, oy, :] = best
                if want_indices:
                    _tap_indices(x.shape, oz, oy, stride, dilation, pad, tap,
                                 indices[p, oz, oy])


@njit(cache=True, nogil=True, parallel=True)
def max_pool_backward(x, grad_out, kernel, stride, dilation, pad, grad_in):
    """Route each output gradient to its window's maximum, found again from ``x``.

    ``grad_in`` is the ``(planes, D*H*W)`` view of the input gradient.
    """
    planes, out_depth, out_height, out_width = grad_out.shape
    columns = _columns(kernel[2], stride[2], dilation[2], pad[2], x.shape[3], out_width)
    for p in prange(planes):
        best = np.empty(out_width, x.dtype)
        tap = np.empty(out_width, np.float64)
        idx = np.empty(out_width, np.int64)
        flat = grad_in[p]
        flat[:] = 0
        for oz in range(out_depth):
            for oy in range(out_height):
                _max_row(x, p, oz, oy, kernel, stride, dilation, pad, columns, best, tap, True)
                _tap_indices(x.shape, oz, oy, stride, dilation, pad, tap, idx)
                g = grad_out[p, oz, oy]
                for ox in range(out_width):
                    flat[_u(idx[ox])] += g[ox]


@njit(cache=True, nogil=True, parallel=True)
def scatter_add(grad_out, indices, grad_in):
    """``grad_in[p, indices[p, j]] += grad_out[p, j]`` on 2-D views; count of bad indices.

    Out-of-range indices are skipped and counted so the caller can raise.
    """
    planes, size = grad_in.shape
    bad = 0
    for p in prange(planes):
        row = grad_in[p]
        row[:] = 0
        for j in range(grad_out.shape[1]):
            i = indices[p, j]
            if i < 0 or i >= size:
                bad += 1
            else:
                row[_u(i)] += grad_out[p, j]
    return bad


@njit(cache=True, nogil=True)
def _span(start, kernel, size, pad_end, include_pad):
    """Valid tap range of a window along one axis, and its divisor factor."""
    stop = min(start + kernel, size + pad_end)
    factor = stop - start
    lo = max(start, 0)
    hi = min(stop, size)
    if not include_pad:
        factor = hi - lo
    return lo, hi, factor


@njit(cache=True, nogil=True)
def _column_factors(kernel, stride, pad, pad_end, width, out_width, include_pad, dtype_like):
    """Each output column's share of the divisor (window columns counted)."""
    factors = np.empty(out_width, dtype_like.dtype)
    for ox in range(out_width):
        _, _, factors[ox] = _span(ox * stride - pad, kernel, width, pad_end, include_pad)
    return factors


@njit(cache=True, nogil=True)
def _avg_divisors(oz, oy, x_shape, kernel, stride, pad, pad_end, include_pad, column_factors,
                  divisor):
    """Divisors of output row (oz, oy), and the row's z and y ranges inside the input.

    A window with no cell inside the input gets divisor 1: its sum is 0 and
    torch returns 0 there rather than 0/0.
    """
    _, depth, height, _ = x_shape
    z0, z1, fz = _span(oz * stride[0] - pad[0], kernel[0], depth, pad_end[0], include_pad)
    y0, y1, fy = _span(oy * stride[1] - pad[1], kernel[1], height, pad_end[1], include_pad)
    row_factor = fz * fy
    for ox in range(divisor.shape[0]):
        factor = row_factor * column_factors[ox]
        divisor[ox] = factor if factor > 0 else 1
    return z0, z1, y0, y1


@njit(cache=True, nogil=True, parallel=True)
def avg_pool_forward(x, kernel, stride, pad, pad_end, include_pad, out):
    """``out[p] = window sums / divisors`` (0 for a window of padding only).

    Separably: first every input row's sums over the window columns at each
    output column (the strided, scalar part), then each output row adds
    whole contiguous rows of those, which vectorises.
    """
    planes, out_depth, out_height, out_width = out.shape
    _, depth, height, width = x.shape
    columns = _columns(kernel[2], stride[2], 1, pad[2], width, out_width)
    column_factors = _column_factors(kernel[2], stride[2], pad[2], pad_end[2], width, out_width,
                                     include_pad, x)
    for p in prange(planes):
        rows = np.zeros((depth, height, out_width), x.dtype)
        acc = np.empty(out_width, x.dtype)
        divisor = np.empty(out_width, x.dtype)
        for z in range(depth):
            for y in range(height):
                source, target = x[p, z, y], rows[z, y]
                for kx in range(kernel[2]):
                    offset = kx - pad[2]
                    for ox in range(columns[kx, 0], columns[kx, 1]):
                        target[_u(ox)] += source[_u(ox * stride[2] + offset)]
        for oz in range(out_depth):
            for oy in range(out_height):
                z0, z1, y0, y1 = _avg_divisors(oz, oy, x.shape, kernel, stride, pad, pad_end,
                                               include_pad, column_factors, divisor)
                acc[:] = 0
                for z in range(z0, z1):
                    for y in range(y0, y1):
                        row = rows[z, y]
                        for ox in range(out_width):
                            acc[ox] += row[ox]
                target = out[p, oz, oy]
                for ox in range(out_width):
                    target[ox] = acc[ox] / divisor[ox]


@njit(cache=True, nogil=True, parallel=True)
def avg_pool_backward(grad_out, kernel, stride, pad, pad_end, include_pad, grad_in):
    """Spread each output gradient, over its divisor, on its window's cells.

    The transpose of :func:`avg_pool_forward`'s two passes: shares gathered
    per input row first (contiguous), then spread along the row's columns.
    """
    planes, out_depth, out_height, out_width = grad_out.shape
    _, depth, height, width = grad_in.shape
    columns = _columns(kernel[2], stride[2], 1, pad[2], width, out_width)
    column_factors = _column_factors(kernel[2], stride[2], pad[2], pad_end[2], width, out_width,
                                     include_pad, grad_in)
    for p in prange(planes):
        rows = np.zeros((depth, height, out_width), grad_in.dtype)
        share = np.empty(out_width, grad_in.dtype)
        for oz in range(out_depth):
            for oy in range(out_height):
                z0, z1, y0, y1 = _avg_divisors(oz, oy, grad_in.shape, kernel, stride, pad,
                                               pad_end, include_pad, column_factors, share)
                for ox in range(out_width):
                    share[ox] = grad_out[p, oz, oy, ox] / share[ox]
                for z in range(z0, z1):
                    for y in range(y0, y1):
                        row = rows[z, y]
                        for ox in range(out_width):
                            row[ox] += share[ox]
        grad_in[p, :, :, :] = 0
        for z in range(depth):
            for y in range(height):
                source, target = rows[z, y], grad_in[p, z, y]
                for kx in range(kernel[2]):
                    offset = kx - pad[2]
                    for ox in range(columns[kx, 0], columns[kx, 1]):
                        target[_u(ox * stride[2] + offset)] += source[_u(ox)]
