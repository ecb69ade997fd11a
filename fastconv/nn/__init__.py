"""The chapter's network layers, channels-first, with torch.nn.functional's names.

Every convolution, forward and backward (:mod:`fastconv.nn.grad`), runs
through :func:`fastconv.dispatch.correlate`; pass ``method=`` to force a backend.

Examples
--------
>>> import numpy as np
>>> from fastconv import nn
>>> x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
>>> w = np.ones((4, 3, 3, 3), dtype=np.float32)
>>> y = nn.conv2d(x, w, padding=1)
>>> nn.grad.conv2d_input(x.shape, w, np.ones_like(y), padding=1).shape
(2, 3, 8, 8)
"""
from __future__ import annotations

from . import grad
from .conv import conv1d, conv2d, conv3d
from .local import tiled_conv2d, unshared_conv2d
from .lrn import local_response_norm
from .pooling import avg_pool1d, avg_pool2d, avg_pool3d, max_pool1d, max_pool2d, max_pool3d

__all__ = ["conv1d", "conv2d", "conv3d", "unshared_conv2d", "tiled_conv2d",
           "max_pool1d", "max_pool2d", "max_pool3d", "avg_pool1d", "avg_pool2d", "avg_pool3d",
           "local_response_norm", "grad"]
