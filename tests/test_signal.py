"""fastconv.signal is a drop-in for scipy.signal: same results, dtypes and errors."""
import threading

import numpy as np
import pytest
import scipy.signal as ss

import fastconv
import fastconv.signal as fs
from fastconv import backends

SHAPE_PAIRS = [
    ((10,), (3,)), ((10,), (4,)), ((3,), (8,)), ((1,), (1,)),
    ((5, 7), (3, 4)), ((6, 5), (4, 4)), ((3, 3), (5, 6)), ((9, 8), (1, 5)),
    ((4, 5, 6), (2, 3, 2)), ((3, 4, 3), (5, 2, 4)),
]
MODES = ["full", "same", "valid"]
DTYPES = [np.float32, np.float64, np.complex64, np.complex128, np.int32, np.uint8, np.bool_]


def _data(rng, shape, dtype):
    if np.dtype(dtype).kind == "b":
        return rng.random(shape) > 0.5
    if np.dtype(dtype).kind in "iu":
        return rng.integers(0, 9, shape).astype(dtype)
    data = rng.standard_normal(shape)
    if np.dtype(dtype).kind == "c":
        data = data + 1j * rng.standard_normal(shape)
    return data.astype(dtype)


def _outcome(func, *args, **kwargs):
    try:
        return func(*args, **kwargs)
    except Exception as exc:  # compare the exception type with scipy's
        return type(exc)


def _assert_same(got, want, rtol):
    if isinstance(want, type):
        assert got is want or (isinstance(got, type) and issubclass(got, want)), (got, want)
        return
    assert not isinstance(got, type), got
    assert got.shape == want.shape
    assert got.dtype == want.dtype
    if want.dtype.kind in "biu":
        np.testing.assert_array_equal(got, want)
    else:
        scale = max(float(np.abs(want).max(initial=0)), 1.0)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale)


def _rtol(dtype):
    return 1e-4 if np.dtype(dtype) in (np.float32, np.complex64) else 1e-10


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shapes", SHAPE_PAIRS)
@pytest.mark.parametrize("func", ["convolve", "correlate"])
def test_matches_scipy(func, shapes, mode, dtype):
    rng = np.random.default_rng(0)
    a, b = _data(rng, shapes[0], dtype), _data(rng, shapes[1], dtype)
    if np.dtype(dtype).kind == "b":  # scipy's direct method refuses bool in some modes
        want = _outcome(getattr(ss, func), a.astype(int), b.astype(int), mode, method="direct")
        want = want if isinstance(want, type) else want != 0
    else:
        want = _outcome(getattr(ss, func), a, b, mode, method="direct")
    _assert_same(_outcome(getattr(fs, func), a, b, mode), want, _rtol(dtype))


@pytest.mark.parametrize("method", sorted(set(backends.REGISTRY) | {"direct", "fft"}))
@pytest.mark.parametrize("func", ["convolve", "correlate"])
def test_every_method_matches_scipy(func, method):
    rng = np.random.default_rng(1)
    a, b = _data(rng, (13, 11), np.complex128), _data(rng, (4, 5), np.complex128)
    for mode in MODES:
        want = getattr(ss, func)(a, b, mode)
        try:
            got = getattr(fs, func)(a, b, mode, method=method)
        except ValueError as exc:  # a backend that cannot compute this problem says so
            assert "cannot compute" in str(exc)
            continue
        _assert_same(got, want, 1e-10)


def test_mixed_dtypes_follow_numpy_promotion():
    rng = np.random.default_rng(2)
    for d1, d2 in [(np.float32, np.float64), (np.int16, np.float32), (np.float32, np.complex64),
                   (np.int8, np.uint8), (np.int64, np.complex64)]:
        a, b = _data(rng, (12,), d1), _data(rng, (5,), d2)
        _assert_same(fs.convolve(a, b), ss.convolve(a, b, method="direct"), 1e-4)


def test_large_integers_stay_exact():
    a = np.array([2**40, 3, -2**41, 7], dtype=np.int64)
    b = np.array([2**20, -5, 9], dtype=np.int64)
    want = np.array([sum(int(a[i]) * int(b[k - i]) for i in range(len(a)) if 0 <= k - i < len(b))
                     for k in range(len(a) + len(b) - 1)], dtype=np.int64)
    np.testing.assert_array_equal(fs.convolve(a, b), want)
    with pytest.raises(ValueError, match="cannot compute"):  # a float FFT would not be exact
        fs.convolve(a, b, method="fft")


