"""Transforms of the FFT backend: pooled pyFFTW workspaces, or scipy.fft.

A :class:`Workspace` holds one worker's tile buffers and the two transforms
between them (forward of the input tiles, inverse of the output tiles).
With pyFFTW the transforms are FFTW plans bound to those buffers; plans are
made under one lock (FFTW's planner is not thread-safe) and a workspace is
only ever used by the thread that borrowed it, so concurrent calls never
execute the same plan object on the same arrays.  Returned workspaces are
kept for the next call with the same key (shapes, dtype, threads, engine).

A new key is planned with FFTW_ESTIMATE (milliseconds, even for big sizes)
unless FFTW already holds FFTW_MEASURE wisdom for it; in the tile pipeline
measured plans run up to 15-25 % faster.  Wisdom persists per machine: the
first process that meets a key queues it for one background daemon thread,
which plans it with FFTW_MEASURE (0.1-1 s, one key at a time, under the plan
lock), swaps the measured workspace into the pool and saves all of FFTW's
wisdom atomically to :func:`wisdom_path` (next to the calibration profile of
:mod:`fastconv.costs`; ``FASTCONV_FFTW_WISDOM=<path>`` moves it,
``FASTCONV_FFTW_WISDOM=0`` or empty turns persistence and background
measuring off).  Every later process imports that file before its first
plan and gets measured plans from the wisdom alone, in well under a
millisecond.  A corrupt or unreadable file is ignored, an unwritable
directory only skips saving, and concurrent processes merge the file before
replacing it.  ``FASTCONV_FFTW_MEASURE=1`` measures in the background even
without persistence, ``=0`` never measures (wisdom is still imported).
:func:`prepare` measures given keys synchronously (calibration).

Without pyFFTW (or with the module attribute ``pyfftw`` set to None) the
same workspaces call scipy.fft, whose own plan cache is thread-safe.

:func:`tile_plans` makes single-tile plans through FFTW's C interface (the
library pyFFTW loaded, found with ctypes) for the fused tile loop of
:mod:`fastconv.backends._fft_tiles`; where plans are measured it takes them
from the wisdom only, and queues their measurement as a one-tile workspace.
:func:`kernel_spectrum` remembers the spectra of small kernels by value.
"""
from __future__ import annotations

import atexit
import ctypes
import json
import math
import os
import re
import tempfile
import threading
from collections import OrderedDict, deque
from pathlib import Path

import numpy as np
from scipy import fft as scipy_fft

try:
    import pyfftw
except ImportError:  # scipy.fft takes over
    pyfftw = None

#: measure in the background: None follows persistence, True / False force it (module docstring)
MEASURE_IN_BACKGROUND = {"1": True, "0": False}.get(os.environ.get("FASTCONV_FFTW_MEASURE"))
#: uses of a key at which its FFTW_MEASURE plans are made, in the background
MEASURE_AFTER = 1
#: largest batch of transform points (all planes of a chunk) measured in the background
#: (the layout model assumes the same: _fft_layout.MEASURED_MAX_POINTS)
MEASURE_MAX_POINTS = 1 << 21
#: seconds FFTW may spend measuring one plan; None, because a plan cut short by the
#: limit leaves wisdom that no later request finds (every process would measure again)
MEASURE_TIMELIMIT = None
#: the wisdom file's name in the cache directory, and its format version
WISDOM_FILE = "fftw_wisdom.json"
WISDOM_FORMAT = 1
#: kernel spectra of at least this many points use the caller's threads (scipy.fft's workers
#: cost more than they gain below: a 65 x 65 kernel at 192 x 768, 4.1 ms on 2 against 1.2 on 1)
SPECTRUM_THREADED_POINTS = 1 << 19
#: idle workspaces kept per key, keys kept, and bytes kept in all
POOL_PER_KEY = 4
POOL_KEYS = 16
POOL_BYTES = 128 << 20
#: kernels of up to this many bytes have their spectra remembered, keyed by their values
SPECTRUM_KERNEL_BYTES = 1 << 20
#: bytes of remembered kernel spectra in all (least recently used forgotten first)
SPECTRUM_BYTES = 64 << 20

