"""The CUDA backend under Numba's CUDA simulator, and its behaviour without a GPU.

The simulator has to be on before ``numba.cuda`` is first imported, and the
rest of the suite imports it normally, so the kernels run in one child
process (``python -m tests.cuda_sim.checks``) with ``NUMBA_ENABLE_CUDASIM=1``;
each of its checks becomes one test here.  Skipped where numba-cuda is not
installed (``pip install fastconv[cuda]``).
"""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastconv import backends
from fastconv.backends import cuda

ROOT = Path(__file__).resolve().parents[1]
HAS_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None


def _check_names():
    spec = importlib.util.spec_from_file_location("_cuda_sim_checks",
                                                  ROOT / "tests" / "cuda_sim" / "checks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the checks; runs none of them
    return list(module.CHECKS)


@pytest.fixture(scope="module")
def simulated():
    """name -> result of every check, from one simulator run."""
    if not HAS_NUMBA_CUDA:
        pytest.skip("numba-cuda not installed (pip install fastconv[cuda])")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", FASTCONV_CUDA_SIMULATOR="1",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, "-m", "tests.cuda_sim.checks"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600)
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith("{"):
            result = json.loads(line)
            results[result["name"]] = result
    if not results:
        pytest.fail(f"the simulator run reported nothing (exit {run.returncode}):\n"
                    f"{run.stderr[-3000:]}")
    return results


@pytest.mark.parametrize("name", _check_names())
def test_simulated(simulated, name):
    result = simulated.get(name)
    assert result is not None, f"check {name} did not run"
    assert result["ok"], result["detail"]


# --- without a GPU, in this process ----------------------------------------------------------

@pytest.mark.skipif(cuda.available(), reason="a CUDA GPU is present")
def test_not_registered_without_gpu():
    assert "cuda" not in backends.REGISTRY
    assert cuda.UNAVAILABLE_REASON
    assert backends.UNAVAILABLE["cuda"] == cuda.UNAVAILABLE_REASON


@pytest.mark.skipif(cuda.available(), reason="a CUDA GPU is present")
def test_forcing_cuda_without_gpu_says_why():
    from fastconv import dispatch
    from fastconv.problem import make_problem
    problem = make_problem((1, 1, 8), (1, 1, 3), "float64")
    with pytest.raises(ValueError, match="cuda") as err:
        dispatch.correlate(np.ones((1, 1, 8)), np.ones((1, 1, 3)), problem, method="cuda")
    assert cuda.UNAVAILABLE_REASON in str(err.value)
    assert cuda.info() == {"available": False, "reason": cuda.UNAVAILABLE_REASON}


@pytest.fixture
def fresh_probe(monkeypatch):
    """Let available() probe again; the cached answer and reason come back afterwards."""
    monkeypatch.setattr(cuda, "UNAVAILABLE_REASON", cuda.UNAVAILABLE_REASON)
    monkeypatch.setattr(cuda, "_status", None)
    return monkeypatch


def test_reason_names_the_missing_piece(fresh_probe):
    fresh_probe.setattr(cuda, "_numba_cuda_installed", lambda: False)
    assert not cuda.available()
    assert cuda.UNAVAILABLE_REASON == "numba-cuda not installed: pip install fastconv[cuda]"


@pytest.mark.skipif(not HAS_NUMBA_CUDA, reason="numba-cuda not installed")
def test_reason_without_driver(fresh_probe):
    fresh_probe.delenv("NUMBA_ENABLE_CUDASIM", raising=False)
    fresh_probe.setattr(cuda, "_driver_loads", lambda: False)
    assert not cuda.available()
    assert cuda.UNAVAILABLE_REASON.startswith("no CUDA GPU found")


@pytest.mark.skipif(not HAS_NUMBA_CUDA, reason="numba-cuda not installed")
def test_reason_when_the_kernel_compiler_cannot_load(fresh_probe):
    # numba-cuda 0.30.4 with numpy 2.5 fails this way at its first kernel compile
    def broken(name):
        raise AttributeError("module 'numpy' has no attribute 'row_stack'")
    fresh_probe.setattr(cuda.importlib, "import_module", broken)
    reason = cuda._compiler_loads()
    assert reason.startswith("numba-cuda ") and "row_stack" in reason
    assert f"numpy {np.__version__}" in reason


def test_simulator_not_registered_unless_asked(fresh_probe):
    fresh_probe.setattr(cuda, "_numba_cuda_installed", lambda: True)
    fresh_probe.setenv("NUMBA_ENABLE_CUDASIM", "1")
    fresh_probe.delenv("FASTCONV_CUDA_SIMULATOR", raising=False)
    assert not cuda.available()
    assert "FASTCONV_CUDA_SIMULATOR=1" in cuda.UNAVAILABLE_REASON


def test_supports_and_cost():
    from fastconv.problem import make_problem
    for dtype in ("float32", "float64"):
        for shape in ((1, 2, 9), (1, 2, 9, 9), (1, 2, 5, 5, 5)):
            problem = make_problem(shape, (4, 1) + (3,) * (len(shape) - 2), dtype, groups=2)
            assert cuda.supports(problem)
            assert cuda.cost(problem) > 0
    assert not cuda.supports(make_problem((1, 1, 9), (1, 1, 3), "complex128"))


def test_is_device_array_needs_no_gpu():
    class Interface:
        __cuda_array_interface__ = {"shape": (1,), "typestr": "<f8", "data": (0, False),
                                    "version": 3}
    assert cuda.is_device_array(Interface())
    assert not cuda.is_device_array(np.zeros(2))
    assert not cuda.is_device_array([1.0])
