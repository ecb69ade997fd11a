"""The direct (Numba) backend beyond the shared table: out=, threads, segments, NaN locality."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fastconv
from fastconv.backends import direct, reference
from fastconv.problem import make_problem

from .cases import TOLERANCE, make_case, random_array


def _assert_matches(got, x, w, problem):
    want = reference.correlate(x, w, problem)
    tol = TOLERANCE[problem.dtype.name]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1.0))


def _problem(x_shape, w_shape, dtype="float64", seed=0, **geometry):
    problem = make_problem(x_shape, w_shape, dtype, **geometry)
    rng = np.random.default_rng(seed)
    return problem, random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)


def test_supports_fast_dtypes_and_one_to_three_dims():
    assert direct.supports(make_problem((1, 1, 8), (1, 1, 3), "complex64"))
    assert direct.supports(make_problem((1, 1, 5, 5, 5), (1, 1, 2, 2, 2), "float32"))
    assert not direct.supports(make_problem((1, 1, 4, 4, 4, 4), (1, 1, 2, 2, 2, 2), "float64"))
    assert not direct.supports(make_problem((1, 1, 8), (1, 1, 3), "int64"))


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_out_argument_is_filled_and_returned(dtype):
    problem, x, w = make_case("2d-stride-asym", dtype)
    out = np.full(problem.out_shape, np.nan, dtype)
    assert direct.correlate(x, w, problem, out=out) is out
    _assert_matches(out, x, w, problem)


def test_non_contiguous_out_is_filled():
    problem, x, w = make_case("2d-groups", "float64")
    # a view with the right shape but Fortran order: the backend must still write into it
    out = np.empty(problem.out_shape[::-1]).T
    assert not out.flags.c_contiguous
    assert direct.correlate(x, w, problem, out=out) is out
    _assert_matches(out, x, w, problem)


def test_stale_out_contents_never_leak():
    # every output element is overwritten, including rows whose taps all land in padding
    problem, x, w = _problem((1, 1, 3, 4), (1, 1, 2, 2), padding=((5, 5), (4, 4)))
    out = np.full(problem.out_shape, 7.0)
    direct.correlate(x, w, problem, out=out)
    _assert_matches(out, x, w, problem)
    assert out[0, 0, 0, 0] == 0.0


def test_thread_budget_of_one_gives_the_same_result():
    problem, x, w = _problem((2, 3, 40, 37), (4, 3, 5, 5), padding=2, stride=(1, 2))
    with fastconv.thread_budget(1):
        single = direct.correlate(x, w, problem)
    with fastconv.thread_budget(2):
        double = direct.correlate(x, w, problem)
    np.testing.assert_allclose(single, double, rtol=1e-13, atol=1e-13)
    _assert_matches(single, x, w, problem)


@pytest.mark.parametrize("case_id", ["1d-stride-dil", "1d-long-kernel", "2d-even-same",
                                     "2d-dilation", "3d-dil-groups"])
def test_short_row_segments_stitch_exactly(monkeypatch, case_id):
    # tiny segments put segment edges inside the fused-tap ranges and the padding clips
    monkeypatch.setattr(direct, "_SEGMENT_BYTES", 24)
    monkeypatch.setattr(direct, "_SERIAL_MACS", 0)
    problem, x, w = make_case(case_id, "float64")
    _assert_matches(direct.correlate(x, w, problem), x, w, problem)


def test_long_signal_is_split_across_threads():
    problem, x, w = _problem((1, 1, 20000), (1, 1, 9), padding=((8, 8),), stride=3, dilation=2)
    with fastconv.thread_budget(2):
        _assert_matches(direct.correlate(x, w, problem), x, w, problem)


def test_many_threads_calling_at_once():
    cases = [_problem((2, 2, 40, 41), (3, 2, 3, 4), dtype, seed, padding=1)
             for seed, dtype in enumerate(["float64", "float32", "complex64", "complex128"] * 3)]

    def run(case):
        problem, x, w = case
        with fastconv.thread_budget(2):
            return direct.correlate(x, w, problem)

    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(run, cases))
    for (problem, x, w), got in zip(cases, results):
        _assert_matches(got, x, w, problem)


def test_nan_only_reaches_the_outputs_whose_window_holds_it():
    problem, x, w = _problem((1, 1, 12, 12), (1, 1, 3, 3), padding=1)
    x = x.copy()
    x[0, 0, 5, 6] = np.nan
    got = direct.correlate(x, w, problem)
    touched = np.zeros(problem.out_shape, bool)
    touched[0, 0, 4:7, 5:8] = True
    assert np.isnan(got[touched]).all()
    assert np.isfinite(got[~touched]).all()
    np.testing.assert_allclose(got, reference.correlate(x, w, problem), rtol=1e-12, atol=1e-12)


def test_stride_larger_than_kernel_and_rows_entirely_in_padding():
    problem, x, w = _problem((1, 2, 9, 11), (2, 1, 2, 3), groups=2, stride=(4, 5),
                             padding=((3, 6), (0, 7)), dilation=(2, 1))
    _assert_matches(direct.correlate(x, w, problem), x, w, problem)


def test_inputs_are_not_modified_and_fortran_inputs_work():
    problem, x, w = make_case("2d-multichannel", "float32")
    xf, wf = np.asfortranarray(x), np.asfortranarray(w)
    before = xf.copy(), wf.copy()
    _assert_matches(direct.correlate(xf, wf, problem), x, w, problem)
    np.testing.assert_array_equal(xf, before[0])
    np.testing.assert_array_equal(wf, before[1])


@pytest.mark.parametrize("x_shape, w_shape, padding", [
    ((1, 1, 31, 20), (1, 1, 9, 1), ((4, 4), (0, 0))),    # odd output rows
    ((2, 3, 16, 12), (2, 3, 5, 1), ((0, 7), (0, 0))),    # channels, rows past the end
    ((1, 2, 10, 9), (3, 2, 12, 1), ((11, 11), (0, 0))),  # kernel taller than the input
    ((1, 5, 8, 7), (2, 5, 3, 1), ((1, 1), (0, 0))),      # edge rows before a full group
    ((1, 1, 7, 6, 5), (1, 1, 6, 1, 1), ((5, 0), (0, 0), (0, 0))),  # planes as rows
])
@pytest.mark.parametrize("dtype", ["float64", "complex64"])
def test_tall_kernels(x_shape, w_shape, padding, dtype):
    problem, x, w = _problem(x_shape, w_shape, dtype, padding=padding)
    _assert_matches(direct.correlate(x, w, problem), x, w, problem)


def test_tall_kernel_keeps_nan_and_inf_where_their_window_is():
    problem, x, w = _problem((1, 1, 24, 8), (1, 1, 7, 1), padding=((3, 3), (0, 0)))
    x = x.copy()
    x[0, 0, 5, 2] = np.inf
    x[0, 0, 17, 6] = np.nan
    got, want = direct.correlate(x, w, problem), reference.correlate(x, w, problem)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12)


@pytest.fixture
def block_calls(monkeypatch):
    """Counts the launches of the four-row block kernel, so a test can assert its path ran."""
    calls = []
    original = direct._block_kernel

    def spy(*args):
        calls.append(args[1].shape)
        return original(*args)

    monkeypatch.setattr(direct, "_block_kernel", spy)
    return calls


@pytest.mark.parametrize("x_shape, w_shape, geometry", [
    ((1, 1, 23, 600), (1, 1, 9, 9), dict(padding=4)),                  # two column segments
    ((1, 1, 30, 40), (1, 1, 4, 6), dict(padding=((2, 1), (3, 2)))),    # even kernel, 'same'
    ((1, 1, 6, 7), (1, 1, 11, 13), dict(padding=((10, 10), (12, 12)))),  # kernel past the input
    ((1, 1, 3, 9), (1, 1, 5, 3), dict(padding=((2, 2), (1, 1)))),     # fewer rows than a block
    ((2, 4, 13, 17), (6, 2, 5, 4), dict(padding=((3, 0), (0, 2)), groups=2)),
    ((1, 3, 19, 21), (2, 3, 7, 1), dict(padding=((3, 3), (0, 0)))),  # tall column kernel
    ((1, 2, 6, 11, 10), (2, 2, 3, 5, 5), dict(padding=((1, 2), (2, 2), (2, 2)),
                                              stride=(2, 1, 1), dilation=(2, 1, 1))),
    ((1, 1, 14, 12), (1, 1, 6, 3), dict(padding=((0, 9), (1, 1)))),   # rows past the end
])
@pytest.mark.parametrize("dtype", ["float64", "float32", "complex64", "complex128"])
def test_four_row_blocks_match_the_reference(block_calls, x_shape, w_shape, geometry, dtype):
    problem, x, w = _problem(x_shape, w_shape, dtype, **geometry)
    _assert_matches(direct.correlate(x, w, problem), x, w, problem)
    assert block_calls


@pytest.mark.parametrize("x_shape, w_shape, geometry", [
    ((1, 1, 20, 20), (1, 1, 5, 5), dict(stride=(1, 2), padding=2)),
    ((1, 1, 20, 20), (1, 1, 5, 5), dict(dilation=(2, 1), padding=2)),
    ((1, 1, 20, 20), (1, 1, 3, 5), dict(padding=1)),
    ((1, 1, 500), (1, 1, 9), dict(padding=4)),
])
def test_other_geometries_keep_the_row_kernel(block_calls, x_shape, w_shape, geometry):
    problem, x, w = _problem(x_shape, w_shape, **geometry)
    _assert_matches(direct.correlate(x, w, problem), x, w, problem)
    assert not block_calls


def test_four_row_blocks_keep_nan_and_inf_where_their_window_is(block_calls):
    # the first and last input rows of a block reach only some of its rows
    problem, x, w = _problem((1, 1, 26, 530), (1, 1, 6, 5), padding=((2, 3), (2, 2)))
    x = x.copy()
    for row, col in [(0, 3), (5, 100), (6, 511), (13, 512), (25, 529)]:
        x[0, 0, row, col] = np.nan
    x[0, 0, 9, 0] = np.inf
    x[0, 0, 18, 300] = -np.inf
    got, want = direct.correlate(x, w, problem), reference.correlate(x, w, problem)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    finite = np.isfinite(want)
    np.testing.assert_allclose(got[finite], want[finite], rtol=1e-12, atol=1e-12)
    assert block_calls


def test_four_row_blocks_give_the_same_result_on_one_or_two_threads(block_calls):
    problem, x, w = _problem((2, 3, 41, 37), (4, 3, 7, 5), padding=3)
    with fastconv.thread_budget(1):
        single = direct.correlate(x, w, problem)
    with fastconv.thread_budget(2):
        double = direct.correlate(x, w, problem)
    np.testing.assert_array_equal(single, double)
    _assert_matches(single, x, w, problem)
    assert block_calls
