"""The Markdown report and the terminal table of ``fastconv profile``."""
from __future__ import annotations

import os
import platform
import time

from .common import markdown_table, text_table

_HEADER = ("Claim", "Counted operations", "Measured", "Verdict")


def _machine() -> str:
    from .. import __version__, _config, backends, costs
    return (f"fastconv {__version__}, Python {platform.python_version()}, "
            f"{platform.machine()} with {os.cpu_count()} logical cores, "
            f"fastconv limited to {_config.get_num_threads()} thread(s); backends: "
            f"{', '.join(sorted(backends.REGISTRY))}"
            + (f" (unavailable: {', '.join(sorted(backends.UNAVAILABLE))})"
               if backends.UNAVAILABLE else "")
            + f"; cost model: {costs.profile_source()}")


def _threads_note() -> str:
    from .. import _config
    n = _config.get_num_threads()
    if n == 1:
        return ("With one thread (the profile's default) it is what an idle machine's wall "
                "clock would show.")
    return (f"With {n} threads it adds up the threads' shares: the total work, more than the "
            "wall time of a parallel run.")


def markdown(claims, preset, seconds: float) -> str:
    """The whole report: summary table, then one section per claim with its plots."""
    rows = [(c.title, c.counted, c.measured, f"**{c.verdict}**") for c in claims]
    lines = [
        "# fastconv profile: the chapter's claims, measured", "",
        f"{time.strftime('%Y-%m-%d %H:%M')}, preset `{preset.name}`, {seconds:.1f} s. "
        f"{_machine()}.", "",
        "Every time is the CPU time of the process for one call of one backend on one problem, "
        "the least of repeated calls after a warm-up, measured in this run. CPU time counts the "
        "work an algorithm does rather than the wait for a core, so other programs sharing the "
        f"machine hardly change it. {_threads_note()} Every verdict is computed from those "
        "numbers against the criterion stated under its claim.", "",
        markdown_table(_HEADER, rows), ""]
    for c in claims:
        lines += [f"## {c.title}: {c.verdict}", "", f"> {c.claim}", "",
                  f"- **Counted:** {c.counted}", f"- **Measured:** {c.measured}"]
        if c.criterion:
            lines.append(f"- **Criterion:** {c.criterion}")
        lines += ["", c.detail, ""]
        lines += [f"![{c.title}]({os.path.basename(p)})" for p in c.plots]
        lines.append("")
    return "\n".join(lines)


def terminal(claims) -> str:
    """A compact table for the terminal (long cells wrap in the Markdown report instead)."""
    return text_table(("Verdict", "Claim", "Measured"),
                      [(c.verdict, c.title, c.measured) for c in claims])
