"""Every available backend agrees with `reference` on the shared case table."""
import numpy as np
import pytest

from fastconv import backends, dispatch
from fastconv.backends import reference

from .cases import DTYPES, SHAPES, TOLERANCE, make_case, rank1_kernel

FAST = sorted(name for name in backends.REGISTRY if name not in ("reference",))


def _check(name, case_id, dtype):
    problem, x, w = make_case(case_id, dtype)
    if name == "separable" and problem.ndim >= 2:  # the table's geometry, with separable kernels
        rng = np.random.default_rng(1)
        w = np.stack([rank1_kernel(rng, problem.kernel, dtype)
                      for _ in range(problem.w_shape[0] * problem.w_shape[1])]).reshape(w.shape)
    module = backends.REGISTRY[name]
    problem = module.inspect(problem, x, w) if hasattr(module, "inspect") else problem
    if not module.supports(problem):
        pytest.skip(f"{name} does not support {case_id} {dtype}")
    x_before, w_before = x.copy(), w.copy()
    got = module.correlate(x, w, problem)
    want = reference.correlate(x, w, problem)
    assert got.shape == problem.out_shape
    assert got.dtype == problem.dtype
    scale = max(np.abs(want).max(), 1.0)
    np.testing.assert_allclose(got, want, rtol=TOLERANCE[dtype], atol=TOLERANCE[dtype] * scale)
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case_id", [row[0] for row in SHAPES])
@pytest.mark.parametrize("name", FAST)
def test_backend_matches_reference(name, case_id, dtype):
    _check(name, case_id, dtype)


@pytest.mark.parametrize("case_id", [row[0] for row in SHAPES])
def test_auto_matches_reference(case_id):
    problem, x, w = make_case(case_id, "float64")
    got = dispatch.correlate(x, w, problem)
    want = reference.correlate(x, w, problem)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10 * max(np.abs(want).max(), 1))


@pytest.mark.parametrize("name", FAST)
def test_backend_writes_into_out(name):
    problem, x, w = make_case("2d-multichannel", "float64")
    module = backends.REGISTRY[name]
    if not module.supports(problem):
        pytest.skip(f"{name} does not support this case")
    out = np.empty(problem.out_shape, problem.dtype)
    result = module.correlate(x, w, problem, out=out)
    assert result is out
    np.testing.assert_allclose(out, reference.correlate(x, w, problem), rtol=1e-10, atol=1e-10)
