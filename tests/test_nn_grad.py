"""fastconv.nn.grad: the chapter's h and g against loops, finite differences,
the adjoint identity, torch.nn.grad and torch autograd."""
import numpy as np
import pytest

from fastconv import backends, nn
from fastconv.nn import grad

from . import naive
from .test_nn_conv import CASES, CONV, _close, _data

INPUT = {1: grad.conv1d_input, 2: grad.conv2d_input, 3: grad.conv3d_input}
WEIGHT = {1: grad.conv1d_weight, 2: grad.conv2d_weight, 3: grad.conv3d_weight}

# stride/dilation/padding combinations that stress the polyphase input gradient:
# strides sharing a factor with the dilation, padding wider than the dilated
# kernel, input rows no window reaches, stride larger than the kernel
GRAD_CASES = CASES + [
    ("2d-stride-dil-common-factor", (1, 2, 11, 12), (2, 2, 3, 3), (2, 4), ((1, 2), (0, 3)), (2, 2), 1),
    ("2d-pad-beyond-kernel", (1, 1, 5, 4), (2, 1, 2, 2), (2, 3), ((4, 5), (3, 3)), (1, 1), 1),
    ("2d-untouched-tail", (2, 2, 10, 11), (2, 2, 3, 2), (3, 4), ((0, 0), (1, 0)), (1, 1), 1),
    ("1d-stride3-dil2", (1, 1, 17), (1, 1, 4), (3,), ((5, 0),), (2,), 1),
]
GRAD_IDS = [case[0] for case in GRAD_CASES]


def _forward(x, w, stride, padding, dilation, groups):
    return CONV[x.ndim - 2](x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=GRAD_IDS)
def test_gradients_match_loops(case, dtype):
    x, w, stride, padding, dilation, groups = _data(case, dtype)
    nd = x.ndim - 2
    gy = np.random.default_rng(1).standard_normal(
        _forward(x, w, stride, padding, dilation, groups).shape).astype(dtype)
    dx = INPUT[nd](x.shape, w, gy, stride, padding, dilation, groups)
    dw = WEIGHT[nd](x, w.shape, gy, stride, padding, dilation, groups)
    assert dx.shape == x.shape and dw.shape == w.shape
    assert dx.dtype == dw.dtype == np.dtype(dtype)
    _close(dx, naive.grad_input(x.shape, w, gy, stride, padding, dilation, groups), dtype)
    _close(dw, naive.grad_weight(x, gy, w.shape, stride, padding, dilation, groups), dtype)


@pytest.mark.parametrize("name", sorted(backends.REGISTRY))
@pytest.mark.parametrize("case_id", ["2d-stride-dil-common-factor", "3d-stride-dil-groups"])
def test_every_backend_forced(name, case_id):
    """Forward and both gradients with every correlation forced onto one backend."""
    x, w, stride, padding, dilation, groups = _data(GRAD_CASES[GRAD_IDS.index(case_id)], "float64")
    nd = x.ndim - 2
    gy = np.random.default_rng(1).standard_normal(
        _forward(x, w, stride, padding, dilation, groups).shape)
    try:
        y = CONV[nd](x, w, None, stride, padding, dilation, groups, method=name)
        dx = INPUT[nd](x.shape, w, gy, stride, padding, dilation, groups, method=name)
        dw = WEIGHT[nd](x, w.shape, gy, stride, padding, dilation, groups, method=name)
    except ValueError as exc:
        if "cannot compute" in str(exc):
            pytest.skip(f"{name}: {exc}")
        raise
    _close(y, naive.conv(x, w, stride, padding, dilation, groups), "float64")
    _close(dx, naive.grad_input(x.shape, w, gy, stride, padding, dilation, groups), "float64")
    _close(dw, naive.grad_weight(x, gy, w.shape, stride, padding, dilation, groups), "float64")


@pytest.mark.parametrize("case", GRAD_CASES, ids=GRAD_IDS)
def test_adjoint_identity(case):
    """<conv(x), y> = <x, grad_input(y)> and <conv_w(w), y> = <w, grad_weight(y)>."""
    x, w, stride, padding, dilation, groups = _data(case, "float64", seed=3)
    nd = x.ndim - 2
    y = _forward(x, w, stride, padding, dilation, groups)
    v = np.random.default_rng(4).standard_normal(y.shape)
    dx = INPUT[nd](x.shape, w, v, stride, padding, dilation, groups)
    dw = WEIGHT[nd](x, w.shape, v, stride, padding, dilation, groups)
    np.testing.assert_allclose(np.vdot(y, v), np.vdot(x, dx), rtol=1e-10)
    np.testing.assert_allclose(np.vdot(y, v), np.vdot(w, dw), rtol=1e-10)


