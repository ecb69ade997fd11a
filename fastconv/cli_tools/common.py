"""Pieces every subcommand uses: errors, JSON output, progress bars, timing, formatting."""
from __future__ import annotations

import json
import math
import sys
import time

import numpy as np


class CLIError(Exception):
    """An error the user can fix; the command prints it as one line and exits 1."""


def print_json(document) -> None:
    """Print ``document`` as JSON on stdout (numpy values converted, NaN as null)."""
    print(to_json(document))


def to_json(document, indent=2) -> str:
    """``document`` as strict JSON: numpy values converted, NaN and infinities as null."""
    return json.dumps(clean(document), indent=indent, default=_jsonable, allow_nan=False)


def clean(value):
    """A copy of nested dicts/lists/tuples with non-finite floats replaced by None."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, np.ndarray):
        return clean(value.tolist())
    if isinstance(value, (float, np.floating)):
        return finite_or_none(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.dtype):
        return str(value)
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def finite_or_none(value):
    """``value`` as a float, or None when it is NaN/inf (JSON has no NaN)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class _NoProgress:
    total = None

    def update(self, n=1):
        pass

    def set_description(self, text):
        pass

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def progress(total, desc: str, args=None):
    """A tqdm bar on stderr, or a silent stand-in with --json or when stderr is no terminal."""
    quiet = bool(getattr(args, "json", False)) or not sys.stderr.isatty()
    if quiet:
        return _NoProgress()
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, file=sys.stderr, leave=False)


def median_time(call, budget: float = 0.05, min_repeats: int = 3, max_repeats: int = 15,
                statistic=np.median, clock=time.perf_counter) -> float:
    """Median (or ``statistic``) time of ``call()`` in seconds, after one warm-up call.

    Repeats at least ``min_repeats`` times and keeps going, up to ``max_repeats``,
    while the runs so far took less than ``budget`` seconds of wall time: cheap
    calls get more samples, expensive ones no more than needed.  ``clock`` is
    wall time by default.
    """
    call()  # warm-up: JIT compilation, FFT plans, caches
    runs = []
    start = time.perf_counter()
    while len(runs) < min_repeats or (len(runs) < max_repeats
                                      and time.perf_counter() - start < budget):
        t0 = clock()
        call()
        runs.append(clock() - t0)
    return float(statistic(runs))


def cpu_time(call, budget: float = 0.05, min_repeats: int = 5, max_repeats: int = 25) -> float:
    """CPU seconds the process spends in ``call()``: the least of the repeated runs.

    CPU time counts the work done, not the wait for a core, so other programs
    sharing the machine hardly change it; the least of the runs drops cache
    and interrupt disturbances.  With one thread it equals the wall time of
    an idle machine; with more, it adds up every thread's share.
    """
    return median_time(call, budget, min_repeats, max_repeats, statistic=np.min,
                       clock=time.process_time)


def fmt_seconds(seconds) -> str:
    """A time with a unit a person reads at a glance: 12.3 us, 4.56 ms, 7.89 s."""
    if seconds is None or not math.isfinite(seconds):
        return "n/a"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds / 1e-9:.3g} ns"


def fmt_bytes(nbytes) -> str:
    """Bytes with a binary unit: 512 B, 1.5 MiB."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} TiB"  # pragma: no cover


def fmt_count(n) -> str:
    """An integer with thousands separators: 267,960."""
    return f"{int(n):,}"


def markdown_table(header, rows) -> str:
    """A GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def text_table(header, rows) -> str:
    """A plain-text table with aligned columns, for the terminal."""
    cells = [list(map(str, header))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
