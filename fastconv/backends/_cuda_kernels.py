"""The ``@cuda.jit`` kernels of the CUDA backend (imported only by backends/cuda.py).

Every kernel works on 5-d ``(N, C, D, H, W)`` views: 1-d and 2-d problems are
3-d problems with unit leading spatial axes, so one kernel per dtype serves
all three.  Kernels write into preallocated device arrays.

The correlation kernel tiles its input through shared memory.  A thread
block owns a tile of ``TX x (TY*RY)`` output positions of one output plane
``od`` and ``TZ*OCB`` output channels of one group; each thread accumulates
``RY`` output rows times ``OCB`` output channels in registers.  For each input
channel and kernel depth tap, the block loads the input patch its tile reads
and the weights of its channels into shared memory, synchronises, and every
thread then reads one input value per tap and row and reuses it for ``OCB``
channels.  Large kernels are cut into chunks of ``KHC x KWC`` taps so the
patch always fits the shared-memory budget.

Weights arrive transposed to ``(Cg, KD, KH, KW, O)`` so the block's channels
load contiguously.  Two extras turn the same kernel into both gradients:
``in_dilation`` reads the input as if ``in_dilation - 1`` zeros sat between
its entries (the gradient for the input), and ``lsplit`` splits the sum over
input channels across blocks that write partial outputs (more blocks for the
gradient for the kernel, whose output is tiny).
"""
from __future__ import annotations

import inspect
from functools import lru_cache

import numpy as np
from numba import cuda

#: most threads in a block (the correlation kernel is compiled for at most this many)
MAX_THREADS = 256
#: shared memory one block may use, in bytes (below the 48 KiB every GPU allows)
SHARED_BYTES = 24 * 1024
#: output rows each thread accumulates (1 where the output has fewer than 8 rows)
ROWS_PER_THREAD = 2
#: two blocks per multiprocessor: caps the correlation kernel at 128 registers a thread,
#: which keeps its inner loop free of spills (checked with ptxas for sm_90)
_LAUNCH_BOUNDS = ({"launch_bounds": (MAX_THREADS, 2)}
                  if "launch_bounds" in inspect.signature(cuda.jit).parameters else {})


