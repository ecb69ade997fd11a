"""The CUDA backend's checks, run under Numba's CUDA simulator in a child process.

The simulator must be switched on before ``numba.cuda`` is first imported,
which the main test process has long done, so tests/test_cuda_sim.py runs
this module as ``python -m tests.cuda_sim.checks`` with
``NUMBA_ENABLE_CUDASIM=1`` (and ``FASTCONV_CUDA_SIMULATOR=1``, so the
backend also registers) and reads one JSON line per check.  Importing the
module runs nothing: the test module reads :data:`CHECKS` to name its tests.

Shapes are tiny: every simulated GPU thread is a Python thread.
"""
from __future__ import annotations

import json
import sys
import time
import traceback

import numpy as np

#: check name -> function, in the order they run
CHECKS: dict = {}

# forward cases (tests/cases.py ids) per dtype: every dimensionality, stride,
# dilation, asymmetric and oversized padding, groups, depthwise, 1x1
FORWARD = {
    "float64": ["1d-basic", "1d-full-even", "1d-same-even", "1d-stride-dil", "1d-k1",
                "1d-kernel-longer-than-input", "2d-basic", "2d-even-same", "2d-multichannel",
                "2d-stride2", "2d-stride-asym", "2d-dilation", "2d-groups", "2d-depthwise",
                "2d-kernel-larger", "2d-1x1", "2d-rowkernel", "3d-basic", "3d-multi-stride"],
    "float32": ["1d-stride-dil", "2d-multichannel", "2d-groups", "3d-even-full"],
}
# gradient cases, checked by the adjoint identity
GRADIENTS = ["1d-stride-dil", "1d-same-even", "2d-stride2", "2d-stride-asym", "2d-dilation",
             "2d-groups", "2d-depthwise", "2d-kernel-larger", "3d-even-full"]


def check(name):
    def register(fn):
        CHECKS[name] = fn
        return fn
    return register


def _close(got, want, dtype):
    from tests.cases import TOLERANCE
    tol = TOLERANCE[str(np.dtype(dtype))]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1.0))


def _forward(case_id, dtype):
    from fastconv.backends import cuda, reference
    from tests.cases import make_case
    problem, x, w = make_case(case_id, dtype)
    before = x.copy(), w.copy()
    got = cuda.correlate(x, w, problem)
    assert isinstance(got, np.ndarray) and got.shape == problem.out_shape
    assert got.dtype == problem.dtype, got.dtype
    _close(got, reference.correlate(x, w, problem), dtype)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(w, before[1])


for _dtype, _ids in FORWARD.items():
    for _case in _ids:
        check(f"forward[{_case}-{_dtype}]")(lambda c=_case, d=_dtype: _forward(c, d))


def _adjoint(case_id, dtype="float64"):
    """<conv(x, w), y> = <x, grad_input(y, w)> = <w, grad_weight(x, y)> for random x, w, y."""
    from fastconv.backends import cuda, reference
    from tests.cases import make_case, random_array
    problem, x, w = make_case(case_id, dtype)
    y = random_array(np.random.default_rng(7), problem.out_shape, dtype)
    gx = cuda.correlate_grad_input(y, w, problem)
    gw = cuda.correlate_grad_weight(x, y, problem)
    assert gx.shape == x.shape and gw.shape == w.shape
    assert gx.dtype == gw.dtype == np.dtype(dtype)
    lhs = float(np.vdot(reference.correlate(x, w, problem), y))
    scale = max(abs(lhs), 1.0) * (1e-10 if dtype == "float64" else 1e-4)
    assert abs(np.vdot(x, gx) - lhs) < scale, (np.vdot(x, gx), lhs)
    assert abs(np.vdot(w, gw) - lhs) < scale, (np.vdot(w, gw), lhs)


for _case in GRADIENTS:
    check(f"gradients[{_case}]")(lambda c=_case: _adjoint(c))
check("gradients[2d-groups-float32]")(lambda: _adjoint("2d-groups", "float32"))


@check("forward-small-shared-memory")
def _small_shared():
    """A shared-memory budget so small that kernels are cut into tap chunks."""
    from fastconv.backends import _cuda_kernels
    saved = _cuda_kernels.SHARED_BYTES
    _cuda_kernels.SHARED_BYTES = 600
    try:
        _forward("2d-full", "float64")
        _forward("1d-long-kernel", "float64")
        _adjoint("2d-stride-asym")
    finally:
        _cuda_kernels.SHARED_BYTES = saved


