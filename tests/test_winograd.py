"""The Winograd backend: its transforms, forward pass and weight gradient against the reference."""
import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastconv import _config, dispatch
from fastconv.backends import _compiled, reference, winograd
from fastconv.nn import grad as nn_grad
from fastconv.problem import make_problem

pytestmark = pytest.mark.skipif(not winograd.available(), reason=winograd.UNAVAILABLE_REASON)

TRANSFORMS = sorted({(a - r + 1, r) for r, sizes in winograd.TRANSFORM_SIZES.items()
                     for a in sizes})
TOL = {"float32": 2e-4, "float64": 1e-10}


def _close(got, want, dtype):
    scale = max(np.abs(want).max(initial=0), 1.0)
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("m,r", TRANSFORMS)
def test_transform_computes_the_correlation(m, r):
    t = winograd.transform(m, r)
    assert t.at.shape == (m, t.a) and t.g.shape == (t.a, r) and t.bt.shape == (t.a, t.a)
    rng = np.random.default_rng(m * 10 + r)
    d, k = rng.standard_normal(t.a), rng.standard_normal(r)
    want = np.array([d[i:i + r] @ k for i in range(m)])
    np.testing.assert_allclose(t.at @ ((t.g @ k) * (t.bt @ d)), want, rtol=1e-12, atol=1e-12)


def test_transform_matches_the_published_f23():
    # Lavin & Gray's F(2, 3), up to the sign of one transform point (kept in G and B^T)
    t = winograd.transform(2, 3)
    np.testing.assert_array_equal(t.at, [[1, 1, 1, 0], [0, 1, -1, 1]])
    np.testing.assert_array_equal(np.abs(t.bt), [[1, 0, 1, 0], [0, 1, 1, 0], [0, 1, 1, 0],
                                                 [0, 1, 0, 1]])


def _case(x_shape, w_shape, dtype, padding, groups=1, seed=0):
    problem = make_problem(x_shape, w_shape, dtype, padding=padding, groups=groups)
    rng = np.random.default_rng(seed)
    return (problem, rng.standard_normal(x_shape).astype(dtype),
            rng.standard_normal(w_shape).astype(dtype))


LAYERS = [
    # x, w, padding, groups: layers, partial edge tiles, batches that leave padding images
    ((3, 5, 13, 11), (4, 5, 3, 3), 1, 1),
    ((9, 4, 12, 12), (6, 4, 5, 5), 2, 1),
    ((2, 6, 10, 9), (4, 3, 3, 3), ((0, 2), (1, 1)), 2),
    ((11, 3, 7, 8), (2, 3, 2, 4), 0, 1),
    ((2, 3, 9, 9), (4, 3, 5, 1), ((2, 2), (0, 0)), 1),
    ((4, 2, 40), (3, 2, 5), 2, 1),
    # blocks of 8 images (the transposed stores), a short last block, rows of 8k+r outputs
    ((16, 3, 19, 21), (5, 3, 3, 3), 1, 1),
    ((15, 2, 10, 17), (3, 2, 5, 5), 2, 1),
]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("x_shape,w_shape,padding,groups", LAYERS)
def test_forward_matches_reference(x_shape, w_shape, padding, groups, dtype):
    problem, x, w = _case(x_shape, w_shape, dtype, padding, groups)
    assert winograd.supports(problem)
    bias = np.linspace(-1, 1, w_shape[0]).astype(dtype)
    want = reference.correlate(x, w, problem)
    _close(winograd.correlate(x, w, problem), want, dtype)
    _close(winograd.correlate(x, w, problem, bias=bias),
           want + bias.reshape((-1,) + (1,) * problem.ndim), dtype)


@pytest.mark.parametrize("sizes", [(4,), (6,)])
def test_both_transforms_of_a_3x3_kernel(monkeypatch, sizes):
    monkeypatch.setitem(winograd.TRANSFORM_SIZES, 3, sizes)
    winograd._plan.cache_clear()
    try:
        problem, x, w = _case((5, 4, 15, 14), (3, 4, 3, 3), "float32", 1)
        assert winograd.plan(problem).transforms[0].a == sizes[0]
        _close(winograd.correlate(x, w, problem), reference.correlate(x, w, problem), "float32")
    finally:
        winograd._plan.cache_clear()


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_units_shared_between_workers(threads):
    problem, x, w = _case((17, 3, 20, 20), (5, 3, 3, 3), "float64", 1)
    want = reference.correlate(x, w, problem)
    with _config.thread_budget(threads):
        p = winograd.plan(problem)
        assert p.units >= threads
        _close(winograd.correlate(x, w, problem), want, "float64")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("x_shape,w_shape,padding,groups", LAYERS)
def test_weight_gradient_matches_reference(x_shape, w_shape, padding, groups, dtype):
    problem, x, w = _case(x_shape, w_shape, dtype, padding, groups)
    gy = np.random.default_rng(5).standard_normal(problem.out_shape).astype(dtype)
    got = winograd.weight_gradient(x, gy, problem)
    conv_weight = getattr(nn_grad, f"conv{problem.ndim}d_weight")
    want = conv_weight(x.astype(np.float64), w_shape, gy.astype(np.float64), padding=padding,
                       groups=groups, method="reference")
    assert got.shape == w_shape and got.dtype == np.dtype(dtype)
    _close(got, want, dtype)


