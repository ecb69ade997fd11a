"""Frequency-domain correlation: pyFFTW (scipy.fft as fallback), overlap-save tiles.

Every output is computed by overlap-save over tiles (see
:mod:`fastconv.backends._fft_layout`, which picks the tile sizes; one tile
per axis is the plain "transform it all" method).  Per chunk of tiles: copy
the input tiles into a buffer (zero padding is implicit), transform all
input planes, multiply-accumulate over the channels of each group in the
frequency domain with the kernel spectrum (transformed once per call, at
tile size), inverse-transform the output planes and copy the valid,
strided part of each tile into ``out``.  Dilation spreads the kernel with
zeros before its transform; stride subsamples the stride-1 result.

Chunks are small enough to stay in L2, or a whole row of small tiles;
up to ``get_num_threads()`` workers take chunks in turn, each with its own
buffers and plans (:mod:`fastconv.backends._fft_plans`).  The calling
thread transforms the kernel while the other workers already gather and
transform their first chunks.

One real plane in and out at stride 1 (the ``signal`` front end's problems)
runs the fused tile loop instead (:func:`fastconv.backends._fft_tiles.run_fused`):
one compiled call per block of tiles gathers, transforms, multiplies and
scatters each tile in turn, calling FFTW's C functions itself, so the
workers never queue for the GIL between steps.  It checks the input for NaN
and Inf as it gathers, computes only the valid rows of a 2-d tile's inverse
transform, and streams large outputs past the cache.  Measured, 2 threads,
against the chunks: 2048**2 images 20-40 % faster (65**2 to 17**2 kernels),
128**3 volumes 15 % with 15**3.  Without pyFFTW's library functions, or
until the wisdom holds the measured one-tile plans, the chunks run.

The FFT spreads rounding error over the whole tile, so :func:`inspect`
records whether the data hold NaN or Inf and :func:`supports` then refuses
them (a NaN must stay local, as in direct correlation), as it refuses
integer problems whose sums are too large to stay exact after rounding.
:func:`inspect_for_run` leaves the input's check to the fused loop, and a
call whose data fail it is handed to the dispatcher again.
"""
from __future__ import annotations

import itertools
import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numba import njit

from .. import _config
from ..problem import FAST_DTYPES
from . import _fft_layout, _fft_plans, _fft_tiles

NAME = "fft"

#: a transform of at least this many points (per chunk) is worth FFTW's own threads
_THREADED_POINTS = 1 << 16
#: frequencies per block of the multiply-accumulate kernel (rows stay in L1)
_MAC_BLOCK = 256
#: arrays of at least this many values are checked for NaN and Inf by _probe, in pieces this big
_PROBE_MIN = 1 << 18
#: one-plane real problems run the fused tile loop (False: the chunk pipeline; tests, timings)
FUSED = True
#: largest tile (transform points) the fused loop takes, 2-d and 3-d.  Measured, 2 threads,
#: against the chunks: 2048**2 with 65**2, 192 x 768 tiles, 23 ms against 26; 128**3 with 15**3,
#: 64 x 80 x 144 tiles, 18.7 against 22.1, and with 31**3, 64 x 144 x 144, 29.9 against 31.9;
#: one-tile volumes (64**3 with 15**3 or 31**3) the same either way
_FUSED_MAX_POINTS = {2: 1 << 18, 3: 1 << 22}
#: transform points per block of tiles of the fused loop (smaller: finer balance, more hand-overs)
_FUSED_BLOCK_POINTS = 1 << 18

_executor = None
_executor_lock = threading.Lock()


def available() -> bool:
    return True  # scipy.fft is always there; pyFFTW only makes it faster


def supports(problem) -> bool:
    if problem.dtype not in FAST_DTYPES or problem.has_nonfinite:
        return False
    if min(problem.kernel, default=1) < 1 or problem.w_shape[1] < 1:
        return False
    if problem.int_bound is not None and problem.int_bound > exact_integer_bound(problem):
        return False
    return _layout(problem) is not None


