"""fastconv.nn.conv{1,2,3}d against plain loops (tests/naive.py) and torch."""
import numpy as np
import pytest

from fastconv import nn

from . import naive

CONV = {1: nn.conv1d, 2: nn.conv2d, 3: nn.conv3d}
TOL = {"float32": 1e-4, "float64": 1e-11}

# (id, x_shape, w_shape, stride, padding as pairs, dilation, groups)
CASES = [
    ("1d-plain", (2, 3, 11), (4, 3, 3), (1,), ((0, 0),), (1,), 1),
    ("1d-stride-pad", (1, 2, 13), (3, 2, 4), (3,), ((2, 1),), (1,), 1),
    ("1d-dil-groups", (2, 4, 12), (6, 2, 3), (2,), ((3, 3),), (2,), 2),
    ("2d-plain", (2, 3, 7, 6), (4, 3, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 1),
    ("2d-stride-asym", (1, 2, 9, 8), (3, 2, 3, 2), (2, 3), ((0, 2), (1, 0)), (1, 1), 1),
    ("2d-dilation", (1, 2, 9, 9), (2, 2, 2, 3), (1, 2), ((1, 1), (2, 2)), (3, 2), 1),
    ("2d-groups", (2, 6, 6, 7), (6, 2, 3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1), 3),
    ("2d-depthwise", (1, 3, 6, 6), (6, 1, 3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1), 3),
    ("2d-stride-gt-kernel", (1, 1, 10, 9), (2, 1, 2, 2), (4, 3), ((0, 1), (0, 0)), (1, 1), 1),
    ("2d-big-pad", (1, 2, 4, 5), (2, 2, 2, 2), (1, 2), ((3, 4), (2, 3)), (1, 1), 1),
    ("3d-plain", (1, 2, 5, 4, 5), (3, 2, 2, 3, 2), (1, 1, 1), ((1, 1), (0, 0), (1, 0)), (1, 1, 1), 1),
    ("3d-stride-dil-groups", (2, 4, 6, 5, 6), (2, 2, 2, 2, 2), (2, 1, 2), ((1, 0), (1, 1), (0, 1)),
     (2, 1, 1), 2),
]
IDS = [case[0] for case in CASES]


def _data(case, dtype, seed=0):
    _, x_shape, w_shape, stride, padding, dilation, groups = case
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    return x, w, stride, padding, dilation, groups


def _close(got, want, dtype):
    scale = max(1.0, np.abs(want).max())
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * scale)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_matches_loops(case, dtype):
    x, w, stride, padding, dilation, groups = _data(case, dtype)
    x_before = x.copy()
    got = CONV[x.ndim - 2](x, w, stride=stride, padding=padding, dilation=dilation, groups=groups)
    assert got.dtype == np.dtype(dtype)
    _close(got, naive.conv(x, w, stride, padding, dilation, groups), dtype)
    np.testing.assert_array_equal(x, x_before)


def test_padding_spellings_agree():
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((1, 2, 7, 8)), rng.standard_normal((3, 2, 3, 3))
    want = naive.conv(x, w, (1, 1), ((1, 1), (2, 2)), (1, 1))
    np.testing.assert_allclose(nn.conv2d(x, w, padding=(1, 2)), want, atol=1e-12)
    np.testing.assert_allclose(nn.conv2d(x, w, padding=[(1, 1), (2, 2)]), want, atol=1e-12)
    np.testing.assert_allclose(nn.conv2d(x, w, padding=1), nn.conv2d(x, w, padding=(1, 1)))
    np.testing.assert_allclose(nn.conv2d(x, w, padding="valid"), nn.conv2d(x, w))


