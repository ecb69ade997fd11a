"""Unshared and tiled convolution and their gradients against plain loops."""
import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import grad

from . import naive

# (id, x_shape, out_channels, kernel, stride, padding pairs, tiles)
CASES = [
    ("plain", (2, 3, 6, 5), 4, (3, 2), (1, 1), ((0, 0), (0, 0)), (2, 2)),
    ("stride-pad", (1, 2, 7, 8), 3, (3, 3), (2, 3), ((1, 2), (0, 1)), (3, 2)),
    ("tiles-beyond-output", (2, 1, 5, 5), 2, (2, 2), (2, 2), ((0, 0), (1, 1)), (4, 5)),
    ("untouched-tail", (1, 2, 9, 8), 2, (2, 2), (3, 3), ((0, 0), (0, 0)), (1, 2)),
]
IDS = [case[0] for case in CASES]
TOL = {"float32": 1e-4, "float64": 1e-11}


def _setup(case, dtype, kind, seed=0):
    _, x_shape, o, kernel, stride, padding, tiles = case
    out = naive.out_size(x_shape[2:], kernel, padding, stride, (1, 1))
    shape = ((o,) + out + (x_shape[1],) + kernel if kind == "unshared"
             else (o, x_shape[1]) + kernel + tiles)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    k = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal((x_shape[0], o) + out).astype(dtype)
    return x, k, g, stride, padding


def _close(got, want, dtype):
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_unshared_matches_loops(case, dtype):
    x, k, g, stride, padding = _setup(case, dtype, "unshared")
    z = nn.unshared_conv2d(x, k, stride, padding)
    dk = grad.unshared_conv2d_weight(x, k.shape, g, stride, padding)
    dx = grad.unshared_conv2d_input(x.shape, k, g, stride, padding)
    assert z.dtype == dk.dtype == dx.dtype == np.dtype(dtype)
    _close(z, naive.unshared(x, k, stride, padding), dtype)
    _close(dk, naive.unshared_grad_weight(x, g, k.shape, stride, padding), dtype)
    _close(dx, naive.unshared_grad_input(x.shape, k, g, stride, padding), dtype)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_tiled_matches_loops(case, dtype):
    x, k, g, stride, padding = _setup(case, dtype, "tiled")
    z = nn.tiled_conv2d(x, k, stride, padding)
    dk = grad.tiled_conv2d_weight(x, k.shape, g, stride, padding)
    dx = grad.tiled_conv2d_input(x.shape, k, g, stride, padding)
    assert z.dtype == dk.dtype == dx.dtype == np.dtype(dtype)
    _close(z, naive.tiled(x, k, stride, padding), dtype)
    _close(dk, naive.tiled_grad_weight(x, g, k.shape, stride, padding), dtype)
    full = naive.tiled_as_unshared(k, g.shape[2:])
    _close(dx, naive.unshared_grad_input(x.shape, full, g, stride, padding), dtype)


