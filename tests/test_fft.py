"""The fft backend beyond the shared table: tiles, plans, wisdom, threads, fallback, data checks."""
import json
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from fastconv import _config, dispatch
from fastconv.backends import _fft_layout, _fft_plans, _fft_tiles, fft, reference
from fastconv.problem import make_problem

TOL = {"float32": 2e-4, "complex64": 2e-4, "float64": 1e-10, "complex128": 1e-10}


def _data(rng, shape, dtype):
    dtype = np.dtype(dtype)
    data = rng.standard_normal(shape)
    if dtype.kind == "c":
        data = data + 1j * rng.standard_normal(shape)
    return data.astype(dtype)


def _case(x_shape, w_shape, dtype="float64", seed=0, **geometry):
    problem = make_problem(x_shape, w_shape, dtype, **geometry)
    rng = np.random.default_rng(seed)
    return problem, _data(rng, x_shape, dtype), _data(rng, w_shape, dtype)


def _assert_close(got, want, dtype):
    tol = TOL[np.dtype(dtype).name]
    scale = max(np.abs(want).max(), 1.0)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


@pytest.fixture(autouse=True)
def wisdom_file(tmp_path, monkeypatch):
    """Every test keeps its FFTW wisdom in its own file, never in the user's cache."""
    path = tmp_path / "wisdom.json"
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", str(path))
    yield path
    _fft_plans.wait_for_planners()


needs_pyfftw = pytest.mark.skipif(_fft_plans.pyfftw is None, reason="pyFFTW is not installed")


@pytest.fixture
def chunked(monkeypatch):
    """One-plane real problems through the chunk pipeline (its workspaces), not the fused loop."""
    monkeypatch.setattr(fft, "FUSED", False)


@pytest.fixture(params=[True, False], ids=["fused", "chunked"])
def fused(request, monkeypatch):
    """Both ways of running one-plane real problems (fused: its plans at once, estimated)."""
    monkeypatch.setattr(fft, "FUSED", request.param)
    if request.param:
        monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
        monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)
    return request.param


@pytest.fixture
def fused_calls(monkeypatch):
    """Count the tile ranges the fused loop runs."""
    calls = []
    run = _fft_tiles.run_fused

    def counted(*args):
        calls.append(args[5:7])
        return run(*args)
    monkeypatch.setattr(_fft_tiles, "run_fused", counted)
    return calls


@pytest.fixture
def forced_tiles(monkeypatch):
    """Make the backend use a given tiling instead of the one its model picks."""
    def force(problem, sizes, **chunk):
        chosen = _fft_layout.tiling(problem, sizes, **chunk)
        monkeypatch.setattr(fft, "_layout", lambda p: chosen if p == problem else None)
        return chosen
    return force


# --- overlap-save tiles ------------------------------------------------------------------

def test_long_1d_uses_tiles_and_matches_reference():
    problem, x, w = _case((1, 1, 40000), (1, 1, 700), padding=((350, 349),))
    chosen = fft._layout(problem)
    assert chosen.tiles > 1
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")


def test_large_2d_uses_tiles_and_matches_reference():
    problem, x, w = _case((1, 1, 600, 500), (1, 1, 9, 9), padding=4)
    assert fft._layout(problem).tiles > 1
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")


TILINGS = [
    # x_shape, w_shape, geometry, tile sizes, chunk
    ((2, 1, 300), (1, 1, 17), dict(padding=8), (64,), dict(chunk_tiles=3)),
    ((1, 2, 257), (3, 2, 9), dict(padding=((20, 3),), stride=3, dilation=2), (64,), {}),
    ((3, 1, 100), (1, 1, 5), dict(padding=40), (16,), dict(chunk_tiles=2, chunk_batch=2)),
    ((1, 1, 70, 90), (1, 1, 7, 5), dict(padding=((3, 3), (2, 2))), (32, 16), dict(chunk_tiles=2)),
    ((2, 3, 45, 38), (4, 3, 5, 4), dict(padding=((0, 4), (6, 1)), stride=(2, 3)), (16, 32), {}),
    ((1, 4, 40, 33), (4, 2, 3, 3), dict(padding=1, dilation=(3, 2), groups=2), (16, 64), {}),
    ((1, 2, 30, 26, 21), (2, 2, 5, 3, 4), dict(padding=((2, 2), (1, 1), (3, 0)), stride=(1, 2, 2)),
     (16, 8, 32), dict(chunk_tiles=1)),
    # 5- and 3-smooth tiles (5 * 2**j, 9 * 2**j), as measured plans make worth it
    ((1, 1, 200, 170), (1, 1, 9, 7), dict(padding=4), (80, 72), dict(chunk_tiles=2)),
    ((1, 1, 90, 100, 85), (1, 1, 5, 5, 3), dict(padding=2), (40, 36, 80), {}),
]


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
@pytest.mark.parametrize("row", TILINGS, ids=lambda r: "x".join(map(str, r[0][2:])) if
                         isinstance(r, tuple) else None)