@check("device-arrays")
def _device_arrays():
    """Device arrays in give device arrays out; ``out=`` on the host or the device."""
    from numba import cuda as nbcuda

    from fastconv.backends import cuda, reference
    from tests.cases import make_case
    problem, x, w = make_case("2d-multichannel", "float32")
    want = reference.correlate(x, w, problem)
    xd, wd = cuda.to_device(x), cuda.to_device(w)
    assert cuda.is_device_array(xd) and not cuda.is_device_array(x)
    got = cuda.correlate(xd, wd, problem)
    assert cuda.is_device_array(got) and not isinstance(got, np.ndarray)
    _close(cuda.to_host(got), want, "float32")
    out = nbcuda.device_array(problem.out_shape, np.float32)
    assert cuda.correlate(xd, wd, problem, out=out) is out
    _close(out.copy_to_host(), want, "float32")
    host = np.empty(problem.out_shape, np.float32)
    assert cuda.correlate(x, wd, problem, out=host) is host
    _close(host, want, "float32")
    gy = cuda.to_device(np.ones(problem.out_shape, np.float32))
    assert cuda.is_device_array(cuda.correlate_grad_input(gy, wd, problem))
    assert cuda.is_device_array(cuda.correlate_grad_weight(xd, gy, problem))


@check("device-array-errors")
def _device_errors():
    from fastconv.backends import cuda
    from tests.cases import make_case
    problem, x, w = make_case("2d-basic", "float64")
    strided = cuda.to_device(np.ones((1, 1, 20, 46)))[:, :, :, ::2]
    for bad, words in ((strided, "contiguous"), (cuda.to_device(x.astype(np.float32)), "dtype")):
        try:
            cuda.correlate(bad, w, problem)
        except ValueError as exc:
            assert words in str(exc), str(exc)
        else:
            raise AssertionError(f"no ValueError for a {words} problem")


@check("registry-and-dispatch")
def _registry():
    """Registered under the simulator only on request; method='cuda' goes through dispatch."""
    import os

    from fastconv import backends, dispatch
    from fastconv.backends import cuda, reference
    from tests.cases import make_case
    assert "cuda" in backends.REGISTRY, backends.UNAVAILABLE
    problem, x, w = make_case("2d-stride2", "float64")
    _close(dispatch.correlate(x, w, problem, method="cuda"), reference.correlate(x, w, problem),
           "float64")
    got = dispatch.correlate(cuda.to_device(x), cuda.to_device(w), problem, method="cuda")
    assert cuda.is_device_array(got)
    info = cuda.info()
    assert info["available"] and info["simulator"] and info["compute_capability"], info
    saved = os.environ.pop("FASTCONV_CUDA_SIMULATOR")
    cuda._status = None
    try:
        assert not cuda.available()
        assert "NUMBA_ENABLE_CUDASIM" in cuda.UNAVAILABLE_REASON, cuda.UNAVAILABLE_REASON
    finally:
        os.environ["FASTCONV_CUDA_SIMULATOR"] = saved
        cuda._status = None
        assert cuda.available()


# --- pooling and LRN ----------------------------------------------------------------------------

POOLS = [  # shape, kernel, stride, padding, dilation, ceil_mode
    ((2, 3, 11), 3, 2, 1, 1, False),
    ((1, 2, 7, 8), 3, 2, 1, 1, True),
    ((1, 2, 9, 9), (3, 2), (2, 1), (1, 0), (2, 1), False),
    ((1, 1, 5, 6, 5), 2, 2, 1, 1, True),
]


def _pool_input(shape, seed=3):
    x = np.random.default_rng(seed).standard_normal(shape)
    if len(shape) == 4:  # ties keep the first maximum, a NaN wins
        x[0, 0, 1, 1] = x[0, 0, 1, 2] = x[0, 0, 2, 1] = 9.0
        x[0, 1, 3, 3] = np.nan
    return x


def _pool_args(shape, kernel, stride, padding, dilation):
    nd = len(shape) - 2
    tup = (lambda v: tuple(v) if isinstance(v, tuple) else (v,) * nd)
    return tup(kernel), tup(stride), tup(padding), tup(dilation)