def test_integer_results_exact_on_large_problem():
    rng = np.random.default_rng(3)
    a = rng.integers(-1000, 1000, (200, 200))
    b = rng.integers(-1000, 1000, (40, 40))
    np.testing.assert_array_equal(fs.convolve(a, b, "same"), ss.convolve(a, b, "same", "direct"))


def test_nan_stays_local():
    x = np.zeros((64, 64))
    x[30, 30] = np.nan
    out = fs.convolve(x, np.ones((33, 33)), mode="same")
    assert np.isnan(out[30, 30])
    assert np.isnan(out[14:47, 14:47]).all()
    assert not np.isnan(out[:14]).any() and not np.isnan(out[:, 47:]).any()


def test_zero_d_and_empty_like_scipy():
    assert fs.convolve(np.float64(3), np.float64(2)) == 6
    assert fs.correlate(np.complex128(1j), np.complex128(1j)) == ss.correlate(1j, 1j)
    for a, b in [(np.array([]), np.array([1.0, 2])), (np.zeros((0, 3)), np.ones((2, 2)))]:
        for mode in MODES:
            want = _outcome(ss.convolve, a, b, mode, "direct")
            got = _outcome(fs.convolve, a, b, mode)
            if isinstance(want, type):
                assert isinstance(got, type) and issubclass(got, ValueError)
            else:
                assert got.shape == want.shape and got.dtype == want.dtype
    assert fs.fftconvolve(np.array([]), np.ones(3)).shape == ss.fftconvolve(np.array([]), np.ones(3)).shape


@pytest.mark.parametrize("bad", [
    dict(in1=np.ones(5), in2=np.ones((2, 2))),
    dict(in1=np.ones(5), in2=np.ones(3), mode="middle"),
    dict(in1=np.ones(5), in2=np.ones(3), method="karatsuba"),
    dict(in1=np.ones((5, 2)), in2=np.ones((2, 5)), mode="valid"),
])
def test_bad_arguments_raise_value_error(bad):
    with pytest.raises(ValueError):
        ss.convolve(**bad)
    with pytest.raises(ValueError) as info:
        fs.convolve(**bad)
    message = str(info.value)
    assert any(word in message for word in ("dimensionality", "mode", "method", "valid"))


def test_unknown_method_lists_available():
    with pytest.raises(ValueError, match="reference"):
        fs.convolve(np.ones(5), np.ones(3), method="karatsuba")


def test_object_and_string_arrays_are_refused():
    with pytest.raises(TypeError, match="in1"):
        fs.convolve(np.array([1, "a"], dtype=object), np.ones(2))
    with pytest.raises(TypeError, match="in2"):
        fs.correlate(np.ones(3), np.array(["x", "y"]))


def test_too_large_output_refused_before_allocating():
    big = np.lib.stride_tricks.as_strided(np.zeros(1), shape=(2**20, 2**20), strides=(0, 0))
    with pytest.raises(MemoryError, match="output"):
        fs.convolve(big, big)
    with pytest.raises(MemoryError, match="in1"):
        fs.convolve(big, big, "valid")


def test_awkward_layouts_and_caller_arrays_untouched():
    rng = np.random.default_rng(4)
    base = rng.standard_normal((30, 40))
    kernel = rng.standard_normal((5, 4))
    want = ss.convolve(base[::2, ::-3], kernel, "same")
    big_endian = base.astype(">f8")
    readonly = base.copy()
    readonly.flags.writeable = False
    k_before = kernel.copy()
    np.testing.assert_allclose(fs.convolve(base[::2, ::-3], kernel, "same"), want, rtol=1e-12)
    np.testing.assert_allclose(fs.convolve(big_endian, kernel), ss.convolve(base, kernel), rtol=1e-12)
    np.testing.assert_allclose(fs.convolve(readonly, kernel.T), ss.convolve(base, kernel.T), rtol=1e-12)
    np.testing.assert_array_equal(kernel, k_before)
    np.testing.assert_array_equal(readonly, base)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", ["fftconvolve", "oaconvolve"])