def test_forced_tilings_match_reference(forced_tiles, row, dtype, fused):
    x_shape, w_shape, geometry, sizes, chunk = row
    problem, x, w = _case(x_shape, w_shape, dtype, **geometry)
    chosen = forced_tiles(problem, sizes, **chunk)
    assert chosen.tiles > 1
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), dtype)


def test_single_tile_wraps_trailing_padding(forced_tiles):
    # 'full' correlation: the transform holds n + max(pad) points, not n + 2 * pad
    problem, x, w = _case((1, 1, 50), (1, 1, 21), padding=20)
    chosen = forced_tiles(problem, (70,))
    assert chosen.tiles == 1 and chosen.shape == (70,)
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")


# --- geometry, dtypes, out= ---------------------------------------------------------------

@pytest.mark.parametrize("stride,dilation,padding", [
    (2, 1, 3), (5, 1, 0), (3, 2, ((4, 1), (0, 6))), ((1, 4), (2, 1), 2), (7, 1, 3)])
def test_stride_and_dilation(stride, dilation, padding):
    problem, x, w = _case((2, 3, 29, 31), (2, 3, 4, 5), stride=stride, dilation=dilation,
                          padding=padding)
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")


@pytest.mark.parametrize("dtype", ["complex64", "complex128"])
def test_complex_is_not_conjugated(dtype):
    problem, x, w = _case((1, 2, 23, 19), (3, 2, 4, 3), dtype, padding=2)
    got = fft.correlate(x, w, problem)
    assert got.dtype == np.dtype(dtype)
    want = reference.correlate(x, w, problem)
    _assert_close(got, want, dtype)
    # conjugating the kernel would give a visibly different answer
    assert not np.allclose(got, reference.correlate(x, np.conj(w), problem), rtol=1e-3)


def test_float32_computes_in_float32():
    problem, x, w = _case((1, 1, 64, 64), (1, 1, 9, 9), "float32", padding=4)
    got = fft.correlate(x, w, problem)
    assert got.dtype == np.float32
    _assert_close(got, reference.correlate(x, w, problem), "float32")


def test_out_argument_contiguous_and_strided():
    problem, x, w = _case((2, 3, 20, 21), (4, 3, 5, 5), padding=2)
    want = reference.correlate(x, w, problem)
    out = np.full(problem.out_shape, np.nan)
    assert fft.correlate(x, w, problem, out=out) is out
    _assert_close(out, want, "float64")
    big = np.full(problem.out_shape[:-1] + (2 * problem.out_shape[-1],), np.nan)
    strided = big[..., ::2]
    fft.correlate(x, w, problem, out=strided)
    _assert_close(strided, want, "float64")
    assert np.isnan(big[..., 1::2]).all()


def test_inputs_are_not_modified():
    problem, x, w = _case((2, 2, 30), (2, 2, 7), padding=3)
    x_ro, w_ro = x.copy(), w.copy()
    x_ro.flags.writeable = w_ro.flags.writeable = False
    fft.correlate(x_ro, w_ro, problem)
    np.testing.assert_array_equal(x_ro, x)
    np.testing.assert_array_equal(w_ro, w)


def test_empty_batch():
    problem = make_problem((0, 1, 10), (1, 1, 3), "float64")
    assert fft.correlate(np.empty((0, 1, 10)), np.ones((1, 1, 3)), problem).shape == (0, 1, 8)


# --- plans, pool, threads ------------------------------------------------------------------

def test_plan_cache_reuses_workspaces(chunked):
    _fft_plans.clear()
    problem, x, w = _case((1, 1, 64, 64), (1, 1, 5, 5), padding=2)
    with _config.thread_budget(1):
        fft.correlate(x, w, problem)
        created = _fft_plans.STATS["created"]
        reused = _fft_plans.STATS["reused"]
        fft.correlate(x, w, problem)
    assert _fft_plans.STATS["created"] == created
    assert _fft_plans.STATS["reused"] == reused + 1


