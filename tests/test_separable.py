"""The separable backend: rank detection, exactness of the 1-D passes, when it is offered."""
import numpy as np
import pytest

from fastconv.backends import reference, separable
from fastconv.problem import make_problem

from .cases import TOLERANCE, random_array

DTYPES = ("float32", "float64", "complex64", "complex128")


def low_rank_kernel(rng, out_channels, per_group, kernel, rank, dtype):
    """Sum of ``rank`` random outer products per (o, c) slice."""
    w = 0
    for _ in range(rank):
        factors = [random_array(rng, (out_channels, per_group, k), "complex128"
                                if np.dtype(dtype).kind == "c" else "float64") for k in kernel]
        term = factors[0]
        for f in factors[1:]:
            term = term[..., None] * f.reshape(f.shape[:2] + (1,) * (term.ndim - 2) + f.shape[2:])
        w = w + term
    return np.asarray(w).astype(dtype)


def run_case(x_shape, kernel, rank, dtype, seed=0, out_channels=2, **geometry):
    groups = geometry.get("groups", 1)
    per_group = x_shape[1] // groups
    problem = make_problem(x_shape, (out_channels, per_group) + kernel, dtype, **geometry)
    rng = np.random.default_rng(seed)
    x = random_array(rng, x_shape, dtype)
    w = low_rank_kernel(rng, out_channels, per_group, kernel, rank, dtype)
    problem = separable.inspect(problem, x, w)
    return problem, x, w


def assert_matches_reference(problem, x, w):
    got = separable.correlate(x, w, problem)
    want = reference.correlate(x, w, problem)
    tol = TOLERANCE[problem.dtype.name]
    assert got.shape == problem.out_shape and got.dtype == problem.dtype
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1.0))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rank", [1, 2])
def test_low_rank_2d_kernels_are_found_and_exact(dtype, rank):
    problem, x, w = run_case((2, 2, 17, 19), (5, 6), rank, dtype, padding=((2, 2), (3, 2)))
    assert problem.kernel_rank == rank
    assert separable.supports(problem)
    assert_matches_reference(problem, x, w)


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
@pytest.mark.parametrize("geometry", [
    dict(stride=(2, 3)),
    dict(dilation=(2, 3), padding=((3, 1), (0, 4))),
    dict(stride=(3, 2), dilation=(1, 2), padding=((0, 5), (2, 0)), groups=2),
    dict(stride=(5, 4), padding=((4, 4), (1, 1))),   # stride past the kernel: rows skipped
    dict(groups=4, padding=((2, 2), (2, 3))),       # depthwise
], ids=["stride", "dilation-padding", "all-groups", "wide-stride", "depthwise"])
def test_geometry_is_exact(dtype, geometry):
    out_channels = 4 if geometry.get("groups", 1) > 1 else 3
    problem, x, w = run_case((2, 4, 16, 15), (5, 6), 2, dtype, out_channels=out_channels,
                             **geometry)
    assert problem.kernel_rank == 2
    assert_matches_reference(problem, x, w)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rank_one_3d_kernels(dtype):
    problem, x, w = run_case((1, 2, 9, 10, 11), (3, 4, 5), 1, dtype, stride=(1, 2, 1),
                             dilation=(2, 1, 1), padding=((1, 2), (0, 3), (2, 2)))
    assert problem.kernel_rank == 1
    assert separable.supports(problem)
    assert_matches_reference(problem, x, w)


def test_3d_kernel_of_rank_two_is_refused_but_still_computed():
    problem, x, w = run_case((1, 1, 8, 8, 8), (3, 3, 3), 2, "float64", padding=1)
    assert problem.kernel_rank >= 2
    assert not separable.supports(problem)
    assert_matches_reference(problem, x, w)  # correlate falls back to the direct loops


@pytest.mark.parametrize("kernel", [(5, 5), (7, 4)])
def test_full_rank_kernels_are_refused_after_inspect(kernel):
    problem = make_problem((1, 1, 20, 20), (1, 1) + kernel, "float64")
    assert problem.kernel_rank is None and separable.supports(problem)  # before looking
    w = np.random.default_rng(3).standard_normal((1, 1) + kernel)
    problem = separable.inspect(problem, None, w)
    assert problem.kernel_rank == min(kernel)
    assert not separable.supports(problem)