_PLAN_LOCK = threading.RLock()      # reentrant: acquire() holds it while it plans
_BUSY = threading.Event()            # set while the background planner measures
_POOL_LOCK = threading.Lock()
_SPECTRA: OrderedDict = OrderedDict()  # kernel values and tile shape -> read-only spectrum
_SPECTRA_LOCK = threading.Lock()
_POOL: OrderedDict = OrderedDict()   # key -> [Workspace], least recently used first
_USES: dict = {}
_MEASURED: set = set()               # keys whose FFTW_MEASURE plans are in the wisdom
_UNKNOWN: set = set()                # keys the wisdom did not know (queued or measured)
_IMPORTED: set = set()               # wisdom files imported by this process
_REQUESTED: set = set()              # keys ever queued (each is measured once)
_QUEUE: deque = deque()              # keys waiting for the background planner, first is running
_WAKE = threading.Condition()
_PLANNER = None                      # the background planner thread
_STOPPING = False                    # set at exit: the planner stops after its measurement
#: counters for tests and diagnostics: workspaces created / reused, plans measured
STATS = {"created": 0, "reused": 0, "measured": 0, "from_wisdom": 0, "saved": 0,
         "spectra_reused": 0}


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

    def __init__(self, key, units, c, o, shape, dtype, elementwise, threads, effort,
                 wisdom_only=False):
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
        if pyfftw is not None and effort != "scipy":
            self._plan(effort, wisdom_only)

    def _plan(self, effort, wisdom_only):
        # FFTW_WISDOM_ONLY: plan from the wisdom or raise RuntimeError, never measure
        flags = (effort, "FFTW_WISDOM_ONLY") if wisdom_only else (effort,)
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
    with _POOL_LOCK:
        if len(_USES) > 4 * POOL_KEYS * POOL_PER_KEY:  # forget counts of long-gone keys
            _USES.clear()
        uses = _USES[key] = _USES.get(key, 0) + 1
        idle = _POOL.get(key)
        workspace = idle.pop() if idle else None
        STATS["reused" if workspace else "created"] += 1
    if key[0] != "pyfftw":
        return workspace or Workspace(*args, "FFTW_ESTIMATE")
    path = wisdom_path()
    points = units[0] * units[1] * max(c, o) * math.prod(shape)
    if _measuring(path) and uses >= MEASURE_AFTER and points <= MEASURE_MAX_POINTS:
        queue = args
    else:
        queue = None
    if workspace is not None:
        if queue is not None and workspace.effort != "FFTW_MEASURE":
            _enqueue(queue)
        return workspace
    if not _plan_lock_or_measuring():
        # a measurement holds FFTW's planner for up to a second: use scipy.fft meanwhile
        if queue is not None and key not in _MEASURED:
            _enqueue(queue)
        return Workspace(*args, "scipy")
    try:
        if path is not None and path not in _IMPORTED:
            _import_file(path)
            _IMPORTED.add(path)
        workspace = _from_wisdom(args)
        if workspace is None:
            if queue is not None:
                _enqueue(queue)
            workspace = Workspace(*args, "FFTW_ESTIMATE")
    finally:
        _PLAN_LOCK.release()
    return workspace


def _plan_lock_or_measuring() -> bool:
    """Take the plan lock (True), or give up (False) while a measurement holds it."""
    while not _PLAN_LOCK.acquire(timeout=0.002):
        if _BUSY.is_set():
            return False
    return True


def plans_measured() -> bool:
    """Whether plans end up FFTW_MEASURE ones (pyFFTW with persisted or background measuring)."""
    return pyfftw is not None and _measuring(wisdom_path())


def _measuring(path) -> bool:
    return MEASURE_IN_BACKGROUND if MEASURE_IN_BACKGROUND is not None else path is not None


def _from_wisdom(args):
    """A workspace with FFTW_MEASURE plans made from the wisdom alone, or None."""
    key = args[0]
    with _POOL_LOCK:
        if key in _UNKNOWN and key not in _MEASURED:
            return None
    try:
        workspace = Workspace(*args, "FFTW_MEASURE", wisdom_only=True)
    except RuntimeError:  # FFTW has no wisdom for this key
        with _POOL_LOCK:
            _UNKNOWN.add(key)
        return None
    with _POOL_LOCK:
        _MEASURED.add(key)
        STATS["from_wisdom"] += 1
    return workspace


