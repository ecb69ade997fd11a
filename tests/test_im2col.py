"""The im2col backend beyond the shared table: kernels, blocking, out=, threads."""
import itertools
import threading

import numpy as np
import pytest

from fastconv import _config
from fastconv.backends import im2col as backend
from fastconv.backends import _compiled, reference
from fastconv.problem import make_problem

from .cases import SHAPES, make_case

pytestmark = pytest.mark.skipif(not backend.available(), reason=backend.UNAVAILABLE_REASON or "")

DTYPES = ("float32", "float64", "complex64", "complex128")
TOLERANCE = {"float32": 2e-4, "complex64": 2e-4, "float64": 1e-10, "complex128": 1e-10}

# (x_shape, w_shape, stride, padding, dilation, groups): uneven geometry on purpose
GEOMETRIES = [
    ((2, 3, 11), (2, 3, 4), 2, ((3, 1),), 2, 1),
    ((2, 2, 7, 9), (4, 2, 3, 2), (2, 3), ((1, 2), (0, 3)), (1, 2), 1),
    ((1, 4, 5, 6, 7), (2, 2, 2, 3, 2), (1, 2, 3), ((1, 0), (2, 1), (0, 2)), (2, 1, 1), 2),
    ((1, 1, 3, 4), (1, 1, 5, 6), 1, ((4, 4), (5, 5)), 1, 1),  # kernel larger than input
]


def _random(rng, shape, dtype):
    dtype = np.dtype(dtype)
    data = rng.standard_normal(shape)
    if dtype.kind == "c":
        data = data + 1j * rng.standard_normal(shape)
    return data.astype(dtype)


def _problem(geometry, dtype):
    x_shape, w_shape, stride, padding, dilation, groups = geometry
    return make_problem(x_shape, w_shape, dtype, stride, padding, dilation, groups)


def _naive_columns(x, problem):
    """Column matrix from slices of an explicitly padded copy (the obvious way)."""
    n, c = problem.x_shape[:2]
    xpad = np.pad(x, ((0, 0), (0, 0)) + tuple(problem.padding))
    rows = []
    for channel in range(c):
        for tap in itertools.product(*(range(k) for k in problem.kernel)):
            window = tuple(slice(m * d, m * d + (size - 1) * s + 1, s) for m, d, s, size in
                           zip(tap, problem.dilation, problem.stride, problem.out_spatial))
            rows.append(xpad[(slice(None), channel) + window].reshape(-1))
    return np.array(rows, dtype=x.dtype).reshape(len(rows), -1)


def _columns_shape(problem):
    return (problem.in_channels * int(np.prod(problem.kernel)),
            problem.batch * int(np.prod(problem.out_spatial)))


def _assert_close(got, want, dtype):
    tol = TOLERANCE[np.dtype(dtype).name]
    scale = max(np.abs(want).max(initial=0.0), 1.0)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * scale)


@pytest.fixture(autouse=True)
def rows_paths(monkeypatch):
    """The tests below pin the rows and columns paths' blocking: they run without the
    lowered path, which few-channel problems would take (its own tests turn it on)."""
    monkeypatch.setattr(backend, "LOWERED_MAX_ROW_DEPTH", 0)
    backend.plan.cache_clear()
    yield
    backend.plan.cache_clear()


@pytest.fixture
def lowered(monkeypatch):
    """The lowered path for every problem."""
    monkeypatch.setattr(backend, "LOWERED_MAX_ROW_DEPTH", 10**9)
    backend.plan.cache_clear()
    yield


@pytest.fixture
def small_workspace():
    saved = _config.get_workspace_bytes()
    _config.set_workspace_bytes(1 << 20)
    yield 1 << 20
    _config.set_workspace_bytes(saved)


# ---------------------------------------------------------------- kernels

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{len(g[0]) - 2}d")
def test_im2col_matches_padded_slices(geometry, dtype):
    problem = _problem(geometry, dtype)
    x = _random(np.random.default_rng(1), problem.x_shape, dtype)
    np.testing.assert_array_equal(backend.im2col(x, problem), _naive_columns(x, problem))


