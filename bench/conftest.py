"""pytest-benchmark setup: peer ratios measured in the same run, printed at the end.

Every benchmark belongs to a ``group`` (one problem); the entry whose name
starts with ``fastconv`` is the reference point, and each peer's ratio is
peer median / fastconv median (above 1: fastconv is faster).
"""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

RATIOS_FILE = Path(os.environ.get("FASTCONV_BENCH_RATIOS", ".benchmarks/ratios.json"))


def pytest_configure(config):
    config.addinivalue_line("markers", "heavy: a long benchmark")


def _medians(session):
    groups = {}
    for bench in session.benchmarks:
        if bench.stats is None or not bench.stats.rounds:
            continue
        groups.setdefault(bench.group or bench.name, {})[label(bench)] = bench.stats.median
    return groups


def label(bench) -> str:
    """'fastconv_auto', 'scipy_fftconvolve'...: extra_info['label'] or the test name less its area."""
    if "label" in bench.extra_info:
        return bench.extra_info["label"]
    return bench.name.split("[")[0].split("_", 2)[-1]


def ratio_rows(groups):
    """(group, fastconv entry, peer, fastconv median, peer median, peer/fastconv) rows."""
    rows = []
    for group, entries in sorted(groups.items()):
        ours = [n for n in entries if n.startswith("fastconv")]
        if not ours:
            continue
        anchor = min(ours, key=lambda n: (n != "fastconv_auto", n))
        for name, median in sorted(entries.items()):
            if name != anchor:
                rows.append((group, anchor, name, entries[anchor], median, median / entries[anchor]))
    return rows


def pytest_terminal_summary(terminalreporter, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    rows = ratio_rows(_medians(session))
    if not rows:
        return
    tr = terminalreporter
    tr.write_sep("=", "ratios measured in this run (median other / median fastconv; >1 = fastconv faster)")
    for group, anchor, name, ours, theirs, ratio in rows:
        tr.write_line(f"{group:<34} {name:<28} {anchor:<18} {ours * 1e3:9.2f} ms {theirs * 1e3:9.2f} ms"
                      f"  x{ratio:6.2f}")
    RATIOS_FILE.parent.mkdir(parents=True, exist_ok=True)
    RATIOS_FILE.write_text(json.dumps([dict(zip(("group", "fastconv", "other", "fastconv_s",
                                                 "other_s", "ratio"), r)) for r in rows], indent=1))


@pytest.fixture
def run(benchmark):
    """Benchmark ``func(*args)`` with a round count suited to its cost."""
    def _run(func, *args, rounds=5):
        # warm-up outside the timing: JIT compilation, FFT plans, and the process itself
        # (thread pools starting; fastconv's pool of result blocks filling). Each call's
        # result is kept until the next one returns, as pytest-benchmark's rounds do: the
        # timed rounds then find two blocks in the pool instead of page-faulting a second
        # one in (up to 50 ms for a 32 MB result on a fresh VM page)
        start, calls, previous = time.perf_counter(), 0, None
        while calls < 2 or (time.perf_counter() - start < 1.0 and calls < 20):
            previous = func(*args)
            calls += 1
        del previous
        # a round is one call from scratch: the fft backend remembers the spectra of the
        # kernels it has seen, which would make every round after the first skip that work
        return benchmark.pedantic(func, args=args, setup=_forget_kernel_spectra, rounds=rounds,
                                  iterations=1)
    return _run


def _forget_kernel_spectra():
    from fastconv.backends import _fft_plans
    _fft_plans.forget_spectra()