def _enqueue(args) -> None:
    """Queue a key for the background planner (once per process), starting the planner."""
    global _PLANNER
    with _WAKE:
        if args[0] in _REQUESTED:
            return
        _REQUESTED.add(args[0])
        _QUEUE.append(args)
        if _PLANNER is None or not _PLANNER.is_alive():
            _PLANNER = threading.Thread(target=_plan_queued, daemon=True,
                                        name="fastconv-fftw-measure")
            _PLANNER.start()
        _WAKE.notify_all()


def _plan_queued() -> None:
    """Background planner: measure queued keys one at a time, until the interpreter exits."""
    while True:
        with _WAKE:
            _WAKE.wait_for(lambda: _QUEUE or _STOPPING)
            if _STOPPING:
                return
            args = _QUEUE[0]
        try:
            if args[0] not in _MEASURED:
                _BUSY.set()
                try:
                    _measure(args)
                finally:
                    _BUSY.clear()
                path = wisdom_path()
                if path is not None:
                    save_wisdom(path)
        except Exception:  # noqa: BLE001 - a failed measurement leaves the estimated plans
            pass
        finally:
            with _WAKE:
                _QUEUE.popleft()
                _WAKE.notify_all()


@atexit.register
def _stop_planner() -> None:
    """At exit: start no more measurements, and let the one under way finish.

    A daemon thread stopped in the middle of FFTW's planner would keep
    pyFFTW's plan lock for ever, and the interpreter's last clean-up, which
    frees pyFFTW's plans under that lock, would wait for it: the process
    would hang at exit.
    """
    global _STOPPING
    with _WAKE:
        _STOPPING = True
        _WAKE.notify_all()
    if _PLANNER is not None:
        _PLANNER.join()


def _measure(args) -> None:
    """Make FFTW_MEASURE plans for a key and swap them into the pool."""
    if args[0][0] == "tile":
        _measure_tile(*args)
        return
    _install(Workspace(*args, "FFTW_MEASURE"))
    with _POOL_LOCK:
        STATS["measured"] += 1


def _install(workspace) -> None:
    """Pool a workspace with measured plans in place of estimated ones."""
    key = workspace.key
    with _POOL_LOCK:
        _MEASURED.add(key)
        idle = _POOL.setdefault(key, [])
        idle[:] = [w for w in idle if w.effort != "FFTW_ESTIMATE"][: POOL_PER_KEY - 1]
        idle.append(workspace)
        _trim()


def wait_for_planners(timeout=None) -> bool:
    """Wait until background FFTW_MEASURE planning has finished (tests, benchmarks).

    Returns False if ``timeout`` seconds passed first.
    """
    with _WAKE:
        return _WAKE.wait_for(lambda: not _QUEUE, timeout)


def prepare(keys, save=True) -> int:
    """Make FFTW_MEASURE plans for workspace ``keys`` now, in this thread; returns how many.

    ``keys`` are ``acquire`` arguments ``(units, c, o, shape, dtype,
    elementwise, threads)``, or ``("tile", shape, dtype, rows)`` for
    :func:`tile_plans`; keys the wisdom already knows cost well under a
    millisecond.  The plans join the pools and, if ``save`` and
    persistence is on, the wisdom is saved.  ``fft.prepare(problems)`` finds a problem's keys.

    Examples
    --------
    >>> prepare([((1, 1), 1, 1, (16,), "float64", True, 1)], save=False) in (0, 1)
    True
    """
    if engine() != "pyfftw":
        return 0
    path = wisdom_path()
    if path is not None:
        _import_once(path)
    measured = 0
    for spec in keys:
        if spec[0] == "tile":
            measured += _prepare_tile(*spec[1:])
            continue
        units, c, o, shape, dtype, elementwise, threads = spec
        key = _key(units, c, o, shape, dtype, elementwise, threads)
        args = (key, units, c, o, tuple(shape), dtype, elementwise, threads)
        with _PLAN_LOCK:
            known = _from_wisdom(args)
        if known is not None:
            _install(known)
            continue
        _measure(args)
        measured += 1
    if measured and save and path is not None:
        save_wisdom(path)
    return measured