def test_many_python_threads_at_once_get_correct_results():
    # the calls share the worker pool and the pooled scratch blocks
    jobs = [_case((9 + i, 3, 11 + i, 10), (4, 3, 3 + 2 * (i % 2), 3), "float64", 1, seed=i)
            for i in range(6)]
    results = [None] * len(jobs)

    def work(i):
        problem, x, w = jobs[i]
        results[i] = [winograd.correlate(x, w, problem) for _ in range(3)]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (problem, x, w), got in zip(jobs, results):
        for result in got:
            _close(result, reference.correlate(x, w, problem), "float64")


def test_weight_gradient_is_the_adjoint_of_the_forward_pass():
    problem, x, w = _case((6, 3, 11, 10), (4, 3, 5, 5), "float64", 2)
    gy = np.random.default_rng(3).standard_normal(problem.out_shape)
    forward = np.vdot(winograd.correlate(x, w, problem), gy)
    adjoint = np.vdot(w, winograd.weight_gradient(x, gy, problem))
    assert abs(forward - adjoint) <= 1e-10 * abs(forward)


def test_offered_only_where_it_is_exact_and_defined():
    plain = make_problem((2, 3, 8, 8), (4, 3, 3, 3), "float64", padding=1)
    assert winograd.supports(plain)
    for p in (make_problem((2, 3, 8, 8), (4, 3, 3, 3), "float64", stride=2),
              make_problem((2, 3, 8, 8), (4, 3, 3, 3), "float64", dilation=2),
              make_problem((2, 3, 8, 8), (4, 3, 7, 7), "float64", padding=3),
              make_problem((2, 3, 8, 8), (4, 3, 1, 1), "float64"),
              make_problem((2, 3, 8, 8, 8), (4, 3, 3, 3, 3), "float64"),
              plain.with_facts(has_nonfinite=True),
              make_problem((2, 3, 8, 8), (4, 3, 3, 3), "float64", int_bound=100.0)):
        assert not winograd.supports(p)


def test_nan_keeps_auto_away_and_stays_local():
    problem, x, w = _case((8, 16, 12, 12), (16, 16, 3, 3), "float64", 1)
    x[0, 0, 5, 5] = np.nan
    choice = dispatch.choose(problem, x, w)
    assert choice.name != "winograd"
    got = dispatch.correlate(x, w, problem)
    assert np.isnan(got[0, :, 4:7, 4:7]).all()
    assert np.isfinite(got[0, :, :4]).all() and np.isfinite(got[1:]).all()


def test_workspace_cap_is_respected(monkeypatch):
    problem = make_problem((2, 512, 8, 8), (512, 512, 3, 3), "float64", padding=1)
    assert winograd.supports(problem)
    monkeypatch.setattr(_config, "_workspace_bytes", 1 << 20)
    winograd._plan.cache_clear()
    try:
        assert not winograd.supports(problem)   # the transformed weights alone need 18 MiB
    finally:
        winograd._plan.cache_clear()


def test_layer_gradients_run_on_winograd_when_it_is_cheapest():
    problem = make_problem((32, 64, 12, 12), (64, 64, 5, 5), "float32", padding=2)
    assert dispatch.choose(problem).name == "winograd"
    rng = np.random.default_rng(0)
    x = rng.standard_normal(problem.x_shape).astype(np.float32)
    gy = rng.standard_normal(problem.out_shape).astype(np.float32)
    assert nn_grad._weight_backend(problem, x, gy, "auto") is winograd
    assert nn_grad._weight_backend(problem, x, gy, "winograd") is winograd
    gy[0, 0, 0, 0] = np.inf
    assert nn_grad._weight_backend(problem, x, gy, "auto") is None   # the correlations instead


def test_kernel_refuses_mismatched_arguments():
    _compiled.bind_blas(winograd._winograd)
    t = winograd.transform(2, 3)
    one = np.ones((1, 1))
    xb = np.zeros((1, 1, 1, 6, 1))
    u = np.zeros((4, 1, 1, 1))
    out = np.empty((1, 1, 1, 4))
    args = (one, t.bt, one, t.at, (1, 2), (0, 0), 2, np.zeros(1, np.intp))
    with pytest.raises(ValueError, match="scratch"):
        winograd._winograd.forward(xb, u, out, np.empty(3), *args)
    with pytest.raises(ValueError, match="transformed weights"):
        winograd._winograd.forward(xb, np.zeros((9, 1, 1, 1)), out, np.empty(64), *args)
    with pytest.raises(ValueError, match="do not cover"):
        winograd._winograd.forward(xb, u, out, np.empty(64), one, t.bt, one, t.at, (1, 1),
                                   (0, 0), 2, np.zeros(1, np.intp))


@settings(max_examples=30, deadline=None)
@given(n=st.integers(1, 10), c=st.integers(1, 4), o=st.integers(1, 4),
       size=st.tuples(st.integers(1, 12), st.integers(1, 12)),
       kernel=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       pad=st.tuples(st.integers(0, 3), st.integers(0, 3)), seed=st.integers(0, 2**16))
def test_random_layers_match_reference(n, c, o, size, kernel, pad, seed):
    if kernel == (1, 1) or any(s + 2 * p < k for s, p, k in zip(size, pad, kernel)):
        return
    problem, x, w = _case((n, c) + size, (o, c) + kernel, "float64", pad, seed=seed)
    assert winograd.supports(problem)
    _close(winograd.correlate(x, w, problem), reference.correlate(x, w, problem), "float64")