def test_rank_within_budget_is_offered():
    # rank 3 of a 7x7 kernel: 3 * 14 = 42 multiply-adds per point against 49
    problem, x, w = run_case((1, 1, 20, 21), (7, 7), 3, "float64", padding=3)
    assert problem.kernel_rank == 3 and separable.supports(problem)
    assert_matches_reference(problem, x, w)


def test_rank_is_the_largest_over_slices():
    rng = np.random.default_rng(5)
    w = low_rank_kernel(rng, 2, 2, (6, 6), 1, "float64")
    w[1, 0] = low_rank_kernel(rng, 1, 1, (6, 6), 2, "float64")[0, 0]
    problem = separable.inspect(make_problem((1, 2, 12, 12), w.shape, "float64"), None, w)
    assert problem.kernel_rank == 2


def test_float32_rounding_does_not_raise_the_rank():
    rng = np.random.default_rng(7)
    w = np.multiply.outer(rng.standard_normal(9), rng.standard_normal(9)).astype(np.float32)
    problem = make_problem((1, 1, 30, 30), (1, 1, 9, 9), "float32")
    assert separable.inspect(problem, None, w[None, None]).kernel_rank == 1


def test_thin_and_one_dimensional_kernels_are_never_offered():
    assert not separable.supports(make_problem((1, 1, 30), (1, 1, 9), "float64"))
    assert not separable.supports(make_problem((1, 1, 30, 30), (1, 1, 1, 9), "float64"))
    assert not separable.supports(make_problem((1, 1, 30, 30), (1, 1, 2, 2), "float64"))
    assert not separable.supports(make_problem((1, 1, 30, 30), (1, 1, 5, 5), "int32"))


def test_zero_kernel_gives_zeros():
    problem = make_problem((1, 1, 10, 10), (1, 1, 4, 4), "float64", padding=1)
    w = np.zeros((1, 1, 4, 4))
    problem = separable.inspect(problem, None, w)
    assert problem.kernel_rank == 0 and separable.supports(problem)
    x = np.random.default_rng(0).standard_normal((1, 1, 10, 10))
    np.testing.assert_array_equal(separable.correlate(x, w, problem), 0.0)


def test_non_finite_data_refuses_several_terms_and_falls_back():
    problem, x, w = run_case((1, 1, 12, 12), (5, 5), 2, "float64", padding=2)
    x = x.copy()
    x[0, 0, 6, 6] = np.inf
    problem = separable.inspect(problem.with_facts(kernel_rank=None, has_nonfinite=None), x, w)
    assert problem.has_nonfinite and not separable.supports(problem)
    got = separable.correlate(x, w, problem)
    want = reference.correlate(x, w, problem)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))


def test_nan_kernel_is_not_separable():
    w = np.ones((1, 1, 5, 5))
    w[0, 0, 2, 2] = np.nan
    problem = separable.inspect(make_problem((1, 1, 9, 9), w.shape, "float64"), None, w)
    assert problem.kernel_rank == separable.NOT_SEPARABLE
    assert not separable.supports(problem)


def test_out_argument_and_inputs_untouched():
    problem, x, w = run_case((1, 2, 14, 13), (5, 5), 1, "float32", padding=2)
    before = x.copy(), w.copy()
    out = np.full(problem.out_shape, np.nan, np.float32)
    assert separable.correlate(x, w, problem, out=out) is out
    np.testing.assert_allclose(out, reference.correlate(x, w, problem), rtol=2e-4, atol=2e-4)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(w, before[1])


def test_workspace_cap_splits_into_blocks(monkeypatch):
    from fastconv import _config
    problem, x, w = run_case((3, 2, 40, 40), (5, 5), 2, "float64", out_channels=4, padding=2)
    monkeypatch.setattr(_config, "_workspace_bytes", 40 * 40 * 8 * 5)  # under two channels' worth
    assert len(separable._blocks(problem, 2)) > 3
    assert_matches_reference(problem, x, w)


def test_factors_are_reused_between_inspect_and_correlate(monkeypatch):
    problem, x, w = run_case((1, 1, 12, 12), (5, 5), 1, "float64", padding=2)
    calls = []
    original = separable._factorize_2d
    monkeypatch.setattr(separable, "_factorize_2d", lambda *a: calls.append(1) or original(*a))
    separable.inspect(problem, x, w + 1.0)
    separable.correlate(x, w + 1.0, problem)
    assert len(calls) == 1
    separable.correlate(x, w, problem)  # a different kernel is factorised afresh
    assert len(calls) == 2