@needs_pyfftw
def test_measured_plans_replace_estimated_ones(monkeypatch):
    _fft_plans.clear(wisdom=True)
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", True)  # without persistence
    monkeypatch.setattr(_fft_plans, "MEASURE_AFTER", 2)
    problem, x, w = _case((1, 1, 40), (1, 1, 5), padding=2)
    want = reference.correlate(x, w, problem)
    measured = _fft_plans.STATS["measured"]
    with _config.thread_budget(1):
        for _ in range(3):
            _assert_close(fft.correlate(x, w, problem), want, "float64")
        _fft_plans.wait_for_planners()
        assert _fft_plans.STATS["measured"] == measured + 1
        created = _fft_plans.STATS["created"]
        for _ in range(2):  # the measured workspace is the one reused now
            _assert_close(fft.correlate(x, w, problem), want, "float64")
    assert _fft_plans.STATS["created"] == created
    [idle] = _fft_plans._POOL.values()  # the pool was cleared: this problem's key only
    assert [ws.effort for ws in idle] == ["FFTW_MEASURE"]


def _one_call(shape=(1, 1, 60, 50), kernel=(1, 1, 5, 5)):
    """One single-threaded call, checked against the reference."""
    problem, x, w = _case(shape, kernel, padding=2)
    with _config.thread_budget(1):
        _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem),
                      "float64")
    return problem


@needs_pyfftw
def test_wisdom_is_measured_saved_and_reused(wisdom_file, chunked):
    _fft_plans.clear(wisdom=True)
    stats = dict(_fft_plans.STATS)
    _one_call()
    assert _fft_plans.wait_for_planners(timeout=60)
    assert _fft_plans.STATS["measured"] == stats["measured"] + 1
    saved = json.loads(wisdom_file.read_text())
    assert saved["format"] == _fft_plans.WISDOM_FORMAT and len(saved["fftw"]) == 3
    assert not list(wisdom_file.parent.glob("*.tmp"))  # the temporary file was renamed
    # a new process: nothing in FFTW's memory, the file read before the first plan
    _fft_plans.clear(wisdom=True)
    stats = dict(_fft_plans.STATS)
    _one_call()
    _fft_plans.wait_for_planners()
    assert _fft_plans.STATS["from_wisdom"] == stats["from_wisdom"] + 1
    assert _fft_plans.STATS["measured"] == stats["measured"]
    [idle] = _fft_plans._POOL.values()
    assert [ws.effort for ws in idle] == ["FFTW_MEASURE"]


@needs_pyfftw
@pytest.mark.parametrize("content", [b"", b"not json", b'{"format": 1, "fftw": ["(fftw-3.3 x", 2]}',
                                     b'{"format": 1, "fftw": ["(garbage)", "", ""]}',
                                     bytes(range(256))])
def test_corrupt_wisdom_file_is_ignored_then_replaced(wisdom_file, content):
    _fft_plans.clear(wisdom=True)
    wisdom_file.write_bytes(content)
    _one_call()
    assert _fft_plans.wait_for_planners(timeout=60)
    assert len(json.loads(wisdom_file.read_text())["fftw"]) == 3


@needs_pyfftw
def test_unwritable_wisdom_location_only_skips_saving(tmp_path, monkeypatch, chunked):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache directory should be")
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", str(blocker / "sub" / "wisdom.json"))
    _fft_plans.clear(wisdom=True)
    stats = dict(_fft_plans.STATS)
    _one_call()
    assert _fft_plans.wait_for_planners(timeout=60)
    assert _fft_plans.STATS["measured"] == stats["measured"] + 1  # still measured in memory
    assert _fft_plans.STATS["saved"] == stats["saved"]
    assert not _fft_plans.save_wisdom()


@pytest.mark.parametrize("value", ["0", "", " "])
def test_wisdom_off(monkeypatch, tmp_path, value):
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", value)
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)
    assert _fft_plans.wisdom_path() is None
    _fft_plans.clear(wisdom=True)
    stats = dict(_fft_plans.STATS)
    _one_call()
    assert _fft_plans.wait_for_planners(timeout=60)
    assert _fft_plans.STATS["measured"] == stats["measured"]
    assert not _fft_plans.save_wisdom()


def test_default_wisdom_path_sits_next_to_the_profile(monkeypatch, tmp_path):
    monkeypatch.delenv("FASTCONV_FFTW_WISDOM")
    monkeypatch.setenv("FASTCONV_PROFILE", str(tmp_path / "profile.json"))
    assert _fft_plans.wisdom_path() == tmp_path / _fft_plans.WISDOM_FILE


