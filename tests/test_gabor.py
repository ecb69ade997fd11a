"""The chapter's Gabor function: formula, symmetries, banks as conv2d weights."""
import math

import numpy as np
import pytest

from fastconv import nn
from fastconv.gabor import gabor_bank, gabor_kernel

PARAMS = dict(alpha=1.5, beta_x=0.08, beta_y=0.03, f=0.9, phi=0.4, tau=0.7, x0=0.6, y0=-1.2)


def _formula(x, y, alpha, beta_x, beta_y, f, phi, tau, x0, y0):
    """w(x, y) exactly as the chapter writes it, one point at a time."""
    xr = (x - x0) * math.cos(tau) + (y - y0) * math.sin(tau)
    yr = -(x - x0) * math.sin(tau) + (y - y0) * math.cos(tau)
    return alpha * math.exp(-beta_x * xr**2 - beta_y * yr**2) * math.cos(f * xr + phi)


@pytest.mark.parametrize("size", [7, (6, 9)])
def test_matches_the_formula(size):
    k = gabor_kernel(size, **PARAMS)
    rows, cols = (size, size) if isinstance(size, int) else size
    assert k.shape == (rows, cols) and k.dtype == np.float64
    for r in range(rows):
        for c in range(cols):
            want = _formula(c - (cols - 1) / 2, r - (rows - 1) / 2, **PARAMS)
            assert k[r, c] == pytest.approx(want, rel=1e-12, abs=1e-15)
    k32 = gabor_kernel(size, dtype=np.float32, **PARAMS)
    assert k32.dtype == np.float32
    np.testing.assert_allclose(k32, k, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("tau", [0.0, 0.3, 1.2])
def test_even_phase_peaks_at_centre_and_is_point_symmetric(tau):
    k = gabor_kernel(9, alpha=2.0, beta_x=0.05, beta_y=0.1, f=1.1, tau=tau)
    assert k[4, 4] == pytest.approx(2.0)
    assert np.abs(k).max() == pytest.approx(2.0)
    np.testing.assert_allclose(k, k[::-1, ::-1], atol=1e-14)


def test_odd_phase_is_antisymmetric():
    k = gabor_kernel(8, beta_x=0.05, beta_y=0.1, f=0.7, phi=math.pi / 2, tau=0.5)
    np.testing.assert_allclose(k, -k[::-1, ::-1], atol=1e-14)


def test_rotation_by_a_quarter_turn_rotates_the_array():
    base = dict(beta_x=0.05, beta_y=0.2, f=0.8, phi=0.3)
    k0 = gabor_kernel(7, **base)
    k90 = gabor_kernel(7, tau=math.pi / 2, **base)
    # x' = y, y' = -x: the value at (x, y) is the unrotated value at (y, -x)
    np.testing.assert_allclose(k90, np.rot90(k0, -1), atol=1e-12)
    np.testing.assert_allclose(gabor_kernel(7, tau=math.pi, **dict(base, phi=0.0)),
                               gabor_kernel(7, **dict(base, phi=0.0)), atol=1e-12)


def test_centre_shift_moves_the_kernel():
    base = dict(beta_x=0.1, beta_y=0.1, f=1.0, tau=0.4)
    k = gabor_kernel(11, **base)
    shifted = gabor_kernel(11, x0=2.0, y0=-1.0, **base)
    np.testing.assert_allclose(shifted[0:10, 2:11], k[1:11, 0:9], atol=1e-14)


def test_bank_parameters_and_use_as_weight():
    filters, params = gabor_bank(7, orientations=3, wavelengths=(3.0, 6.0), phases=(0.0, 1.0),
                                 dtype=np.float32)
    assert filters.shape == (12, 7, 7) and filters.dtype == np.float32 and len(params) == 12
    assert params[0]["f"] == pytest.approx(2 * math.pi / 3.0)
    assert params[0]["beta_y"] == pytest.approx(0.25 * params[0]["beta_x"])
    assert sorted({p["tau"] for p in params}) == pytest.approx([0, math.pi / 3, 2 * math.pi / 3])
    for out, p in zip(filters, params):
        np.testing.assert_array_equal(out, gabor_kernel(7, dtype=np.float32, **p))
    image = np.random.default_rng(0).standard_normal((2, 1, 16, 16)).astype(np.float32)
    assert nn.conv2d(image, filters[:, None], padding="same").shape == (2, 12, 16, 16)
    angles, _ = gabor_bank(5, orientations=[0.1, 0.2], wavelengths=(4.0,))
    assert angles.shape == (2, 5, 5)


@pytest.mark.parametrize("call, error", [
    (lambda: gabor_kernel(0, beta_x=1, beta_y=1, f=1), ValueError),
    (lambda: gabor_kernel(2.5, beta_x=1, beta_y=1, f=1), TypeError),
    (lambda: gabor_kernel(5, beta_x=-1, beta_y=1, f=1), ValueError),
    (lambda: gabor_kernel(5, beta_x=1, beta_y=1, f=1, dtype=np.int32), TypeError),
    (lambda: gabor_bank(5, orientations=0), ValueError),
    (lambda: gabor_bank(5, wavelengths=(0.0,)), ValueError),
])
def test_bad_arguments(call, error):
    with pytest.raises(error):
        call()
