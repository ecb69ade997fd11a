"""``fastconv profile``: measure the chapter's claims and write a report with plots.

Runs the timing sweeps (``profile_sweeps``), turns them into claims
(``profile_scaling``, ``profile_claims``), draws the figures (``plots``) and
writes ``report.md`` and ``results.json`` to the output folder.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import plots, profile_claims, profile_scaling, report
from .claim import FAIL, PRESETS
from .common import CLIError, print_json, progress, to_json
from .profile_sweeps import fit_loglog, fixed_size_sweep, signal_size_sweep, width_sweep


def _steps(preset) -> int:
    return (2 + sum(len(s.widths) for s in preset.sweeps) + len(preset.separable.widths)
            + sum(len(f[2]) for f in preset.fft_fixed) + len(preset.fft_sizes[1])
            + len(preset.memory) + 2)


def measure(preset, tick) -> tuple:
    """Every measurement of a profile run: ``(claims, sweeps)`` with the raw sweep data."""
    sweeps = [width_sweep(s, preset, tick, names=preset.backends) for s in preset.sweeps]
    sep = width_sweep(preset.separable, preset, tick, names=preset.backends)
    fixed = [fixed_size_sweep(d, size, widths, preset, tick)
             for d, size, widths in preset.fft_fixed]
    sizes = signal_size_sweep(*preset.fft_sizes, preset, tick)
    claims = [
        profile_claims.claim_edge(preset, tick),
        profile_scaling.claim_direct(sweeps),
        profile_scaling.claim_fft(fixed, sizes),
        profile_scaling.claim_separable(sep),
        profile_scaling.claim_crossover(sweeps),
        profile_claims.claim_memory(preset, tick),
        profile_claims.claim_receptive_field(preset, tick),
        profile_claims.claim_pooling(preset, tick),
    ]
    return claims, {"sweeps": sweeps, "separable": sep, "fft_fixed": fixed, "fft_sizes": sizes}


def draw(claims, raw, out: Path) -> None:
    """Write each claim's PNG into ``out`` and record the file names on the claims."""
    by_key = {c.key: c for c in claims}
    direct = by_key["direct"].data
    fits = {d: (direct["slopes"][d], direct["intercepts"][d]) for d in direct["slopes"]}
    sep = raw["separable"]
    sep_fits = {}
    for name in ("separable", "direct"):
        keep = [(w, t) for w, t in zip(sep["widths"], sep["times"][name]) if w >= sep["fit_from"]]
        sep_fits[name] = fit_loglog([w for w, _ in keep], [t for _, t in keep])
    jobs = [
        ("edge", "edge_detection.png", lambda p: plots.plot_edge(by_key["edge"].data, p)),
        ("direct", "cost_vs_width.png", lambda p: plots.plot_scaling(raw["sweeps"], fits, p)),
        ("fft", "fft_cost.png", lambda p: plots.plot_fft(raw["fft_fixed"], raw["fft_sizes"],
                                 by_key["fft"].data["slope_nlogn"], p)),
        ("separable", "separable_cost.png", lambda p: plots.plot_separable(sep, sep_fits, p)),
        ("memory", "im2col_memory.png",
         lambda p: plots.plot_memory(by_key["memory"].data["rows"], p)),
        ("receptive_field", "receptive_field.png",
         lambda p: plots.plot_receptive_field(by_key["receptive_field"].data, p)),
        ("pooling", "pooling_shift.png", lambda p: plots.plot_pooling(by_key["pooling"].data, p)),
    ]
    for key, name, draw_one in jobs:
        claim = by_key[key]
        if claim.verdict == "SKIP" or (key == "memory" and not claim.data.get("rows")):
            continue
        draw_one(out / name)
        claim.plots.append(name)
    if by_key["crossover"].verdict != "SKIP":
        by_key["crossover"].plots.append("cost_vs_width.png")


def _blas_limited():
    """Hold BLAS (the dense layer's product, im2col's GEMM) to fastconv's thread budget."""
    from threadpoolctl import threadpool_limits
    from .._config import get_num_threads
    return threadpool_limits(limits=get_num_threads(), user_api="blas")


def _json_data(data):
    """Claim data without the images (they are in the PNGs)."""
    return {k: v for k, v in data.items() if not isinstance(v, np.ndarray)}


def run(args) -> int:
    preset = PRESETS[args.preset]
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CLIError(f"cannot create the output folder {str(out)!r}: "
                       f"{exc.strerror or exc}") from None
    start = time.perf_counter()
    with progress(_steps(preset), "profiling", args) as bar, _blas_limited():
        claims, raw = measure(preset, bar.update)
    if not args.no_plots:
        draw(claims, raw, out)
    seconds = time.perf_counter() - start
    (out / "report.md").write_text(report.markdown(claims, preset, seconds))
    document = {"preset": preset.name, "seconds": seconds, "out": str(out),
                "report": str(out / "report.md"),
                "claims": [dict(c.as_dict(), data=_json_data(c.data)) for c in claims],
                "raw": raw}
    (out / "results.json").write_text(to_json(document, indent=1))
    if args.json:
        print_json(document)
    else:
        print(report.terminal(claims))
        print(f"\n{len(claims)} claims in {seconds:.1f} s; report: {out / 'report.md'}")
    failed = any(c.verdict == FAIL for c in claims)
    return 3 if args.strict and failed else 0
