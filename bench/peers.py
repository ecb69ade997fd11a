"""The peers fastconv is measured against, imported only where installed.

Each peer function computes what the matching fastconv call computes (same
mode, same orientation), so the ratios compare equal work.
"""
from __future__ import annotations

import numpy as np


def _optional(name):
    try:
        return __import__(name)
    except ImportError:
        return None


cv2 = _optional("cv2")
torch = _optional("torch")


def cv2_filter2d_same(image, kernel):
    """scipy-style 'same' convolution with OpenCV (correlation of the flipped kernel)."""
    k = np.ascontiguousarray(kernel[::-1, ::-1])
    # OpenCV anchors an even kernel at k//2 of the flipped kernel; ours follows scipy
    anchor = ((k.shape[1] - 1) // 2, (k.shape[0] - 1) // 2)
    return cv2.filter2D(image, -1, k, anchor=anchor, borderType=cv2.BORDER_CONSTANT)


def cv2_sep_filter_same(image, column, row):
    """Separable 'same' convolution with OpenCV; column then row factor."""
    return cv2.sepFilter2D(image, -1, row[::-1].copy(), column[::-1].copy(),
                           borderType=cv2.BORDER_CONSTANT)


def gaussian_factors(size: int, sigma: float, dtype=np.float64):
    """1-D Gaussian taps whose outer product is the 2-D Gaussian kernel."""
    t = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return (g / g.sum()).astype(dtype)