def release(workspace: Workspace) -> None:
    """Return a borrowed workspace to the pool (dropped if the pool is full)."""
    key = workspace.key
    with _POOL_LOCK:
        if key[0] != engine():
            return
        if workspace.effort == "scipy" and key[0] == "pyfftw":
            return  # a stand-in while FFTW's planner was busy
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


def clear(wisdom=False) -> None:
    """Forget every pooled workspace and usage count (tests, memory pressure).

    With ``wisdom``, FFTW forgets its wisdom too; either way the wisdom file
    is imported again before the next plan.
    """
    wait_for_planners()
    if wisdom and pyfftw is not None:
        with _PLAN_LOCK:
            pyfftw.forget_wisdom()
    with _POOL_LOCK:
        _POOL.clear()
        _USES.clear()
        _MEASURED.clear()
        _UNKNOWN.clear()
        _IMPORTED.clear()
    with _WAKE:
        _REQUESTED.clear()
    forget_spectra()
    with _TILE_LOCK:
        _TILE_PLANS.clear()


def forget_spectra() -> None:
    """Forget the remembered kernel spectra (benchmarks time each call from scratch).

    Examples
    --------
    >>> forget_spectra()
    """
    with _SPECTRA_LOCK:
        _SPECTRA.clear()


# --- single-tile plans for compiled loops -----------------------------------------------------
#
# The fused tile loop (_fft_tiles.fused_loop) gathers, transforms, multiplies and scatters one
# tile at a time inside one compiled call, so the tile stays in L2 and no worker waits for the
# GIL between the steps.  It calls FFTW's C functions itself: the library pyFFTW loaded (same
# planner, same wisdom), found through ctypes; plans are made under the plan lock like
# pyFFTW's, for one thread, and executed on each worker's own buffers (FFTW's new-array
# execute functions are thread-safe).

_FFTW_MEASURE, _FFTW_DESTROY_INPUT, _FFTW_ESTIMATE, _FFTW_WISDOM_ONLY = 0, 1, 1 << 6, 1 << 21
_FFTW_BACKWARD = 1
_TILE_LOCK = threading.Lock()
_TILE_PLANS: dict = {}          # _tile_key(...) + (measured,) -> TilePlans
_LIBRARIES: dict = {}           # dtype char -> _Fftw or None


class _Fftw:
    """FFTW's C functions of one precision (prefix 'fftw' or 'fftwf')."""

    def __init__(self, lib, threads_lib, prefix):
        size, cint = ctypes.c_size_t, ctypes.c_int
        dims = ctypes.POINTER(cint)
        plan_args = [cint, dims, cint, size, dims, cint, cint, size, dims, cint, cint,
                     ctypes.c_uint]
        self.plan_r2c = getattr(lib, prefix + "_plan_many_dft_r2c")
        self.plan_c2r = getattr(lib, prefix + "_plan_many_dft_c2r")
        for planner in (self.plan_r2c, self.plan_c2r):
            planner.argtypes, planner.restype = plan_args, size
        self.plan_c2c = getattr(lib, prefix + "_plan_many_dft")  # one more argument: the sign
        self.plan_c2c.argtypes = plan_args[:-1] + [cint, ctypes.c_uint]
        self.plan_c2c.restype = size
        # pointers pass as size_t: numba calls these with integer addresses
        self.execute_r2c = getattr(lib, prefix + "_execute_dft_r2c")
        self.execute_c2r = getattr(lib, prefix + "_execute_dft_c2r")
        self.execute_c2c = getattr(lib, prefix + "_execute_dft")
        for execute in (self.execute_r2c, self.execute_c2r, self.execute_c2c):
            execute.argtypes, execute.restype = [size, size, size], None
        self.destroy = getattr(lib, prefix + "_destroy_plan")
        self.destroy.argtypes, self.destroy.restype = [size], None
        self.plan_with_nthreads = getattr(threads_lib, prefix + "_plan_with_nthreads")
        self.plan_with_nthreads.argtypes, self.plan_with_nthreads.restype = [cint], None


def _loaded_libraries() -> dict:
    """{(precision, threading): path} of the FFTW libraries in this process (Linux)."""
    try:
        with open("/proc/self/maps", encoding="ascii", errors="replace") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return {}
    found = {}
    for line in lines:
        fields = line.split(None, 5)
        path = fields[5] if len(fields) == 6 else ""
        match = re.match(r"libfftw3([fl]?)(_omp|_threads)?[-.]", os.path.basename(path))
        if match:
            found.setdefault((match.group(1), match.group(2) or ""), path)
    return found


