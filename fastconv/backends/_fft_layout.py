"""Tile layout of the FFT backend: transform sizes, tiles, chunks.

The FFT backend computes every output through overlap-save over tiles.
Along each spatial axis the padded input is cut into ``T`` tiles of ``B``
samples that overlap by ``K - 1`` (``K`` the dilated kernel extent); each
tile yields ``V = B - K + 1`` stride-1 outputs with no wrap-around.  One tile
(``T = 1``) is the classic "transform everything" method, and then ``B`` may
be smaller than the padded length: the trailing zero padding wraps around
onto the leading one, so ``B >= n + max(pad)`` suffices instead of
``n + pad_before + pad_after``.

Small tiles cost more transform points (the ``K - 1`` overlap is computed
twice) but each transform runs from cache, and the kernel is transformed at
tile size only.  :func:`layout` prices every combination of per-axis tile
sizes (powers of two times 1, 9/8, 5/4 or 3/2, and the one-tile sizes)
with a small model of this machine class, fitted to the tile pipeline with
FFTW on one thread (:func:`transform_ns` and the constants below), and keeps
the cheapest.  Sizes other than powers of two plan much worse under
FFTW_ESTIMATE than under FFTW_MEASURE, so the model knows which of the two
the plans will be (``measured``: persisted wisdom, see ``_fft_plans``).  :attr:`Layout.parts` is that model's estimate, which
``fft.model_features`` offers to the dispatcher's cost model.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as _scipy_fft

from .. import geometry

#: bytes of input tiles (all channels) one chunk aims for: long copy runs, buffers near L2 size
CHUNK_BYTES = 512 << 10
#: Python overhead of one chunk (gather, two transforms, multiply, scatter), seconds
CHUNK_OVERHEAD = 15e-6
#: overhead of one tile of one plane (a transform call inside a batch, short copy runs), seconds
TILE_OVERHEAD = 0.3e-6
#: bytes of input tiles per chunk when the product mixes channels (see _chunking)
CHUNK_BYTES_MIXING = 16 << 20
#: a whole row of 2-d or 3-d tiles up to this many input bytes makes one chunk (see _chunking)
CHUNK_ROW_BYTES = 5 << 19
#: largest chunk (transform points of all its planes) whose plans get measured
MEASURED_MAX_POINTS = 1 << 21
#: nanoseconds per complex multiply-add in the frequency domain (complex128)
NS_PER_MAC = 0.9
#: nanoseconds per kernel-spectrum point read from memory once per chunk
NS_PER_KERNEL_STREAM = 2.5
#: nanoseconds per kernel-spectrum point to compute it (pruned transforms)
NS_PER_KERNEL_POINT = 6.0
#: nanoseconds per real element gathered into the tile buffers, and per output scattered
NS_PER_GATHER = 1.0
NS_PER_SCATTER = 1.5


@dataclass(frozen=True)
class AxisTiles:
    """How one spatial axis is cut into tiles.

    ``size`` is the transform length ``B``, ``step`` the stride-1 outputs per
    tile ``V`` (a multiple of the stride), ``count`` the tiles ``T``;
    ``per_tile`` outputs (after the stride) come from each tile, ``outputs`` in
    all, and ``offset`` is where the input starts in the padded coordinates.
    """

    size: int
    step: int
    count: int
    stride: int
    per_tile: int
    outputs: int
    offset: int
    length: int


@dataclass(frozen=True)
class Layout:
    """Tiles of every axis, and how many tiles and batch items one chunk holds."""

    axes: tuple
    real: bool
    chunk_tiles: int      # tiles along the last axis per chunk
    chunk_batch: int      # batch items per chunk
    parts: tuple          # modelled seconds, one thread: transforms, products, copies, overhead

    @property
    def seconds(self) -> float:
        """Modelled time of the whole correlation on one thread."""
        return sum(self.parts)

    @property
    def shape(self) -> tuple:
        """Transform shape of one tile."""
        return tuple(a.size for a in self.axes)

    @property
    def spectrum_shape(self) -> tuple:
        """Shape of one tile's spectrum (half the last axis for real data)."""
        shape = self.shape
        return shape[:-1] + (shape[-1] // 2 + 1,) if self.real else shape

    @property
    def tiles(self) -> int:
        return math.prod(a.count for a in self.axes)


def _pow2(n: int) -> bool:
    return n & (n - 1) == 0


def _menu_size(n: int) -> bool:
    """Whether ``n`` is 2**j times 1, 9/8, 5/4 or 3/2 (the tile sizes :func:`layout` tries)."""
    return any(n % f == 0 and _pow2(n // f) for f in (9, 5, 3))


def _menu_ceil(n: int) -> int:
    """The smallest power of two times 1, 9/8, 5/4 or 3/2 that is at least ``n``."""
    top = 1 << max(n - 1, 1).bit_length()
    return min(m for m in (top, top * 9 // 16, top * 5 // 8, top * 3 // 4) if m >= n)


def _size_penalty(n: int, ndim: int, measured: bool = False) -> float:
    """Slowdown of the plans for a length ``n`` axis against a power of two.

    FFTW_ESTIMATE plans other sizes poorly, in 3-d above all; FFTW_MEASURE
    plans of the menu's sizes (measured here, tile pipeline batches, one
    thread) cost 1.0-1.2 times a power of two in 2-d and 1.1-1.7 in 3-d,
    small sizes the most; other sizes keep the FFTW_ESTIMATE penalty.
    """
    if _pow2(n):
        return 1.0
    dim = min(ndim, 3) - 1
    if measured and _menu_size(n):
        if n % 3 == 0 and _pow2(n // 3):            # 3 * 2**k: 96, 192, 384
            return (1.05, 1.05 if n >= 192 else 1.2, 1.1 if n >= 96 else 1.4)[dim]
        big = n >= (256, 128, 64)[dim]
        return (1.1, 1.15 if big else 1.3, 1.4 if big else 1.7)[dim]
    if n % 3 == 0 and _pow2(n // 3):                # 3 * 2**k
        return (1.1, 1.05 if n >= 256 else 1.7, 2.4)[dim]
    return (1.2, 1.7, 2.4)[dim]


def _shape_penalty(shape: tuple, measured: bool) -> float:
    """Slowdown of a tile shape's plans against powers of two (:func:`_size_penalty`).

    Measured 3-d plans (FFTW 3.3, one tile, both directions) pay the
    penalty only when both leading axes are smooth non-powers of two:
    (80, 80, 80) and (80, 80, 64) run 6.8-7.2 ns per point, (64, 80, 80),
    (64, 80, 144) and (64, 64, 144) 4.7-5.2, a power of two 4.6 (64**3);
    the contiguous last axis costs no more than a power of two when it is
    one of the menu's sizes (:func:`_menu_size`).
    """
    penalties = [_size_penalty(n, len(shape), measured) for n in shape]
    if measured and len(shape) == 3:
        low, high = sorted(penalties[:2])
        lead = high if low > 1.0 else 1.0 + 0.15 * (high - 1.0)
        return max(lead, 1.0 if _menu_size(shape[-1]) else penalties[-1])
    return max(penalties)


def transform_ns(points: int, shape: tuple, real: bool, single: bool,
                 measured: bool = False) -> float:
    """Modelled nanoseconds of one forward plus one inverse transform, per point.

    Fitted to FFTW (FFTW_ESTIMATE plans, one thread) inside the tile
    pipeline on this machine class: about 0.45 ns per doubling in 2-d and
    3-d, 0.2 in 1-d, and steeper once a transform (or, in 1-d, a chunk of
    them) spills out of L2.  Sizes that are not powers of two plan worse
    under FFTW_ESTIMATE, small ones and 3-d ones much worse, and somewhat
    worse under FFTW_MEASURE (``measured``, :func:`_size_penalty`).
    """
    bits = math.log2(max(points, 2))
    if len(shape) == 1:
        ns = 0.2 * bits + 1.2 * max(0.0, bits - 13)
    elif measured and len(shape) == 2:
        # measured 2-d plans (FFTW 3.3, one thread, both directions) cost by their number of
        # rows, the strided column transforms, more than by their points: 3.2-3.5 ns a point
        # for 64 and 128 rows whatever the row length up to 512, 4.2-4.3 for 256 rows, and
        # more once a tile outgrows 2**16 points (256 x 512: 5.4, 512 x 512: 6.2)
        ns = 3.3 + 0.9 * max(0.0, math.log2(shape[0]) - 7) + 0.5 * max(0.0, bits - 16)
        return _finish(ns * _shape_penalty(shape, measured), real, single)
    else:
        ns = max(1.0, 0.45 * bits - 2.0)
    ns *= _shape_penalty(shape, measured)
    # spilling out of L2: measured 3-d plans suffer far less (128**3: 0.3 ns more per point and
    # doubling than 64**3; 64 x 80 x 144, 2**19.5 points, none) than the fit of the others
    ns += (0.45 if measured and len(shape) == 3 else 1.2) * max(0.0, bits - 19)
    return _finish(ns, real, single)


def _finish(ns, real, single):
    """Real-data ``ns`` for complex or single-precision transforms."""
    if not real:
        ns *= 2.0
    if single:
        ns *= 0.6
    return ns


def _axis_options(n, k, pad, stride, menu_max):
    """(size, step, count) options for one axis: one whole tile, or overlap-save tiles."""
    before, after = pad
    length = n + before + after - k + 1           # stride-1 outputs
    need = max(n + max(before, after), k, length)
    options = {(_scipy_fft.next_fast_len(need, real=True), length, 1),
               (1 << (need - 1).bit_length(), length, 1),
               (_menu_ceil(need), length, 1)}
    size = 1 << max(k, 2).bit_length()
    while size < need and size <= menu_max:
        # 2**j and 3 * 2**(j - 1); from 64 up also 9 and 5 * 2**i (smaller ones plan
        # poorly even when measured, and every option multiplies the combinations priced)
        smooth = (size * 9 // 8, size * 5 // 4) if size >= 64 else ()
        for b in (size, size * 3 // 2) + smooth:
            step = (b - k + 1) // stride * stride
            if step >= stride and step * 4 >= b - k + 1 and b < need:
                count = -(-length // step)
                if count > 1:
                    options.add((b, step, count))
        size *= 2
    return length, sorted(options)


def _chunking(axes, batch, planes, itemsize, elementwise):
    """Tiles and batch items per chunk so that a chunk's input fits the chunk budget.

    Channel-mixing products stream the whole kernel spectrum once per chunk,
    so they get bigger chunks that share that stream among more tiles.
    """
    budget = CHUNK_BYTES if elementwise else CHUNK_BYTES_MIXING
    tile_bytes = planes * math.prod(a.size for a in axes) * itemsize
    units = max(1, budget // max(tile_bytes, 1))
    last = axes[-1].count
    if units < last:
        # Small 2-d and 3-d tiles run best a whole row per chunk (measured, 2 threads: 10-40 %
        # faster for 128**2 and 32**3 tiles): no partial chunk computes idle tiles, and fewer,
        # longer chunks keep the workers from queueing for the GIL between transforms.
        if elementwise and len(axes) > 1 and last * tile_bytes <= CHUNK_ROW_BYTES:
            return last, 1
        return units, 1
    return last, max(1, min(batch, units // last))


def _price(axes, problem, real, chunk_tiles, chunk_batch, measured):
    """Modelled seconds of (transforms, frequency-domain products, copies, per-chunk overhead)."""
    n, c = problem.x_shape[:2]
    o, cg = problem.w_shape[:2]
    shape = tuple(a.size for a in axes)
    points = math.prod(shape)
    tiles = math.prod(a.count for a in axes)
    single = problem.dtype in (np.dtype(np.float32), np.dtype(np.complex64))
    spectrum = spectrum_points(shape, real)
    chunks = tiles // axes[-1].count * -(-axes[-1].count // chunk_tiles) * -(-n // chunk_batch)
    # only chunks small enough to measure get measured plans (_fft_plans.MEASURE_MAX_POINTS)
    measured = measured and chunk_tiles * chunk_batch * max(c, o) * points <= MEASURED_MAX_POINTS
    ns = transform_ns(points, shape, real, single, measured)
    transforms = (tiles * (n * c + n * o) / 2 * points * ns
                  + o * cg * spectrum * NS_PER_KERNEL_POINT)
    copies = (tiles * n * c * points * NS_PER_GATHER
              + math.prod(problem.out_shape) * NS_PER_SCATTER) * (1 if real else 2)
    if cg == 1 and o == problem.groups:     # one kernel plane per channel: in-place product
        products = tiles * n * o * spectrum * NS_PER_MAC
    else:                                   # kernel spectrum streamed once per chunk
        products = o * cg * spectrum * (tiles * n * NS_PER_MAC + chunks * NS_PER_KERNEL_STREAM)
    overhead = chunks * CHUNK_OVERHEAD + tiles * n * (c + o) * TILE_OVERHEAD
    return transforms * 1e-9, products * 1e-9, copies * 1e-9, overhead


def spectrum_points(shape, real: bool) -> int:
    """Points of one tile's spectrum (the last axis halved for real data)."""
    return math.prod(shape[:-1]) * (shape[-1] // 2 + 1) if real else math.prod(shape)


def chunk_bytes(problem, shape, real: bool, tiles: int) -> int:
    """Scratch bytes of one worker's buffers for ``tiles`` tile-batch units."""
    c, o = problem.in_channels, problem.out_channels
    itemsize = problem.dtype.itemsize
    cplx = itemsize * 2 if real else itemsize
    return tiles * (max(c, o) * math.prod(shape) * itemsize
                    + (c + o) * spectrum_points(shape, real) * cplx)


def kernel_bytes(problem, shape, real: bool) -> int:
    """Bytes of the kernel spectrum, shared by the workers of one call."""
    cplx = problem.dtype.itemsize * (2 if real else 1)
    return math.prod(problem.w_shape[:2]) * spectrum_points(shape, real) * cplx


def _axes_options(problem):
    """Per spatial axis, the AxisTiles worth pricing."""
    per_axis = []
    for size, k, pad, s, d, out in zip(problem.spatial, problem.kernel, problem.padding,
                                       problem.stride, problem.dilation, problem.out_spatial):
        _, options = _axis_options(size, geometry.effective_size(k, d), pad, s, 1 << 22)
        per_axis.append([AxisTiles(b, v, t, s, v // s if t > 1 else out, out, pad[0], size)
                         for b, v, t in options])
    return per_axis


def _fit(problem, axes, workspace_bytes, chunk=None, measured=False):
    """Layout of these axes with chunks cut to fit ``workspace_bytes``, or None."""
    real = problem.dtype.kind != "c"
    elementwise = problem.w_shape[1] == 1 and problem.out_channels == problem.groups
    shape = tuple(a.size for a in axes)
    chunk_tiles, chunk_batch = chunk or _chunking(axes, problem.batch, problem.in_channels,
                                                  problem.dtype.itemsize, elementwise)
    room = workspace_bytes - kernel_bytes(problem, shape, real)
    unit = chunk_bytes(problem, shape, real, 1)
    if unit > room:
        return None
    while chunk_tiles * chunk_batch * unit > room:
        if chunk_batch > 1:
            chunk_batch = max(1, chunk_batch // 2)
        else:
            chunk_tiles = max(1, chunk_tiles // 2)
    return Layout(tuple(axes), real, chunk_tiles, chunk_batch,
                  _price(axes, problem, real, chunk_tiles, chunk_batch, measured))


@lru_cache(maxsize=512)
def layout(problem, workspace_bytes: int, measured: bool = False):
    """The cheapest tiling of ``problem`` whose chunk buffers fit ``workspace_bytes``.

    ``measured``: priced for FFTW_MEASURE plans instead of FFTW_ESTIMATE ones.
    Returns None when even the smallest tiles do not fit.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 10**5), (1, 1, 101), "float64", padding=50)
    >>> chosen = layout(p, 2**28)
    >>> chosen.tiles > 1 and chosen.axes[0].per_tile * chosen.tiles >= 10**5
    True
    """
    best = None
    for axes in itertools.product(*_axes_options(problem)):
        candidate = _fit(problem, axes, workspace_bytes, measured=measured)
        if candidate is not None and (best is None or candidate.seconds < best.seconds):
            best = candidate
    return best


def tiling(problem, sizes, chunk_tiles=None, chunk_batch=None, measured=False):
    """The layout with tile sizes ``sizes`` (for tests and benchmarks).

    An axis whose size holds the whole padded input gets one tile; chunks
    default to what :func:`layout` would use.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 1000), (1, 1, 33), "float64", padding=16)
    >>> [(a.size, a.step, a.count) for a in tiling(p, (128,)).axes]
    [(128, 96, 11)]
    """
    axes = []
    for b, size, k, pad, s, d, out in zip(sizes, problem.spatial, problem.kernel,
                                          problem.padding, problem.stride, problem.dilation,
                                          problem.out_spatial):
        k_eff = geometry.effective_size(k, d)
        length = size + pad[0] + pad[1] - k_eff + 1
        if b >= max(size + max(pad), k_eff, length):
            axes.append(AxisTiles(b, length, 1, s, out, out, pad[0], size))
            continue
        step = (b - k_eff + 1) // s * s
        if step < s:
            raise ValueError(f"tile size {b} is too small for a kernel of extent {k_eff} "
                             f"and stride {s}")
        axes.append(AxisTiles(b, step, -(-length // step), s, step // s, out, pad[0], size))
    chunk = None
    if chunk_tiles is not None or chunk_batch is not None:
        chunk = (min(chunk_tiles or 1, axes[-1].count), min(chunk_batch or 1, problem.batch))
    return _fit(problem, axes, 1 << 62, chunk, measured)