@pytest.mark.parametrize("dtype", ["float64", "complex64"])
def test_im2col_blocks_are_slices_of_the_full_matrix(dtype):
    problem = _problem(GEOMETRIES[1], dtype)
    x = _random(np.random.default_rng(2), problem.x_shape, dtype)
    full = backend.im2col(x, problem)
    x5, geometry = x.reshape(backend._x5(problem)), backend._columns_geometry(problem)
    positions = full.shape[1] // problem.batch
    for b0, p0, npos in [(1, 0, positions), (0, 3, 7), (1, positions - 5, 5), (0, 1, 1)]:
        cols = np.full((full.shape[0], npos), np.nan, dtype)
        backend._im2col.im2col(x5, cols, *geometry, b0=b0, nb=1, p0=p0, npos=npos)
        np.testing.assert_array_equal(cols, full[:, b0 * positions + p0:b0 * positions + p0 + npos])


def test_im2col_rejects_bad_blocks():
    problem = _problem(GEOMETRIES[1], "float64")
    x5, geometry = np.zeros(backend._x5(problem)), backend._columns_geometry(problem)
    rows, positions = 2 * 3 * 2, int(np.prod(problem.out_spatial))
    with pytest.raises(ValueError, match="cols has shape"):
        backend._im2col.im2col(x5, np.zeros((rows + 1, 2 * positions)), *geometry)
    with pytest.raises(ValueError, match="whole images"):
        backend._im2col.im2col(x5, np.zeros((rows, 2)), *geometry, b0=0, nb=2, p0=0, npos=1)
    with pytest.raises(ValueError, match="outside the batch"):
        backend._im2col.im2col(x5, np.zeros((rows, positions)), *geometry, b0=2, nb=1)
    with pytest.raises((ValueError, TypeError)):
        backend._im2col.im2col(x5, np.zeros((rows, 2 * positions), np.float32), *geometry)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: f"{len(g[0]) - 2}d")
def test_col2im_is_the_adjoint(geometry, dtype):
    problem = _problem(geometry, dtype)
    rng = np.random.default_rng(3)
    x = _random(rng, problem.x_shape, dtype)
    cols = _random(rng, _columns_shape(problem), dtype)
    lhs = np.vdot(backend.im2col(x, problem), cols)
    rhs = np.vdot(x, backend.col2im(cols, problem))
    tol = TOLERANCE[dtype] * np.abs(cols).sum() * np.abs(x).max()
    assert abs(lhs - rhs) <= tol