@check("max-pool")
def _max_pool():
    from fastconv.backends import cuda
    from tests import naive_pool
    for shape, kernel, stride, padding, dilation, ceil in POOLS:
        x = _pool_input(shape)
        out, idx = cuda.max_pool(x, kernel, stride, padding, dilation, ceil)
        k, s, p, d = _pool_args(shape, kernel, stride, padding, dilation)
        want, want_idx = naive_pool.max_pool(x, k, s, p, d, out.shape[2:])
        np.testing.assert_array_equal(out, want)
        np.testing.assert_array_equal(idx, want_idx)
        assert idx.dtype == np.int64
        # the backward pass is the adjoint of gathering x at the indices
        g = np.random.default_rng(4).standard_normal(out.shape)
        grad = cuda.max_pool_backward(g, idx, x.shape, kernel, stride, padding, dilation)
        planes = x.reshape(x.shape[0] * x.shape[1], -1)
        gathered = np.take_along_axis(planes, idx.reshape(planes.shape[0], -1), axis=1)
        lhs = np.vdot(np.nan_to_num(gathered), g.reshape(planes.shape[0], -1))
        assert abs(lhs - np.vdot(np.nan_to_num(x), grad)) < 1e-10 * max(1, abs(lhs))


@check("avg-pool")
def _avg_pool():
    from fastconv.backends import cuda
    from tests import naive_pool
    for shape, kernel, stride, padding, _, ceil in POOLS:
        x = np.random.default_rng(5).standard_normal(shape)
        k, s, p, _ = _pool_args(shape, kernel, stride, padding, 1)
        for include in (True, False):
            out = cuda.avg_pool(x, kernel, stride, padding, ceil, include)
            want = naive_pool.avg_pool(x, k, s, p, p, out.shape[2:], include)
            np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
            g = np.random.default_rng(6).standard_normal(out.shape)
            grad = cuda.avg_pool_backward(g, x.shape, kernel, stride, padding, include)
            assert abs(np.vdot(out, g) - np.vdot(x, grad)) < 1e-10 * max(1, abs(np.vdot(out, g)))
    x32 = np.random.default_rng(5).standard_normal((1, 2, 6, 6)).astype(np.float32)
    assert cuda.avg_pool(x32, 2).dtype == np.float32


@check("local-response-norm")
def _lrn():
    from fastconv.backends import cuda
    from tests import naive_pool
    rng = np.random.default_rng(8)
    for shape, size in (((2, 7, 5), 3), ((1, 6, 3, 4), 4), ((1, 5, 2, 2, 3), 5), ((2, 4, 3), 1)):
        x = rng.standard_normal(shape)
        args = (size, 0.3, 0.75, 1.5)
        out = cuda.local_response_norm(x, *args)
        np.testing.assert_allclose(out, naive_pool.lrn_torch(x, *args), rtol=1e-12, atol=1e-12)
        x32 = x.astype(np.float32)
        out32 = cuda.local_response_norm(x32, *args)
        assert out32.dtype == np.float32
        np.testing.assert_allclose(out32, out, rtol=1e-5, atol=1e-6)
        # the gradient against a central difference along a random direction
        g, v = rng.standard_normal(shape), rng.standard_normal(shape)
        grad = cuda.local_response_norm_backward(g, x, *args)
        eps = 1e-6
        slope = (np.vdot(cuda.local_response_norm(x + eps * v, *args), g)
                 - np.vdot(cuda.local_response_norm(x - eps * v, *args), g)) / (2 * eps)
        assert abs(slope - np.vdot(grad, v)) < 1e-7 * max(1, abs(slope)), (slope, np.vdot(grad, v))


def main(names=None) -> int:
    """Run the checks (all, or those named) and print one JSON line each."""
    failed = 0
    for name, fn in CHECKS.items():
        if names and name not in names:
            continue
        start = time.perf_counter()
        try:
            fn()
            result = {"name": name, "ok": True, "detail": ""}
        except Exception:  # report every failure, keep running the rest
            failed += 1
            result = {"name": name, "ok": False, "detail": traceback.format_exc()[-3000:]}
        result["seconds"] = round(time.perf_counter() - start, 3)
        print(json.dumps(result), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
