"""Transforms of the FFT backend: pooled pyFFTW workspaces, or scipy.fft.

A :class:`Workspace` holds one worker's tile buffers and the two transforms
between them (forward of the input tiles, inverse of the output tiles).
With pyFFTW the transforms are FFTW plans bound to those buffers; plans are
made under one lock (FFTW's planner is not thread-safe) and a workspace is
only ever used by the thread that borrowed it, so concurrent calls never
execute the same plan object on the same arrays.  Returned workspaces are
kept for the next call with the same key (shapes, dtype, threads, engine).

Plans are FFTW_ESTIMATE (planning in milliseconds, even for big sizes).
With ``FASTCONV_FFTW_MEASURE=1`` in the environment, once a key has been used ``MEASURE_AFTER`` times and its batch is
small enough to measure quickly, a background thread makes FFTW_MEASURE plans
for it (a time limit caps each) and swaps them into the pool: no call ever
waits for measuring, and later workspaces of that key re-plan from FFTW's
wisdom in milliseconds.  In the tile pipeline measured plans are 0-15 %
faster than estimated ones (powers of two, where the tiles mostly are).
It is off by default: the measuring thread takes a core for up to half a
second, and a parallel kernel started meanwhile (Numba's, BLAS's) waits for
that core: measured here, a 0.04 ms direct convolution took 7 ms.

Without pyFFTW (or with the module attribute ``pyfftw`` set to None) the
same workspaces call scipy.fft, whose own plan cache is thread-safe.
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict

import numpy as np
from scipy import fft as scipy_fft

try:
    import pyfftw
except ImportError:  # scipy.fft takes over
    pyfftw = None

#: make FFTW_MEASURE plans in the background for keys in steady use (see module docstring)
MEASURE_IN_BACKGROUND = os.environ.get("FASTCONV_FFTW_MEASURE", "") == "1"
#: uses of a key at which its FFTW_MEASURE plans are made, in the background
MEASURE_AFTER = 3
#: largest batch of transform points (all planes of a chunk) planned with FFTW_MEASURE
MEASURE_MAX_POINTS = 1 << 21
#: seconds FFTW may spend measuring one plan
MEASURE_TIMELIMIT = 0.5
#: idle workspaces kept per key, keys kept, and bytes kept in all
POOL_PER_KEY = 4
POOL_KEYS = 16
POOL_BYTES = 128 << 20

_PLAN_LOCK = threading.Lock()
_POOL_LOCK = threading.Lock()
_POOL: OrderedDict = OrderedDict()   # key -> [Workspace], least recently used first
_USES: dict = {}
_MEASURED: set = set()               # keys whose FFTW_MEASURE plans are in the wisdom
_PLANNERS: list = []                 # background measuring threads
#: counters for tests and diagnostics: workspaces created / reused, plans measured
STATS = {"created": 0, "reused": 0, "measured": 0}


def engine() -> str:
    """'pyfftw' or 'scipy': which library runs the transforms now."""
    return "pyfftw" if pyfftw is not None else "scipy"


def spectrum_dtype(dtype) -> np.dtype:
    """Complex dtype of the spectra of ``dtype`` data (same precision)."""
    single = np.dtype(dtype) in (np.float32, np.complex64)
    return np.dtype(np.complex64 if single else np.complex128)


def _empty(shape, dtype):
    if pyfftw is not None:
        return pyfftw.empty_aligned(shape, dtype)
    return np.empty(shape, dtype)


class Workspace:
    """One worker's tile buffers and transforms for one layout.

    ``xbuf`` (batch, tiles, C, *shape) receives input tiles; :meth:`forward`
    returns their spectra; :meth:`mac_target` is where the product spectra
    go; :meth:`backward` turns them into output tiles (batch, tiles, O, *shape)
    scaled by the number of transform points (the kernel spectrum carries
    ``1 / points``).
    """

    def __init__(self, key, units, c, o, shape, dtype, elementwise, threads, effort):
        self.key, self.shape, self.threads = key, shape, threads
        self.axes = tuple(range(3, 3 + len(shape)))
        self.real = np.dtype(dtype).kind != "c"
        cdtype = spectrum_dtype(dtype)
        half = shape[:-1] + (shape[-1] // 2 + 1,) if self.real else shape
        raw = _empty((units[0], units[1], max(c, o)) + shape, dtype)
        self.xbuf, self.ybuf = raw[:, :, :c], raw[:, :, :o]
        self.xspec = _empty(units + (c,) + half, cdtype)
        self.yspec = self.xspec if elementwise else _empty(units + (o,) + half, cdtype)
        self.elementwise = elementwise
        self.points = raw.size
        self.nbytes = raw.nbytes + self.xspec.nbytes + (0 if elementwise else self.yspec.nbytes)
        self.effort = effort
        self._fwd = self._bwd = None
        if pyfftw is not None:
            self._plan(effort)

    def _plan(self, effort):
        flags = (effort,)
        limit = MEASURE_TIMELIMIT if effort != "FFTW_ESTIMATE" else None
        with _PLAN_LOCK:
            self._fwd = pyfftw.FFTW(self.xbuf, self.xspec, axes=self.axes,
                                    direction="FFTW_FORWARD", flags=flags,
                                    threads=self.threads, planning_timelimit=limit)
            self._bwd = pyfftw.FFTW(self.yspec, self.ybuf, axes=self.axes,
                                    direction="FFTW_BACKWARD",
                                    flags=flags + ("FFTW_DESTROY_INPUT",),
                                    threads=self.threads, planning_timelimit=limit)

    def forward(self):
        """Spectra of the tiles in ``xbuf``."""
        if self._fwd is not None:
            self._fwd.execute()
            return self.xspec
        if self.real:
            return scipy_fft.rfftn(self.xbuf, axes=self.axes, workers=self.threads)
        return scipy_fft.fftn(self.xbuf, axes=self.axes, workers=self.threads)

    def mac_target(self, xspec):
        """The array the frequency-domain products are written to."""
        if self.elementwise:
            return xspec
        return self.yspec

    def backward(self, yspec):
        """Output tiles (unnormalised inverse transform) of ``yspec``."""
        if self._bwd is not None:
            self._bwd.execute()
            return self.ybuf
        if self.real:
            return scipy_fft.irfftn(yspec, s=self.shape, axes=self.axes, workers=self.threads,
                                    norm="forward")
        return scipy_fft.ifftn(yspec, axes=self.axes, workers=self.threads, norm="forward")


def _key(units, c, o, shape, dtype, elementwise, threads):
    return (engine(), units, c, o, shape, np.dtype(dtype).str, elementwise, threads)


def acquire(units, c, o, shape, dtype, elementwise, threads) -> Workspace:
    """Borrow a workspace for this layout (pooled one if idle, else a new one).

    ``units`` is (batch items, tiles) per chunk.  Give it back with :func:`release`.
    """
    key = _key(units, c, o, shape, dtype, elementwise, threads)
    args = (key, units, c, o, shape, dtype, elementwise, threads)
    points = units[0] * units[1] * max(c, o) * math.prod(shape)
    with _POOL_LOCK:
        if len(_USES) > 4 * POOL_KEYS * POOL_PER_KEY:  # forget counts of long-gone keys
            _USES.clear()
        uses = _USES[key] = _USES.get(key, 0) + 1
        measure = (MEASURE_IN_BACKGROUND and key[0] == "pyfftw" and uses == MEASURE_AFTER
                   and points <= MEASURE_MAX_POINTS and key not in _MEASURED)
        idle = _POOL.get(key)
        workspace = idle.pop() if idle else None
        effort = "FFTW_MEASURE" if key in _MEASURED else "FFTW_ESTIMATE"
        STATS["reused" if workspace else "created"] += 1
    if measure:
        planner = threading.Thread(target=_measure, args=args, daemon=True,
                                   name="fastconv-fftw-measure")
        _PLANNERS.append(planner)
        planner.start()
    return workspace or Workspace(*args, effort)


def _measure(key, *args) -> None:
    """Background: make FFTW_MEASURE plans for ``key`` and swap them into the pool."""
    workspace = Workspace(key, *args, "FFTW_MEASURE")
    with _POOL_LOCK:
        _MEASURED.add(key)
        STATS["measured"] += 1
        idle = _POOL.setdefault(key, [])
        idle[:] = [w for w in idle if w.effort != "FFTW_ESTIMATE"][: POOL_PER_KEY - 1]
        idle.append(workspace)
        _trim()


def wait_for_planners(timeout=None) -> None:
    """Wait until background FFTW_MEASURE planning has finished (tests, benchmarks)."""
    while _PLANNERS:
        _PLANNERS.pop().join(timeout)


def release(workspace: Workspace) -> None:
    """Return a borrowed workspace to the pool (dropped if the pool is full)."""
    key = workspace.key
    with _POOL_LOCK:
        if key[0] != engine():
            return
        if workspace.effort == "FFTW_ESTIMATE" and key in _MEASURED:
            return  # superseded by measured plans
        idle = _POOL.setdefault(key, [])
        _POOL.move_to_end(key)
        if len(idle) < POOL_PER_KEY and workspace.nbytes <= POOL_BYTES:
            idle.append(workspace)
        _trim()


def _trim() -> None:
    total = sum(w.nbytes for idle in _POOL.values() for w in idle)
    while _POOL and (len(_POOL) > POOL_KEYS or total > POOL_BYTES):
        _, idle = _POOL.popitem(last=False)
        total -= sum(w.nbytes for w in idle)


def clear() -> None:
    """Forget every pooled workspace and usage count (tests, memory pressure)."""
    wait_for_planners()
    with _POOL_LOCK:
        _POOL.clear()
        _USES.clear()
        _MEASURED.clear()


def _wrap_along(a, axis, size):
    """Place ``a`` circularly reversed along ``axis`` in ``size`` zeros.

    ``out[(-m) % size] = a[m]``: the transform of this is the kernel's
    spectrum at negated frequencies, which turns a circular convolution into
    the correlation we want, for real and complex kernels alike.
    """
    k = a.shape[axis]
    shape = list(a.shape)
    shape[axis] = size
    out = np.zeros(shape, a.dtype)
    dst = np.moveaxis(out, axis, 0)
    src = np.moveaxis(a, axis, 0)
    dst[0] = src[0]
    if k > 1:
        dst[size - k + 1:] = src[:0:-1]
    return out


def kernel_spectrum(w, dilation, shape, dtype, threads):
    """Spectrum of the (dilated) kernel at tile ``shape``, scaled by 1 / points.

    Pruned: each axis is transformed only over the lines where the kernel
    is non-zero so far, so a small kernel in a big transform costs a fraction
    of a full transform.  Computed in double precision, returned as
    ``spectrum_dtype(dtype)`` of shape ``(O, Cg, *spectrum)``.
    """
    real = np.dtype(dtype).kind != "c"
    acc = np.float64 if real else np.complex128
    kernel = tuple((k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation))
    spread = np.zeros(w.shape[:2] + kernel, acc)
    # the 1 / points of the inverse transforms, applied while the kernel is small
    np.multiply(w, 1.0 / math.prod(shape),
                out=spread[(Ellipsis,) + tuple(slice(None, None, d) for d in dilation)])
    last = _wrap_along(spread, -1, shape[-1])
    if real:
        spec = scipy_fft.rfft(last, axis=-1, workers=threads)
    else:
        spec = scipy_fft.fft(last, axis=-1, workers=threads, overwrite_x=True)
    for axis in range(len(shape) - 2, -1, -1):
        spec = scipy_fft.fft(_wrap_along(spec, axis + 2, shape[axis]), axis=axis + 2,
                             workers=threads, overwrite_x=True)
    return spec.astype(spectrum_dtype(dtype), copy=False)
