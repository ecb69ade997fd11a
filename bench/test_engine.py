"""The engine against its peers: 2-D images, separable kernels, 1-D signals, 3-D volumes.

Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/test_engine.py \
        --benchmark-enable --benchmark-only -p no:cacheprovider
(``python bench/make_results.py`` runs it and writes bench/RESULTS.md.)
"""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage as ndi
import scipy.signal as ss

import fastconv
from fastconv import backends

from .peers import cv2, cv2_filter2d_same, cv2_sep_filter_same, gaussian_factors

IMAGE_KERNELS = [3, 5, 9, 17, 33, 65]
SIGNAL_KERNELS = [3, 16, 64, 256, 1024, 4096]
VOLUME_KERNELS = [3, 7, 15]
FAST_BACKENDS = [n for n in ("direct", "im2col", "fft", "separable") if n in backends.REGISTRY]


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).standard_normal((2048, 2048))


@pytest.fixture(scope="module")
def signal():
    return np.random.default_rng(1).standard_normal(1_000_000)


@pytest.fixture(scope="module")
def volume():
    return np.random.default_rng(2).standard_normal((128, 128, 128))


def _kernel(shape, seed=3):
    return np.random.default_rng(seed).standard_normal(shape)


def _rounds(k, d):
    return 3 if k ** d > 2000 else 5


# -- 2-D image, dense kernels ------------------------------------------------

@pytest.mark.parametrize("k", IMAGE_KERNELS)
def test_image_fastconv_auto(run, benchmark, image, k):
    benchmark.group = f"image2048 k={k}"
    run(fastconv.convolve, image, _kernel((k, k)), "same", rounds=_rounds(k, 2))


@pytest.mark.parametrize("name", FAST_BACKENDS)
@pytest.mark.parametrize("k", IMAGE_KERNELS)
def test_image_fastconv_backend(run, benchmark, image, k, name):
    if name == "separable":
        pytest.skip("dense kernels are not separable")
    if name in ("direct", "im2col") and k > 17:
        pytest.skip("hours at this size: the cost model rules it out")
    benchmark.group = f"image2048 k={k}"
    benchmark.extra_info["label"] = f"fastconv_{name}"
    run(lambda a, b: fastconv.convolve(a, b, "same", method=name), image, _kernel((k, k)),
        rounds=_rounds(k, 2))


@pytest.mark.parametrize("k", IMAGE_KERNELS)
def test_image_scipy_auto(run, benchmark, image, k):
    benchmark.group = f"image2048 k={k}"
    run(ss.convolve, image, _kernel((k, k)), "same", rounds=3)


@pytest.mark.parametrize("k", IMAGE_KERNELS)
def test_image_scipy_fftconvolve(run, benchmark, image, k):
    benchmark.group = f"image2048 k={k}"
    run(ss.fftconvolve, image, _kernel((k, k)), "same", rounds=3)


@pytest.mark.parametrize("k", [3, 5, 9])
def test_image_ndimage(run, benchmark, image, k):
    benchmark.group = f"image2048 k={k}"
    run(lambda a, b: ndi.convolve(a, b, mode="constant"), image, _kernel((k, k)), rounds=3)


@pytest.mark.parametrize("k", IMAGE_KERNELS)
def test_image_opencv_filter2d(run, benchmark, image, k):
    if cv2 is None:
        pytest.skip("opencv-python-headless not installed")
    benchmark.group = f"image2048 k={k}"
    run(cv2_filter2d_same, image, _kernel((k, k)), rounds=5)


# -- separable Gaussian ------------------------------------------------------

def test_gaussian_fastconv_auto(run, benchmark, image):
    benchmark.group = "image2048 gaussian31"
    g = gaussian_factors(31, 5.0)
    run(fastconv.convolve, image, np.outer(g, g), "same")


def test_gaussian_opencv_sepfilter(run, benchmark, image):
    if cv2 is None:
        pytest.skip("opencv-python-headless not installed")
    benchmark.group = "image2048 gaussian31"
    g = gaussian_factors(31, 5.0)
    run(cv2_sep_filter_same, image, g, g)


def test_gaussian_scipy_auto(run, benchmark, image):
    benchmark.group = "image2048 gaussian31"
    g = gaussian_factors(31, 5.0)
    run(ss.convolve, image, np.outer(g, g), "same", rounds=3)


# -- 1-D signal --------------------------------------------------------------

@pytest.mark.parametrize("k", SIGNAL_KERNELS)
def test_signal_fastconv_auto(run, benchmark, signal, k):
    benchmark.group = f"signal1e6 k={k}"
    run(fastconv.convolve, signal, _kernel(k))


@pytest.mark.parametrize("name", FAST_BACKENDS)
@pytest.mark.parametrize("k", SIGNAL_KERNELS)
def test_signal_fastconv_backend(run, benchmark, signal, k, name):
    if name == "separable" or (name in ("direct", "im2col") and k > 1024):
        pytest.skip("not a contender at this size")
    benchmark.group = f"signal1e6 k={k}"
    benchmark.extra_info["label"] = f"fastconv_{name}"
    run(lambda a, b: fastconv.convolve(a, b, method=name), signal, _kernel(k), rounds=3)


@pytest.mark.parametrize("k", SIGNAL_KERNELS)
def test_signal_numpy_convolve(run, benchmark, signal, k):
    benchmark.group = f"signal1e6 k={k}"
    run(np.convolve, signal, _kernel(k), rounds=3)


@pytest.mark.parametrize("k", SIGNAL_KERNELS)
def test_signal_scipy_oaconvolve(run, benchmark, signal, k):
    benchmark.group = f"signal1e6 k={k}"
    run(ss.oaconvolve, signal, _kernel(k), rounds=3)


# -- 3-D volume --------------------------------------------------------------

@pytest.mark.parametrize("k", VOLUME_KERNELS)
def test_volume_fastconv_auto(run, benchmark, volume, k):
    benchmark.group = f"volume128 k={k}"
    run(fastconv.convolve, volume, _kernel((k, k, k)), "same", rounds=3)


@pytest.mark.parametrize("name", FAST_BACKENDS)
@pytest.mark.parametrize("k", VOLUME_KERNELS)
def test_volume_fastconv_backend(run, benchmark, volume, k, name):
    if name == "separable" or (name in ("direct", "im2col") and k > 7):
        pytest.skip("not a contender at this size")
    benchmark.group = f"volume128 k={k}"
    benchmark.extra_info["label"] = f"fastconv_{name}"
    run(lambda a, b: fastconv.convolve(a, b, "same", method=name), volume, _kernel((k, k, k)),
        rounds=3)


@pytest.mark.parametrize("k", VOLUME_KERNELS)
def test_volume_scipy_auto(run, benchmark, volume, k):
    benchmark.group = f"volume128 k={k}"
    run(ss.convolve, volume, _kernel((k, k, k)), "same", rounds=3)
