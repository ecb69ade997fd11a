"""fastconv.nn max/avg pooling and their gradients, against plain loops and torch."""
from __future__ import annotations

import numpy as np
import pytest

from fastconv.nn import pooling as P

try:  # tests as a package or as a plain directory on sys.path
    from . import naive_pool as naive
except ImportError:
    import naive_pool as naive

TOL = {"float32": 1e-5, "float64": 1e-12}

# (ndim, x_shape, kernel, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    (1, (2, 3, 11), 3, None, 0, 1, False),
    (1, (1, 2, 12), 4, 3, 2, 2, True),
    (2, (2, 2, 9, 10), 3, 2, 1, 1, False),
    (2, (1, 3, 8, 7), (2, 3), (2, 1), (1, 0), (2, 1), True),
    (2, (2, 1, 7, 7), 3, 2, 1, 1, True),
    (2, (1, 2, 6, 5), 1, 2, 0, 1, False),
    (2, (1, 1, 10, 9), (3, 2), 3, (1, 1), 1, True),
    (3, (1, 2, 5, 6, 7), 2, (1, 2, 2), (1, 0, 1), (1, 2, 1), True),
    (3, (2, 1, 4, 5, 6), (3, 2, 2), None, 0, 1, False),
]

AVG_CASES = [
    (1, (2, 3, 11), 3, None, 0, False),
    (1, (1, 2, 12), 4, 3, 2, True),
    (2, (2, 2, 9, 10), 3, 2, 1, False),
    (2, (1, 3, 8, 7), (2, 3), (2, 1), (1, 0), True),
    (2, (2, 1, 7, 7), 3, 2, 1, True),
    (2, (1, 1, 6, 6), 2, 3, 1, True),
    (3, (1, 2, 5, 6, 7), 2, (1, 2, 2), (1, 0, 1), True),
    (3, (2, 1, 4, 5, 6), (3, 2, 2), None, 0, False),
]


def _tuple(v, nd):
    return (v,) * nd if isinstance(v, int) else tuple(v)


def _geometry(nd, shape, kernel, stride, padding, dilation, ceil_mode):
    kernel = _tuple(kernel, nd)
    stride = kernel if stride is None else _tuple(stride, nd)
    padding, dilation = _tuple(padding, nd), _tuple(dilation, nd)
    out = [naive.torch_pool_size(n, k, p, s, d, ceil_mode)
           for n, k, p, s, d in zip(shape[2:], kernel, padding, stride, dilation)]
    return kernel, stride, padding, dilation, out


