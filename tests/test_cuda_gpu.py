"""The CUDA backend on a real GPU: realistic shapes against the CPU reference.

Selected with ``-m gpu``; skipped (at import) wherever no CUDA GPU answers,
including under Numba's simulator.  bench/gpu_check.py runs these and then
times the benchmark layers against cuDNN.
"""
import numpy as np
import pytest

from fastconv.backends import cuda

pytestmark = pytest.mark.gpu

if not cuda.available() or cuda.info().get("simulator"):
    pytest.skip(f"no CUDA GPU: {cuda.UNAVAILABLE_REASON or 'simulator only'}",
                allow_module_level=True)

from fastconv import dispatch  # noqa: E402
from fastconv.backends import reference  # noqa: E402
from fastconv.problem import make_problem  # noqa: E402

from .cases import DTYPES, SHAPES, TOLERANCE, make_case, random_array  # noqa: E402

# (id, x_shape, w_shape, padding): the benchmark layers at a batch the CPU reference can afford
LAYERS = [
    ("cifar-conv1", (16, 3, 24, 24), (64, 3, 5, 5), 2),
    ("cifar-conv2", (16, 64, 12, 12), (64, 64, 5, 5), 2),
    ("resnet-64", (2, 64, 56, 56), (64, 64, 3, 3), 1),
    ("resnet-256", (2, 256, 14, 14), (256, 256, 3, 3), 1),
]


def _close(got, want, dtype):
    tol = TOLERANCE[dtype]
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1.0))


@pytest.mark.parametrize("dtype", [d for d in DTYPES if not d.startswith("complex")])
@pytest.mark.parametrize("case_id", [row[0] for row in SHAPES])
def test_case_table(case_id, dtype):
    problem, x, w = make_case(case_id, dtype)
    _close(cuda.correlate(x, w, problem), reference.correlate(x, w, problem), dtype)


def _adjoint(problem, x, w, y, rtol):
    lhs = float(np.vdot(reference.correlate(x, w, problem), y))
    gx = cuda.correlate_grad_input(y, w, problem)
    gw = cuda.correlate_grad_weight(x, y, problem)
    assert gx.shape == x.shape and gw.shape == w.shape
    assert abs(np.vdot(x, gx) - lhs) <= rtol * max(abs(lhs), 1.0)
    assert abs(np.vdot(w, gw) - lhs) <= rtol * max(abs(lhs), 1.0)
    return gx, gw


@pytest.mark.parametrize("case_id", [row[0] for row in SHAPES])
def test_case_table_gradients(case_id):
    problem, x, w = make_case(case_id, "float64")
    y = random_array(np.random.default_rng(1), problem.out_shape, "float64")
    _adjoint(problem, x, w, y, 1e-10)


@pytest.mark.parametrize("layer", LAYERS, ids=[row[0] for row in LAYERS])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_layers(layer, dtype):
    _, x_shape, w_shape, padding = layer
    problem = make_problem(x_shape, w_shape, dtype, padding=padding)
    rng = np.random.default_rng(2)
    x, w = random_array(rng, x_shape, dtype), random_array(rng, w_shape, dtype)
    _close(cuda.correlate(x, w, problem), reference.correlate(x, w, problem), dtype)
    y = random_array(rng, problem.out_shape, dtype)
    gx, gw = _adjoint(problem, x, w, y, 1e-10 if dtype == "float64" else 1e-4)
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
    out = torch.nn.functional.conv2d(xt, wt, padding=padding)
    out.backward(torch.tensor(y, dtype=torch.float64))
    _close(gx, xt.grad.numpy(), dtype)
    _close(gw, wt.grad.numpy(), dtype)


def test_device_arrays_stay_on_the_gpu():
    problem, x, w = make_case("2d-groups", "float32")
    xd, wd = cuda.to_device(x), cuda.to_device(w)
    got = dispatch.correlate(xd, wd, problem, method="cuda")
    assert cuda.is_device_array(got)
    _close(cuda.to_host(got), reference.correlate(x, w, problem), "float32")


def test_info_names_the_device():
    info = cuda.info()
    assert info["available"] and info["name"] and info["memory_total_bytes"] > 0
    major, minor = (int(v) for v in info["compute_capability"].split("."))
    assert major >= 3


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_pooling_and_lrn_on_cifar_activations(dtype):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(3)
    x = random_array(rng, (32, 64, 24, 24), dtype)
    xt = torch.tensor(x, requires_grad=True)
    out, idx = F.max_pool2d(xt, 3, 2, 1, return_indices=True)
    g = random_array(rng, tuple(out.shape), dtype)
    out.backward(torch.tensor(g))
    mine, mine_idx = cuda.max_pool(x, 3, 2, 1)
    np.testing.assert_array_equal(mine, out.detach().numpy())
    np.testing.assert_array_equal(mine_idx, idx.numpy())
    np.testing.assert_allclose(cuda.max_pool_backward(g, mine_idx, x.shape, 3, 2, 1),
                               xt.grad.numpy(), rtol=1e-6, atol=1e-6)
    tol = 1e-5 if dtype == "float32" else 1e-12
    xt = torch.tensor(x, requires_grad=True)
    out = F.avg_pool2d(xt, 3, 2, 1)
    out.backward(torch.tensor(g))
    np.testing.assert_allclose(cuda.avg_pool(x, 3, 2, 1), out.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(cuda.avg_pool_backward(g, x.shape, 3, 2, 1), xt.grad.numpy(),
                               rtol=tol, atol=tol)
    xt = torch.tensor(x, requires_grad=True)
    out = F.local_response_norm(xt, 9, alpha=1e-3, beta=0.75, k=1.0)
    gl = random_array(rng, x.shape, dtype)
    out.backward(torch.tensor(gl))
    np.testing.assert_allclose(cuda.local_response_norm(x, 9, 1e-3, 0.75, 1.0),
                               out.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(cuda.local_response_norm_backward(gl, x, 9, 1e-3, 0.75, 1.0),
                               xt.grad.numpy(), rtol=tol * 10, atol=tol * 10)