def test_freq_convolve_axes_and_broadcasting(func, mode):
    rng = np.random.default_rng(5)
    cases = [
        ((6, 40), (6, 7), [1]), ((6, 40), (1, 7), [1]), ((1, 40), (5, 7), [1]),
        ((6, 40), (6, 7), None), ((3, 20, 4), (3, 5, 4), [1]), ((8, 9, 10), (3, 4, 5), [0, 2]),
        ((20,), (50,), None), ((4, 30), (4, 30), [-1]),
    ]
    for s1, s2, axes in cases:
        a, b = rng.standard_normal(s1), rng.standard_normal(s2)
        want = _outcome(getattr(ss, func), a, b, mode, axes)
        _assert_same(_outcome(getattr(fs, func), a, b, mode, axes), want, 1e-10)
    a32, b32 = a.astype(np.float32), (b + 1j * b).astype(np.complex64)
    _assert_same(getattr(fs, func)(a32, b32, mode, axes), getattr(ss, func)(a32, b32, mode, axes), 1e-4)
    ai = rng.integers(0, 5, (10,))
    _assert_same(getattr(fs, func)(ai, ai, mode), getattr(ss, func)(ai, ai, mode), 1e-10)


def test_freq_convolve_bad_axes():
    with pytest.raises(ValueError):
        fs.fftconvolve(np.ones((3, 4)), np.ones((2, 2)), axes=[5])
    with pytest.raises(ValueError):
        fs.fftconvolve(np.ones((3, 4)), np.ones((2, 2)), axes=[0, 0])
    with pytest.raises(ValueError):
        fs.fftconvolve(np.ones((3, 4)), np.ones((2, 2)), axes=[1])


@pytest.mark.parametrize("fillvalue", [0, 2.5])
@pytest.mark.parametrize("boundary", ["fill", "wrap", "symm", "circular", "symmetric"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("func", ["convolve2d", "correlate2d"])
def test_2d_boundaries_match_scipy(func, mode, boundary, fillvalue):
    rng = np.random.default_rng(6)
    for s1, s2 in [((5, 7), (3, 4)), ((6, 5), (4, 4)), ((3, 3), (5, 6)), ((4, 4), (9, 2))]:
        a, b = rng.standard_normal(s1), rng.standard_normal(s2) + 1j * rng.standard_normal(s2)
        want = _outcome(getattr(ss, func), a, b, mode, boundary, fillvalue)
        _assert_same(_outcome(getattr(fs, func), a, b, mode, boundary, fillvalue), want, 1e-10)


def test_2d_bad_arguments():
    with pytest.raises(ValueError, match="2-D"):
        fs.convolve2d(np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="boundary"):
        fs.correlate2d(np.ones((3, 3)), np.ones((2, 2)), boundary="mirror")


def test_choose_conv_method_and_explain():
    rng = np.random.default_rng(7)
    a, b = rng.standard_normal((50, 50)), rng.standard_normal((5, 5))
    name = fs.choose_conv_method(a, b, "same")
    assert name in backends.REGISTRY
    np.testing.assert_allclose(fs.convolve(a, b, "same", method=name), ss.convolve(a, b, "same"),
                               rtol=1e-10, atol=1e-10)
    best, times = fs.choose_conv_method(a[:20, :20], b, "full", measure=True)
    assert best in times and all(t > 0 for t in times.values())
    text = str(fastconv.explain(a, b, mode="same"))
    assert name in text and "candidates" in text and "rule" in text


def test_top_level_names_are_the_signal_functions():
    assert fastconv.convolve is fs.convolve
    assert fastconv.correlate is fs.correlate


def test_many_threads_at_once_get_correct_results():
    rng = np.random.default_rng(8)
    jobs = [(rng.standard_normal((40 + i, 37)), rng.standard_normal((1 + i % 9, 3 + i % 5)))
            for i in range(12)]
    results = [None] * len(jobs)

    def work(i):
        results[i] = fs.convolve(*jobs[i], mode="same")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for (a, b), got in zip(jobs, results):
        np.testing.assert_allclose(got, ss.convolve(a, b, "same"), rtol=1e-10, atol=1e-10)