def _data(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", MAX_CASES, ids=lambda c: f"{c[0]}d-{c[1]}")
def test_max_pool_matches_loops(case, dtype):
    nd, shape, kernel, stride, padding, dilation, ceil_mode = case
    x = _data(shape, dtype)
    x.flat[::7] = x.flat[3]  # ties
    k, s, p, d, out_spatial = _geometry(nd, shape, kernel, stride, padding, dilation, ceil_mode)
    expected, expected_idx = naive.max_pool(x, k, s, p, d, out_spatial)
    fn = getattr(P, f"max_pool{nd}d")
    out, idx = fn(x, kernel, stride, padding, dilation, ceil_mode, return_indices=True)
    assert out.dtype == x.dtype and idx.dtype == np.int64
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(idx, expected_idx)
    np.testing.assert_array_equal(fn(x, kernel, stride, padding, dilation, ceil_mode), expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", AVG_CASES, ids=lambda c: f"{c[0]}d-{c[1]}")
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool_matches_loops(case, dtype, include):
    nd, shape, kernel, stride, padding, ceil_mode = case
    x = _data(shape, dtype)
    k, s, p, _, out_spatial = _geometry(nd, shape, kernel, stride, padding, 1, ceil_mode)
    expected = naive.avg_pool(x, k, s, p, p, out_spatial, include)
    out = getattr(P, f"avg_pool{nd}d")(x, kernel, stride, padding, ceil_mode, include)
    assert out.dtype == x.dtype
    np.testing.assert_allclose(out, expected, rtol=TOL[dtype], atol=TOL[dtype])


def test_unbatched_input_and_no_mutation():
    x = _data((3, 8, 8), "float32")
    keep = x.copy()
    out, idx = P.max_pool2d(x, 2, return_indices=True)
    batched, batched_idx = P.max_pool2d(x[None], 2, return_indices=True)
    np.testing.assert_array_equal(out, batched[0])
    np.testing.assert_array_equal(idx, batched_idx[0])
    np.testing.assert_array_equal(P.avg_pool2d(x, 3, 1, 1), P.avg_pool2d(x[None], 3, 1, 1)[0])
    np.testing.assert_array_equal(x, keep)
    strided = _data((2, 3, 16, 16), "float64")[:, :, ::2, ::2]
    np.testing.assert_array_equal(P.max_pool2d(strided, 2), P.max_pool2d(strided.copy(), 2))


def test_ties_go_to_first_maximum_in_row_major_order():
    x = np.array([3.0, 1.0, 3.0, 2.0]).reshape(1, 1, 4)
    _, idx = P.max_pool1d(x, 4, return_indices=True)
    assert idx.item() == 0
    plane = np.array([[1.0, 5.0], [5.0, 5.0]]).reshape(1, 1, 2, 2)
    _, idx = P.max_pool2d(plane, 2, return_indices=True)
    assert idx.item() == 1  # (0, 1) comes before (1, 0) and (1, 1)
    column = np.array([[1.0, 2.0], [7.0, 0.0], [7.0, 7.0]]).reshape(1, 1, 3, 2)
    _, idx = P.max_pool2d(column, (3, 2), return_indices=True)
    assert idx.item() == 2


def test_nan_windows_give_nan():
    x = np.array([1.0, np.nan, 2.0, np.nan, 0.5, 4.0, 1.0, 3.0]).reshape(1, 1, 8)
    out, idx = P.max_pool1d(x, 4, return_indices=True)
    assert np.isnan(out[0, 0, 0]) and out[0, 0, 1] == 4.0
    assert idx[0, 0, 0] == 3  # torch keeps the last NaN of the window
    plane = np.array([[1.0, np.nan], [np.nan, 2.0]]).reshape(1, 1, 2, 2)
    out, idx = P.max_pool2d(plane, 2, return_indices=True)
    assert np.isnan(out.item()) and idx.item() == 2
    assert np.isnan(P.avg_pool2d(plane, 2).item())


def test_window_of_minus_infinity_keeps_first_cell_inside():
    x = np.full((1, 1, 4), -np.inf)
    out, idx = P.max_pool1d(x, 3, 1, 1, return_indices=True)
    assert np.all(out == -np.inf)
    np.testing.assert_array_equal(idx.ravel(), [0, 0, 1, 2])


def test_ceil_mode_windows_and_divisors():
    # 5 cells, kernel 2, stride 2, ceil_mode: a third window holding only cell 4
    x = np.arange(5.0).reshape(1, 1, 5)
    np.testing.assert_array_equal(P.max_pool1d(x, 2, ceil_mode=True).ravel(), [1, 3, 4])
    np.testing.assert_array_equal(P.avg_pool1d(x, 2, ceil_mode=True).ravel(), [0.5, 2.5, 4.0])
    # kernel 3, stride 2, padding 1: windows [-1, 2), [1, 4), [3, 6), divisors clipped to [-1, 6)
    out = P.avg_pool1d(x, 3, 2, 1, ceil_mode=True)
    np.testing.assert_allclose(out.ravel(), [1 / 3, 2.0, 7 / 3])
    out = P.avg_pool1d(x, 3, 2, 1, ceil_mode=True, count_include_pad=False)
    np.testing.assert_allclose(out.ravel(), [0.5, 2.0, 3.5])
    # kernel 2, stride 2, padding 1: ceil would add a window starting at 5, inside the right
    # padding only; torch drops it (a last window must start inside input + left padding)
    out, idx = P.max_pool1d(x, 2, 2, 1, ceil_mode=True, return_indices=True)
    np.testing.assert_array_equal(out.ravel(), [0, 2, 4])
    np.testing.assert_array_equal(idx.ravel(), [0, 2, 4])
    np.testing.assert_allclose(P.avg_pool1d(x, 2, 2, 1, ceil_mode=True).ravel(), [0, 1.5, 3.5])


@pytest.mark.parametrize("case", MAX_CASES[2:5], ids=lambda c: f"{c[0]}d-{c[1]}")
def test_max_pool_gradient_matches_loops_and_indices(case):
    nd, shape, kernel, stride, padding, dilation, ceil_mode = case
    x = _data(shape, "float64")
    x.flat[::5] = x.flat[2]
    k, s, p, d, out_spatial = _geometry(nd, shape, kernel, stride, padding, dilation, ceil_mode)
    g = _data(x.shape[:2] + tuple(out_spatial), "float64", seed=1)
    expected = naive.max_pool_input(x, g, k, s, p, d)
    grad = getattr(P, f"max_pool{nd}d_input")(x, g, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_allclose(grad, expected, rtol=1e-12, atol=1e-12)
    _, idx = getattr(P, f"max_pool{nd}d")(x, kernel, stride, padding, dilation, ceil_mode,
                                          return_indices=True)
    np.testing.assert_allclose(P.max_pool_scatter(g, idx, x.shape), expected, atol=1e-12)


def test_max_pool_gradient_by_finite_differences():
    rng = np.random.default_rng(3)
    x = rng.permutation(2 * 2 * 6 * 7).reshape(2, 2, 6, 7).astype(np.float64)  # no ties
    g = rng.standard_normal(P.max_pool2d(x, 3, 2, 1, ceil_mode=True).shape)
    grad = P.max_pool2d_input(x, g, 3, 2, 1, ceil_mode=True)
    eps, numeric = 1e-3, np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        e = np.zeros_like(x)
        e[i] = eps
        numeric[i] = np.sum(g * (P.max_pool2d(x + e, 3, 2, 1, ceil_mode=True)
                                 - P.max_pool2d(x - e, 3, 2, 1, ceil_mode=True))) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, atol=1e-8)


@pytest.mark.parametrize("case", AVG_CASES, ids=lambda c: f"{c[0]}d-{c[1]}")
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool_gradient_adjoint(case, include):
    nd, shape, kernel, stride, padding, ceil_mode = case
    x = _data(shape, "float64")
    y = P.avg_pool1d if nd == 1 else P.avg_pool2d if nd == 2 else P.avg_pool3d
    out = y(x, kernel, stride, padding, ceil_mode, include)
    g = _data(out.shape, "float64", seed=2)
    grad = getattr(P, f"avg_pool{nd}d_input")(shape, g, kernel, stride, padding, ceil_mode,
                                              include)
    assert grad.shape == shape
    np.testing.assert_allclose(np.sum(out * g), np.sum(x * grad), rtol=1e-12)
    np.testing.assert_array_equal(
        grad, getattr(P, f"avg_pool{nd}d_input")(x, g, kernel, stride, padding, ceil_mode,
                                                 include))


def test_avg_pool_gradient_unbatched_and_finite_differences():
    x = _data((2, 5, 6), "float64")
    g = _data(P.avg_pool2d(x, 2, 2, 1).shape, "float64", seed=4)
    grad = P.avg_pool2d_input(x.shape, g, 2, 2, 1, count_include_pad=False)
    eps = 1e-6
    e = np.zeros_like(x)
    e[1, 2, 3] = eps
    numeric = np.sum(g * (P.avg_pool2d(x + e, 2, 2, 1, count_include_pad=False)
                          - P.avg_pool2d(x - e, 2, 2, 1, count_include_pad=False))) / (2 * eps)
    assert grad[1, 2, 3] == pytest.approx(numeric, rel=1e-7)


def test_empty_batch():
    x = np.zeros((0, 2, 6, 6), np.float32)
    out, idx = P.max_pool2d(x, 2, return_indices=True)
    assert out.shape == idx.shape == (0, 2, 3, 3)
    assert P.avg_pool2d(x, 2).shape == (0, 2, 3, 3)
    assert P.max_pool2d_input(x, np.zeros((0, 2, 3, 3), np.float32), 2).shape == x.shape


@pytest.mark.parametrize("kwargs, message", [
    (dict(kernel_size=3, padding=2), "padding"),
    (dict(kernel_size=3, padding=-1), "padding"),
    (dict(kernel_size=0), "kernel_size"),
    (dict(kernel_size=2, stride=0), "stride"),
    (dict(kernel_size=2, dilation=0), "dilation"),
    (dict(kernel_size=9), "output size"),
    (dict(kernel_size=(2, 2, 2)), "kernel_size"),
    (dict(kernel_size=2.5), "kernel_size"),
])
def test_bad_arguments_name_the_argument(kwargs, message):
    x = np.zeros((1, 1, 8, 8))
    with pytest.raises((ValueError, TypeError), match=message):
        P.max_pool2d(x, **kwargs)


def test_bad_inputs():
    with pytest.raises(ValueError, match="input"):
        P.max_pool2d(np.zeros((8, 8)), 2)
    with pytest.raises(ValueError, match="input"):
        P.avg_pool1d(np.zeros((1, 1, 1, 8)), 2)
    with pytest.raises(ValueError, match="non-empty"):
        P.max_pool2d(np.zeros((1, 0, 8, 8)), 2)
    with pytest.raises(TypeError, match="input"):
        P.max_pool2d(np.zeros((1, 1, 8, 8), np.int64), 2)
    with pytest.raises(ValueError, match="grad_output"):
        P.max_pool2d_input(np.zeros((1, 1, 8, 8)), np.zeros((1, 1, 3, 3)), 2)
    with pytest.raises(ValueError, match="input_size"):
        P.avg_pool2d_input((8, 8), np.zeros((1, 1, 4, 4)), 2)
    with pytest.raises(ValueError, match="indices"):
        P.max_pool_scatter(np.ones((1, 1, 2)), np.array([[[0, 9]]]), (1, 1, 4))
    with pytest.raises(ValueError, match="indices"):
        P.max_pool_scatter(np.ones((1, 1, 2)), np.array([[[0, 1, 2]]]), (1, 1, 4))
    with pytest.raises(TypeError, match="indices"):
        P.max_pool_scatter(np.ones((1, 1, 2)), np.ones((1, 1, 2)), (1, 1, 4))


# --- torch, where installed ----------------------------------------------------------------

@pytest.mark.parametrize("case", MAX_CASES, ids=lambda c: f"{c[0]}d-{c[1]}")
def test_max_pool_matches_torch(case):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    nd, shape, kernel, stride, padding, dilation, ceil_mode = case
    x = _data(shape, "float32")
    x.flat[::4] = x.flat[1]
    x.flat[5] = np.nan
    xt = torch.from_numpy(x).requires_grad_()
    out_t, idx_t = getattr(F, f"max_pool{nd}d")(xt, kernel, stride, padding, dilation,
                                                ceil_mode, return_indices=True)
    out, idx = getattr(P, f"max_pool{nd}d")(x, kernel, stride, padding, dilation, ceil_mode,
                                            return_indices=True)
    np.testing.assert_array_equal(out, out_t.detach().numpy())
    np.testing.assert_array_equal(idx, idx_t.numpy())
    g = _data(out.shape, "float32", seed=5)
    out_t.backward(torch.from_numpy(g))
    grad = getattr(P, f"max_pool{nd}d_input")(x, g, kernel, stride, padding, dilation, ceil_mode)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("case", AVG_CASES, ids=lambda c: f"{c[0]}d-{c[1]}")
@pytest.mark.parametrize("include", [True, False])
def test_avg_pool_matches_torch(case, include):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    nd, shape, kernel, stride, padding, ceil_mode = case
    x = _data(shape, "float64")
    xt = torch.from_numpy(x).requires_grad_()
    out_t = getattr(F, f"avg_pool{nd}d")(xt, kernel, stride, padding, ceil_mode, include)
    out = getattr(P, f"avg_pool{nd}d")(x, kernel, stride, padding, ceil_mode, include)
    np.testing.assert_allclose(out, out_t.detach().numpy(), rtol=1e-12, atol=1e-12)
    g = _data(out.shape, "float64", seed=6)
    out_t.backward(torch.from_numpy(g))
    grad = getattr(P, f"avg_pool{nd}d_input")(shape, g, kernel, stride, padding, ceil_mode,
                                              include)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12)
