"""The same network in PyTorch, for the tests (autograd as a second oracle) and the benchmarks.

Needs torch; fastconv itself never imports this module.  It takes the
parameter dict of :mod:`fastconv.models.cifar10` (same layouts: conv weights
``(O, C, KH, KW)``, dense weights ``(in, out)``) and computes the same loss.
TF's SAME max pooling pads after the input, which ``F.max_pool2d`` cannot
express, so the input is padded with -inf first.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import cifar10, layers


def to_torch(params: dict, requires_grad: bool = True) -> dict:
    """Parameters as torch leaf tensors (copies)."""
    return {name: torch.tensor(np.array(value), requires_grad=requires_grad)
            for name, value in params.items()}


def _pool(x, arch):
    (top, bottom), (left, right) = layers.same_pairs(x.shape[2:], arch.pool_kernel,
                                                     arch.pool_stride)
    x = F.pad(x, (left, right, top, bottom), value=float("-inf"))
    return F.max_pool2d(x, arch.pool_kernel, arch.pool_stride)


def _lrn(x, arch):
    size = 2 * arch.lrn_depth_radius + 1
    return F.local_response_norm(x, size, arch.lrn_alpha * size, arch.lrn_beta, arch.lrn_bias)


def _conv(x, w, b, arch):
    (top, bottom), (left, right) = layers.same_pairs(x.shape[2:], arch.conv_kernel)
    if top == bottom and left == right:
        return F.conv2d(x, w, b, padding=(top, left))
    return F.conv2d(F.pad(x, (left, right, top, bottom)), w, b)


def logits(params: dict, images, arch=cifar10.CIFAR10):
    """The network's logits for ``images`` (a tensor), from torch parameters."""
    x = torch.relu(_conv(images, params["conv1/weights"], params["conv1/biases"], arch))
    x = _lrn(_pool(x, arch), arch)
    x = torch.relu(_conv(x, params["conv2/weights"], params["conv2/biases"], arch))
    x = _pool(_lrn(x, arch), arch).reshape(len(images), -1)
    x = torch.relu(x @ params["local3/weights"] + params["local3/biases"])
    x = torch.relu(x @ params["local4/weights"] + params["local4/biases"])
    return x @ params["softmax_linear/weights"] + params["softmax_linear/biases"]


def loss(params: dict, images, labels, arch=cifar10.CIFAR10):
    """Mean cross-entropy plus the tutorial's weight decay, as a torch scalar."""
    data = F.cross_entropy(logits(params, images, arch), labels)
    decay = sum(arch.weight_decay * 0.5 * (params[n] ** 2).sum() for n in cifar10.DECAYED)
    return data + decay


def loss_and_grads(params: dict, images: np.ndarray, labels: np.ndarray,
                   arch=cifar10.CIFAR10):
    """Loss and gradients by torch autograd, as numpy (the fastconv function's twin)."""
    tparams = to_torch(params)
    value = loss(tparams, torch.from_numpy(np.ascontiguousarray(images)),
                 torch.from_numpy(np.asarray(labels, dtype=np.int64)), arch)
    value.backward()
    return float(value.detach()), {n: t.grad.numpy() for n, t in tparams.items()}


class TrainStep:
    """One SGD step of the network in torch, for timing against fastconv's."""

    def __init__(self, params: dict, arch=cifar10.CIFAR10, learning_rate: float = 0.1):
        self.params = to_torch(params)
        self.arch = arch
        self.optimizer = torch.optim.SGD(list(self.params.values()), lr=learning_rate)

    def __call__(self, images: np.ndarray, labels: np.ndarray) -> float:
        self.optimizer.zero_grad(set_to_none=True)
        value = loss(self.params, torch.from_numpy(images), torch.from_numpy(labels), self.arch)
        value.backward()
        self.optimizer.step()
        return float(value.detach())
