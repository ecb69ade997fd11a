"""The chapter's CIFAR-10 layers and two ResNet-style layers, float32, against torch on the CPU.

Forward, and forward+backward (input, weight and bias gradients), with GFLOP/s
in extra_info and numpy's float32 matmul rate measured in the same run.

Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/test_layers.py \
        --benchmark-enable --benchmark-only -p no:cacheprovider
"""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import nn
from fastconv.nn import grad

from .peers import torch

# name: (batch, in channels, out channels, size, kernel, padding)
CONV_LAYERS = {
    "cifar conv1": (128, 3, 64, 24, 5, 2),
    "cifar conv2": (128, 64, 64, 12, 5, 2),
    "resnet 64ch 56x56": (32, 64, 64, 56, 3, 1),
    "resnet 256ch 14x14": (16, 256, 256, 14, 3, 1),
}
LRN_ALPHA = 0.001 / 9


def conv_flops(batch, cin, cout, size, k, pad):
    out = size + 2 * pad - k + 1
    return 2.0 * batch * cout * cin * k * k * out * out


def _layer_data(spec):
    batch, cin, cout, size, k, pad = spec
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, cin, size, size)).astype(np.float32)
    w = (rng.standard_normal((cout, cin, k, k)) * 0.05).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    out = size + 2 * pad - k + 1
    g = rng.standard_normal((batch, cout, out, out)).astype(np.float32)
    return x, w, b, g


def _fastconv_step(x, w, b, g, pad):
    nn.conv2d(x, w, b, padding=pad)
    grad.conv2d_input(x.shape, w, g, padding=pad)
    grad.conv2d_weight(x, w.shape, g, padding=pad)
    grad.conv_bias(g)


def _torch_step(xt, wt, bt, gt, pad):
    xr, wr, br = (t.detach().requires_grad_() for t in (xt, wt, bt))
    torch.nn.functional.conv2d(xr, wr, br, padding=pad).backward(gt)


def _label(benchmark, group, label, flops=None):
    benchmark.group = group
    benchmark.extra_info["label"] = label
    if flops:
        benchmark.extra_info["flops"] = flops


def test_numpy_matmul_rate(run, benchmark):
    a = np.random.default_rng(0).standard_normal((2048, 2048)).astype(np.float32)
    _label(benchmark, "numpy float32 matmul 2048", "numpy_matmul", 2.0 * 2048 ** 3)
    run(np.matmul, a, a, rounds=10)


@pytest.mark.parametrize("layer", CONV_LAYERS)
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_conv_forward(run, benchmark, layer, impl):
    spec = CONV_LAYERS[layer]
    x, w, b, _ = _layer_data(spec)
    pad = spec[5]
    _label(benchmark, f"{layer} fwd", f"{impl}_auto" if impl == "fastconv" else "torch",
           conv_flops(*spec))
    if impl == "fastconv":
        run(lambda: nn.conv2d(x, w, b, padding=pad))
    else:
        if torch is None:
            pytest.skip("torch not installed")
        xt, wt, bt = map(torch.from_numpy, (x, w, b))
        run(lambda: torch.nn.functional.conv2d(xt, wt, bt, padding=pad))


@pytest.mark.parametrize("layer", CONV_LAYERS)
@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_conv_forward_backward(run, benchmark, layer, impl):
    spec = CONV_LAYERS[layer]
    x, w, b, g = _layer_data(spec)
    pad = spec[5]
    _label(benchmark, f"{layer} fwd+bwd", f"{impl}_auto" if impl == "fastconv" else "torch",
           3 * conv_flops(*spec))
    if impl == "fastconv":
        run(_fastconv_step, x, w, b, g, pad, rounds=7)
    else:
        if torch is None:
            pytest.skip("torch not installed")
        run(_torch_step, *map(torch.from_numpy, (x, w, b, g)), pad, rounds=7)


@pytest.fixture(scope="module")
def conv1_output():
    return np.random.default_rng(1).standard_normal((128, 64, 24, 24)).astype(np.float32)


@pytest.fixture(scope="module")
def pooled():
    return np.random.default_rng(2).standard_normal((128, 64, 12, 12)).astype(np.float32)


@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_max_pool(run, benchmark, conv1_output, impl):
    _label(benchmark, "cifar max pool 3x3/2 fwd", f"{impl}_auto" if impl == "fastconv" else "torch")
    if impl == "fastconv":
        run(lambda: nn.max_pool2d(conv1_output, 3, 2, 1))
    else:
        if torch is None:
            pytest.skip("torch not installed")
        xt = torch.from_numpy(conv1_output)
        run(lambda: torch.nn.functional.max_pool2d(xt, 3, 2, 1))


@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_max_pool_forward_backward(run, benchmark, conv1_output, pooled, impl):
    _label(benchmark, "cifar max pool 3x3/2 fwd+bwd", f"{impl}_auto" if impl == "fastconv" else "torch")
    if impl == "fastconv":
        def step():
            nn.max_pool2d(conv1_output, 3, 2, 1)
            grad.max_pool2d_input(conv1_output, pooled, 3, 2, 1)
        run(step)
    else:
        if torch is None:
            pytest.skip("torch not installed")
        xt, gt = torch.from_numpy(conv1_output), torch.from_numpy(pooled)

        def step():
            xr = xt.detach().requires_grad_()
            torch.nn.functional.max_pool2d(xr, 3, 2, 1).backward(gt)
        run(step)


@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_lrn(run, benchmark, pooled, impl):
    _label(benchmark, "cifar LRN size 9 fwd", f"{impl}_auto" if impl == "fastconv" else "torch")
    if impl == "fastconv":
        run(lambda: nn.local_response_norm(pooled, 9, LRN_ALPHA, 0.75, 1.0))
    else:
        if torch is None:
            pytest.skip("torch not installed")
        yt = torch.from_numpy(pooled)
        run(lambda: torch.nn.functional.local_response_norm(yt, 9, LRN_ALPHA, 0.75, 1.0))


@pytest.mark.parametrize("impl", ["fastconv", "torch"])
def test_lrn_forward_backward(run, benchmark, pooled, impl):
    _label(benchmark, "cifar LRN size 9 fwd+bwd", f"{impl}_auto" if impl == "fastconv" else "torch")
    if impl == "fastconv":
        def step():
            nn.local_response_norm(pooled, 9, LRN_ALPHA, 0.75, 1.0)
            grad.local_response_norm_input(pooled, pooled, 9, LRN_ALPHA, 0.75, 1.0)
        run(step)
    else:
        if torch is None:
            pytest.skip("torch not installed")
        yt = torch.from_numpy(pooled)

        def step():
            yr = yt.detach().requires_grad_()
            torch.nn.functional.local_response_norm(yr, 9, LRN_ALPHA, 0.75, 1.0).backward(yt)
        run(step)
