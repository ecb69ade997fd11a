"""Cost models of the backends, and the per-machine calibration profile.

Each backend's time is modelled as a non-negative linear combination of a
few features of the problem (multiply-adds, transform work, bytes moved),
``seconds = sum(coef[i] * feature[i])``.  The coefficients shipped in
``DEFAULT_COEFFICIENTS`` were fitted on a 2-core x86-64 machine (the class
of machine this project is developed on); :func:`fastconv.calibrate`
re-fits them here and saves a profile that later runs load instead.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

# A complex multiply-add costs four real ones; float32 runs twice the SIMD lanes.
_DTYPE_WEIGHT = {"f4": 0.5, "f8": 1.0, "c8": 2.0, "c16": 4.0}


def dtype_weight(problem) -> float:
    """Cost of one element or multiply-add of ``problem.dtype``, float64 = 1."""
    return _DTYPE_WEIGHT.get(f"{problem.dtype.kind}{problem.dtype.itemsize}", 4.0)


def _elements(problem) -> float:
    """Input plus output elements: the memory any backend must stream once."""
    return float(math.prod(problem.x_shape) + math.prod(problem.out_shape))


def fft_size(problem) -> int:
    """Points of one padded transform plane (full linear correlation size)."""
    return math.prod(n + p[0] + p[1] + (k - 1) * d
                     for n, p, k, d in zip(problem.spatial, problem.padding, problem.kernel,
                                           problem.dilation))


def _features_direct(p):
    # two kernels: the register-blocked one (four output rows at a time) and the
    # row kernel; both vectorise along the output row, and each pass over a row
    # (four rows for the blocked kernel) per tap pays a fixed start-up that
    # dominates short rows
    from .backends import direct
    macs = p.macs * dtype_weight(p)
    row_passes = p.macs / max(p.out_spatial[-1], 1)
    if direct.takes_block_path(p):
        return (1.0, 0.0, macs, _elements(p), row_passes / 4)
    return (1.0, macs, 0.0, _elements(p), row_passes)


def _features_im2col(p):
    # im2col plans its blocks, copies and BLAS calls per problem and thread budget;
    # its plan says how much it copies and how often Python calls into its kernels.
    from ._config import get_num_threads
    from .backends import im2col
    work = im2col.work(p)
    threads = max(get_num_threads(), 1)
    weight = dtype_weight(p)
    return (1.0, p.macs * weight / threads, work["copied"] * weight / work["workers"],
            float(work["dispatches"]), work["accumulated"] * weight / work["workers"])


def _features_fft(p):
    # The tiled FFT picks its own tile sizes; its layout model knows what a call
    # will transform, multiply and copy, shared over the threads the call runs.
    from .backends import fft
    return fft.model_features(p)


def _features_winograd(p):
    from .backends import winograd
    return winograd.features(p)


def _features_separable(p):
    # its 1-D passes run on direct's kernels: direct's model prices each pass
    from .backends import separable
    return (1.0, sum(estimate("direct", q) for q in separable.pass_problems(p)))


def _features_reference(p):
    return (1.0, p.macs, math.prod(p.kernel) * _elements(p))


def _features_cuda(p):
    transferred = (_elements(p) + math.prod(p.w_shape)) * p.dtype.itemsize
    return (1.0, p.macs * dtype_weight(p), transferred)


FEATURES = {
    "direct": _features_direct,
    "im2col": _features_im2col,
    "fft": _features_fft,
    "separable": _features_separable,
    "winograd": _features_winograd,
    "reference": _features_reference,
    "cuda": _features_cuda,
}

#: seconds per feature unit, fitted by ``fastconv.calibrate(quick=False)`` on a 2-core
#: x86-64 machine (AVX-512, OpenBLAS 0.3.30) on 2026-11-26 (FFTW plans measured; 62
#: problems, 98% within 1.2x of the fastest backend, worst 1.42x); separable is priced as
#: its direct passes; the reference and cuda rows are guesses
DEFAULT_COEFFICIENTS = {
    "direct": (2.055e-05, 3.527e-11, 2.403e-11, 8.531e-11, 9.621e-09),
    "im2col": (0.0, 3.559e-11, 3.803e-10, 1.714e-05, 1.62e-09),
    "fft": (1.587e-04, 0.4429, 0.3286, 1.905, 0.0001143),
    "separable": (2e-5, 1.0),
    "winograd": (2.941e-4, 4.737e-11, 6.765e-10, 0.0, 5.33e-06),
    "reference": (1e-4, 5e-9, 3e-9),
    "cuda": (2e-4, 1e-12, 1e-10),
}

_coefficients = dict(DEFAULT_COEFFICIENTS)
_profile_source = "built-in defaults"


def estimate(name: str, problem) -> float:
    """Estimated seconds for backend ``name`` on ``problem``.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 64, 64), (1, 1, 3, 3), "float64", padding=1)
    >>> 0 < estimate("direct", p) < estimate("reference", p)
    True
    """
    coefs = _coefficients[name]
    return float(sum(c * f for c, f in zip(coefs, FEATURES[name](problem))))


def profile_path() -> Path:
    """Where the calibration profile of this machine lives."""
    override = os.environ.get("FASTCONV_PROFILE")
    if override:
        return Path(override)
    env = os.environ
    return _default_profile_path(*(env.get(name) for name in _CACHE_DIR_VARIABLES))


#: what platformdirs reads to find the user cache directory
_CACHE_DIR_VARIABLES = ("XDG_CACHE_HOME", "HOME", "LOCALAPPDATA")


@lru_cache(maxsize=8)
def _default_profile_path(*environment) -> Path:
    """The profile in the user cache directory, remembered per ``_CACHE_DIR_VARIABLES`` values.

    platformdirs takes 10 microseconds, and the FFT backend asks on every call.
    """
    import platformdirs
    return Path(platformdirs.user_cache_dir("fastconv")) / "profile.json"


def load_profile(path=None) -> str:
    """Load a saved profile if there is one; returns where the coefficients came from."""
    global _coefficients, _profile_source
    path = Path(path) if path else profile_path()
    coefficients = dict(DEFAULT_COEFFICIENTS)
    source = "built-in defaults"
    try:
        saved = json.loads(path.read_text())
        for name, coefs in saved.get("coefficients", {}).items():
            if name in FEATURES and len(coefs) == len(DEFAULT_COEFFICIENTS[name]):
                coefficients[name] = tuple(float(c) for c in coefs)
        source = str(path)
    except (OSError, ValueError, TypeError, AttributeError):
        pass
    _coefficients, _profile_source = coefficients, source
    return source


def save_profile(coefficients: dict, path=None, meta=None) -> Path:
    """Save fitted coefficients as this machine's profile and start using them."""
    global _coefficients, _profile_source
    path = Path(path) if path else profile_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"coefficients": {k: list(v) for k, v in coefficients.items()},
                                "meta": meta or {}}, indent=2))
    _coefficients = {**DEFAULT_COEFFICIENTS, **coefficients}
    _profile_source = str(path)
    return path


def profile_source() -> str:
    """Where the coefficients in use came from."""
    return _profile_source


def coefficients() -> dict:
    """The coefficients in use, name -> tuple."""
    return dict(_coefficients)


load_profile()