@pytest.mark.parametrize("case", [c for c in GRAD_CASES if np.prod(c[1]) <= 300], ids=lambda c: c[0])
def test_finite_differences(case):
    x, w, stride, padding, dilation, groups = _data(case, "float64", seed=5)
    nd = x.ndim - 2
    v = np.random.default_rng(6).standard_normal(_forward(x, w, stride, padding, dilation,
                                                          groups).shape)

    def loss(xx, ww):
        return np.vdot(_forward(xx, ww, stride, padding, dilation, groups), v)

    dx = INPUT[nd](x.shape, w, v, stride, padding, dilation, groups)
    dw = WEIGHT[nd](x, w.shape, v, stride, padding, dilation, groups)
    rng, eps = np.random.default_rng(7), 1e-6
    for _ in range(4):   # directional derivatives along random directions
        ex, ew = rng.standard_normal(x.shape), rng.standard_normal(w.shape)
        numeric_x = (loss(x + eps * ex, w) - loss(x - eps * ex, w)) / (2 * eps)
        numeric_w = (loss(x, w + eps * ew) - loss(x, w - eps * ew)) / (2 * eps)
        np.testing.assert_allclose(np.vdot(dx, ex), numeric_x, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(np.vdot(dw, ew), numeric_w, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_matches_torch_autograd(nd):
    torch = pytest.importorskip("torch")
    functional = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
                  3: torch.nn.functional.conv3d}[nd]
    rng = np.random.default_rng(20 + nd)
    for stride, padding, dilation, groups in [(1, 1, 1, 1), (2, 1, 1, 2), (3, 2, 2, 1),
                                              (1, "same", 2, 2)]:
        x = rng.standard_normal((2, 4) + (8,) * nd)
        w = rng.standard_normal((6, 4 // groups) + (3,) * nd)
        xt = torch.tensor(x, requires_grad=True)
        wt = torch.tensor(w, requires_grad=True)
        yt = functional(xt, wt, stride=stride, padding=padding, dilation=dilation, groups=groups)
        gy = rng.standard_normal(tuple(yt.shape))
        yt.backward(torch.from_numpy(gy))
        dx = INPUT[nd](x.shape, w, gy, stride, padding, dilation, groups)
        dw = WEIGHT[nd](x, w.shape, gy, stride, padding, dilation, groups)
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(dw, wt.grad.numpy(), rtol=1e-10, atol=1e-10)
        np.testing.assert_allclose(grad.conv_bias(gy), gy.sum(axis=(0,) + tuple(range(2, nd + 2))))


def test_matches_torch_nn_grad():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(30)
    x = rng.standard_normal((2, 3, 9, 7)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 2)).astype(np.float32)
    gy = rng.standard_normal(nn.conv2d(x, w, stride=2, padding=1).shape).astype(np.float32)
    tx, tw, tg = (torch.from_numpy(a) for a in (x, w, gy))
    want_x = torch.nn.grad.conv2d_input(x.shape, tw, tg, stride=2, padding=1)
    want_w = torch.nn.grad.conv2d_weight(tx, w.shape, tg, stride=2, padding=1)
    np.testing.assert_allclose(grad.conv2d_input(x.shape, w, gy, 2, 1), want_x.numpy(),
                               rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(grad.conv2d_weight(x, w.shape, gy, 2, 1), want_w.numpy(),
                               rtol=1e-4, atol=1e-4)


def test_size_spellings_unbatched_and_method():
    rng = np.random.default_rng(8)
    x, w = rng.standard_normal((3, 7, 6)), rng.standard_normal((2, 3, 3, 3))
    gy = rng.standard_normal(nn.conv2d(x, w, stride=2).shape)
    full = grad.conv2d_input((1, 3, 7, 6), w, gy[None], stride=2)
    np.testing.assert_allclose(grad.conv2d_input((3, 7, 6), w, gy, stride=2), full[0])
    np.testing.assert_allclose(grad.conv2d_input((7, 6), w, gy[None], stride=2), full)
    np.testing.assert_allclose(grad.conv2d_input((7, 6), w, gy[None], stride=2, method="reference"),
                               full, atol=1e-12)
    dw = grad.conv2d_weight(x, w.shape, gy, stride=2)
    np.testing.assert_allclose(grad.conv2d_weight(x[None], (3, 3), gy[None], stride=2), dw)
    np.testing.assert_allclose(grad.conv_bias(gy, ndim=2), gy.sum(axis=(1, 2)))


@pytest.mark.parametrize("call, error, match", [
    (lambda: grad.conv2d_input((1, 2, 8, 8), np.zeros((3, 2, 3, 3)), np.zeros((1, 3, 5, 6))),
     ValueError, "grad_output"),
    (lambda: grad.conv2d_weight(np.zeros((1, 2, 8, 8)), (3, 2, 3, 3), np.zeros((1, 3, 6, 6)),
                                stride=0), ValueError, "stride"),
    (lambda: grad.conv2d_input("8x8", np.zeros((3, 2, 3, 3)), np.zeros((1, 3, 6, 6))),
     TypeError, "input_size"),
    (lambda: grad.conv2d_input((1, 2, 8), np.zeros((3, 2, 3, 3)), np.zeros((1, 3, 6, 6))),
     ValueError, "input_size"),
    (lambda: grad.conv2d_weight(np.zeros((1, 2, 8, 8)), (3, 1, 3, 3), np.zeros((1, 3, 6, 6))),
     ValueError, "channels"),
    (lambda: grad.conv2d_weight(np.zeros((1, 2, 8, 8), dtype=int), (3, 2, 3, 3),
                                np.zeros((1, 3, 6, 6))), TypeError, "input"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.skipif("im2col" not in backends.REGISTRY, reason="im2col extension not built")
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", GRAD_CASES, ids=GRAD_IDS)
def test_gemm_gradients_match_loops(case, dtype):
    """method='im2col': both gradients as GEMMs on im2col's lowering (the weight
    gradient always, the input gradient where col2im copies less)."""
    x, w, stride, padding, dilation, groups = _data(case, dtype, seed=9)
    nd = x.ndim - 2
    gy = np.random.default_rng(10).standard_normal(
        _forward(x, w, stride, padding, dilation, groups).shape).astype(dtype)
    dx = INPUT[nd](x.shape, w, gy, stride, padding, dilation, groups, method="im2col")
    dw = WEIGHT[nd](x, w.shape, gy, stride, padding, dilation, groups, method="im2col")
    assert dx.dtype == dw.dtype == np.dtype(dtype)
    _close(dx, naive.grad_input(x.shape, w, gy, stride, padding, dilation, groups), dtype)
    _close(dw, naive.grad_weight(x, gy, w.shape, stride, padding, dilation, groups), dtype)


@pytest.mark.skipif("im2col" not in backends.REGISTRY, reason="im2col extension not built")
def test_first_layer_input_gradient_by_columns(monkeypatch):
    """Few input channels: the input gradient is col2im(W^T G), not a correlation
    with 3 output channels; other backends forced keep the correlation."""
    from fastconv.backends import im2col
    calls = []
    original = im2col.input_gradient
    monkeypatch.setattr(im2col, "input_gradient", lambda *a: calls.append(1) or original(*a))
    rng = np.random.default_rng(12)
    x = rng.standard_normal((5, 3, 12, 11)).astype(np.float32)
    w = rng.standard_normal((16, 3, 5, 5)).astype(np.float32)
    gy = rng.standard_normal((5, 16, 12, 11)).astype(np.float32)
    x_before, w_before, gy_before = x.copy(), w.copy(), gy.copy()
    want = naive.grad_input(x.shape, w, gy, (1, 1), ((2, 2), (2, 2)), (1, 1))
    _close(grad.conv2d_input(x.shape, w, gy, padding=2, method="im2col"), want, "float32")
    assert calls
    _close(grad.conv2d_input(x.shape, w, gy, padding=2, method="reference"), want, "float32")
    assert len(calls) == 1
    for before, after in [(x_before, x), (w_before, w), (gy_before, gy)]:
        np.testing.assert_array_equal(before, after)


@pytest.mark.skipif("im2col" not in backends.REGISTRY, reason="im2col extension not built")
def test_gemm_gradients_chosen_for_network_layers():
    from fastconv.problem import make_problem
    layer = make_problem((128, 3, 24, 24), (64, 3, 5, 5), "float32", padding=2)
    assert grad._gemm_backend(layer, "auto") is backends.REGISTRY["im2col"]
    assert grad._gemm_backend(layer, "im2col") is backends.REGISTRY["im2col"]
    assert grad._gemm_backend(layer, "reference") is None
