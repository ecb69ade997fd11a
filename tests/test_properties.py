"""Algebraic properties the chapter states, checked on random arrays with hypothesis."""
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import fastconv
from fastconv import backends

# backends offered for every shape drawn here; separable (low-rank kernels) and winograd
# (kernels up to 5 taps, 1-d and 2-d) have their own property tests
METHODS = sorted(n for n in backends.REGISTRY if n not in ("separable", "winograd"))
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def operand_pairs(draw, max_dims=3):
    ndim = draw(st.integers(1, max_dims))
    side = st.integers(1, 9 if ndim < 3 else 5)
    s1 = tuple(draw(side) for _ in range(ndim))
    s2 = tuple(draw(side) for _ in range(ndim))
    values = st.floats(-10, 10, allow_nan=False, width=64)
    return draw(arrays(np.float64, s1, elements=values)), draw(arrays(np.float64, s2, elements=values))


def _close(a, b):
    scale = max(np.abs(a).max(initial=0), np.abs(b).max(initial=0), 1.0)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9 * scale)


@SETTINGS
@given(pair=operand_pairs(), method=st.sampled_from(METHODS))
def test_convolution_commutes(pair, method):
    a, b = pair
    _close(fastconv.convolve(a, b, method=method), fastconv.convolve(b, a, method=method))


@SETTINGS
@given(pair=operand_pairs(), alpha=st.floats(-3, 3), beta=st.floats(-3, 3),
       mode=st.sampled_from(["full", "same"]), method=st.sampled_from(METHODS))
def test_convolution_is_linear(pair, alpha, beta, mode, method):
    a, k = pair
    b = np.random.default_rng(0).standard_normal(a.shape)
    left = fastconv.convolve(alpha * a + beta * b, k, mode, method=method)
    right = alpha * fastconv.convolve(a, k, mode, method=method) + beta * fastconv.convolve(b, k, mode, method=method)
    _close(left, right)


@SETTINGS
@given(pair=operand_pairs(), mode=st.sampled_from(["full", "same", "valid"]),
       method=st.sampled_from(METHODS))
def test_correlation_is_convolution_with_flipped_conjugated_kernel(pair, mode, method):
    a, k = pair
    if mode == "valid" and not all(n >= m for n, m in zip(a.shape, k.shape)):
        k = k[tuple(slice(0, n) for n in a.shape)]
    kc = k + 1j * np.roll(k, 1)
    flipped = np.conj(kc[(slice(None, None, -1),) * kc.ndim])
    _close(fastconv.correlate(a, kc, mode, method=method), fastconv.convolve(a, flipped, mode, method=method))


@SETTINGS
@given(pair=operand_pairs(max_dims=2))
def test_every_method_agrees_with_reference(pair):
    a, k = pair
    want = fastconv.convolve(a, k, "full", method="reference")
    for method in METHODS:
        _close(fastconv.convolve(a, k, "full", method=method), want)