def test_col2im_accumulates_into_out_and_matches_a_loop():
    problem = _problem(GEOMETRIES[1], "float64")
    rng = np.random.default_rng(4)
    cols = rng.standard_normal(_columns_shape(problem))
    start = rng.standard_normal(problem.x_shape)
    # the adjoint of a 0/1 selection matrix: add each entry where im2col read it from
    index = backend.im2col(np.arange(np.prod(problem.x_shape), dtype=np.float64)
                           .reshape(problem.x_shape) + 1, problem)
    inside = index > 0  # padding reads 0 and is dropped
    want = start.ravel().copy()
    np.add.at(want, index[inside].astype(np.int64) - 1, cols[inside])
    out = start.copy()
    assert backend.col2im(cols, problem, out=out) is out
    np.testing.assert_allclose(out.ravel(), want, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------- backend

def _check_backend(problem, seed=0, out=None):
    rng = np.random.default_rng(seed)
    x = _random(rng, problem.x_shape, problem.dtype)
    w = _random(rng, problem.w_shape, problem.dtype)
    got = backend.correlate(x, w, problem, out=out)
    _assert_close(got, reference.correlate(x, w, problem), problem.dtype)
    return got


def test_supports_the_fast_dtypes_and_1_to_3_d():
    assert backend.available() and backend.UNAVAILABLE_REASON == ""
    assert backend.supports(make_problem((1, 1, 4, 4, 4), (1, 1, 2, 2, 2), "complex64"))
    assert not backend.supports(make_problem((1, 1, 4), (1, 1, 2), "int64"))
    assert not backend.supports(make_problem((1, 1, 4, 4, 4, 4), (1, 1, 2, 2, 2, 2), "float64"))
    assert backend.cost(make_problem((1, 1, 8), (1, 1, 3), "float64")) > 0


def _full_lowering_bytes(problem):
    """Bytes of the whole lowered input: what blocking must avoid allocating."""
    return int(np.prod(_columns_shape(problem))) * problem.dtype.itemsize


def _assert_within(problem, cap):
    """Every thread count's plan keeps all its workers' scratch under the cap."""
    for threads in (1, 2, 3, 8):
        blocks = backend.plan(problem, cap, threads)
        assert blocks.workers * blocks.workspace <= cap, (threads, blocks)


@pytest.mark.parametrize("threads", [1, 2])
def test_workspace_cap_splits_a_batch(small_workspace, threads):
    problem = make_problem((32, 6, 20, 20), (5, 6, 3, 3), "float64", padding=1)
    blocks = backend.plan(problem, small_workspace)
    assert _full_lowering_bytes(problem) > small_workspace
    assert isinstance(blocks, backend.RowsPlan)
    assert 1 < blocks.images < problem.batch and blocks.workspace <= small_workspace
    _assert_within(problem, small_workspace)
    with _config.thread_budget(threads):
        _check_backend(problem)


@pytest.mark.parametrize("x_shape, w_shape, padding", [
    ((1, 3, 200, 190), (4, 3, 3, 3), 1),          # 2-d, split by rows of the output
    ((1, 8, 30000), (2, 8, 101), 50),             # 1-d, split along its only axis
    ((1, 2, 30, 31, 32), (2, 2, 3, 2, 3), 1),     # 3-d, split by planes
    ((1, 16, 90, 40), (3, 16, 3, 3), 1),          # 2-d, A axis shifted, not expanded
])
def test_workspace_cap_splits_one_huge_image(small_workspace, x_shape, w_shape, padding):
    problem = make_problem(x_shape, w_shape, "float64", padding=padding)
    blocks = backend.plan(problem, small_workspace)
    assert isinstance(blocks, backend.RowsPlan)
    assert blocks.images == 1 and blocks.a_rows < problem.out_shape[2]
    assert _full_lowering_bytes(problem) > small_workspace >= blocks.workspace
    _assert_within(problem, small_workspace)
    for threads in (1, 2):
        with _config.thread_budget(threads):
            _check_backend(problem)


def test_workspace_cap_splits_inside_one_row(small_workspace):
    # one output row along the first axis needs ~6 MB lowered: the columns path
    # splits it by output positions
    problem = make_problem((1, 2, 3, 40000), (2, 2, 2, 9), "float64", padding=(0, 4))
    blocks = backend.plan(problem, small_workspace)
    assert isinstance(blocks, backend.ColumnsPlan)
    assert blocks.span < problem.out_shape[-1] and blocks.workspace <= small_workspace
    _assert_within(problem, small_workspace)
    _check_backend(problem)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("x_shape, w_shape", [
    ((37, 8, 9, 11), (4, 8, 3, 3)), ((3, 4, 150, 31), (2, 4, 5, 3)), ((1, 2, 5000), (2, 2, 9)),
])
def test_blocks_cover_every_output_row_once(small_workspace, threads, x_shape, w_shape):
    problem = make_problem(x_shape, w_shape, "float64", padding=1)
    blocks = backend.plan(problem, small_workspace, threads)
    covered = np.zeros((problem.batch, problem.out_shape[2]), int)
    for b0, nb, a0, na in blocks.blocks:
        covered[b0:b0 + nb, a0:a0 + na] += 1
    np.testing.assert_array_equal(covered, 1)
    sizes = {(nb, na) for _, nb, _, na in blocks.blocks}
    assert len({nb for nb, _ in sizes}) <= 2 and len({na for _, na in sizes}) <= 2  # even cuts


def test_work_counts_what_the_plan_does(small_workspace):
    # shifted taps copy K_A times less than the whole column matrix
    problem = make_problem((16, 8, 12, 12), (4, 4, 5, 5), "float64", padding=2, groups=2)
    blocks = backend.plan(problem, small_workspace)
    work = backend.work(problem, small_workspace, threads=1)
    assert blocks.taps == 5 and work["blocks"] == -(-16 // blocks.images)
    assert work["gemm_calls"] == work["blocks"] * blocks.taps * problem.groups
    assert work["copied"] < int(np.prod(_columns_shape(problem)))


def test_workspace_cap_complex_grouped(small_workspace):
    problem = make_problem((3, 8, 70, 70), (8, 2, 3, 3), "complex128", padding=1,
                           stride=(1, 2), groups=4)
    _assert_within(problem, small_workspace)
    _check_backend(problem)


# Every way of cutting and lowering, forced on the shared table
_ALWAYS, _NEVER = 1, 10**9


def _rows_configuration(shift, channels_last, batched):
    return {"SHIFT_MIN_DEPTH": _ALWAYS if shift else _NEVER,
            "CHANNELS_LAST_MIN_DEPTH": _ALWAYS if channels_last else _NEVER,
            "CHANNELS_LAST_MAX_CHANNELS": _NEVER,
            "PER_IMAGE_MIN_POSITIONS": _NEVER if batched else _ALWAYS}


CONFIGURATIONS = {
    f"{'shift' if shift else 'full'}-{'channels-last' if last else 'channels-first'}-"
    f"{'batched' if batched else 'per-image'}": _rows_configuration(shift, last, batched)
    for shift in (True, False) for last in (True, False) for batched in (True, False)}
_SHARED = {"PARALLEL_BLOCK_BYTES": 1, "MIN_BLOCK_BYTES": 1, "MIN_BLOCKS_PER_WORKER": 1,
           "MIN_GEMM_ROWS": 1, "CPUS": 4}
CONFIGURATIONS.update({
    "one-row-blocks": {**_rows_configuration(True, True, False), "TARGET_BLOCK_BYTES": 1},
    "shared-blocks-channels-last": {**_rows_configuration(True, True, True), **_SHARED},
    "shared-blocks-channels-first": {**_rows_configuration(False, False, False), **_SHARED},
    "columns-path": {"_rows_plan": lambda *args: None},
    "lowered-images": {"LOWERED_MAX_ROW_DEPTH": _NEVER},
    "lowered-row-units-shared": {"LOWERED_MAX_ROW_DEPTH": _NEVER, "LOWERED_BLOCK_BYTES": 1,
                                 **_SHARED},
    "columns-tiny-blocks": {"_rows_plan": lambda *args: None,
                            "TARGET_BLOCK_BYTES": 1},
})


@pytest.fixture
def configuration(request, monkeypatch):
    for name, value in CONFIGURATIONS[request.param].items():
        monkeypatch.setattr(backend, name, value)
    backend.plan.cache_clear()
    yield request.param
    backend.plan.cache_clear()


@pytest.mark.parametrize("configuration", list(CONFIGURATIONS), indirect=True)
@pytest.mark.parametrize("case_id", [row[0] for row in SHAPES])
def test_every_path_matches_reference(configuration, case_id):
    dtype = "complex64" if len(case_id) % 2 else "float64"  # both kinds, half the time
    problem, x, w = make_case(case_id, dtype)
    with _config.thread_budget(2):
        got = backend.correlate(x, w, problem)
    _assert_close(got, reference.correlate(x, w, problem), dtype)


def test_batched_blocks_with_shift_and_groups(monkeypatch):
    monkeypatch.setattr(backend, "TARGET_BLOCK_BYTES", 250_000)
    backend.plan.cache_clear()
    try:
        problem = make_problem((7, 64, 6, 7), (32, 32, 3, 4), "float32", padding=((1, 2), (1, 2)),
                               dilation=(2, 1), groups=2)
        blocks = backend.plan(problem, _config.get_workspace_bytes())
        assert blocks.taps == 3 and 1 < blocks.images < 7
        _check_backend(problem)
    finally:
        backend.plan.cache_clear()


@pytest.mark.parametrize("dtype", ["float32", "complex128"])
def test_writes_into_out(dtype):
    problem = make_problem((3, 4, 9, 8), (6, 2, 3, 3), dtype, padding=1, groups=2)
    out = np.full(problem.out_shape, np.nan, dtype)
    assert _check_backend(problem, out=out) is out


def test_writes_into_a_non_contiguous_out():
    problem = make_problem((2, 3, 9, 8), (4, 3, 3, 3), "float64", padding=1)
    storage = np.full(problem.out_shape[::-1], np.nan).T  # Fortran-ordered view
    assert _check_backend(problem, out=storage) is storage


def test_per_image_blocks_into_out():
    # enough positions per image for one GEMM per image, straight into out
    problem = make_problem((3, 2, 40, 40), (3, 2, 3, 3), "float32", padding=1)
    assert backend.plan(problem, _config.get_workspace_bytes()).images == 1
    _check_backend(problem, out=np.full(problem.out_shape, np.nan, np.float32))


def test_non_contiguous_inputs_are_read_not_modified():
    problem = make_problem((2, 3, 8, 9), (4, 3, 3, 3), "float64", padding=1, stride=2)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 16, 9))[:, :, ::2]
    w = np.asfortranarray(rng.standard_normal(problem.w_shape))
    x_before, w_before = x.copy(), w.copy()
    _assert_close(backend.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")
    np.testing.assert_array_equal(x, x_before)
    np.testing.assert_array_equal(w, w_before)


def test_read_only_inputs():
    problem = make_problem((2, 3, 8, 9), (4, 3, 3, 3), "complex64", padding=1)
    rng = np.random.default_rng(6)
    x, w = _random(rng, problem.x_shape, "complex64"), _random(rng, problem.w_shape, "complex64")
    x.setflags(write=False)
    w.setflags(write=False)
    _assert_close(backend.correlate(x, w, problem), reference.correlate(x, w, problem), "complex64")
    _assert_close(backend.col2im(backend.im2col(x, problem), problem),
                  backend.col2im(backend.im2col(x.copy(), problem), problem), "complex64")


def test_empty_problems():
    for x_shape, w_shape in [((0, 2, 5, 5), (3, 2, 3, 3)), ((2, 0, 5, 5), (3, 0, 3, 3)),
                             ((2, 2, 5, 5), (0, 2, 3, 3))]:
        problem = make_problem(x_shape, w_shape, "float64")
        x, w = np.ones(x_shape), np.ones(w_shape)
        got = backend.correlate(x, w, problem)
        np.testing.assert_array_equal(got, reference.correlate(x, w, problem))


def _blas_threads_now():
    return [ctl.num_threads for ctl in _config._blas_controllers()]


def test_thread_budget_one(monkeypatch):
    before = _blas_threads_now()
    seen = []
    gemm_rows = backend._im2col.gemm_rows

    def spy(*args, **kwargs):
        seen.append(_blas_threads_now())
        return gemm_rows(*args, **kwargs)

    monkeypatch.setattr(backend._im2col, "gemm_rows", spy)
    problem = make_problem((4, 3, 12, 12), (5, 3, 3, 3), "float32", padding=1)
    with _config.thread_budget(1):
        _check_backend(problem)
    assert seen and all(t == 1 for threads in seen for t in threads)
    assert _blas_threads_now() == before


@pytest.fixture
def shared_blocks(monkeypatch):
    """Blocks shared out between workers whenever there are two, on any machine."""
    for name, value in _SHARED.items():
        monkeypatch.setattr(backend, name, value)
    backend.plan.cache_clear()
    yield
    backend.plan.cache_clear()


def test_blocks_shared_between_workers(shared_blocks, monkeypatch):
    problem = make_problem((6, 16, 14, 15), (8, 16, 3, 3), "float64", padding=1)
    with _config.thread_budget(2):
        assert backend.plan(problem, _config.get_workspace_bytes(), 2).workers == 2
        seen = []
        gemm_rows = backend._im2col.gemm_rows

        def spy(*args, **kwargs):
            seen.append((threading.current_thread().name, _blas_threads_now()))
            return gemm_rows(*args, **kwargs)

        monkeypatch.setattr(backend._im2col, "gemm_rows", spy)
        before = _blas_threads_now()
        _check_backend(problem)
    assert len(seen) > 2 and all(t == 1 for _, threads in seen for t in threads)
    assert _blas_threads_now() == before


def test_many_python_threads_at_once_sharing_blocks(shared_blocks):
    test_many_python_threads_at_once()


def test_many_python_threads_at_once():
    before = _blas_threads_now()
    problems = [make_problem((3, 4, 20, 20), (6, 4, 3, 3), "float64", padding=1),
                make_problem((2, 4, 30, 30), (4, 2, 3, 3), "complex64", padding=1, groups=2),
                make_problem((1, 2, 300), (3, 2, 7), "float32", stride=2)]
    errors = []

    def work(index):
        problem = problems[index % len(problems)]
        try:
            with _config.thread_budget(1 + index % 2):
                for repeat in range(3):
                    _check_backend(problem, seed=index * 10 + repeat)
        except Exception as exc:  # reported in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert _blas_threads_now() == before


# ---------------------------------------------------------------- gradients by GEMM

from . import naive  # noqa: E402

GRADIENT_CONFIGURATIONS = ["shift-channels-first-batched", "full-channels-last-per-image",
                           "shared-blocks-channels-first", "shared-blocks-channels-last",
                           "one-row-blocks", "columns-path", "columns-tiny-blocks"]
# the uneven geometries, plus a batch that no block size divides
GRADIENT_GEOMETRIES = GEOMETRIES + [((7, 3, 9, 10), (4, 3, 3, 3), 1, 1, 1, 1),
                                    ((5, 4, 8, 7), (6, 2, 3, 2), (1, 2), ((2, 0), (1, 1)), 1, 2)]


def _gradient_data(geometry, dtype, seed):
    problem = _problem(geometry, dtype)
    rng = np.random.default_rng(seed)
    x, w, gy = (_random(rng, shape, dtype) for shape in
                (problem.x_shape, problem.w_shape, problem.out_shape))
    return problem, x, w, gy


def _check_gradients(problem, x, w, gy):
    copies = [a.copy() for a in (x, w, gy)]
    dw = backend.weight_gradient(x, gy, problem)
    dx = backend.input_gradient(gy, w, problem)
    for before, after in zip(copies, (x, w, gy)):
        np.testing.assert_array_equal(before, after)  # caller arrays untouched
    assert dw.shape == problem.w_shape and dx.shape == problem.x_shape
    assert dw.dtype == dx.dtype == problem.dtype
    args = (problem.stride, problem.padding, problem.dilation, problem.groups)
    _assert_close(dw, naive.grad_weight(x, gy, problem.w_shape, *args), problem.dtype)
    _assert_close(dx, naive.grad_input(problem.x_shape, w, gy, *args), problem.dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("configuration", GRADIENT_CONFIGURATIONS, indirect=True)
def test_gradients_by_gemm_on_every_path(configuration, dtype, monkeypatch):
    # the weight gradient shifts A where the forward does, in these configurations
    monkeypatch.setattr(backend, "WEIGHT_SHIFT_MIN_DEPTH", backend.SHIFT_MIN_DEPTH)
    for seed, geometry in enumerate(GRADIENT_GEOMETRIES):
        with _config.thread_budget(2):
            _check_gradients(*_gradient_data(geometry, dtype, seed))


@pytest.fixture
def input_blocks(request, monkeypatch):
    """Input-gradient blocks: several images, or spans of positions of one image."""
    block_bytes, min_columns = request.param
    monkeypatch.setattr(backend, "INPUT_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(backend, "INPUT_MIN_COLUMNS", min_columns)
    monkeypatch.setattr(backend, "CPUS", 4)
    backend.input_gradient_plan.cache_clear()
    yield request.param
    backend.input_gradient_plan.cache_clear()


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("input_blocks", [(1, 7), (12000, 1), (1 << 20, 1)], indirect=True)
def test_input_gradient_blocks(input_blocks, threads):
    problem, x, w, gy = _gradient_data(((9, 4, 6, 7), (6, 2, 3, 2), (2, 1), ((1, 0), (1, 1)),
                                        (1, 2), 2), "float64", seed=11)
    plan = backend.input_gradient_plan(problem, _config.get_workspace_bytes(), threads)
    if input_blocks[0] == 1:
        assert plan.images == 1 and plan.span < plan.positions   # spans of one image
    elif input_blocks[0] == 12000 and threads == 1:
        assert 1 < plan.images < problem.batch                   # uneven image blocks
    elif threads > 1:
        assert plan.workers == threads and plan.images < problem.batch
    with _config.thread_budget(threads):
        _check_gradients(problem, x, w, gy)


def test_gradients_of_empty_problems():
    problem = make_problem((0, 2, 5, 5), (3, 2, 3, 3), "float64")
    x, w, gy = np.zeros(problem.x_shape), np.ones(problem.w_shape), np.zeros(problem.out_shape)
    np.testing.assert_array_equal(backend.weight_gradient(x, gy, problem), 0)
    assert backend.input_gradient(gy, w, problem).shape == problem.x_shape


# ---------------------------------------------------------------- lowered path (few channels)

LOWERED_GEOMETRIES = [
    # (x_shape, w_shape, stride, padding, dilation, groups)
    ((7, 3, 13, 12), (5, 3, 5, 5), 1, 2, 1, 1),                  # conv1-like, odd batch
    ((5, 3, 15, 14), (4, 3, 3, 5), (2, 1), (1, 2), (1, 2), 1),   # stride and dilation
    ((3, 4, 11, 9), (6, 2, 3, 3), (1, 2), ((2, 0), (1, 3)), 1, 2),  # groups, uneven padding
    ((4, 1, 19, 17), (3, 1, 5, 5), 1, 2, 1, 1),                  # one channel
    ((5, 2, 40), (3, 2, 7), 3, 3, 2, 1),                         # 1-d
    ((3, 2, 6, 7, 5), (2, 2, 3, 2, 3), (1, 2, 1), 1, (2, 1, 1), 1),  # 3-d
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("geometry", LOWERED_GEOMETRIES)
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("block_bytes", [1, 1 << 20])   # one output row per unit, whole images
def test_lowered_path_matches_reference(lowered, monkeypatch, dtype, geometry, threads,
                                        block_bytes):
    monkeypatch.setattr(backend, "LOWERED_BLOCK_BYTES", block_bytes)
    monkeypatch.setattr(backend, "MIN_BLOCKS_PER_WORKER", 1)
    backend.plan.cache_clear()
    problem = _problem(geometry, dtype)
    with _config.thread_budget(threads):
        blocks = backend.plan(problem, _config.get_workspace_bytes(), threads)
        assert isinstance(blocks, backend.LoweredPlan)
        assert blocks.workers == threads
        if block_bytes == 1:
            assert blocks.span == problem.out_spatial[-1]
        out = np.full(problem.out_shape, np.nan, dtype)
        assert _check_backend(problem, out=out) is out


def test_lowered_path_is_taken_for_few_channels_only():
    conv1 = make_problem((128, 3, 24, 24), (64, 3, 5, 5), "float32", padding=2)
    conv2 = make_problem((128, 64, 12, 12), (64, 64, 5, 5), "float32", padding=2)
    cap = _config.get_workspace_bytes()
    backend.plan.cache_clear()
    assert not isinstance(backend.plan(conv1, cap, 2), backend.LoweredPlan)  # rows_paths
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(backend, "LOWERED_MAX_ROW_DEPTH", 64)
        backend.plan.cache_clear()
        blocks = backend.plan(conv1, cap, 2)
        assert isinstance(blocks, backend.LoweredPlan)
        assert blocks.span == 24 * 24 and blocks.workers == 2 and blocks.rows == 75
        assert isinstance(backend.plan(conv2, cap, 2), backend.RowsPlan)
        work = backend.work(conv1, cap, threads=2)
        assert work == {"copied": 75 * 128 * 576, "accumulated": 64 * 128 * 576,
                        "gemm_calls": 128, "blocks": 128, "workers": 2, "dispatches": 2}
    backend.plan.cache_clear()


def test_lowered_path_splits_a_huge_image_by_output_rows(lowered, small_workspace):
    problem = make_problem((1, 3, 300, 200), (4, 3, 3, 3), "float64", padding=1)
    blocks = backend.plan(problem, small_workspace, 2)
    assert isinstance(blocks, backend.LoweredPlan)
    assert blocks.span % 200 == 0 and blocks.span < blocks.positions
    assert blocks.workers * blocks.workspace <= small_workspace
    for threads in (1, 2):
        with _config.thread_budget(threads):
            _check_backend(problem)


def test_lowered_kernel_needs_matching_shapes():
    _compiled.bind_blas(backend._im2col)
    x = np.zeros((1, 2, 1, 1, 5))
    out = np.zeros((1, 1, 4))
    args = ((1, 1, 2), (1, 1, 1), (1, 1, 1), (0, 0, 0), (1, 1, 4), 4, np.zeros(1, np.intp))
    with pytest.raises(ValueError):
        backend._im2col.lowered_gemm(x, np.zeros((1, 1, 2)), out, np.zeros(16), *args)
    with pytest.raises(ValueError):   # scratch too small for 4 positions of 4 rows
        backend._im2col.lowered_gemm(x, np.zeros((1, 1, 4)), out, np.zeros(8), *args)


@pytest.mark.parametrize("path", ["lowered", "rows"])
@pytest.mark.parametrize("dtype", ["float32", "float64", "complex64"])
def test_bias_is_added_per_output_channel(monkeypatch, path, dtype):
    if path == "lowered":
        monkeypatch.setattr(backend, "LOWERED_MAX_ROW_DEPTH", 10**9)
        monkeypatch.setattr(backend, "LOWERED_BLOCK_BYTES", 1)   # several units per image
    backend.plan.cache_clear()
    problem = make_problem((3, 4, 9, 8), (6, 2, 3, 3), dtype, padding=1, groups=2, stride=(1, 2))
    assert isinstance(backend.plan(problem, _config.get_workspace_bytes(), 2),
                      backend.LoweredPlan if path == "lowered" else backend.RowsPlan)
    rng = np.random.default_rng(3)
    x, w = _random(rng, problem.x_shape, dtype), _random(rng, problem.w_shape, dtype)
    bias = _random(rng, (6,), dtype)
    bias_before = bias.copy()
    expected = reference.correlate(x, w, problem) + bias.reshape(-1, 1, 1)
    for threads in (1, 2):
        with _config.thread_budget(threads):
            out = np.full(problem.out_shape, np.nan, dtype)
            got = backend.correlate(x, w, problem, out=out, bias=bias)
        assert got is out
        _assert_close(got, expected, dtype)
    np.testing.assert_array_equal(bias, bias_before)


@pytest.mark.parametrize("span", [1, 5, 7, 100])
def test_lowered_kernel_any_span(span):
    # spans that are not whole output rows go through the general lowering
    _compiled.bind_blas(backend._im2col)
    problem = make_problem((3, 2, 6, 7), (4, 2, 3, 2), "float64", padding=1, stride=(2, 1))
    rng = np.random.default_rng(1)
    x, w = _random(rng, problem.x_shape, "float64"), _random(rng, problem.w_shape, "float64")
    out = np.full(problem.out_shape, np.nan)
    counter = np.zeros(1, np.intp)
    backend._im2col.lowered_gemm(x.reshape(backend._x5(problem)), w.reshape(1, 4, -1),
                                 out.reshape(3, 4, -1), np.empty(12 * span),
                                 *backend._columns_geometry(problem), span, counter)
    _assert_close(out, reference.correlate(x, w, problem), "float64")
    assert counter[0] >= 3 * -(-problem.out_shape[2] * problem.out_shape[3] // span)