def cost(problem) -> float:
    from .. import costs
    return costs.estimate(NAME, problem)


def model_features(problem) -> tuple:
    """This backend's own time model: (1, transforms, products, copies + overhead, threaded).

    Modelled on one thread of the machine class :mod:`fastconv.costs`
    describes, for the tiling :func:`correlate` will use, then shared out
    over the threads the call will run (worker threads taking whole chunks,
    FFTW's own threads within a chunk); meant as the features of the fft
    cost model (coefficients about 1).

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 2048, 2048), (1, 1, 17, 17), "float64", padding=8)
    >>> 0.005 < sum(model_features(p)[1:4]) < 0.5
    True
    """
    chosen = _layout(problem)
    if chosen is None:
        return (1.0, math.inf, math.inf, math.inf, 1.0)
    transforms, products, copies, overhead = chosen.parts
    chunks = len(_fft_tiles.chunks(problem, chosen))
    workers, fft_threads = _workers(problem, chosen, chunks, _config.get_num_threads())
    share = chunks / -(-chunks // workers) * fft_threads  # uneven chunk counts idle a worker
    # handing chunks to worker threads costs a fixed start-up per call
    return (1.0, transforms / share, products / share, copies / share + overhead,
            float(workers > 1))


def inspect(problem, x, w):
    """``problem`` with ``has_nonfinite`` set from the data.

    A sum per array finds almost every case in one cheap pass; only a
    non-finite sum (which overflow can also cause) pays for the exact test.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> inspect(p, np.array([[[1.0, np.nan, 0, 0]]]), np.ones((1, 1, 2))).has_nonfinite
    True
    """
    return problem.with_facts(has_nonfinite=_has_nonfinite(x) or _has_nonfinite(w))


def inspect_for_run(problem, x, w):
    """:func:`inspect` for a call that runs now (the dispatcher's choice for ``correlate``).

    Where the fused tile loop will read ``x``, it checks every value as it
    gathers the tiles, and :func:`correlate` hands the call to another backend
    if one is NaN or Inf; so ``x`` is not scanned here first (a whole pass
    over memory: 1 ms of a 15-20 ms 2048**2 convolution) and
    ``has_nonfinite`` stays unknown (None).  Otherwise, as :func:`inspect`.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> inspect_for_run(p, np.array([[[1.0, np.nan, 0, 0]]]), np.ones((1, 1, 2))).has_nonfinite
    True
    """
    if problem.has_nonfinite is None and _fused_plans(problem, x) is not None:
        return problem.with_facts(has_nonfinite=True) if _has_nonfinite(w) else problem
    return inspect(problem, x, w)


def _has_nonfinite(a) -> bool:
    a = np.asarray(a)
    if a.dtype.kind not in "fc":
        return False
    if a.size >= _PROBE_MIN and a.flags.c_contiguous:
        flat = a.reshape(-1)
        if flat.dtype.kind == "c":
            flat = flat.view(flat.real.dtype)
        return not math.isfinite(_probe_pieces(flat))
    with np.errstate(all="ignore"):
        if np.isfinite(a.sum()):
            return False
    return not bool(np.isfinite(a).all())


def _probe_pieces(flat) -> float:
    """:func:`_probe` of ``flat``, in up to ``get_num_threads()`` pieces run side by side.

    Reading a large array is bound by one core's memory bandwidth; each
    worker thread reads its own piece.
    """
    pieces = max(1, min(_config.get_num_threads(), flat.size // _PROBE_MIN))
    if pieces == 1:
        return _probe(flat)
    bounds = [flat.size * i // pieces for i in range(pieces + 1)]
    futures = [_pool().submit(_probe, flat[bounds[i]:bounds[i + 1]]) for i in range(1, pieces)]
    total = _probe(flat[:bounds[1]])
    return total + sum(future.result() for future in futures)


@njit(cache=True, nogil=True, fastmath={"reassoc", "contract"})
def _probe(flat):
    """0.0 if every value of ``flat`` is finite, else NaN: exact, no overflow.

    ``v * 0`` is a signed zero for finite ``v`` and NaN for NaN and Inf;
    reassociation (no other fast-math flag) lets LLVM vectorise the sum.
    """
    acc = 0.0
    for i in range(flat.size):
        acc += flat[i] * 0.0
    return acc


def exact_integer_bound(problem) -> float:
    """Largest partial-sum bound for which rounding the FFT result stays exact.

    FFT correlation of a tile of ``P`` points errs by about
    ``c * eps * log2(P) * bound`` in the worst realistic case, data of
    constant magnitude whose energy sits in one frequency (Higham, *Accuracy
    and Stability of Numerical Algorithms*, 24.1: each transform contributes
    about 5 eps per level; three transforms give ``c`` about 16).  Keeping that
    below 1/4 gives ``bound <= 1 / (64 * eps * log2(P))``: about 2**42 for
    float64 tiles of 2**14 points, 2**41 at 2**22, 2**19 for float32.
    Measured errors (constant and random integer data, 1-d to 3-d) stay
    under ``2 * eps * bound``, a hundredfold margin.  The rigorous 2-norm
    bound carries another ``sqrt(P)``, reached only by rounding errors that
    all line up at one output, which independent roundings do not do.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 1000), (1, 1, 9), "float64")
    >>> 2**38 < exact_integer_bound(p) < 2**46
    True
    """
    chosen = _layout(problem)
    if chosen is None:
        return 0.0
    points = math.prod(chosen.shape)
    eps = float(np.finfo(problem.dtype).eps)
    return 1.0 / (64.0 * eps * max(math.log2(points), 1.0))


def _layout(problem):
    return _fft_layout.layout(problem, _config.get_workspace_bytes(),
                              _fft_plans.plans_measured())


def correlate(x, w, problem, out=None):
    """Canonical correlation of ``x`` with ``w`` through FFTs.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 5), (1, 1, 2), "float64")
    >>> np.round(correlate(np.arange(5.0).reshape(1, 1, 5), np.ones((1, 1, 2)), p), 12)
    array([[[1., 3., 5., 7.]]])
    """
    if out is None:
        out = np.empty(problem.out_shape, problem.dtype)
    if out.size == 0:
        return out
    plan = _layout(problem)
    if plan is None:
        raise ValueError(f"the fft backend cannot fit this problem's kernel spectrum and tile "
                         f"buffers in the workspace cap of {_config.get_workspace_bytes()} bytes")
    threads = _config.get_num_threads()
    fused = _fused_plans(problem, x)
    if fused is not None:
        if problem.has_nonfinite is None and _has_nonfinite(w):
            return _elsewhere(x, w, problem, out)
        return _correlate_fused(x, w, problem, plan, fused, out, threads)
    chunks = _fft_tiles.chunks(problem, plan)
    workers, fft_threads = _workers(problem, plan, len(chunks), threads)
    job = _Job(np.asarray(x), out, problem, plan, _balanced(problem, plan, chunks, workers),
               fft_threads)
    if workers == 1:
        job.set_spectrum(_kernel_spectrum(w, problem, plan, threads))
        job.work()
        return out
    futures = [_pool().submit(job.work) for _ in range(workers - 1)]
    try:
        # the other workers gather and transform their first chunks meanwhile
        try:
            job.set_spectrum(_kernel_spectrum(w, problem, plan, 1))
        except BaseException as exc:
            job.fail(exc)
            raise
        job.work()
    finally:
        for future in futures:
            if future.cancel():
                continue
            if job.failed:
                future.exception()  # wait for it; the spectrum's own error is the one raised
            else:
                future.result()
    return out


def _fused_plans(problem, x):
    """The fused tile loop's plans where it computes this call, else None.

    It takes one real plane in and out at stride 1 from a C-contiguous ``x``
    (any ``out``), once the single-tile plans exist (see ``_fft_plans.tile_plans``).
    """
    if not (FUSED and isinstance(x, np.ndarray) and x.flags.c_contiguous):
        return None
    plan = _layout(problem)
    if plan is None or not _fusable_problem(problem, plan):
        return None
    return _fft_plans.tile_plans(plan.shape, problem.dtype, _valid_rows(problem, plan))


def _valid_rows(problem, plan):
    """Rows of a 2-d tile that hold valid outputs (the inverse transform computes only those)."""
    return plan.axes[0].step if problem.ndim == 2 else None


def _fusable_problem(problem, plan) -> bool:
    return (problem.ndim in (2, 3) and plan.real and problem.in_channels == 1
            and problem.out_channels == 1 and all(s == 1 for s in problem.stride)
            and math.prod(plan.shape) <= _FUSED_MAX_POINTS[problem.ndim])


def _correlate_fused(x, w, problem, plan, tile_plans, out, threads):
    """The tiles one at a time in compiled loops, shared among up to ``threads`` workers."""
    spectrum = _kernel_spectrum(w, problem, plan, threads).reshape(-1)
    lead = (1,) * (3 - problem.ndim)
    x4 = x.reshape((problem.batch,) + lead + problem.spatial)
    out4 = out.reshape((problem.batch,) + lead + problem.out_spatial)
    geometry = np.array([(1, 1, 1, 0)] * len(lead)
                        + [(a.size, a.step, a.count, a.offset) for a in plan.axes], np.int64)
    total = problem.batch * plan.tiles
    workers = max(1, min(threads, total))
    # blocks of tiles taken in turn, each worth a fraction of a millisecond: the workers end
    # together, and one that starts late (a busy pool) finds less left
    blocks = -(-total // max(1, _FUSED_BLOCK_POINTS // math.prod(plan.shape)))
    bounds = [total * i // blocks for i in range(blocks + 1)]
    taken = itertools.count()  # next() is atomic under the GIL
    args = (tile_plans, x4, out4, spectrum, geometry)
    stream = _fft_tiles.streaming(out4)

    def work():
        seen = 0.0  # 0.0 while every value gathered is finite, else NaN
        while (block := next(taken)) < blocks:
            seen += _fft_tiles.run_fused(*args, bounds[block], bounds[block + 1], stream)
        return seen

    futures = [_pool().submit(work) for _ in range(workers - 1)]
    seen = 0.0
    try:
        seen = work()
    finally:
        for future in futures:
            if not future.cancel():
                seen += future.result()
    if not math.isfinite(seen):
        return _elsewhere(x, w, problem, out)
    return out


def _elsewhere(x, w, problem, out):
    """The call computed by another backend: the data hold NaN or Inf, which must stay local."""
    from .. import dispatch  # the dispatcher imports the backends
    return dispatch.correlate(x, w, problem.with_facts(has_nonfinite=True), out=out)


def _kernel_spectrum(w, problem, plan, threads):
    spectrum = _fft_plans.kernel_spectrum(np.asarray(w), problem.dilation, plan.shape,
                                          problem.dtype, threads)
    return spectrum.reshape(problem.w_shape[:2] + (-1,))


def _workers(problem, plan, chunks, threads):
    """(worker threads, FFTW threads per worker) of a call that cuts ``chunks`` chunks."""
    scratch = _fft_layout.chunk_bytes(problem, plan.shape, plan.real,
                                      plan.chunk_tiles * plan.chunk_batch)
    spectrum = _fft_layout.kernel_bytes(problem, plan.shape, plan.real)
    room = (_config.get_workspace_bytes() - spectrum) // max(scratch, 1)
    workers = max(1, min(threads, chunks, room))
    big = plan.chunk_tiles * plan.chunk_batch * math.prod(plan.shape) >= _THREADED_POINTS
    return workers, (max(1, threads // workers) if big else 1)


def _balanced(problem, plan, chunks, workers):
    """``(chunk, units)`` pairs: the chunks, the last few cut so the workers get even shares.

    With whole rows per chunk, 19 chunks on 2 workers leave one worker a
    row's time idle at the end; cutting the last ``len(chunks) % workers``
    chunks into ``workers`` parts each (run by a workspace of ``units``
    (1, part) tiles) evens that out.
    """
    whole = (plan.chunk_batch, plan.chunk_tiles)
    extra = len(chunks) % workers
    part = -(-plan.chunk_tiles // workers)
    if workers == 1 or extra == 0 or plan.chunk_batch > 1 or plan.chunk_tiles < 2 * workers:
        return [(chunk, whole) for chunk in chunks]
    scratch = _fft_layout.chunk_bytes(problem, plan.shape, plan.real, plan.chunk_tiles + part)
    spectrum = _fft_layout.kernel_bytes(problem, plan.shape, plan.real)
    if workers * scratch + spectrum > _config.get_workspace_bytes():
        return [(chunk, whole) for chunk in chunks]
    cut = len(chunks) - extra
    pairs = [(chunk, whole) for chunk in chunks[:cut]]
    for b0, b1, lead, t0, t1 in chunks[cut:]:
        pairs += [((b0, b1, lead, t, min(t + part, t1)), (1, part)) for t in range(t0, t1, part)]
    return pairs


def _plan_keys(problem, plan, threads):
    """The workspace keys (``_fft_plans.acquire`` arguments) a call's workers use."""
    chunks = _fft_tiles.chunks(problem, plan)
    workers, fft_threads = _workers(problem, plan, len(chunks), threads)
    elementwise = problem.w_shape[1] == 1 and problem.out_channels == problem.groups
    units = dict.fromkeys(u for _, u in _balanced(problem, plan, chunks, workers))
    keys = [(u, problem.in_channels, problem.out_channels, plan.shape, problem.dtype,
             elementwise, fft_threads) for u in units]
    if FUSED and _fusable_problem(problem, plan):  # the fused loop's plans: one tile, one thread
        keys.append(("tile", plan.shape, problem.dtype, _valid_rows(problem, plan)))
    return keys


def prepare(problems, save=True) -> int:
    """Plan the transforms of ``problems`` with FFTW_MEASURE now; returns how many were new.

    Meant for calibration and set-up scripts: later calls (in this process,
    and in every process once the wisdom is saved, see
    :mod:`fastconv.backends._fft_plans`) start with measured plans.  Plans
    for the current thread budget; shapes the wisdom already knows cost
    well under a millisecond, new ones 0.1-1 s each.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 64), (1, 1, 5), "float64", padding=2)
    >>> prepare([p], save=False) in (0, 1)
    True
    """
    threads = _config.get_num_threads()
    keys = []
    for problem in problems:
        plan = _layout(problem) if supports(problem) else None
        if plan is not None and math.prod(problem.out_shape) > 0:
            keys += [key for key in _plan_keys(problem, plan, threads) if key not in keys]
    return _fft_plans.prepare(keys, save=save)


def _pool():
    global _executor
    with _executor_lock:
        if _executor is None:
            _executor = ThreadPoolExecutor(max_workers=os.cpu_count() or 1,
                                           thread_name_prefix="fastconv-fft")
    return _executor


class _Job:
    """One call's shared state; each worker runs :meth:`work` until no chunk is left."""

    def __init__(self, x, out, problem, plan, chunks, fft_threads):
        self.x, self.out = x, out
        self.problem, self.plan, self.chunks = problem, plan, chunks
        self.fft_threads = fft_threads
        self.groups = problem.groups
        self.elementwise = problem.w_shape[1] == 1 and problem.out_channels == problem.groups
        self.tiles = _fft_tiles.Tiles(x, out, plan)
        self._next = 0
        self._lock = threading.Lock()
        # the kernel spectrum arrives while the first chunks are transformed (set_spectrum)
        self.spectrum = None
        self._error = None
        self._ready = threading.Event()

    def set_spectrum(self, spectrum):
        """Hand the workers the kernel spectrum, (O, Cg, F)."""
        if self.elementwise:  # (O, 1, F) -> (O, *spectrum) to broadcast over (batch, tile)
            spectrum = spectrum.reshape((spectrum.shape[0],) + self.plan.spectrum_shape)
        self.spectrum = spectrum
        self._ready.set()

    @property
    def failed(self) -> bool:
        return self._error is not None

    def fail(self, error):
        """No spectrum will come: workers waiting for it raise ``error``."""
        self._error = error
        self._ready.set()

    def _take(self):
        with self._lock:
            index = self._next
            self._next += 1
        return self.chunks[index] if index < len(self.chunks) else None

    def work(self):
        item = self._take()
        if item is None:
            return
        p, plan = self.problem, self.plan
        workspaces = {}  # units -> this worker's workspace for chunks of that many tiles
        try:
            while item is not None:
                chunk, units = item
                ws = workspaces.get(units)
                if ws is None:
                    ws = workspaces[units] = _fft_plans.acquire(
                        units, p.in_channels, p.out_channels, plan.shape, p.dtype,
                        self.elementwise, self.fft_threads)
                self.tiles.gather(ws.xbuf, chunk)
                xspec = ws.forward()
                yspec = ws.mac_target(xspec)
                self._multiply(xspec, yspec)
                self.tiles.scatter(ws.backward(yspec), chunk)
                item = self._take()
        finally:
            for ws in workspaces.values():
                _fft_plans.release(ws)

    def _multiply(self, xspec, yspec):
        if not self._ready.is_set():
            self._ready.wait()
        if self._error is not None:
            raise RuntimeError("the kernel spectrum could not be computed") from self._error
        w = self.spectrum
        if self.elementwise:
            np.multiply(xspec, w, out=yspec)
            return
        m = xspec.shape[0] * xspec.shape[1]
        _mac(xspec.reshape(m, xspec.shape[2], -1), w, yspec.reshape(m, yspec.shape[2], -1),
             self.groups)


# contract/reassoc let LLVM vectorise the complex multiply-add; NaN and Inf keep their meaning
_FASTMATH = {"contract", "reassoc", "nsz", "arcp"}


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _row_set(y, x, w):
    for f in range(y.shape[0]):
        y[f] = x[f] * w[f]


@njit(cache=True, nogil=True, fastmath=_FASTMATH, inline="always")
def _row_add(y, x, w):
    for f in range(y.shape[0]):
        y[f] += x[f] * w[f]


@njit(cache=True, nogil=True, fastmath=_FASTMATH)
def _mac(xs, ws, ys, groups):
    """ys[m, o, f] = sum_l xs[m, g(o) * Cg + l, f] * ws[o, l, f].

    Blocked over frequencies so the rows of one block stay in L1, and each
    kernel row is loaded once for all the chunk's rows ``m``.
    """
    rows, _, freqs = xs.shape
    outs, cg, _ = ws.shape
    per_group = outs // groups
    for f0 in range(0, freqs, _MAC_BLOCK):
        f1 = min(freqs, f0 + _MAC_BLOCK)
        for o in range(outs):
            base = (o // per_group) * cg
            w = ws[o, 0, f0:f1]
            for m in range(rows):
                _row_set(ys[m, o, f0:f1], xs[m, base, f0:f1], w)
            for l in range(1, cg):
                w = ws[o, l, f0:f1]
                for m in range(rows):
                    _row_add(ys[m, o, f0:f1], xs[m, base + l, f0:f1], w)