@pytest.mark.parametrize("kind", ["unshared", "tiled"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_adjoint_and_finite_differences(case, kind):
    x, k, g, stride, padding = _setup(case, "float64", kind, seed=2)
    forward = nn.unshared_conv2d if kind == "unshared" else nn.tiled_conv2d
    dx = getattr(grad, f"{kind}_conv2d_input")(x.shape, k, g, stride, padding)
    dk = getattr(grad, f"{kind}_conv2d_weight")(x, k.shape, g, stride, padding)
    z = forward(x, k, stride, padding)
    np.testing.assert_allclose(np.vdot(z, g), np.vdot(x, dx), rtol=1e-10)
    np.testing.assert_allclose(np.vdot(z, g), np.vdot(k, dk), rtol=1e-10)
    rng, eps = np.random.default_rng(3), 1e-6
    ex, ek = rng.standard_normal(x.shape), rng.standard_normal(k.shape)
    numeric_x = (np.vdot(forward(x + eps * ex, k, stride, padding), g)
                 - np.vdot(forward(x - eps * ex, k, stride, padding), g)) / (2 * eps)
    numeric_k = (np.vdot(forward(x, k + eps * ek, stride, padding), g)
                 - np.vdot(forward(x, k - eps * ek, stride, padding), g)) / (2 * eps)
    np.testing.assert_allclose(np.vdot(dx, ex), numeric_x, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.vdot(dk, ek), numeric_k, rtol=1e-6, atol=1e-7)


def test_one_tile_and_one_shared_kernel_are_convolution():
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((2, 3, 8, 7)), rng.standard_normal((4, 3, 3, 2))
    conv = nn.conv2d(x, w, stride=(2, 1), padding=1)
    tiled = nn.tiled_conv2d(x, w[..., None, None], stride=(2, 1), padding=1)
    np.testing.assert_allclose(tiled, conv, atol=1e-12)
    oh, ow = conv.shape[2:]
    shared = np.broadcast_to(w[:, None, None], (4, oh, ow, 3, 3, 2))
    np.testing.assert_allclose(nn.unshared_conv2d(x, shared, stride=(2, 1), padding=1), conv,
                               atol=1e-12)
    g = rng.standard_normal(conv.shape)
    np.testing.assert_allclose(grad.tiled_conv2d_input(x.shape, w[..., None, None], g, (2, 1), 1),
                               grad.conv2d_input(x.shape, w, g, (2, 1), 1), atol=1e-12)
    np.testing.assert_allclose(grad.tiled_conv2d_weight(x, w.shape + (1, 1), g, (2, 1), 1)[..., 0, 0],
                               grad.conv2d_weight(x, w.shape, g, (2, 1), 1), atol=1e-12)


def test_tiles_as_large_as_the_output_are_unshared():
    rng = np.random.default_rng(5)
    x, k = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3, 4, 4))
    full = naive.tiled_as_unshared(k, (4, 4))
    np.testing.assert_allclose(nn.tiled_conv2d(x, k), nn.unshared_conv2d(x, full), atol=1e-12)


def test_unbatched():
    rng = np.random.default_rng(6)
    x, k = rng.standard_normal((2, 5, 5)), rng.standard_normal((3, 2, 2, 2, 2, 2))
    np.testing.assert_allclose(nn.tiled_conv2d(x, k), nn.tiled_conv2d(x[None], k)[0])
    u = rng.standard_normal((3, 4, 4, 2, 2, 2))
    z = nn.unshared_conv2d(x, u)
    assert z.shape == (3, 4, 4)
    np.testing.assert_allclose(grad.unshared_conv2d_input((2, 5, 5), u, z),
                               grad.unshared_conv2d_input((1, 2, 5, 5), u, z[None])[0])


X = np.zeros((1, 2, 6, 6))


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.unshared_conv2d(X, np.zeros((3, 3, 4, 2, 3, 3))), ValueError, "4x4 output"),
    (lambda: nn.unshared_conv2d(X, np.zeros((3, 4, 4, 5, 3, 3))), ValueError, "channels"),
    (lambda: nn.unshared_conv2d(X, np.zeros((3, 4, 4, 2, 3))), ValueError, "6-D"),
    (lambda: nn.tiled_conv2d(X, np.zeros((3, 2, 3, 3, 2, 2)), stride=0), ValueError, "stride"),
    (lambda: nn.tiled_conv2d(X, np.zeros((3, 2, 3, 3, 2, 2)), padding=-1), ValueError, "padding"),
    (lambda: nn.tiled_conv2d(X, np.zeros((3, 2, 7, 3, 2, 2))), ValueError, "size"),
    (lambda: nn.tiled_conv2d(X.astype(int), np.zeros((3, 2, 3, 3, 2, 2))), TypeError, "input"),
    (lambda: grad.tiled_conv2d_weight(X, (3, 2, 3, 3, 2, 2), np.zeros((1, 3, 3, 4))),
     ValueError, "grad_output"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()