@pytest.mark.parametrize("kernel, dilation", [(3, 1), (4, 1), (2, 3), (4, 2)])
def test_same_padding_puts_the_extra_after(kernel, dilation):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 1, 9)), rng.standard_normal((1, 1, kernel))
    total = (kernel - 1) * dilation
    want = naive.conv(x, w, (1,), ((total // 2, total - total // 2),), (dilation,))
    got = nn.conv1d(x, w, padding="same", dilation=dilation)
    assert got.shape == x.shape
    np.testing.assert_allclose(got, want, atol=1e-12)


def test_bias_and_unbatched():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 6, 5)), rng.standard_normal((4, 3, 2, 2)), rng.standard_normal(4)
    got = nn.conv2d(x, w, b, padding=1)
    want = naive.conv(x[None], w, (1, 1), ((1, 1), (1, 1)), (1, 1))[0] + b[:, None, None]
    assert got.shape == (4, 7, 6)
    np.testing.assert_allclose(got, want, atol=1e-12)


@pytest.mark.parametrize("method", ["auto", "direct", "im2col", "fft", "reference"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bias_fused_or_added_after(method, dtype):
    # im2col adds the bias inside (FUSED_BIAS), the others after the correlation
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((3, 3, 9, 8)), rng.standard_normal((5, 3, 3, 3))
    b = rng.standard_normal(5)
    b_before = b.copy()
    got = nn.conv2d(x.astype(dtype), w.astype(dtype), b.astype(dtype), padding=1, method=method)
    want = naive.conv(x, w, (1, 1), ((1, 1), (1, 1)), (1, 1)) + b[:, None, None]
    assert got.dtype == dtype
    np.testing.assert_allclose(got, want, rtol=1e-4 if dtype == "float32" else 1e-10,
                               atol=1e-4 if dtype == "float32" else 1e-10)
    assert np.array_equal(b, b_before)


def test_bias_on_empty_batch():
    got = nn.conv2d(np.zeros((0, 2, 5, 5)), np.ones((3, 2, 3, 3)), np.arange(3.0))
    assert got.shape == (0, 3, 3, 3)


def test_dtypes_and_layouts():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((2, 3, 8, 9))
    w = rng.standard_normal((2, 3, 3, 3))
    want = naive.conv(x, w, (1, 1), ((0, 0), (0, 0)), (1, 1))
    assert nn.conv2d(x.astype(np.float32), w.astype(np.float32)).dtype == np.float32
    assert nn.conv2d(x.astype(np.float32), w.astype(np.float64)).dtype == np.float64
    big_endian = x.astype(">f8")
    readonly = x.copy()
    readonly.flags.writeable = False
    strided = np.asfortranarray(x)
    for variant in (big_endian, readonly, strided, x[:, :, :, :].transpose(0, 1, 3, 2).swapaxes(2, 3)):
        np.testing.assert_allclose(nn.conv2d(variant, w), want, atol=1e-12)
    np.testing.assert_array_equal(big_endian, x)


def test_forced_method_and_empty_batch():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 6, 6)), rng.standard_normal((3, 2, 3, 3))
    np.testing.assert_allclose(nn.conv2d(x, w, method="reference"), nn.conv2d(x, w), atol=1e-12)
    with pytest.raises(ValueError, match="method"):
        nn.conv2d(x, w, method="nope")
    empty = nn.conv2d(np.zeros((0, 2, 6, 6)), w, np.ones(3))
    assert empty.shape == (0, 3, 4, 4)


X2, W2 = np.zeros((1, 4, 8, 8)), np.zeros((6, 4, 3, 3))


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.conv2d(X2, W2, stride=0), ValueError, "stride"),
    (lambda: nn.conv2d(X2, W2, stride=(1, -1)), ValueError, "stride"),
    (lambda: nn.conv2d(X2, W2, padding=-1), ValueError, "padding"),
    (lambda: nn.conv2d(X2, W2, padding=((0, -1), (0, 0))), ValueError, "padding"),
    (lambda: nn.conv2d(X2, W2, dilation=0), ValueError, "dilation"),
    (lambda: nn.conv2d(X2, W2, stride=1.5), TypeError, "stride"),
    (lambda: nn.conv2d(X2, W2, stride=(1, 1, 1)), ValueError, "stride"),
    (lambda: nn.conv2d(X2, np.zeros((6, 2, 3, 3)), groups=3), ValueError, "groups=3"),
    (lambda: nn.conv2d(X2, np.zeros((5, 2, 3, 3)), groups=2), ValueError, "groups=2"),
    (lambda: nn.conv2d(X2, W2, groups=0), ValueError, "groups"),
    (lambda: nn.conv2d(X2, np.zeros((6, 3, 3, 3))), ValueError, "channels"),
    (lambda: nn.conv2d(np.zeros((8, 8)), W2), ValueError, "input"),
    (lambda: nn.conv2d(X2, np.zeros((6, 4, 3))), ValueError, "weight"),
    (lambda: nn.conv2d(X2, np.zeros((6, 4, 9, 3))), ValueError, "size"),
    (lambda: nn.conv2d(X2, W2, dilation=5), ValueError, "size"),
    (lambda: nn.conv2d(X2, W2, padding="same", stride=2), ValueError, "same"),
    (lambda: nn.conv2d(X2, W2, padding="full"), ValueError, "padding"),
    (lambda: nn.conv2d(X2, W2, bias=np.zeros(5)), ValueError, "bias"),
    (lambda: nn.conv2d(X2.astype(int), W2), TypeError, "input"),
    (lambda: nn.conv2d(X2, W2.astype(np.complex128)), TypeError, "weight"),
    (lambda: nn.conv2d(X2, W2, bias=np.zeros(6, dtype=int)), TypeError, "bias"),
])
def test_bad_arguments(call, error, match):
    with pytest.raises(error, match=match):
        call()


@pytest.mark.parametrize("nd", [1, 2, 3])
def test_matches_torch(nd):
    torch = pytest.importorskip("torch")
    functional = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d,
                  3: torch.nn.functional.conv3d}[nd]
    rng = np.random.default_rng(10 + nd)
    for stride, padding, dilation, groups in [(1, 0, 1, 1), (2, 1, 1, 2), (1, "same", 2, 1),
                                              ((2,) + (1,) * (nd - 1), 2, 1, 1)]:
        x = rng.standard_normal((2, 4) + (7,) * nd).astype(np.float32)
        w = rng.standard_normal((6, 4 // groups) + (3,) * nd).astype(np.float32)
        b = rng.standard_normal(6).astype(np.float32)
        want = functional(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b),
                          stride=stride, padding=padding, dilation=dilation, groups=groups)
        got = CONV[nd](x, w, b, stride=stride, padding=padding, dilation=dilation, groups=groups)
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-4, atol=1e-4)
