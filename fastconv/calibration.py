"""Fit the dispatcher's cost constants on this machine.

:func:`calibrate` times every available backend on a grid of problems that
spans what the front ends produce (1-D signals, 2-D images, 3-D volumes,
multi-channel layers; small and large kernels; float32 and float64), fits
each backend's coefficients by non-negative least squares on relative error,
saves them as this machine's profile and reports the dispatcher's regret
(time of the 'auto' choice / time of the fastest backend) before and after.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import nnls

from . import _outputs, backends, costs, dispatch
from ._config import get_num_threads
from .problem import make_problem

# (x_shape, w_shape, padding) per grid row; dtypes are crossed with these.
_QUICK_GRID = [
    ((1, 1, 20000), (1, 1, 3), 1), ((1, 1, 20000), (1, 1, 31), 15), ((1, 1, 20000), (1, 1, 301), 150),
    ((1, 1, 200000), (1, 1, 9), 4), ((1, 1, 200000), (1, 1, 1025), 512),
    ((1, 1, 256, 256), (1, 1, 3, 3), 1), ((1, 1, 256, 256), (1, 1, 7, 7), 3),
    ((1, 1, 256, 256), (1, 1, 15, 15), 7), ((1, 1, 256, 256), (1, 1, 31, 31), 15),
    ((1, 1, 512, 512), (1, 1, 5, 5), 2), ((1, 1, 512, 512), (1, 1, 21, 21), 10),
    ((1, 1, 32, 32, 32), (1, 1, 3, 3, 3), 1), ((1, 1, 32, 32, 32), (1, 1, 7, 7, 7), 3),
    ((8, 16, 16, 16), (16, 16, 3, 3), 1), ((16, 32, 12, 12), (32, 32, 5, 5), 2),
    ((8, 3, 24, 24), (16, 3, 5, 5), 2),
]
_FULL_GRID = _QUICK_GRID + [
    ((1, 1, 1000000), (1, 1, 65), 32), ((1, 1, 1000000), (1, 1, 4097), 2048),
    ((1, 1, 1024, 1024), (1, 1, 3, 3), 1), ((1, 1, 1024, 1024), (1, 1, 9, 9), 4),
    ((1, 1, 1024, 1024), (1, 1, 33, 33), 16), ((1, 1, 64, 64, 64), (1, 1, 5, 5, 5), 2),
    ((1, 1, 64, 64, 64), (1, 1, 11, 11, 11), 5), ((32, 64, 14, 14), (64, 64, 3, 3), 1),
    ((32, 64, 12, 12), (64, 64, 5, 5), 2), ((1, 1, 1024, 1024), (1, 1, 17, 17), 8),
    ((1, 1, 2048, 2048), (1, 1, 17, 17), 8), ((1, 1, 96, 96, 96), (1, 1, 7, 7, 7), 3),
    # the benchmarked network layers (CIFAR-10 conv2, two ResNet layers)
    ((128, 64, 12, 12), (64, 64, 5, 5), 2), ((16, 256, 14, 14), (256, 256, 3, 3), 1),
    ((32, 64, 56, 56), (64, 64, 3, 3), 1),
]


@dataclass
class CalibrationReport:
    """What :func:`calibrate` measured and fitted.

    ``timings`` maps grid index -> {backend: seconds}; ``regret_before`` and
    ``regret_after`` list auto/best time ratios per grid problem.
    """

    problems: list = field(default_factory=list)
    timings: list = field(default_factory=list)
    coefficients: dict = field(default_factory=dict)
    regret_before: list = field(default_factory=list)
    regret_after: list = field(default_factory=list)
    path: str = ""

    def summary(self) -> str:
        def stats(values):
            v = np.asarray(values)
            return (f"median {np.median(v):.2f}, worst {v.max():.2f}, "
                    f"within 1.2x on {np.mean(v <= 1.2) * 100:.0f}% of {len(v)} problems")
        return (f"regret (auto time / fastest backend time) before: {stats(self.regret_before)}\n"
                f"regret after:  {stats(self.regret_after)}\nprofile saved to {self.path}")


# BLAS and FFT worker threads spin for a while after a call and would take the
# cores from the next backend's threads; a pause lets them sleep first, so each
# backend is timed as it runs on a quiet machine.
_SETTLE_SECONDS = 0.12


def _time(module, x, w, problem, budget: float) -> float:
    module.correlate(x, w, problem)  # warm up: JIT compilation, FFT plans
    time.sleep(_SETTLE_SECONDS)
    runs = []
    start = time.perf_counter()
    while len(runs) < 3 or (time.perf_counter() - start < budget and len(runs) < 15):
        t0 = time.perf_counter()
        # the output as the dispatcher allocates it (see dispatch.correlate)
        module.correlate(x, w, problem, out=_outputs.empty(problem.out_shape, problem.dtype))
        runs.append(time.perf_counter() - t0)
    return float(np.median(runs))


def _grid_problems(quick: bool):
    rng = np.random.default_rng(0)
    for x_shape, w_shape, pad in (_QUICK_GRID if quick else _FULL_GRID):
        for dtype in ("float64", "float32"):
            problem = make_problem(x_shape, w_shape, dtype, padding=pad)
            x = rng.standard_normal(x_shape).astype(dtype)
            w = rng.standard_normal(w_shape).astype(dtype)
            yield problem, x, w


def measure_grid(quick: bool = True, budget: float = 0.3, progress=None):
    """Time every supporting backend (reference excluded) on the grid."""
    problems, timings = [], []
    grid = list(_grid_problems(quick))
    fft = backends.REGISTRY.get("fft")
    if fft is not None:  # time the FFT with the measured plans later calls will use
        fft.prepare([problem for problem, _, _ in grid])
    for i, (problem, x, w) in enumerate(grid):
        row = {}
        for name, module in backends.REGISTRY.items():
            if name == "reference":
                continue
            p = module.inspect(problem, x, w) if hasattr(module, "inspect") else problem
            if not module.supports(p):
                continue
            row[name] = (_time(module, x, w, p, budget), p)
        problems.append(problem)
        timings.append(row)
        if progress is not None:
            progress(i + 1, len(grid))
    return problems, timings


def fit(problems, timings) -> dict:
    """Non-negative least-squares coefficients per backend, on relative error."""
    fitted = {}
    names = {name for row in timings for name in row}
    for name in names:
        rows = [(costs.FEATURES[name](p), t) for row in timings if name in row
                for t, p in [row[name]]]
        if len(rows) < len(costs.DEFAULT_COEFFICIENTS[name]):
            continue
        a = np.array([f for f, _ in rows], dtype=float)
        t = np.array([t for _, t in rows])
        coef, _ = nnls(a / t[:, None], np.ones(len(t)))  # minimise sum (model/t - 1)^2
        fitted[name] = tuple(float(c) for c in coef)
    return fitted


def regret(problems, timings) -> list:
    """auto's measured time / the fastest measured time, per grid problem."""
    dispatch.clear_cache()
    ratios = []
    for problem, row in zip(problems, timings):
        if not row:
            continue
        ranked = [(n, c) for n, c in dispatch._ranking(problem, get_num_threads())[0] if n in row]
        chosen = ranked[0][0] if ranked else min(row, key=lambda n: row[n][0])
        ratios.append(row[chosen][0] / min(t for t, _ in row.values()))
    return ratios


