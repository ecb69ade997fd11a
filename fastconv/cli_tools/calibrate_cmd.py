"""``fastconv calibrate``: fit the dispatcher's cost constants here and show its regret."""
from __future__ import annotations

import numpy as np

from .common import fmt_seconds, print_json, progress, text_table


def _problem_label(problem) -> str:
    n, c = problem.x_shape[:2]
    spatial = "x".join(map(str, problem.spatial))
    kernel = "x".join(map(str, problem.kernel))
    plain = (n, c, problem.out_channels) == (1, 1, 1)
    channels = "" if plain else f" {n}x{c}->{problem.out_channels}"
    return f"{problem.ndim}-D {spatial} * {kernel}{channels} {problem.dtype}"


def regret_rows(report) -> list:
    """Per grid problem: the fastest backend, its time, and the regret before and after."""
    rows = []
    measured = [(p, row) for p, row in zip(report.problems, report.timings) if row]
    for (problem, row), before, after in zip(measured, report.regret_before, report.regret_after):
        best = min(row, key=lambda name: row[name][0])
        rows.append({"problem": _problem_label(problem), "fastest": best,
                     "seconds": row[best][0], "regret_before": before, "regret_after": after})
    return rows


def run(args) -> int:
    from .. import calibration
    with progress(None, "calibrating", args) as bar:
        def tick(done, total):
            bar.total = total  # the grid's size is known once measuring starts
            bar.update(1)
        report = calibration.calibrate(quick=not args.full, save=not args.no_save,
                                       path=args.profile, progress=tick)
    rows = regret_rows(report)
    if args.json:
        print_json({"saved_to": report.path or None,
                    "coefficients": report.coefficients, "problems": rows,
                    "regret_before": report.regret_before, "regret_after": report.regret_after})
        return 0
    print(text_table(("Problem", "Fastest", "Its time", "Regret before", "Regret after"),
                     [(r["problem"], r["fastest"], fmt_seconds(r["seconds"]),
                       f"{r['regret_before']:.2f}", f"{r['regret_after']:.2f}") for r in rows]))
    print()
    print("coefficients (seconds per feature unit):")
    for name, coefs in sorted(report.coefficients.items()):
        print(f"  {name:<10} " + ", ".join(f"{c:.3g}" for c in coefs))
    before, after = np.asarray(report.regret_before), np.asarray(report.regret_after)
    print(f"\nregret = time of the backend 'auto' picks / time of the fastest backend "
          f"(1.00 is perfect)\n  before: median {np.median(before):.2f}, worst {before.max():.2f}"
          f"\n  after:  median {np.median(after):.2f}, worst {after.max():.2f}")
    print(f"profile saved to {report.path}" if report.path else "profile not saved (--no-save)")
    return 0