def _library(dtype):
    """The FFTW functions for real ``dtype`` data, or None where they cannot be found."""
    char = "f" if np.dtype(dtype) == np.float32 else ""
    if char not in _LIBRARIES:
        lib = None
        try:
            paths = _loaded_libraries()
            threaded = paths.get((char, "_omp")) or paths.get((char, "_threads"))
            if (char, "") in paths and threaded:
                lib = _Fftw(ctypes.CDLL(paths[(char, "")]), ctypes.CDLL(threaded),
                            "fftw" + char)
        except (OSError, AttributeError):
            lib = None
        _LIBRARIES[char] = lib
    return _LIBRARIES[char]


class TilePlans:
    """Forward and inverse plans of one real tile shape, and idle buffers to run them on.

    ``plans`` are (execute function, plan) pairs: the forward r2c, then the
    inverse, either one c2r or, pruned, the columns' in-place c2c and the c2r
    of the valid rows only (:func:`tile_plans`).
    """

    def __init__(self, lib, shape, dtype, plans):
        self.lib, self.shape, self.dtype = lib, shape, np.dtype(dtype)
        #: addresses of FFTW's new-array execute functions, and of the plans they run
        self.functions = np.array([ctypes.cast(f, ctypes.c_void_p).value for f, _ in plans],
                                  np.intp)
        self.handles = np.array([plan for _, plan in plans], np.intp)
        self._idle = []
        self._lock = threading.Lock()

    def buffers(self):
        """(tile, spectrum) buffers for one worker; give them back with :meth:`keep`.

        The inverse transform writes into the tile buffer: one buffer less to
        keep in L2 with the tile's spectrum and the kernel's.
        """
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return _tile_buffers(self.shape, self.dtype)

    def keep(self, buffers) -> None:
        with self._lock:
            if len(self._idle) < POOL_PER_KEY:
                self._idle.append(buffers)