@needs_pyfftw
def test_prepare_measures_now_and_saving_merges_other_processes(wisdom_file, tmp_path,
                                                                monkeypatch, chunked):
    first = make_problem((1, 1, 70, 60), (1, 1, 5, 5), "float64", padding=2)
    second = make_problem((1, 1, 30, 40), (1, 1, 3, 3), "float64", padding=1)
    _fft_plans.clear(wisdom=True)
    with _config.thread_budget(1):
        assert fft.prepare([first, first]) == 1
        assert fft.prepare([first]) == 0
        # "another process" saves the second problem's wisdom to the same file meanwhile
        _fft_plans.clear(wisdom=True)
        monkeypatch.setenv("FASTCONV_FFTW_WISDOM", str(tmp_path / "other.json"))
        assert fft.prepare([second]) == 1
        assert _fft_plans.save_wisdom(wisdom_file)  # merges the file's first problem
        _fft_plans.clear(wisdom=True)
        monkeypatch.setenv("FASTCONV_FFTW_WISDOM", str(wisdom_file))
        assert fft.prepare([first, second]) == 0  # both known from the file
        stats = dict(_fft_plans.STATS)
        _one_call((1, 1, 70, 60))
    assert _fft_plans.STATS["created"] == stats["created"]  # the prepared workspace


def _correlate_at_once(jobs):
    """``fft.correlate`` of every ``(problem, x, w, want)`` job, each in its own thread,
    all starting together with budgets of 1 and 2 threads; every result checked."""
    results, errors = [None] * len(jobs), []
    barrier = threading.Barrier(len(jobs))

    def run(i):
        problem, x, w, _ = jobs[i]
        try:
            barrier.wait()
            with _config.thread_budget(1 + i % 2):
                for _ in range(3):
                    results[i] = fft.correlate(x, w, problem)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (problem, x, w, want), got in zip(jobs, results):
        _assert_close(got, want, "float64")


def test_many_python_threads_at_once():
    shapes = [((2, 2, 50, 40), (3, 2, 7, 5)), ((1, 1, 3000), (1, 1, 101))]
    jobs = []
    for i in range(12):
        x_shape, w_shape = shapes[i % 2]
        problem, x, w = _case(x_shape, w_shape, seed=i, padding=3)
        jobs.append((problem, x, w, reference.correlate(x, w, problem)))
    _correlate_at_once(jobs)


def test_workers_split_chunks(forced_tiles):
    problem, x, w = _case((2, 1, 3000), (1, 1, 33), padding=16)
    forced_tiles(problem, (128,), chunk_tiles=2)
    with _config.thread_budget(2):
        got = fft.correlate(x, w, problem)
    _assert_close(got, reference.correlate(x, w, problem), "float64")


def test_workspace_cap_shrinks_chunks_or_refuses():
    problem = make_problem((8, 16, 64, 64), (16, 16, 9, 9), "float64", padding=4)
    roomy = _fft_layout.layout(problem, 1 << 30)
    tight = _fft_layout.layout(problem, 4 << 20)
    assert tight is not None
    scratch = (_fft_layout.chunk_bytes(problem, tight.shape, True,
                                       tight.chunk_tiles * tight.chunk_batch)
               + _fft_layout.kernel_bytes(problem, tight.shape, True))
    assert scratch <= 4 << 20 < _fft_layout.chunk_bytes(
        problem, roomy.shape, True, roomy.chunk_tiles * roomy.chunk_batch)
    assert _fft_layout.layout(problem, 1 << 16) is None


# --- scipy.fft fallback ---------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["float32", "float64", "complex128"])
@pytest.mark.parametrize("x_shape,w_shape,geometry", [
    ((2, 3, 40), (2, 3, 6), dict(padding=3, stride=2)),
    ((1, 2, 33, 30), (2, 1, 5, 4), dict(padding=2, groups=2, dilation=2)),
    ((1, 1, 12, 11, 10), (1, 1, 3, 4, 3), dict(padding=1)),
])
def test_scipy_fallback(monkeypatch, x_shape, w_shape, geometry, dtype):
    monkeypatch.setattr(_fft_plans, "pyfftw", None)
    assert fft.available() and _fft_plans.engine() == "scipy"
    problem, x, w = _case(x_shape, w_shape, dtype, **geometry)
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), dtype)


def test_scipy_fallback_tiles(monkeypatch, forced_tiles):
    monkeypatch.setattr(_fft_plans, "pyfftw", None)
    problem, x, w = _case((1, 2, 500), (3, 2, 31), padding=15)
    forced_tiles(problem, (64,), chunk_tiles=3)
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")


# --- inspect: data the FFT must not take ------------------------------------------------------

@pytest.mark.parametrize("where,value", [("x", np.nan), ("x", np.inf), ("w", -np.inf),
                                         ("w", np.nan)])
