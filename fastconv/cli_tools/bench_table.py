"""``fastconv bench``: fastconv against scipy, numpy, OpenCV and torch, on the same problems.

Every peer is imported lazily and skipped when absent; every result is checked
against fastconv's before its time counts, so the table compares like with
like ('same'-mode convolution, zero boundary).  Peers that run threads (OpenCV,
torch) get fastconv's thread budget.  Ratios are peer time / fastconv time,
measured in the same run: above 1, fastconv is faster.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np

from .common import CLIError, fmt_seconds, markdown_table, median_time, print_json, progress, \
    text_table

#: a peer whose first call takes longer than this (seconds) is not repeated
SLOW_PEER = 0.5

# (label, input shape, kernel width, separable kernel?)
_PROBLEMS = {
    "quick": [("1-D 20k, w=31", (20_000,), 31, False), ("1-D 20k, w=301", (20_000,), 301, False),
              ("2-D 256x256, 5x5", (256, 256), 5, False),
              ("2-D 256x256, 15x15 Gaussian", (256, 256), 15, True),
              ("3-D 32^3, 5^3", (32, 32, 32), 5, False)],
    "default": [("1-D 200k, w=31", (200_000,), 31, False),
                ("1-D 200k, w=1001", (200_000,), 1001, False),
                ("2-D 512x512, 5x5", (512, 512), 5, False),
                ("2-D 512x512, 31x31", (512, 512), 31, False),
                ("2-D 512x512, 31x31 Gaussian", (512, 512), 31, True),
                ("3-D 64^3, 5^3", (64, 64, 64), 5, False)],
}


def _kernel(rng, ndim, width, separable):
    if separable:
        g = np.exp(-0.5 * ((np.arange(width) - width // 2) / (width / 6)) ** 2)
        g /= g.sum()
        kernel = g
        for _ in range(ndim - 1):
            kernel = np.multiply.outer(kernel, g)
        return kernel, g
    return rng.standard_normal((width,) * ndim), None


def _flip(k):
    return k[(slice(None, None, -1),) * k.ndim]


def peers(threads: int) -> dict:
    """name -> (applies(x, k, factor) -> bool, run(x, k, factor) -> 'same' convolution)."""
    found = {}
    import scipy.ndimage
    import scipy.signal
    found["scipy.signal.convolve"] = (lambda x, k, g: True,
                                      lambda x, k, g: scipy.signal.convolve(x, k, "same"))
    found["scipy.signal.fftconvolve"] = (lambda x, k, g: True,
                                         lambda x, k, g: scipy.signal.fftconvolve(x, k, "same"))
    found["scipy.ndimage.convolve"] = (
        lambda x, k, g: True,
        lambda x, k, g: scipy.ndimage.convolve(x, k, mode="constant", cval=0.0))
    found["numpy.convolve"] = (lambda x, k, g: x.ndim == 1,
                               lambda x, k, g: np.convolve(x, k, "same"))
    try:
        import cv2
        cv2.setNumThreads(threads)
        found["cv2.filter2D"] = (lambda x, k, g: x.ndim == 2, lambda x, k, g: cv2.filter2D(
            x, -1, _flip(k), borderType=cv2.BORDER_CONSTANT))
        found["cv2.sepFilter2D"] = (lambda x, k, g: x.ndim == 2 and g is not None,
                                    lambda x, k, g: cv2.sepFilter2D(
                                        x, -1, g[::-1], g[::-1], borderType=cv2.BORDER_CONSTANT))
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(threads)
        found["torch conv"] = (lambda x, k, g: True, lambda x, k, g: _torch_conv(torch, x, k))
    except ImportError:
        pass
    return found


def _torch_conv(torch, x, k):
    conv = getattr(torch.nn.functional, f"conv{x.ndim}d")
    with torch.no_grad():
        out = conv(torch.from_numpy(x)[None, None], torch.from_numpy(_flip(k).copy())[None, None],
                   padding="same")
    return out[0, 0].numpy()


def _agrees(a, b, dtype) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        return False
    tol = 1e-4 if dtype == np.float32 else 1e-9
    return bool(np.allclose(a, b, rtol=tol, atol=tol * float(np.abs(b).max() or 1.0)))


def measure(quick: bool, dtype, threads: int, tick=lambda: None) -> list:
    """One row per (problem, implementation) with the median time and the ratio."""
    import fastconv
    rng = np.random.default_rng(0)
    found = peers(threads)
    budget = 0.05 if quick else 0.3
    rows = []
    for label, shape, width, separable in _PROBLEMS["quick" if quick else "default"]:
        x = rng.standard_normal(shape).astype(dtype)
        kernel, factor = _kernel(rng, len(shape), width, separable)
        kernel = kernel.astype(dtype)
        factor = None if factor is None else factor.astype(dtype)
        ours = fastconv.convolve(x, kernel, "same")
        method = fastconv.explain(x, kernel, "same").name
        base = median_time(lambda: fastconv.convolve(x, kernel, "same"), budget)
        rows.append({"problem": label, "peer": f"fastconv ({method})", "seconds": base,
                     "runs": 3, "ratio": 1.0, "agrees": True})
        for name, (applies, call) in found.items():
            if not applies(x, kernel, factor):
                continue
            start = time.perf_counter()
            result = call(x, kernel, factor)
            seconds = time.perf_counter() - start
            runs = 1
            if seconds < SLOW_PEER:  # a very slow peer is timed once: repeats add nothing
                seconds, runs = median_time(lambda: call(x, kernel, factor), budget), 3
            rows.append({"problem": label, "peer": name, "seconds": seconds, "runs": runs,
                         "ratio": seconds / base, "agrees": _agrees(result, ours, dtype)})
        tick()
    return rows


def _cells(row):
    ratio = "1 (baseline)" if row["peer"].startswith("fastconv") else f"{row['ratio']:.2f}"
    note = "" if row["agrees"] else " (result differs!)"
    once = " (1 run)" if row["runs"] == 1 else ""
    return row["problem"], row["peer"], fmt_seconds(row["seconds"]) + once, ratio + note


_HEADER = ("Problem ('same' mode)", "Implementation", "Median time", "Peer / fastconv")


def markdown(rows, dtype, threads, quick) -> str:
    """The saved Markdown section: setup, then the table."""
    from .. import __version__
    return "\n".join([
        "# fastconv bench (command line)", "",
        f"{time.strftime('%Y-%m-%d %H:%M')}: `fastconv bench{' --quick' if quick else ''} "
        f"--dtype {np.dtype(dtype).name}`, fastconv {__version__}, {platform.machine()} with "
        f"{os.cpu_count()} logical cores, {threads} threads for fastconv, OpenCV and torch.", "",
        "Wall-clock medians of repeated calls in one run (a peer slower than "
        f"{SLOW_PEER} s per call is timed once); the ratio is peer time / fastconv time (above "
        "1: fastconv is faster). Every peer's output was compared with fastconv's.", "",
        markdown_table(_HEADER, [_cells(r) for r in rows]), ""])


def run(args) -> int:
    from .. import _config
    dtype = np.dtype(args.dtype)
    threads = _config.get_num_threads()
    total = len(_PROBLEMS["quick" if args.quick else "default"])
    with progress(total, "benchmarking", args) as bar:
        rows = measure(args.quick, dtype, threads, bar.update)
    written = {}
    if args.save:
        written["save"] = _write(Path(args.save), markdown(rows, dtype, threads, args.quick))
    if args.plot:
        from .plots import plot_bench
        peers_only = [r for r in rows if not r["peer"].startswith("fastconv")]
        written["plot"] = _checked(lambda: plot_bench(peers_only, args.plot), args.plot)
    if args.json:
        print_json({"dtype": dtype.name, "threads": threads, "rows": rows, "written": written})
        return 0
    print(text_table(_HEADER, [_cells(r) for r in rows]))
    for path in written.values():
        print(f"wrote {path}")
    return 0


def _write(path: Path, text: str) -> str:
    def write():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return str(path)
    return _checked(write, path)


def _checked(call, path) -> str:
    try:
        return call()
    except OSError as exc:
        raise CLIError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None
