"""Run the benchmarks and write bench/RESULTS.md: machine, versions, date, ratios, targets.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/make_results.py [pytest -k expression]
"""
from __future__ import annotations

import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
COMMAND = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/make_results.py"


def run_benchmarks(selection: str | None, files=("test_engine.py", "test_layers.py")):
    """Run pytest-benchmark on ``files``: ({group: {label: median seconds}}, {group: flops})."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "bench.json"
        args = [sys.executable, "-m", "pytest", *[str(HERE / f) for f in files], "-q",
                "--benchmark-enable", "--benchmark-only", f"--benchmark-json={out}",
                "-p", "no:cacheprovider"]
        if selection:
            args += ["-k", selection]
        subprocess.run(args, check=False, cwd=HERE.parent)
        data = json.loads(out.read_text())
    groups: dict = {}
    flops: dict = {}
    for b in data["benchmarks"]:
        label = b["extra_info"].get("label") or b["name"].split("[")[0].split("_", 2)[-1]
        groups.setdefault(b["group"], {})[label] = b["stats"]["median"]
        if "flops" in b["extra_info"]:
            flops[b["group"]] = b["extra_info"]["flops"]
    return groups, flops


def machine() -> list[str]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    lines = [f"- machine: {cpu}, {os.cpu_count()} cores, {platform.system()} {platform.release()}",
             f"- Python {platform.python_version()}"]
    versions = []
    for name in ("fastconv", "numpy", "scipy", "numba", "pyfftw", "cv2", "torch"):
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            versions.append(f"{name} (not installed)")
    lines.append("- versions: " + ", ".join(versions))
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{i['internal_api']} {i.get('version')} ({i.get('architecture')}, "
                f"{i['num_threads']} threads)" for i in threadpool_info() if i["user_api"] == "blas"]
        lines.append("- BLAS: " + "; ".join(blas))
    except ImportError:
        pass
    lines.append("- OPENBLAS_CORETYPE: " + os.environ.get("OPENBLAS_CORETYPE", "unset"))
    return lines


def ratio_table(groups: dict) -> list[str]:
    lines = ["| problem | implementation | median ms | vs fastconv auto |", "|---|---|---:|---:|"]
    for group in sorted(groups):
        entries = groups[group]
        anchor = entries.get("fastconv_auto")
        for label, median in sorted(entries.items(), key=lambda kv: kv[1]):
            ratio = f"{median / anchor:.2f}x" if anchor else ""
            lines.append(f"| {group} | {label} | {median * 1e3:.2f} | {ratio} |")
    return lines


def prepare_fft_plans() -> float:
    """Measure the FFTW plans of the engine benchmarks first, as ``fastconv calibrate`` would.

    Plans are measured once per machine (the wisdom is saved in the user cache);
    without this the first run's warm-ups would share a core with the
    background planner.  Returns the seconds it took.
    """
    import numpy as np

    sys.path.insert(0, str(HERE.parent))  # the repository's fastconv and bench package
    import fastconv
    from bench.test_engine import IMAGE_KERNELS, SIGNAL_KERNELS, VOLUME_KERNELS
    from fastconv.backends import _fft_plans

    rng = np.random.default_rng(0)
    cases = [((2048, 2048), (k, k), "same") for k in IMAGE_KERNELS + [31]]
    cases += [((1_000_000,), (k,), "full") for k in SIGNAL_KERNELS]
    cases += [((128, 128, 128), (k, k, k), "same") for k in VOLUME_KERNELS]
    start = time.perf_counter()
    for x_shape, w_shape, mode in cases:
        fastconv.convolve(rng.standard_normal(x_shape), rng.standard_normal(w_shape), mode,
                          method="fft")
        _fft_plans.wait_for_planners(timeout=120)
    return time.perf_counter() - start


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    planning = prepare_fft_plans()
    groups, flops = run_benchmarks(argv[0] if argv else None)
    from targets import engine_targets, layer_targets  # the issues' targets as checks
    text = ["# Benchmark results", "",
            f"Regenerate with `{COMMAND}`.", "",
            f"- date: {datetime.date.today().isoformat()}", *machine(),
            f"- FFTW plans of the benchmarks measured first ({planning:.1f} s; once per machine, "
            "kept in the user cache)", "",
            "Ratios are medians measured in the same run; 'vs fastconv auto' above 1 means "
            "fastconv's automatic choice is faster.", "",
            "## Engine targets", "", *engine_targets(groups), "",
            "## Network layer targets (float32, batch as in the chapter)", "",
            *layer_targets(groups, flops), "", "## All measurements", "",
            *ratio_table(groups), ""]
    training = HERE / "RESULTS-training.md"  # python bench/training_results.py --out bench/RESULTS-training.md
    if training.exists():
        text += ["", training.read_text()]
    RESULTS.write_text("\n".join(text))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    raise SystemExit(main())
