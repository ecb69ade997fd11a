"""Timing sweeps for ``fastconv profile``: backends against kernel width and signal size.

Every timing is one backend called directly on a canonical problem (no
dispatcher in the loop): the process's CPU time, least of at least three runs
after a warm-up (see :func:`~fastconv.cli_tools.common.cpu_time`), so the
growth rates measure work, not the load of a shared machine.
Kernels are rank one (an outer product of 1-D factors) so that every backend,
the separable one included, computes the same problem.
"""
from __future__ import annotations

import math

import numpy as np

from .. import backends, costs
from ..backends import _fft_plans
from ..problem import make_problem
from .common import cpu_time

#: the CPU algorithms the chapter compares (reference is the slow oracle; CUDA is not CPU)
CPU_BACKENDS = ("direct", "im2col", "fft", "separable")


def rank_one_kernel(rng, d: int, width: int) -> np.ndarray:
    """A ``(1, 1, width, ..., width)`` kernel that is an outer product of ``d`` vectors."""
    kernel = np.ones((), np.float64)
    for _ in range(d):
        kernel = np.multiply.outer(kernel, rng.uniform(0.5, 1.5, width))
    return kernel.reshape((1, 1) + (width,) * d)


def prepared(name: str, problem, x, w):
    """``(module, problem)`` ready to time, or None where ``name`` cannot run it here."""
    module = backends.REGISTRY.get(name)
    if module is None:
        return None
    if hasattr(module, "inspect"):
        problem = module.inspect(problem, x, w)
    if not module.supports(problem):
        return None
    if name == "fft" and _fft_plans.plans_measured():
        # measured FFTW plans now (saved: once per machine), not in a background thread whose
        # CPU time the timing would count, and not the stand-in plans of the first calls
        module.prepare([problem])
    return module, problem


def time_backend(name: str, problem, x, w, budget: float):
    """CPU seconds of backend ``name`` on the problem, or None if it cannot run it."""
    ready = prepared(name, problem, x, w)
    if ready is None:
        return None
    module, problem = ready
    out = np.empty(problem.out_shape, problem.dtype)
    return cpu_time(lambda: module.correlate(x, w, problem, out=out), budget)


def _timed_row(names, problem, x, w, preset, last: dict) -> dict:
    """Time each backend on one problem, skipping those predicted to exceed ``preset.cap``.

    The prediction scales the backend's previous time in this sweep by the
    ratio of its cost-model estimates, so a sweep never starts a call that
    would take far longer than the cap.
    """
    row = {}
    for name in names:
        ready = prepared(name, problem, x, w)
        if ready is None:
            row[name] = None
            continue
        module, p = ready
        estimate = costs.estimate(name, p)
        if name in last:
            seconds, previous = last[name]
            if seconds * estimate / max(previous, 1e-12) > preset.cap:
                row[name] = None
                continue
        out = np.empty(p.out_shape, p.dtype)
        row[name] = cpu_time(lambda: module.correlate(x, w, p, out=out), preset.budget)
        last[name] = (row[name], estimate)
    return row


def width_sweep(sweep, preset, tick, names=CPU_BACKENDS, seed=0) -> dict:
    """Times of each backend for each kernel width, output size fixed ('same' padding)."""
    rng = np.random.default_rng(seed)
    x_shape = (1, 1) + (sweep.n,) * sweep.d
    x = rng.standard_normal(x_shape)
    times = {name: [] for name in names}
    predicted = {name: [] for name in names}
    last: dict = {}
    for width in sweep.widths:
        w = rank_one_kernel(rng, sweep.d, width)
        problem = make_problem(x_shape, w.shape, "float64", padding=width // 2)
        row = _timed_row(names, problem, x, w, preset, last)
        for name in names:
            times[name].append(row[name])
            predicted[name].append(_estimate(name, problem, x, w))
        tick()
    return {"d": sweep.d, "n": sweep.n, "widths": list(sweep.widths), "fit_from": sweep.fit_from,
            "times": times, "predicted": predicted, "macs": [sweep.n ** sweep.d * k ** sweep.d
                                                            for k in sweep.widths]}


def _estimate(name, problem, x, w):
    """The dispatcher's cost-model estimate for ``name`` here (None if it cannot run)."""
    ready = prepared(name, problem, x, w)
    return None if ready is None else costs.estimate(name, ready[1])


def fixed_size_sweep(d: int, size: int, widths, preset, tick, seed=1) -> dict:
    """FFT (and direct, for contrast) with the padded size held at ``size`` per axis.

    The input is ``size - w + 1`` wide and the output 'full' (padding
    ``w - 1`` on both sides), so the linear convolution, and with it the
    transform an FFT method needs, is ``size`` points per axis whatever the
    kernel width: the textbook FFT convolution at a fixed padded size.
    """
    rng = np.random.default_rng(seed)
    times = {"fft": [], "direct": []}
    last: dict = {}
    for width in widths:
        x = rng.standard_normal((1, 1) + (size - width + 1,) * d)
        w = rank_one_kernel(rng, d, width)
        problem = make_problem(x.shape, w.shape, "float64", padding=width - 1)
        row = _timed_row(("fft", "direct"), problem, x, w, preset, last)
        for name in times:
            times[name].append(row[name])
        tick()
    return {"d": d, "size": size, "widths": list(widths), "times": times}


def signal_size_sweep(width: int, sizes, preset, tick, seed=2) -> dict:
    """FFT time against the 1-D signal length, kernel width fixed, 'same' padding."""
    rng = np.random.default_rng(seed)
    w = rank_one_kernel(rng, 1, width)
    times = []
    for n in sizes:
        x = rng.standard_normal((1, 1, n))
        problem = make_problem(x.shape, w.shape, "float64", padding=width // 2)
        times.append(time_backend("fft", problem, x, w, preset.budget))
        tick()
    return {"width": width, "sizes": list(sizes), "times": times,
            "fft_lengths": [costs.fft_size(make_problem((1, 1, n), w.shape, "float64",
                                                        padding=width // 2)) for n in sizes]}


def fit_loglog(xs, ys):
    """Least-squares ``(slope, intercept)`` of log(y) on log(x), skipping missing y.

    Returns ``(nan, nan)`` with fewer than two points.
    """
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None and y > 0 and x > 0]
    if len(pairs) < 2:
        return math.nan, math.nan
    lx, ly = np.log([p[0] for p in pairs]), np.log([p[1] for p in pairs])
    slope, intercept = np.polyfit(lx, ly, 1)
    return float(slope), float(intercept)


def overtake(widths, slow, fast):
    """Where ``fast`` becomes and stays faster than ``slow`` along the widths.

    Returns ``(below, at)``: the last width where ``slow`` still won (None if
    ``fast`` won from the first width) and the first width from which
    ``fast`` wins at every larger measured width; None if it never does.
    Widths where either time is missing are ignored.
    """
    both = [(k, s, f) for k, s, f in zip(widths, slow, fast) if s is not None and f is not None]
    first = None
    for i in range(len(both) - 1, -1, -1):
        if both[i][2] < both[i][1]:
            first = i
        else:
            break
    if first is None:
        return None
    return (both[first - 1][0] if first > 0 else None), both[first][0]


def fastest_range(widths, times: dict, name: str):
    """The widths at which backend ``name`` is the fastest of all those measured."""
    wins = []
    for i, width in enumerate(widths):
        measured = {k: v[i] for k, v in times.items() if v[i] is not None}
        if name in measured and min(measured, key=measured.get) == name:
            wins.append(width)
    return wins