def test_inspect_rejects_nonfinite(where, value):
    problem, x, w = _case((1, 1, 30, 30), (1, 1, 3, 3), padding=1)
    assert fft.supports(problem)  # not looked at yet: allowed
    target = x if where == "x" else w
    target[0, 0, 2, 1] = value
    inspected = fft.inspect(problem, x, w)
    assert inspected.has_nonfinite is True
    assert not fft.supports(inspected)


@pytest.fixture
def estimated_plans(monkeypatch):
    """Single-tile plans made at once (FFTW_ESTIMATE): the fused loop runs from the first call."""
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_fused_loop_checks_x_as_it_gathers(estimated_plans, fused_calls, value):
    problem, x, w = _case((1, 1, 90, 80), (1, 1, 7, 7), padding=3)
    x[0, 0, 40, 33] = value
    run = fft.inspect_for_run(problem, x, w)
    assert run.has_nonfinite is None and fft.supports(run)  # left to the run
    assert fft.inspect(problem, x, w).has_nonfinite is True  # explain() still sees it
    got = fft.correlate(x, w, problem)  # handed to a backend that keeps it local
    assert fused_calls
    want = reference.correlate(x, w, problem)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    _assert_close(got[finite], want[finite], "float64")
    assert (np.isinf(got) == np.isinf(want)).all()


def test_dispatch_hands_nonfinite_data_on_from_the_fused_loop(estimated_plans, monkeypatch):
    problem, x, w = _case((1, 1, 300, 300), (1, 1, 41, 41), padding=20)
    assert dispatch.choose(problem, x, w, run=True).name == "fft"
    x[0, 0, 150, 10] = np.nan
    chosen = []
    correlate = dispatch.correlate

    def spy(x, w, problem, **kwargs):
        chosen.append(problem.has_nonfinite)
        return correlate(x, w, problem, **kwargs)
    monkeypatch.setattr(dispatch, "correlate", spy)
    got = correlate(x, w, problem)
    assert chosen == [True]
    windows = np.zeros(problem.out_shape, bool)
    windows[0, 0, 130:171, :31] = True  # the outputs whose windows hold (150, 10)
    np.testing.assert_array_equal(np.isnan(got), windows)
    assert dispatch.choose(problem, x, w).name != "fft"


def test_fused_loop_checks_an_uninspected_kernel(estimated_plans):
    problem, x, w = _case((1, 1, 90, 80), (1, 1, 7, 7), padding=3)
    w[0, 0, 1, 1] = np.inf
    got = fft.correlate(x, w, problem)
    want = reference.correlate(x, w, problem)
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    assert fft.inspect_for_run(problem, x, w).has_nonfinite is True


def test_inspect_accepts_finite_data_whose_sum_overflows():
    problem, x, w = _case((1, 1, 50), (1, 1, 3))
    x[:] = 1e308
    inspected = fft.inspect(problem, x, w)
    assert inspected.has_nonfinite is False
    assert fft.supports(inspected)


def test_integer_bound_limits_exactness():
    problem = make_problem((1, 1, 256, 256), (1, 1, 9, 9), "float64", padding=4)
    limit = fft.exact_integer_bound(problem)
    assert 2.0**38 < limit < 2.0**46
    assert fft.supports(problem.with_facts(int_bound=2.0**30))
    assert not fft.supports(problem.with_facts(int_bound=2.0**52))
    # float32 transforms stay exact for far smaller sums
    single = make_problem((1, 1, 256, 256), (1, 1, 9, 9), "float32", padding=4)
    assert fft.exact_integer_bound(single) < 2.0**20


@pytest.mark.parametrize("data", ["constant", "random"])
@pytest.mark.parametrize("x_shape,w_shape", [((1, 1, 200, 200), (1, 1, 15, 15)),
                                             ((1, 1, 30000), (1, 1, 301))])