@cuda.jit(device=True)
def _lanes(tid, nthreads, cols):
    """Split a block's threads over a (rows, cols) copy: first row, row step, column, step.

    Computed once per kernel so the copy loops need no division.  Threads
    past the last full set of ``cols`` get a first row past any copy.
    """
    if nthreads >= cols:
        rstep = nthreads // cols
        r0 = tid // cols
        if r0 >= rstep:
            r0 = 1 << 40
        return r0, rstep, tid - (tid // cols) * cols, cols
    return 0, 1, tid, nthreads


@lru_cache(maxsize=None)
def correlate_kernel(dtype, ry: int, ocb: int, dilated: bool):
    """The tiled correlation kernel for one dtype, register tile and input-dilation mode."""
    dtype = np.dtype(dtype)
    zero = dtype.type(0)
    nacc = ry * ocb
    u32 = np.uint32

    @cuda.jit(**_LAUNCH_BOUNDS)
    def kernel(x, wt, out, geo, lsplit, z0, y0, groups, per_group, tiles_x, tiles_y,
               khc, kwc, prows, pcols):
        # geo = (sd, sh, sw, dd, dh, dw, pd, ph, pw, ld, lh, lw): stride, dilation,
        # leading padding, input dilation, each over (D, H, W)
        depth, height, width = x.shape[2], x.shape[3], x.shape[4]
        cg, kd_n, kh_n, kw_n, o_total = wt.shape
        tx, ty, tz = cuda.threadIdx.x, cuda.threadIdx.y, cuda.threadIdx.z
        bx, by, bz = cuda.blockDim.x, cuda.blockDim.y, cuda.blockDim.z
        tid = (tz * by + ty) * bx + tx
        nthreads = bx * by * bz
        # which batch item, channel split, group, channels and tile this block owns
        zb = cuda.blockIdx.z + z0
        n = zb % x.shape[0]
        l_begin = (zb // x.shape[0]) * lsplit
        l_end = min(cg, l_begin + lsplit)
        og = o_total // groups
        yb = cuda.blockIdx.y + y0
        g = yb // per_group
        wcols = bz * ocb
        oc_base = g * og + (yb - g * per_group) * wcols
        oc_end = g * og + og
        t = cuda.blockIdx.x
        tile_x = t % tiles_x
        t //= tiles_x
        tile_y = t % tiles_y
        od = t // tiles_y
        y_origin = tile_y * by * ry * geo[1] - geo[7]
        x_origin = tile_x * bx * geo[2] - geo[8]
        # shared memory: the input patch (prows x pcols), then the weights (taps x wcols)
        smem = cuda.shared.array(0, dtype)
        wbase = prows * pcols
        pr0, prstep, pq0, pqstep = _lanes(tid, nthreads, pcols)
        wt0, wtstep, wj0, wjstep = _lanes(tid, nthreads, wcols)
        wa0, wb0 = wt0 // kwc, wt0 - (wt0 // kwc) * kwc
        wda, wdb = wtstep // kwc, wtstep - (wtstep // kwc) * kwc
        row_step = u32(by * geo[1] * pcols)
        x_step = u32(geo[5])
        acc = cuda.local.array(nacc, dtype)
        for i in range(nacc):
            acc[i] = zero
        for l in range(l_begin, l_end):
            c = g * cg + l
            for kd in range(kd_n):
                uz = od * geo[0] - geo[6] + kd * geo[3]
                iz = uz // geo[9]
                if uz < 0 or iz >= depth or uz - iz * geo[9] != 0:
                    continue  # the same for the whole block: od is the block's
                for kh0 in range(0, kh_n, khc):
                    nkh = min(khc, kh_n - kh0)
                    for kw0 in range(0, kw_n, kwc):
                        nkw = min(kwc, kw_n - kw0)
                        cuda.syncthreads()
                        y_start = y_origin + kh0 * geo[4]
                        x_start = x_origin + kw0 * geo[5]
                        for r in range(pr0, prows, prstep):
                            uy = y_start + r
                            iy = uy // geo[10] if dilated else uy
                            row_in = uy >= 0 and iy < height
                            if dilated:
                                row_in = row_in and uy - iy * geo[10] == 0
                            for q in range(pq0, pcols, pqstep):
                                ux = x_start + q
                                ix = ux // geo[11] if dilated else ux
                                value = zero
                                if row_in and ux >= 0 and ix < width:
                                    if not dilated or ux - ix * geo[11] == 0:
                                        value = x[n, c, iz, iy, ix]
                                smem[r * pcols + q] = value
                        a, b = wa0, wb0
                        for tap in range(wt0, khc * kwc, wtstep):
                            for j in range(wj0, wcols, wjstep):
                                o = oc_base + j
                                value = zero
                                if o < oc_end and a < nkh and b < nkw:
                                    value = wt[l, kd, kh0 + a, kw0 + b, o]
                                smem[wbase + tap * wcols + j] = value
                            a += wda
                            b += wdb
                            if b >= kwc:
                                b -= kwc
                                a += 1
                        cuda.syncthreads()
                        # unsigned offsets: no negative-index fix-ups in the hot loop
                        for a in range(nkh):
                            xoff = u32((ty * geo[1] + a * geo[4]) * pcols + tx * geo[2])
                            woff = u32(wbase + a * kwc * wcols + tz * ocb)
                            for b in range(nkw):
                                for r in range(ry):
                                    v = smem[xoff + u32(r) * row_step]
                                    for j in range(ocb):
                                        acc[r * ocb + j] += v * smem[woff + u32(j)]
                                xoff += x_step
                                woff += u32(wcols)
        ox = tile_x * bx + tx
        for r in range(ry):
            oy = tile_y * by * ry + ty + r * by
            if oy < out.shape[3] and ox < out.shape[4]:
                for j in range(ocb):
                    o = oc_base + tz * ocb + j
                    if o < oc_end:
                        out[zb, o, od, oy, ox] = acc[r * ocb + j]

    return kernel


# --- planning ---------------------------------------------------------------------------------

def _even_split(total: int, most: int) -> int:
    """Largest part size <= most that cuts ``total`` into the fewest, most even parts."""
    parts = -(-total // max(most, 1))
    return -(-total // parts)


def plan(out_shape, og: int, groups: int, kernel, stride, dilation, itemsize: int,
         max_threads: int = 0, shared_bytes: int = 0) -> dict:
    """Launch geometry of the correlation kernel for one problem.

    ``out_shape`` is the 5-d output (N, O, OD, OH, OW), ``og`` the output
    channels per group; ``kernel``, ``stride`` and ``dilation`` are 3-tuples.
    Returns the register tile (``ry`` rows x ``ocb`` channels a thread), the
    block, tile counts, kernel chunks, patch size, shared bytes and the
    number of blocks (before any channel split).
    """
    max_threads = max_threads or MAX_THREADS
    shared = (shared_bytes or SHARED_BYTES) // itemsize
    n, _, od, oh, ow = out_shape
    ry = ROWS_PER_THREAD if oh >= 8 else 1
    ocb = 1 if og == 1 else 4 if og <= 4 else 8
    tx = _even_split(ow, max_threads if oh == 1 else 32)
    ty = _even_split(-(-oh // ry), max(1, max_threads // tx))
    if ocb == 8 and tx * ty * -(-og // 8) < 128:
        ocb = 4  # a small output tile: spread the channels over more threads
    tz = _channel_threads(og, ocb, max(1, max_threads // (tx * ty)))
    khc, kwc = kernel[1], kernel[2]

    def patch(ty, tx, khc, kwc):
        rows = (ty * ry - 1) * stride[1] + (khc - 1) * dilation[1] + 1
        cols = (tx - 1) * stride[2] + (kwc - 1) * dilation[2] + 1
        return rows, cols, rows * cols + khc * kwc * tz * ocb

    while patch(ty, tx, khc, kwc)[2] > shared:
        # halve whichever of kernel chunk and tile spans the most input, rows or columns
        spans = {"khc": (khc - 1) * dilation[1], "kwc": (kwc - 1) * dilation[2],
                 "ty": (ty * ry - 1) * stride[1], "tx": (tx - 1) * stride[2]}
        widest = max(spans, key=spans.get)
        if spans[widest] == 0:
            tz = max(1, tz // 2)
        elif widest == "khc":
            khc = -(-khc // 2)
        elif widest == "kwc":
            kwc = -(-kwc // 2)
        elif widest == "ty":
            ty = -(-ty // 2)
        else:
            tx = -(-tx // 2)
    prows, pcols, words = patch(ty, tx, khc, kwc)
    tiles_x, tiles_y = -(-ow // tx), -(-oh // (ty * ry))
    per_group = -(-og // (tz * ocb))
    blocks = tiles_x * tiles_y * od * per_group * groups * n
    return dict(ry=ry, ocb=ocb, block=(tx, ty, tz), tiles_x=tiles_x, tiles_y=tiles_y,
                per_group=per_group, khc=khc, kwc=kwc, prows=prows, pcols=pcols,
                shared=words * itemsize, blocks=blocks,
                grid_xy=(tiles_x * tiles_y * od, per_group * groups))


def _channel_threads(og: int, ocb: int, most: int) -> int:
    """Threads along the channel axis: fewest wasted channel slots, then the most threads."""
    return min(range(1, most + 1), key=lambda tz: (-(-og // (tz * ocb)) * tz * ocb, -tz))


def channel_splits(blocks: int, cg: int, target: int = 512) -> int:
    """How many partial sums to cut the input channels into so enough blocks run."""
    if blocks >= target or cg < 4:
        return 1
    return max(1, min(-(-target // blocks), cg // 2))


# --- small helpers: layout changes, sums -------------------------------------------------------

@cuda.jit
def gather4(src, offset, strides, dst):
    """``dst[i, j, k, l] = src[offset + i*s0 + j*s1 + k*s2 + l*s3]`` (1-d ``src``).

    Transposes, flips and channel regroupings of contiguous arrays, in one kernel.
    """
    d0, d1, d2, d3 = dst.shape
    for flat in range(cuda.grid(1), d0 * d1 * d2 * d3, cuda.gridsize(1)):
        l = flat % d3
        rest = flat // d3
        k = rest % d2
        rest //= d2
        j = rest % d1
        i = rest // d1
        dst[i, j, k, l] = src[offset + i * strides[0] + j * strides[1] + k * strides[2]
                              + l * strides[3]]


@cuda.jit
def sum_splits(partial, out):
    """``out[i] = sum_s partial[s, i]`` over 2-d ``partial``."""
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        total = partial[0, i]
        for s in range(1, partial.shape[0]):
            total += partial[s, i]
        out[i] = total


@cuda.jit
def fill(out, value):
    """``out[:] = value`` over a 1-d array."""
    for i in range(cuda.grid(1), out.shape[0], cuda.gridsize(1)):
        out[i] = value


# --- pooling ----------------------------------------------------------------------------------
# Geometry tuples: max pooling (k3, s3, d3, p3), average pooling (k3, s3, p3, pend3), all
# 3-tuples over (D, H, W); arrays are (planes, D, H, W) views.  ``zero`` and ``lowest``
# arrive as scalars of the array dtype so float32 stays float32 on the device.

@cuda.jit(device=True)
def _unravel(flat, shape):
    """(plane, z, y, x) of a flat index into a 4-d (planes, D, H, W) shape."""
    x = flat % shape[3]
    rest = flat // shape[3]
    y = rest % shape[2]
    rest //= shape[2]
    z = rest % shape[1]
    return rest // shape[1], z, y, x


@cuda.jit(device=True)
def _first_inside(start, dilation):
    """First tap ``start + k*dilation`` that is not negative (torch's seed index)."""
    if start >= 0:
        return start
    return start + ((-start + dilation - 1) // dilation) * dilation


@cuda.jit
def max_pool(x, geo, lowest, out, indices):
    """Max and torch's flat in-plane index of each window.

    A tap replaces the best so far when strictly greater or NaN: ties keep
    the first maximum, a NaN always wins (torch's rule).
    """
    depth, height, width = x.shape[1], x.shape[2], x.shape[3]
    for flat in range(cuda.grid(1), out.size, cuda.gridsize(1)):
        p, oz, oy, ox = _unravel(flat, out.shape)
        z0 = oz * geo[3] - geo[9]
        y0 = oy * geo[4] - geo[10]
        x0 = ox * geo[5] - geo[11]
        best = lowest
        arg = ((_first_inside(z0, geo[6]) * height + _first_inside(y0, geo[7])) * width
               + _first_inside(x0, geo[8]))
        for kz in range(geo[0]):
            z = z0 + kz * geo[6]
            if z < 0 or z >= depth:
                continue
            for ky in range(geo[1]):
                y = y0 + ky * geo[7]
                if y < 0 or y >= height:
                    continue
                for kx in range(geo[2]):
                    xx = x0 + kx * geo[8]
                    if xx < 0 or xx >= width:
                        continue
                    value = x[p, z, y, xx]
                    if value > best or value != value:
                        best = value
                        arg = (z * height + y) * width + xx
        out[p, oz, oy, ox] = best
        indices[p, oz, oy, ox] = arg


@cuda.jit(device=True)
def _covering(i, kernel, stride, dilation, pad, out_size):
    """Outputs ``[lo, hi)`` whose window may hold input position ``i``."""
    reach = i + pad - (kernel - 1) * dilation
    lo = 0 if reach <= 0 else (reach + stride - 1) // stride
    hi = min(out_size, (i + pad) // stride + 1)
    return lo, max(lo, hi)


@cuda.jit
def max_pool_backward(grad_out, indices, geo, zero, grad_in):
    """Each input cell gathers the gradients of the windows whose index names it.

    A gather rather than a scatter: no atomics, and a deterministic sum.
    """
    height, width = grad_in.shape[2], grad_in.shape[3]
    for flat in range(cuda.grid(1), grad_in.size, cuda.gridsize(1)):
        p, z, y, x = _unravel(flat, grad_in.shape)
        me = (z * height + y) * width + x
        total = zero
        z_lo, z_hi = _covering(z, geo[0], geo[3], geo[6], geo[9], grad_out.shape[1])
        y_lo, y_hi = _covering(y, geo[1], geo[4], geo[7], geo[10], grad_out.shape[2])
        x_lo, x_hi = _covering(x, geo[2], geo[5], geo[8], geo[11], grad_out.shape[3])
        for oz in range(z_lo, z_hi):
            for oy in range(y_lo, y_hi):
                for ox in range(x_lo, x_hi):
                    if indices[p, oz, oy, ox] == me:
                        total += grad_out[p, oz, oy, ox]
        grad_in[p, z, y, x] = total


@cuda.jit(device=True)
def _span(start, kernel, size, pad_end, include_pad):
    """Divisor factor of a window along one axis (torch's clipping rules)."""
    stop = min(start + kernel, size + pad_end)
    if include_pad:
        return stop - start
    return min(stop, size) - max(start, 0)


@cuda.jit(device=True)
def _divisor(oz, oy, ox, geo, shape, include_pad):
    return (_span(oz * geo[3] - geo[6], geo[0], shape[1], geo[9], include_pad)
            * _span(oy * geo[4] - geo[7], geo[1], shape[2], geo[10], include_pad)
            * _span(ox * geo[5] - geo[8], geo[2], shape[3], geo[11], include_pad))


@lru_cache(maxsize=None)
def avg_pool_kernels(dtype):
    """(forward, backward) average-pooling kernels; the divisor is cast to ``dtype``."""
    cast = np.dtype(dtype).type

    @cuda.jit
    def forward(x, geo, include_pad, zero, out):
        """Window means, divided by the padded window (count_include_pad) or its real cells."""
        depth, height, width = x.shape[1], x.shape[2], x.shape[3]
        for flat in range(cuda.grid(1), out.size, cuda.gridsize(1)):
            p, oz, oy, ox = _unravel(flat, out.shape)
            z0 = oz * geo[3] - geo[6]
            y0 = oy * geo[4] - geo[7]
            x0 = ox * geo[5] - geo[8]
            total = zero
            for z in range(max(z0, 0), min(z0 + geo[0], depth)):
                for y in range(max(y0, 0), min(y0 + geo[1], height)):
                    for xx in range(max(x0, 0), min(x0 + geo[2], width)):
                        total += x[p, z, y, xx]
            divisor = _divisor(oz, oy, ox, geo, x.shape, include_pad)
            out[p, oz, oy, ox] = total / cast(divisor) if divisor > 0 else zero

    @cuda.jit
    def backward(grad_out, geo, include_pad, zero, grad_in):
        """Each input cell gathers ``grad / divisor`` of every window covering it."""
        for flat in range(cuda.grid(1), grad_in.size, cuda.gridsize(1)):
            p, z, y, x = _unravel(flat, grad_in.shape)
            total = zero
            z_lo, z_hi = _covering(z, geo[0], geo[3], 1, geo[6], grad_out.shape[1])
            y_lo, y_hi = _covering(y, geo[1], geo[4], 1, geo[7], grad_out.shape[2])
            x_lo, x_hi = _covering(x, geo[2], geo[5], 1, geo[8], grad_out.shape[3])
            for oz in range(z_lo, z_hi):
                for oy in range(y_lo, y_hi):
                    for ox in range(x_lo, x_hi):
                        divisor = _divisor(oz, oy, ox, geo, grad_in.shape, include_pad)
                        if divisor > 0:  # a window with no input cell gives 0 (the CPU rule)
                            total += grad_out[p, oz, oy, ox] / cast(divisor)
            grad_in[p, z, y, x] = total

    return forward, backward


# --- local response normalisation --------------------------------------------------------------
# (N, C, S) views; torch's window over channels is [c - size//2, c + (size-1)//2] and its
# divisor is ``base = k + alpha/size * sum of squares``.  ``scale`` = alpha/size, ``coef`` =
# 2*alpha*beta/size, all scalars of the array dtype.

@cuda.jit
def lrn(x, size, scale, beta, k, zero, out, base):
    """``out = x / base**beta``, keeping ``base`` for the backward pass."""
    channels = x.shape[1]
    for flat in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s = flat % x.shape[2]
        rest = flat // x.shape[2]
        c = rest % channels
        b = rest // channels
        total = zero
        for cc in range(max(c - size // 2, 0), min(c + (size - 1) // 2 + 1, channels)):
            total += x[b, cc, s] * x[b, cc, s]
        d = k + scale * total
        base[b, c, s] = d
        out[b, c, s] = x[b, c, s] / d ** beta


@cuda.jit
def lrn_backward(grad_out, x, base, size, beta, coef, zero, grad_in):
    """``dx_j = g_j base_j^-beta - coef x_j sum_{c: j in window(c)} g_c x_c base_c^(-beta-1)``."""
    channels = x.shape[1]
    for flat in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        s = flat % x.shape[2]
        rest = flat // x.shape[2]
        j = rest % channels
        b = rest // channels
        cross = zero
        for c in range(max(j - (size - 1) // 2, 0), min(j + size // 2 + 1, channels)):
            d = base[b, c, s]
            cross += grad_out[b, c, s] * x[b, c, s] / (d * d ** beta)
        grad_in[b, j, s] = grad_out[b, j, s] / base[b, j, s] ** beta - coef * x[b, j, s] * cross