def _tile_buffers(shape, dtype):
    half = shape[:-1] + (shape[-1] // 2 + 1,)
    return _empty(shape, dtype), _empty(half, spectrum_dtype(dtype)).reshape(-1)


def tile_plans(shape, dtype, rows=None):
    """Single-tile plans of real ``dtype`` tiles of ``shape`` for compiled loops, or None.

    ``rows``: of a 2-d tile, only the first ``rows`` rows of the inverse are
    needed (the valid outputs of overlap-save), so the inverse is pruned: the
    columns' transforms, then the c2r of those rows only (128 x 384 tiles with
    96 valid rows: 12 % less inverse time; 256 x 512 with 192: 24 %).

    None without pyFFTW or its library's functions, while a background
    measurement holds the planner, and, where plans are measured, until the
    wisdom holds these plans: then their measurement is queued and the caller
    uses the workspaces meanwhile.
    """
    if engine() != "pyfftw" or np.dtype(dtype) not in (np.float32, np.float64):
        return None
    if len(shape) != 2 or rows is None or rows >= shape[0]:
        rows = None
    path = wisdom_path()
    measured = pyfftw is not None and _measuring(path)
    key = _tile_key(shape, dtype, rows)
    plans = _TILE_PLANS.get(key + (measured,))
    if plans is not None:
        return plans
    lib = _library(dtype)
    if lib is None or not _plan_lock_or_measuring():
        return None
    try:
        if path is not None and path not in _IMPORTED:
            _import_file(path)
            _IMPORTED.add(path)
        flags = _FFTW_MEASURE | _FFTW_WISDOM_ONLY if measured else _FFTW_ESTIMATE
        plans = _plan_tile(lib, tuple(shape), dtype, flags, rows)
    finally:
        _PLAN_LOCK.release()
    if plans is None:
        if math.prod(shape) <= MEASURE_MAX_POINTS:
            _enqueue((key, tuple(shape), dtype, rows))
        return None
    with _TILE_LOCK:
        return _TILE_PLANS.setdefault(key + (measured,), plans)


def _prepare_tile(shape, dtype, rows) -> int:
    """Measured single-tile plans now (1 if they were new, 0 if the wisdom knew them)."""
    key = _tile_key(shape, dtype, rows)
    if _measure_tile(key, tuple(shape), dtype, rows, _FFTW_MEASURE | _FFTW_WISDOM_ONLY):
        return 0
    return int(_measure_tile(key, tuple(shape), dtype, rows))


def _tile_key(shape, dtype, rows):
    return ("tile", tuple(shape), np.dtype(dtype).str, rows)


def _measure_tile(key, shape, dtype, rows, flags=_FFTW_MEASURE) -> bool:
    """Make measured single-tile plans (:func:`tile_plans`) and keep them; False if none.

    ``flags`` with FFTW_WISDOM_ONLY: only from the wisdom, measuring nothing.
    """
    lib = _library(dtype)
    if lib is None:
        return False
    with _PLAN_LOCK:
        plans = _plan_tile(lib, shape, dtype, flags, rows)
    if plans is None:
        return False
    with _TILE_LOCK:
        _TILE_PLANS[key + (True,)] = plans
    with _POOL_LOCK:
        _MEASURED.add(key)
    return True


def _plan_tile(lib, shape, dtype, flags, rows=None):
    """TilePlans made with ``flags`` (caller holds the plan lock), or None (not in the wisdom)."""
    tile, spectrum = _tile_buffers(shape, dtype)
    t, s = tile.ctypes.data, spectrum.ctypes.data
    dims = (ctypes.c_int * len(shape))(*shape)
    calls = [(lib.execute_r2c, lib.plan_r2c,
              (len(shape), dims, 1, t, None, 1, 0, s, None, 1, 0, flags))]
    if rows is None:
        calls.append((lib.execute_c2r, lib.plan_c2r,
                      (len(shape), dims, 1, s, None, 1, 0, t, None, 1, 0,
                       flags | _FFTW_DESTROY_INPUT)))
    else:  # 2-d, pruned inverse: the columns' c2c in place, then the c2r of the valid rows
        half = shape[1] // 2 + 1
        calls += [(lib.execute_c2c, lib.plan_c2c,
                   (1, dims, half, s, None, half, 1, s, None, half, 1, _FFTW_BACKWARD, flags)),
                  (lib.execute_c2r, lib.plan_c2r,
                   (1, (ctypes.c_int * 1)(shape[1]), rows, s, None, 1, half, t, None, 1,
                    shape[1], flags | _FFTW_DESTROY_INPUT))]
    lib.plan_with_nthreads(1)
    made = []
    for execute, planner, args in calls:
        plan = planner(*args)
        if not plan:  # not in the wisdom
            for _, done in made:
                lib.destroy(done)
            return None
        made.append((execute, plan))
    plans = TilePlans(lib, shape, dtype, made)
    plans.keep((tile, spectrum))
    return plans


# --- persisted wisdom -------------------------------------------------------------------------

def wisdom_path():
    """The wisdom file of this machine, or None when persistence is off.

    ``FASTCONV_FFTW_WISDOM`` names the file; ``0`` or an empty value turns
    persistence off; unset, the file sits next to the calibration profile.

    Examples
    --------
    >>> wisdom_path() is None or wisdom_path().name.endswith(".json")
    True
    """
    raw = os.environ.get("FASTCONV_FFTW_WISDOM")
    if raw is None:
        from .. import costs
        return costs.profile_path().parent / WISDOM_FILE
    raw = raw.strip()
    return None if raw in ("", "0") else Path(raw)


def _import_once(path) -> None:
    if path in _IMPORTED:
        return
    with _PLAN_LOCK:
        if path not in _IMPORTED:
            _import_file(path)
            _IMPORTED.add(path)


def _import_file(path) -> bool:
    """Merge the wisdom saved in ``path`` into FFTW's (caller holds the plan lock).

    Anything unreadable is ignored: FFTW leaves its wisdom unchanged when an
    import fails, and forgets wisdom that proves wrong when it plans.
    """
    try:
        saved = json.loads(Path(path).read_text(encoding="ascii"))
        if saved.get("format") != WISDOM_FORMAT:
            return False
        wisdom = tuple(str(part).encode("ascii") for part in saved["fftw"])
        if len(wisdom) != 3:
            return False
        return any(pyfftw.import_wisdom(wisdom))
    except (OSError, ValueError, TypeError, KeyError, AttributeError, UnicodeError):
        return False


def save_wisdom(path=None) -> bool:
    """Save FFTW's wisdom (merged with the file's) to ``path``, atomically.

    Returns False when persistence is off or the file cannot be written
    (a read-only cache directory, say).
    """
    path = Path(path) if path is not None else wisdom_path()
    if path is None or pyfftw is None:
        return False
    with _PLAN_LOCK:
        _import_file(path)  # keep what other processes saved since we read it
        wisdom = pyfftw.export_wisdom()
    text = json.dumps({"format": WISDOM_FORMAT, "fftw": [w.decode("ascii") for w in wisdom]})
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(text)
        os.replace(tmp, path)
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False
    STATS["saved"] += 1
    return True


def kernel_spectrum(w, dilation, shape, dtype, threads):
    """Spectrum of the (dilated) kernel at tile ``shape``, scaled by 1 / points.

    Pruned: each axis is transformed only over the lines where the kernel
    is non-zero so far, so a small kernel in a big transform costs a fraction
    of a full transform.  Computed in double precision, returned as
    ``spectrum_dtype(dtype)`` of shape ``(O, Cg, *spectrum)``, read-only:
    the spectra of small kernels are remembered, keyed by the kernel's
    values (the same filter applied to image after image, a network's
    weights between two updates), up to ``SPECTRUM_BYTES`` in all.

    Examples
    --------
    >>> w = np.ones((1, 1, 3))
    >>> spec = kernel_spectrum(w, (1,), (8,), "float64", 1)
    >>> spec.shape, bool(np.isclose(spec[0, 0, 0], 3 / 8))
    ((1, 1, 5), True)
    """
    key = None
    if w.nbytes <= SPECTRUM_KERNEL_BYTES:
        key = (w.shape, w.dtype.str, tuple(dilation), tuple(shape), np.dtype(dtype).str,
               w.tobytes())
        with _SPECTRA_LOCK:
            spec = _SPECTRA.get(key)
            if spec is not None:
                _SPECTRA.move_to_end(key)
                STATS["spectra_reused"] += 1
                return spec
    spec = _transform_kernel(w, dilation, shape, dtype, threads)
    spec.flags.writeable = False
    if key is not None and spec.nbytes <= SPECTRUM_BYTES // 4:
        with _SPECTRA_LOCK:
            _SPECTRA[key] = spec
            total = sum(s.nbytes for s in _SPECTRA.values())
            while total > SPECTRUM_BYTES:
                _, dropped = _SPECTRA.popitem(last=False)
                total -= dropped.nbytes
    return spec


def _transform_kernel(w, dilation, shape, dtype, threads):
    if math.prod(shape) < SPECTRUM_THREADED_POINTS:
        threads = 1
    real = np.dtype(dtype).kind != "c"
    acc = np.float64 if real else np.complex128
    kernel = tuple((k - 1) * d + 1 for k, d in zip(w.shape[2:], dilation))
    spread = np.zeros(w.shape[:2] + kernel, acc)
    # the 1 / points of the inverse transforms, applied while the kernel is small
    np.multiply(w, 1.0 / math.prod(shape),
                out=spread[(Ellipsis,) + tuple(slice(None, None, d) for d in dilation)])
    # The kernel placed circularly reversed in its tile (out[(-m) % n] = a[m]) has the
    # spectrum sum_m a[m] e^(+2 pi i f m / n): an unscaled inverse transform of the kernel
    # zero-padded at the end (the conjugate of its forward one, for real data), so the
    # reversed, padded copies need not be built.
    if real:
        spec = np.conj(scipy_fft.rfft(spread, n=shape[-1], axis=-1, workers=threads))
    else:
        spec = scipy_fft.ifft(spread, n=shape[-1], axis=-1, workers=threads, norm="forward",
                              overwrite_x=True)
    for axis in range(len(shape) - 2, -1, -1):
        spec = scipy_fft.ifft(spec, n=shape[axis], axis=axis + 2, workers=threads,
                              norm="forward", overwrite_x=True)
    return spec.astype(spectrum_dtype(dtype), copy=False)