def calibrate(quick: bool = True, save: bool = True, path=None, progress=None) -> CalibrationReport:
    """Re-measure the backends here, fit the cost model and save the profile.

    Parameters
    ----------
    quick : bool
        A grid that runs in about a minute; False adds large problems.
    save : bool
        Save the fitted coefficients as this machine's profile
        (``fastconv.costs.profile_path()``), which later runs load.
    progress : callable, optional
        Called as ``progress(done, total)`` after each grid problem.

    Returns
    -------
    CalibrationReport

    Examples
    --------
    >>> import fastconv
    >>> report = fastconv.calibrate(save=False)   # doctest: +SKIP
    >>> print(report.summary())                   # doctest: +SKIP
    """
    problems, timings = measure_grid(quick, progress=progress)
    report = CalibrationReport(problems, timings)
    report.regret_before = regret(problems, timings)
    report.coefficients = fit(problems, timings)
    previous = costs.coefficients()
    if save:
        report.path = str(costs.save_profile(report.coefficients, path,
                                             meta={"date": time.strftime("%Y-%m-%d"),
                                                   "grid": "quick" if quick else "full"}))
    else:
        costs._coefficients = {**previous, **report.coefficients}
    report.regret_after = regret(problems, timings)
    if not save:
        costs._coefficients = previous
        dispatch.clear_cache()
    return report


__all__ = ["calibrate", "CalibrationReport", "measure_grid", "fit", "regret"]
