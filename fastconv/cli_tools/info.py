"""``fastconv info``: what fastconv runs on here, and why a backend is missing."""
from __future__ import annotations

import os
import platform
import sys

from .common import fmt_bytes, print_json

_SIMD = ("sse4.2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512vnni",
         "neon", "asimd", "sve")
# distributions, read from their metadata: importing torch or OpenCV would
# load their own BLAS and OpenMP and cloud the BLAS report below
_VERSIONS = {"numpy": ("numpy",), "scipy": ("scipy",), "numba": ("numba",),
             "llvmlite": ("llvmlite",), "pyfftw": ("pyFFTW", "pyfftw"),
             "threadpoolctl": ("threadpoolctl",), "matplotlib": ("matplotlib",),
             "Cython": ("Cython",), "tqdm": ("tqdm",), "Pillow": ("pillow", "Pillow"),
             "numba-cuda": ("numba-cuda",), "torch": ("torch",),
             "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python")}


def _version(distributions) -> str:
    from importlib import metadata
    for name in distributions:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "not installed"


def _cpu() -> dict:
    try:
        import llvmlite.binding as llvm
        features = llvm.get_host_cpu_features()
        simd = [name for name in _SIMD if features.get(name)]
        name = llvm.get_host_cpu_name()
    except Exception as exc:  # llvmlite missing or too old: say so rather than fail
        simd, name = [f"unknown ({exc})"], platform.processor() or "unknown"
    return {"machine": platform.machine(), "llvm_cpu": name, "simd": simd,
            "cores": os.cpu_count()}


def _numba() -> dict:
    import numba
    layer = _threading_layer()
    return {"threading_layer": layer, "configured_layer": numba.config.THREADING_LAYER,
            "threads": numba.get_num_threads()}


def _threading_layer() -> str:
    """Numba's threading layer; it is only chosen on the first parallel launch."""
    import numba
    try:
        return numba.threading_layer()
    except ValueError:
        pass
    try:  # launch the direct backend once on a problem large enough to go parallel
        import numpy as np
        from ..backends import REGISTRY
        from ..problem import make_problem
        if "direct" in REGISTRY:
            p = make_problem((1, 1, 256, 256), (1, 1, 5, 5), "float64", padding=2)
            REGISTRY["direct"].correlate(np.zeros(p.x_shape), np.zeros(p.w_shape), p)
        return numba.threading_layer()
    except Exception as exc:  # report, never fail the info command
        return f"not initialised ({exc})"


def _blas() -> list:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return [{"error": "threadpoolctl not installed"}]
    pools = []
    for pool in threadpool_info():
        entry = {k: pool.get(k) for k in ("user_api", "internal_api", "prefix", "version",
                                          "num_threads", "threading_layer", "architecture")}
        # im2col's GEMM goes through numpy.matmul, so numpy's BLAS is the one that counts
        path = str(pool.get("filepath", ""))
        entry["used_by"] = ("numpy" if "numpy" in path else "scipy" if "scipy" in path
                            else os.path.basename(path))
        pools.append(entry)
    return pools


def _cuda() -> dict:
    import importlib
    try:
        cuda = importlib.import_module("fastconv.backends.cuda")
    except ModuleNotFoundError as exc:
        if exc.name == "fastconv.backends.cuda":
            return {"available": False,
                    "reason": "this fastconv has no CUDA backend module (fastconv.backends.cuda)"}
        return {"available": False, "reason": f"numba-cuda not installed ({exc})"}
    except ImportError as exc:
        return {"available": False, "reason": f"numba-cuda not installed ({exc})"}
    if not hasattr(cuda, "info"):
        from ..backends import UNAVAILABLE
        return {"available": "cuda" not in UNAVAILABLE,
                "reason": UNAVAILABLE.get("cuda", "the backend reports no details")}
    try:
        return dict(cuda.info())
    except Exception as exc:  # the driver may fail in many ways; report it
        return {"available": False, "reason": f"cuda.info() failed: {exc}"}


