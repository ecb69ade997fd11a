"""fastconv.nn.local_response_norm and its gradient, against plain loops and torch."""
from __future__ import annotations

import numpy as np
import pytest

from fastconv.nn.lrn import local_response_norm, local_response_norm_input

try:  # tests as a package or as a plain directory on sys.path
    from . import naive_pool as naive
except ImportError:
    import naive_pool as naive

SHAPES = [(2, 7, 5), (2, 6, 3, 4), (1, 5, 2, 3, 2)]
# (size, alpha, beta, k): the sqrt-chain betas and a general one
PARAMS = [(1, 0.5, 0.75, 1.0), (4, 2.0, 0.75, 1.0), (5, 1e-1, 0.5, 2.0), (9, 3.0, 1.0, 0.5),
          (3, 0.7, 0.6, 1.5), (12, 1e-4, 0.75, 1.0)]


def _data(shape, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("params", PARAMS)
def test_matches_loops(shape, params):
    x = _data(shape)
    np.testing.assert_allclose(local_response_norm(x, *params), naive.lrn_torch(x, *params),
                               rtol=1e-13, atol=1e-14)


def test_float32_stays_float32():
    x = _data((2, 16, 4, 4), "float32")
    out = local_response_norm(x, 9, 1e-3, 0.75, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, naive.lrn_torch(x.astype(np.float64), 9, 1e-3, 0.75, 1.0),
                               rtol=1e-6)
    grad = local_response_norm_input(x, x, 9, 1e-3, 0.75, 1.0)
    assert grad.dtype == np.float32


@pytest.mark.parametrize("shape", SHAPES[:2])
@pytest.mark.parametrize("params", PARAMS[1:5])
def test_gradient_by_finite_differences(shape, params):
    x, g = _data(shape), _data(shape, seed=1)
    grad = local_response_norm_input(x, g, *params)
    eps = 1e-6
    for i in [(0, 0) + (0,) * (len(shape) - 2), (1, 3) + (1,) * (len(shape) - 2),
              (1, shape[1] - 1) + (2,) * (len(shape) - 2)]:
        e = np.zeros_like(x)
        e[i] = eps
        numeric = np.sum(g * (local_response_norm(x + e, *params)
                              - local_response_norm(x - e, *params))) / (2 * eps)
        assert grad[i] == pytest.approx(numeric, rel=1e-6, abs=1e-9)


def test_gradient_is_the_transposed_jacobian():
    # <J v, g> == <v, J^T g>, with J v by central differences along v
    x, v, g = _data((2, 6, 7)), _data((2, 6, 7), seed=2), _data((2, 6, 7), seed=3)
    eps = 1e-6
    jv = (local_response_norm(x + eps * v, 4, 2.0, 0.75, 1.0)
          - local_response_norm(x - eps * v, 4, 2.0, 0.75, 1.0)) / (2 * eps)
    jtg = local_response_norm_input(x, g, 4, 2.0, 0.75, 1.0)
    assert np.sum(jv * g) == pytest.approx(np.sum(v * jtg), rel=1e-7)


def test_input_untouched_and_strided_input():
    x = _data((2, 8, 6, 6))
    keep = x.copy()
    view = x[:, :, ::2, 1::2]
    np.testing.assert_array_equal(local_response_norm(view, 3), local_response_norm(view.copy(), 3))
    np.testing.assert_array_equal(x, keep)


def test_bad_arguments():
    x = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match="3 or more"):
        local_response_norm(np.zeros((3, 4)), 2)
    with pytest.raises(ValueError, match="size"):
        local_response_norm(x, 0)
    with pytest.raises(TypeError, match="size"):
        local_response_norm(x, 2.0)
    with pytest.raises(TypeError, match="alpha"):
        local_response_norm(x, 2, alpha="1")
    with pytest.raises(ValueError, match="beta"):
        local_response_norm(x, 2, beta=np.inf)
    with pytest.raises(TypeError, match="input"):
        local_response_norm(x.astype(np.int32), 2)
    with pytest.raises(ValueError, match="grad_output"):
        local_response_norm_input(x, np.zeros((2, 3, 5)), 2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("params", PARAMS)
def test_matches_torch(shape, params):
    torch = pytest.importorskip("torch")
    x, g = _data(shape), _data(shape, seed=1)
    xt = torch.from_numpy(x).requires_grad_()
    out_t = torch.nn.functional.local_response_norm(xt, *params)
    out_t.backward(torch.from_numpy(g))
    np.testing.assert_allclose(local_response_norm(x, *params), out_t.detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(local_response_norm_input(x, g, *params), xt.grad.numpy(),
                               rtol=1e-10, atol=1e-13)