def test_integer_data_at_the_bound_round_exactly(x_shape, w_shape, data):
    problem = make_problem(x_shape, w_shape, "float64", padding=w_shape[-1] // 2)
    taps = np.prod(w_shape)
    # magnitudes that put the largest partial sum at the accepted bound
    top = int(np.sqrt(fft.exact_integer_bound(problem) / taps))
    rng = np.random.default_rng(3)
    if data == "constant":  # every term at full size and one sign: the worst case
        x, w = np.full(x_shape, float(top)), np.full(w_shape, float(top))
    else:
        x = rng.integers(-top, top + 1, x_shape).astype(np.float64)
        w = rng.integers(-top, top + 1, w_shape).astype(np.float64)
    bound = float(top) * top * taps
    assert fft.supports(problem.with_facts(int_bound=bound))
    got = np.rint(fft.correlate(x, w, problem))
    np.testing.assert_array_equal(got, reference.correlate(x, w, problem))


def test_model_features_follow_the_tiling():
    problem = make_problem((1, 1, 2048, 2048), (1, 1, 17, 17), "float64", padding=8)
    features = fft.model_features(problem)
    assert features[0] == 1.0 and all(0 < f < 1 for f in features[1:4])
    assert features[4] == 1.0  # two workers share the chunks
    with _config.thread_budget(1):  # one thread: the layout's own one-thread seconds
        features = fft.model_features(problem)
    assert sum(features[1:4]) == pytest.approx(fft._layout(problem).seconds)
    assert features[4] == 0.0


def test_smooth_tile_sizes_are_priced_by_plan_quality(monkeypatch):
    length, options = _fft_layout._axis_options(1000, 15, (7, 7), 1, 1 << 22)
    sizes = {b for b, _, _ in options}
    assert {64, 72, 80, 96, 128, 144, 160} <= sizes
    # FFTW_MEASURE plans take sizes other than powers of two far better than FFTW_ESTIMATE
    for n, ndim in [(80, 3), (72, 3), (320, 2), (96, 3)]:
        assert 1.0 < _fft_layout._size_penalty(n, ndim, True) < _fft_layout._size_penalty(n, ndim)
    assert _fft_layout._size_penalty(256, 3, True) == 1.0
    # the backend prices the plans it will get
    problem = make_problem((1, 1, 48, 48, 48), (1, 1, 7, 7, 7), "float64", padding=3)
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)
    assert fft._layout(problem) == _fft_layout.layout(problem, _config.get_workspace_bytes(), False)
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", True)
    expected = _fft_plans.pyfftw is not None
    assert fft._layout(problem) == _fft_layout.layout(problem, _config.get_workspace_bytes(),
                                                      expected)


# --- chunks, kernel spectra, the data check at scale --------------------------------------

def test_whole_rows_of_small_2d_tiles_make_one_chunk():
    problem = make_problem((1, 1, 2048, 2048), (1, 1, 17, 17), "float64", padding=8)
    row = _fft_layout.tiling(problem, (128, 128))
    assert row.chunk_tiles == row.axes[-1].count == 19
    big = _fft_layout.tiling(problem, (512, 512))  # a row over CHUNK_ROW_BYTES: L2-sized chunks
    assert big.chunk_tiles < big.axes[-1].count
    signal = make_problem((1, 1, 10**6), (1, 1, 1025), "float64", padding=512)
    one_d = _fft_layout.tiling(signal, (4096,))   # 1-d chunks keep the L2 budget
    assert one_d.chunk_tiles * 4096 * 8 <= _fft_layout.CHUNK_BYTES


def test_whole_row_chunks_with_two_workers_match_reference(forced_tiles):
    problem, x, w = _case((2, 1, 90, 100), (1, 1, 9, 7), padding=((4, 4), (3, 3)))
    chosen = forced_tiles(problem, (32, 32))
    assert chosen.chunk_tiles == chosen.axes[-1].count > 1
    with _config.thread_budget(2):
        got = fft.correlate(x, w, problem)
    _assert_close(got, reference.correlate(x, w, problem), "float64")


def test_kernel_spectra_are_remembered_by_value():
    problem, x, w = _case((1, 2, 40, 30), (3, 2, 5, 4), padding=2)
    fft.correlate(x, w, problem)
    reused = _fft_plans.STATS["spectra_reused"]
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")
    assert _fft_plans.STATS["spectra_reused"] == reused + 1
    w[1, 0, 2, 3] += 1.0  # changed in place: a new spectrum, not the remembered one
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")
    assert _fft_plans.STATS["spectra_reused"] == reused + 1
    spec = _fft_plans.kernel_spectrum(w, (1, 1), (16, 16), "float64", 1)
    assert not spec.flags.writeable


def test_kernel_spectrum_error_reaches_the_caller(monkeypatch, forced_tiles):
    problem, x, w = _case((1, 1, 200, 100), (1, 1, 5, 5), padding=2)
    forced_tiles(problem, (32, 32), chunk_tiles=1)

    def broken(*args):
        raise MemoryError("no room for the spectrum")
    monkeypatch.setattr(_fft_plans, "kernel_spectrum", broken)
    with _config.thread_budget(2), pytest.raises(MemoryError, match="no room"):
        fft.correlate(x, w, problem)