def collect() -> dict:
    """Everything ``fastconv info`` shows, as a JSON-ready dict."""
    from .. import __version__, _config, backends, costs
    return {
        "fastconv": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: _version(dists) for name, dists in _VERSIONS.items()},
        "backends": {"available": sorted(backends.REGISTRY),
                     "unavailable": dict(backends.UNAVAILABLE)},
        "cpu": _cpu(),
        "threads": {"fastconv": _config.get_num_threads(),
                    "FASTCONV_NUM_THREADS": os.environ.get("FASTCONV_NUM_THREADS"),
                    "workspace_bytes": _config.get_workspace_bytes()},
        "numba": _numba(),
        "blas": _blas(),
        "cuda": _cuda(),
        "calibration": {"source": costs.profile_source(), "path": str(costs.profile_path()),
                        "coefficients": {k: list(v) for k, v in costs.coefficients().items()}},
    }


def render(info: dict) -> str:
    """The text form of :func:`collect`'s dict."""
    lines = [f"fastconv {info['fastconv']}  (Python {info['python']}, {info['platform']})",
             "", "versions:"]
    lines += [f"  {name:<14} {version}" for name, version in info["versions"].items()]
    lines += ["", "backends:"]
    lines += [f"  {name:<10} available" for name in info["backends"]["available"]]
    lines += [f"  {name:<10} unavailable: {why}"
              for name, why in info["backends"]["unavailable"].items()]
    cpu, threads, nb = info["cpu"], info["threads"], info["numba"]
    lines += ["", f"cpu: {cpu['llvm_cpu']} ({cpu['machine']}), {cpu['cores']} logical cores",
              f"  SIMD: {', '.join(cpu['simd']) or 'none detected'}",
              f"threads: fastconv {threads['fastconv']} (FASTCONV_NUM_THREADS="
              f"{threads['FASTCONV_NUM_THREADS'] or 'unset'}), numba {nb['threads']}",
              f"  numba threading layer: {nb['threading_layer']} "
              f"(configured: {nb['configured_layer']})",
              f"  workspace cap per call: {fmt_bytes(threads['workspace_bytes'])}"]
    for pool in info["blas"]:
        if "error" in pool:
            lines.append(f"BLAS: {pool['error']}")
            continue
        extra = ", ".join(str(pool[k]) for k in ("threading_layer", "architecture") if pool[k])
        version = f" {pool['version']}" if pool["version"] else ""
        lines.append(f"{pool['user_api']} ({pool['used_by']}): {pool['internal_api']}"
                     f"{version}, {pool['num_threads']} threads"
                     + (f", {extra}" if extra else ""))
    lines.append(_render_cuda(info["cuda"]))
    cal = info["calibration"]
    lines += ["", f"calibration profile in use: {cal['source']}",
              f"  (saved profiles live at {cal['path']}; run `fastconv calibrate` to fit one)"]
    return "\n".join(lines)


def _render_cuda(cuda: dict) -> str:
    if not cuda.get("available"):
        return f"CUDA: unavailable: {cuda.get('reason') or 'unknown reason'}"
    parts = [str(cuda.get("name", "a CUDA device"))]
    if cuda.get("compute_capability"):
        parts.append(f"compute capability {cuda['compute_capability']}")
    if cuda.get("memory_total_bytes"):
        free = cuda.get("memory_free_bytes")
        parts.append(f"{fmt_bytes(cuda['memory_total_bytes'])} memory"
                     + (f" ({fmt_bytes(free)} free)" if free else ""))
    if cuda.get("multiprocessors"):
        parts.append(f"{cuda['multiprocessors']} multiprocessors")
    if cuda.get("simulator"):
        parts.append("Numba's CUDA simulator")
    known = {"available", "reason", "name", "compute_capability", "memory_total_bytes",
             "memory_free_bytes", "multiprocessors", "simulator"}
    parts += [f"{k} {v}" for k, v in cuda.items() if k not in known]
    return "CUDA: " + ", ".join(parts)


def run(args) -> int:
    info = collect()
    if args.json:
        print_json(info)
    else:
        print(render(info))
    return 0