@pytest.mark.parametrize("dtype", ["float64", "float32", "complex128"])
def test_nonfinite_check_of_large_arrays(dtype):
    n = 3 * fft._PROBE_MIN + 5  # several pieces, the last one longer
    a = _data(np.random.default_rng(0), (n,), dtype)
    with _config.thread_budget(2):
        assert not fft._has_nonfinite(a)
        for where in (0, fft._PROBE_MIN - 1, fft._PROBE_MIN, n - 1):
            for value in (np.nan, np.inf, -np.inf):
                b = a.copy()
                b[where] = value
                assert fft._has_nonfinite(b)
                assert fft._has_nonfinite(b.reshape(1, -1))
        huge = np.full(n, np.finfo(a.real.dtype).max, dtype)  # finite: its sum overflows
        assert not fft._has_nonfinite(huge)


def test_measured_3d_plans_are_priced_by_their_leading_axes():
    penalty = _fft_layout._shape_penalty
    slow = penalty((80, 80, 80), True)
    assert slow == penalty((80, 80, 64), True) == _fft_layout._size_penalty(80, 3, True)
    assert 1.0 < penalty((64, 80, 144), True) < slow
    assert penalty((64, 64, 144), True) == penalty((64, 64, 64), True) == 1.0
    assert penalty((64, 64, 135), True) > slow  # off the menu: the last axis pays as before
    assert penalty((64, 80, 144), False) == max(_fft_layout._size_penalty(n, 3)
                                                for n in (64, 80, 144))
    assert penalty((80, 80), True) == _fft_layout._size_penalty(80, 2, True)


def test_one_tile_options_include_the_next_menu_size():
    assert [_fft_layout._menu_ceil(n) for n in (64, 65, 100, 135, 142, 2056)] == \
        [64, 72, 128, 144, 144, 2304]
    _, options = _fft_layout._axis_options(128, 15, (7, 7), 1, 1 << 22)
    assert (144, 128, 1) in options


# --- the fused tile loop ------------------------------------------------------------------

FUSABLE = [
    # x_shape, w_shape, geometry: one plane in and out, real, stride 1
    ((1, 1, 300, 257), (1, 1, 17, 17), dict(padding=8)),
    ((2, 1, 90, 100), (1, 1, 9, 7), dict(padding=((4, 4), (3, 3)))),
    ((1, 1, 70, 61), (1, 1, 6, 5), dict(padding=((0, 9), (7, 1)), dilation=(2, 3))),
    ((1, 1, 50, 60), (1, 1, 3, 4), dict()),                        # 'valid'
    ((1, 1, 40, 45), (1, 1, 11, 9), dict(padding=((10, 10), (8, 8)))),  # 'full'
    ((1, 1, 40, 33, 29), (1, 1, 5, 4, 3), dict(padding=((2, 2), (1, 2), (0, 0)))),
    ((2, 1, 30, 26, 41), (1, 1, 7, 3, 5), dict(padding=3, dilation=(1, 2, 1))),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("row", FUSABLE, ids=lambda r: "x".join(map(str, r[0][2:])) + "k"
                         + "x".join(map(str, r[1][2:])) if isinstance(r, tuple) else None)
def test_fused_loop_matches_reference(monkeypatch, fused_calls, row, dtype):
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)
    x_shape, w_shape, geometry = row
    problem, x, w = _case(x_shape, w_shape, dtype, **geometry)
    if _fft_plans.tile_plans(fft._layout(problem).shape, dtype) is None:
        pytest.skip("FFTW's functions are not reachable through ctypes here")
    want = reference.correlate(x, w, problem)
    for threads in (1, 2):
        with _config.thread_budget(threads):
            out = np.full(problem.out_shape, np.nan, dtype)  # every output written
            _assert_close(fft.correlate(x, w, problem, out=out), want, dtype)
    assert len(fused_calls) >= 2


def test_fused_loop_waits_for_measured_plans(wisdom_file, fused_calls):
    _fft_plans.clear(wisdom=True)
    problem, x, w = _case((1, 1, 120, 100), (1, 1, 9, 9), padding=4)
    plan = fft._layout(problem)
    tile = (plan.shape, "float64", fft._valid_rows(problem, plan))
    assert tile[2] == 120 < plan.shape[0]  # the inverse computes the valid rows only
    want = reference.correlate(x, w, problem)
    _assert_close(fft.correlate(x, w, problem), want, "float64")
    if _fft_plans.pyfftw is None or _fft_plans._library("float64") is None:
        assert not fused_calls
        return
    # no measured one-tile plan in the wisdom yet: the workspaces ran, the plan was queued
    assert not fused_calls and _fft_plans.tile_plans(*tile) is None
    assert _fft_plans.wait_for_planners(timeout=60)
    assert _fft_plans.tile_plans(*tile) is not None
    _assert_close(fft.correlate(x, w, problem), want, "float64")
    assert fused_calls
    assert len(json.loads(wisdom_file.read_text())["fftw"]) == 3


def test_without_fftw_functions_the_chunks_run(monkeypatch, fused_calls):
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)
    monkeypatch.setattr(_fft_plans, "_library", lambda dtype: None)
    _fft_plans.clear()
    problem, x, w = _case((1, 1, 90, 80), (1, 1, 7, 7), padding=3)
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")
    assert not fused_calls
    assert not _fft_plans._loaded_libraries() or _fft_plans.engine() == "pyfftw"


def test_strided_out_is_fused_and_channels_take_the_chunks(monkeypatch, fused_calls):
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)
    problem, x, w = _case((1, 1, 60, 50), (1, 1, 5, 5), padding=2)
    big = np.zeros(problem.out_shape[:-1] + (100,))
    fft.correlate(x, w, problem, out=big[..., ::2])
    _assert_close(big[..., ::2], reference.correlate(x, w, problem), "float64")
    assert not big[..., 1::2].any()
    assert len(fused_calls) == 1
    problem, x, w = _case((1, 2, 60, 50), (1, 2, 5, 5), padding=2)
    _assert_close(fft.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")
    assert len(fused_calls) == 1


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_large_outputs_are_streamed_past_the_cache(estimated_plans, monkeypatch, dtype):
    if _fft_tiles._stream is None:
        pytest.skip("fastconv._stream is not built")
    problem, x, w = _case((1, 1, 1100, 1030), (1, 1, 9, 9), dtype, padding=4)
    streamed, plain = (np.zeros(problem.out_shape[:-1] + (1031,), dtype)[..., 1:]  # unaligned
                       for _ in range(2))
    assert _fft_tiles.streaming(streamed).size == 2
    fft.correlate(x, w, problem, out=streamed)
    monkeypatch.setattr(_fft_tiles, "STREAM_MIN_BYTES", 1 << 62)
    assert _fft_tiles.streaming(plain).size == 0
    fft.correlate(x, w, problem, out=plain)  # the same compiled loop, ordinary stores
    np.testing.assert_array_equal(streamed, plain)
    near = (slice(None), slice(None), slice(480, 560), slice(470, 560))
    want = reference.correlate(x[near[:2] + (slice(476, 564), slice(466, 564))], w,
                               make_problem((1, 1, 88, 98), (1, 1, 9, 9), dtype))
    _assert_close(streamed[near], want, dtype)


@pytest.mark.skipif(_fft_tiles._stream is None, reason="fastconv._stream is not built")
def test_stream_copy_matches_memcpy_at_every_offset_and_length():
    import ctypes
    copy = ctypes.CFUNCTYPE(None, ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_ssize_t)(
        _fft_tiles._stream.copy_address())
    fence = ctypes.CFUNCTYPE(None, ctypes.c_ssize_t, ctypes.c_ssize_t, ctypes.c_ssize_t)(
        _fft_tiles._stream.fence_address())
    rng = np.random.default_rng(3)
    source = rng.integers(0, 256, 400, dtype=np.uint8)
    for start in range(0, 17):
        for length in (0, 1, 15, 16, 17, 63, 64, 65, 130, 300):
            target = np.zeros(400, np.uint8)
            copy(target.ctypes.data + start, source.ctypes.data + 3, length)
            fence(0, 0, 0)
            expected = np.zeros(400, np.uint8)
            expected[start:start + length] = source[3:3 + length]
            np.testing.assert_array_equal(target, expected)


def test_leaving_while_plans_are_measured_exits_cleanly(tmp_path):
    # queue measurements of large transforms and leave at once: the planner thread is in
    # FFTW's planner when the interpreter exits (before: a crash or a hang in pyFFTW's clean-up)
    code = ("import time\n"
            "from fastconv.backends import _fft_plans\n"
            "for n in (1 << 16, 3 << 14):\n"
            "    _fft_plans.release(_fft_plans.acquire((1, 1), 1, 1, (n,), 'float64', True, 1))\n"
            "time.sleep(0.05)\n")
    env = dict(os.environ, FASTCONV_FFTW_WISDOM=str(tmp_path / "wisdom.json"))
    done = subprocess.run([sys.executable, "-c", code], env=env, timeout=120,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_fused_loop_from_many_python_threads(monkeypatch):
    monkeypatch.setenv("FASTCONV_FFTW_WISDOM", "0")
    monkeypatch.setattr(_fft_plans, "MEASURE_IN_BACKGROUND", None)
    jobs = []
    for i in range(8):
        problem, x, w = _case((1, 1, 80 + i, 90), (1, 1, 7, 5), seed=i, padding=3)
        jobs.append((problem, x, w, reference.correlate(x, w, problem)))
    _correlate_at_once(jobs)
