"""fastconv.tf: TensorFlow-layout convolution, pooling and LRN against plain loops."""
from __future__ import annotations

import numpy as np
import pytest

from fastconv import tf

try:  # tests as a package or as a plain directory on sys.path
    from . import naive_pool as naive
except ImportError:
    import naive_pool as naive


def _data(shape, dtype="float64", seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def _to_nchw(a):
    return np.moveaxis(a, -1, 1)


def _to_nhwc(a):
    return np.moveaxis(a, 1, -1)


def _pads(padding, spatial, kernel, stride, dilation):
    if padding == "SAME":
        return [naive.tf_same_pads(n, k, s, d) for n, k, s, d in zip(spatial, kernel, stride,
                                                                      dilation)]
    if padding == "VALID":
        return [(0, 0)] * len(spatial)
    return [tuple(p) for p in padding[1:-1]]


# (x_shape NHWC, filter shape, strides as given, stride tuple, padding, dilations, dilation tuple)
CONV2D = [
    ((2, 9, 8, 3), (3, 3, 3, 4), 1, (1, 1), "SAME", None, (1, 1)),
    ((1, 10, 9, 2), (3, 2, 2, 3), [2], (2, 2), "SAME", None, (1, 1)),
    ((1, 11, 10, 2), (5, 4, 2, 2), [1, 2, 3, 1], (2, 3), "SAME", [1, 1, 1, 1], (1, 1)),
    ((2, 12, 11, 1), (3, 3, 1, 2), [1, 1], (1, 1), "VALID", [2, 3], (2, 3)),
    ((1, 8, 9, 2), (2, 3, 2, 2), 2, (2, 2), [[0, 0], [1, 2], [0, 1], [0, 0]], None, (1, 1)),
    ((1, 13, 9, 2), (3, 3, 2, 1), [3, 2], (3, 2), "SAME", 2, (2, 2)),
]


@pytest.mark.parametrize("case", CONV2D, ids=range(len(CONV2D)))
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_conv2d_matches_loops(case, data_format):
    x_shape, f_shape, strides, stride, padding, dilations, dilation = case
    x, f = _data(x_shape), _data(f_shape, seed=1)
    pads = _pads(padding, x_shape[1:3], f_shape[:2], stride, dilation)
    expected = naive.conv_nhwc(x, f, stride, pads, dilation)
    if data_format == "NHWC":
        out = tf.conv2d(x, f, strides, padding, "NHWC", dilations)
    else:
        strides = [1, 1] + list(strides[1:3]) if isinstance(strides, list) and len(
            strides) == 4 else strides
        padding = padding if isinstance(padding, str) else [[0, 0], [0, 0]] + padding[1:3]
        out = _to_nhwc(tf.conv2d(_to_nchw(x), f, strides, padding, "NCHW", dilations))
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("data_format", ["NWC", "NCW"])
@pytest.mark.parametrize("stride, padding, dilation", [(1, "SAME", 1), (2, "SAME", 1),
                                                       (3, "VALID", 2), (2, "SAME", 2)])
def test_conv1d_matches_loops(data_format, stride, padding, dilation):
    x, f = _data((2, 13, 3), "float32"), _data((4, 3, 2), "float32", seed=1)
    pads = _pads(padding, (13,), (4,), (stride,), (dilation,))
    expected = naive.conv_nhwc(x, f, (stride,), pads, (dilation,))
    if data_format == "NWC":
        out = tf.conv1d(x, f, stride, padding, dilations=dilation)
    else:
        out = _to_nhwc(tf.conv1d(_to_nchw(x), f, [stride], padding, "NCW", [dilation]))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("data_format", ["NDHWC", "NCDHW"])
def test_conv3d_matches_loops(data_format):
    x, f = _data((1, 5, 6, 7, 2)), _data((2, 3, 2, 2, 3), seed=1)
    pads = _pads("SAME", (5, 6, 7), (2, 3, 2), (2, 1, 2), (1, 1, 1))
    expected = naive.conv_nhwc(x, f, (2, 1, 2), pads, (1, 1, 1))
    if data_format == "NDHWC":
        out = tf.conv3d(x, f, [1, 2, 1, 2, 1], "SAME")
    else:
        out = _to_nhwc(tf.conv3d(_to_nchw(x), f, [1, 1, 2, 1, 2], "SAME", "NCDHW"))
    np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-10)


def test_same_padding_puts_the_extra_cell_after():
    # 24 -> 12 with a 3-wide window at stride 2: windows start at 0, 2, ..., 22, one zero after
    x = np.zeros((1, 24, 1, 1))
    x[0, 23, 0, 0] = 1.0
    f = np.ones((3, 1, 1, 1))
    out = tf.conv2d(x, f, [2, 1], "SAME")
    assert out.shape == (1, 12, 1, 1)
    assert out[0, 11, 0, 0] == 1.0 and out[0, :11].sum() == 0.0


@pytest.mark.parametrize("case", CONV2D, ids=range(len(CONV2D)))
def test_conv2d_backprops_are_adjoints(case):
    x_shape, f_shape, strides, _, padding, dilations, _ = case
    x, f = _data(x_shape), _data(f_shape, seed=1)
    out = tf.conv2d(x, f, strides, padding, dilations=dilations)
    g = _data(out.shape, seed=2)
    dx = tf.conv2d_backprop_input(list(x_shape), f, g, strides, padding, dilations=dilations)
    df = tf.conv2d_backprop_filter(x, list(f_shape), g, strides, padding, dilations=dilations)
    assert dx.shape == x_shape and df.shape == f_shape
    assert np.sum(out * g) == pytest.approx(np.sum(x * dx), rel=1e-10)
    assert np.sum(out * g) == pytest.approx(np.sum(f * df), rel=1e-10)
    # input_sizes may give the spatial sizes alone; NCHW gives the same numbers transposed
    np.testing.assert_array_equal(
        tf.conv2d_backprop_input(x_shape[1:3], f, g, strides, padding, dilations=dilations), dx)


def test_conv2d_backprops_nchw():
    x, f = _data((2, 3, 9, 8)), _data((3, 3, 3, 2), seed=1)
    g = _data((2, 2, 5, 4), seed=2)
    dx = tf.conv2d_backprop_input([2, 3, 9, 8], f, g, [1, 1, 2, 2], "SAME", "NCHW")
    df = tf.conv2d_backprop_filter(x, [3, 3, 3, 2], g, [1, 1, 2, 2], "SAME", "NCHW")
    np.testing.assert_allclose(
        _to_nchw(tf.conv2d_backprop_input([2, 9, 8, 3], f, _to_nhwc(g), 2, "SAME")), dx,
        atol=1e-12)
    np.testing.assert_allclose(
        tf.conv2d_backprop_filter(_to_nhwc(x), [3, 3, 3, 2], _to_nhwc(g), 2, "SAME"), df,
        atol=1e-12)


# --- pooling -------------------------------------------------------------------------------

POOLS = [((2, 9, 8, 3), 3, 2, "SAME"), ((1, 7, 7, 2), [2, 3], [1, 2], "SAME"),
         ((2, 8, 9, 2), [1, 3, 2, 1], [1, 2, 2, 1], "VALID"), ((1, 5, 5, 1), 2, 3, "SAME")]


def _pool_geometry(x_shape, ksize, strides, padding):
    k = tuple(v for v in np.broadcast_to(ksize, (2,))) if np.ndim(ksize) == 0 or len(
        ksize) <= 2 else tuple(ksize[1:3])
    s = tuple(v for v in np.broadcast_to(strides, (2,))) if np.ndim(strides) == 0 or len(
        strides) <= 2 else tuple(strides[1:3])
    k, s = tuple(int(v) for v in k), tuple(int(v) for v in s)
    pads = _pads(padding, x_shape[1:3], k, s, (1, 1))
    out = [(n + p[0] + p[1] - kk) // ss + 1 for n, p, kk, ss in zip(x_shape[1:3], pads, k, s)]
    return k, s, pads, out


@pytest.mark.parametrize("case", POOLS, ids=range(len(POOLS)))
@pytest.mark.parametrize("data_format", ["NHWC", "NCHW"])
def test_pools_match_loops(case, data_format):
    x_shape, ksize, strides, padding = case
    x = _data(x_shape, "float32")
    k, s, pads, out_spatial = _pool_geometry(x_shape, ksize, strides, padding)
    first = _to_nchw(x)
    expected_max, _ = naive.max_pool(first, k, s, [p[0] for p in pads], (1, 1), out_spatial)
    expected_avg = naive.avg_pool(first, k, s, [p[0] for p in pads], [p[1] for p in pads],
                                  out_spatial, count_include_pad=False)
    if data_format == "NHWC":
        got_max = _to_nchw(tf.max_pool2d(x, ksize, strides, padding))
        got_avg = _to_nchw(tf.avg_pool2d(x, ksize, strides, padding))
    else:
        ksize = [1, 1] + list(ksize[1:3]) if np.ndim(ksize) and len(ksize) == 4 else ksize
        strides = [1, 1] + list(strides[1:3]) if np.ndim(strides) and len(strides) == 4 \
            else strides
        got_max = tf.max_pool2d(first, ksize, strides, padding, "NCHW")
        got_avg = tf.avg_pool2d(first, ksize, strides, padding, "NCHW")
    np.testing.assert_array_equal(got_max, expected_max)
    np.testing.assert_allclose(got_avg, expected_avg, rtol=1e-6, atol=1e-6)


def test_same_average_counts_only_real_cells():
    x = np.arange(9.0).reshape(1, 3, 3, 1)
    out = tf.avg_pool2d(x, 2, 2, "SAME")[0, :, :, 0]
    # windows rows {0,1},{2} x cols {0,1},{2}: the padding after is not counted
    np.testing.assert_allclose(out, [[(0 + 1 + 3 + 4) / 4, (2 + 5) / 2], [(6 + 7) / 2, 8.0]])


def test_pool_1d_and_3d():
    x = _data((2, 10, 3))
    np.testing.assert_array_equal(tf.max_pool1d(x, 3, 2, "SAME"),
                                  tf.max_pool2d(x[:, :, None], [3, 1], [2, 1], "SAME")[:, :, 0])
    np.testing.assert_allclose(tf.avg_pool1d(x, 3, 2, "SAME"),
                               tf.avg_pool2d(x[:, :, None], [3, 1], [2, 1], "SAME")[:, :, 0])
    v = _data((1, 4, 5, 6, 2))
    out = tf.max_pool3d(v, 2, 2, "SAME")
    assert out.shape == (1, 2, 3, 3, 2)
    assert out[0, 2 - 1, 2, 2, 1] == v[0, 2:4, 4:5, 4:6, 1].max()
    assert tf.avg_pool3d(v, 2, 2, "VALID")[0, 0, 0, 0, 0] == pytest.approx(
        v[0, :2, :2, :2, 0].mean())


def test_max_pool_with_argmax_index_formula():
    x = _data((2, 5, 6, 3), "float32")
    out, argmax = tf.max_pool_with_argmax(x, 2, 2, "SAME")
    out_b, argmax_b = tf.max_pool_with_argmax(x, [1, 2, 2, 1], [1, 2, 2, 1], "SAME",
                                              include_batch_in_index=True)
    assert argmax.dtype == np.int64 and argmax.shape == out.shape == (2, 3, 3, 3)
    np.testing.assert_array_equal(out, out_b)
    _, height, width, channels = x.shape
    for b, oy, ox, c in np.ndindex(*out.shape):
        window = x[b, 2 * oy:2 * oy + 2, 2 * ox:2 * ox + 2, c]
        dy, dx = np.unravel_index(np.argmax(window), window.shape)  # first maximum
        y, xx = 2 * oy + dy, 2 * ox + dx
        assert out[b, oy, ox, c] == x[b, y, xx, c]
        assert argmax[b, oy, ox, c] == (y * width + xx) * channels + c
        assert argmax_b[b, oy, ox, c] == ((b * height + y) * width + xx) * channels + c
    _, small = tf.max_pool_with_argmax(x, 2, 2, "SAME", output_dtype=np.int32)
    assert small.dtype == np.int32
    np.testing.assert_array_equal(small, argmax)


def test_argmax_ties_and_nan():
    x = np.array([[4.0, 7.0], [7.0, 7.0]]).reshape(1, 2, 2, 1)
    _, argmax = tf.max_pool_with_argmax(x, 2, 2, "VALID")
    assert argmax.item() == 1
    two = np.array([[1.0, 2.0, 9.0, 9.0]]).reshape(1, 1, 2, 2)  # (b, y, x, c)
    out, argmax = tf.max_pool_with_argmax(two, [1, 2], [1, 2], "VALID")
    np.testing.assert_array_equal(argmax.ravel(), [2, 3])
    nan = np.array([[1.0, np.nan], [3.0, 2.0]]).reshape(1, 2, 2, 1)
    out, argmax = tf.max_pool_with_argmax(nan, 2, 2, "VALID")
    assert np.isnan(out.item()) and argmax.item() == 1


@pytest.mark.parametrize("include_batch", [False, True])
def test_max_pool_grad_with_argmax(include_batch):
    x = _data((2, 7, 6, 3))
    x[0, :2, :2, 0] = 5.0  # a tie
    out, argmax = tf.max_pool_with_argmax(x, 3, 2, "SAME", include_batch_in_index=include_batch)
    g = _data(out.shape, seed=1)
    grad = tf.max_pool_grad_with_argmax(x, g, argmax, 3, 2, "SAME", include_batch)
    _, _, pads, _ = _pool_geometry(x.shape, 3, 2, "SAME")
    expected = naive.max_pool_input(_to_nchw(x), _to_nchw(g), (3, 3), (2, 2),
                                    [p[0] for p in pads], (1, 1))
    np.testing.assert_allclose(grad, _to_nhwc(expected), atol=1e-12)
    np.testing.assert_allclose(tf.max_pool_grad(x, out, g, 3, 2, "SAME"), grad, atol=1e-12)


def test_avg_pool_grad_is_the_adjoint():
    x = _data((2, 7, 6, 3))
    for padding in ("SAME", "VALID"):
        out = tf.avg_pool2d(x, [3, 2], 2, padding)
        g = _data(out.shape, seed=1)
        grad = tf.avg_pool_grad(x.shape, g, [3, 2], 2, padding)
        assert np.sum(out * g) == pytest.approx(np.sum(x * grad), rel=1e-12)
    grad_nchw = tf.avg_pool_grad((2, 3, 7, 6), _to_nchw(g), [3, 2], 2, "VALID", "NCHW")
    np.testing.assert_allclose(_to_nhwc(grad_nchw), grad, atol=1e-14)


# --- LRN -----------------------------------------------------------------------------------

@pytest.mark.parametrize("radius, bias, alpha, beta", [(5, 1, 1, 0.5), (4, 1.0, 1e-3 / 9, 0.75),
                                                       (0, 2.0, 0.5, 1.0), (2, 0.5, 0.3, 0.6)])
def test_lrn_matches_the_chapter_formula(radius, bias, alpha, beta):
    x = _data((2, 3, 4, 7))
    out = tf.local_response_normalization(x, radius, bias, alpha, beta)
    np.testing.assert_allclose(out, naive.lrn_tf(x, radius, bias, alpha, beta), rtol=1e-13)
    np.testing.assert_array_equal(tf.lrn(x, radius, bias, alpha, beta), out)


def test_lrn_grad_by_finite_differences_and_against_nn():
    from fastconv.nn.lrn import local_response_norm_input
    x, g = _data((2, 2, 3, 6)), _data((2, 2, 3, 6), seed=1)
    args = (2, 1.5, 0.4, 0.75)
    y = tf.local_response_normalization(x, *args)
    grad = tf.lrn_grad(g, x, y, *args)
    eps = 1e-6
    for i in [(0, 0, 0, 0), (1, 1, 2, 3), (0, 1, 1, 5)]:
        e = np.zeros_like(x)
        e[i] = eps
        numeric = np.sum(g * (tf.local_response_normalization(x + e, *args)
                              - tf.local_response_normalization(x - e, *args))) / (2 * eps)
        assert grad[i] == pytest.approx(numeric, rel=1e-6)
    # TF's radius r is torch's size 2r + 1 with alpha times the size
    nn_grad = local_response_norm_input(_to_nchw(x), _to_nchw(g), 5, 0.4 * 5, 0.75, 1.5)
    np.testing.assert_allclose(_to_nhwc(nn_grad), grad, rtol=1e-10)


def test_lrn_grad_uses_the_given_output_as_tf_does():
    x, g = _data((1, 1, 1, 4)), _data((1, 1, 1, 4), seed=1)
    y = tf.local_response_normalization(x, 1, 1.0, 1.0, 0.5)
    assert not np.allclose(tf.lrn_grad(g, x, 2 * y, 1, 1.0, 1.0, 0.5),
                           tf.lrn_grad(g, x, y, 1, 1.0, 1.0, 0.5))


# --- bad input -----------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda x, f: tf.conv2d(x, f, 1, "same"), ValueError, "padding"),
    (lambda x, f: tf.conv2d(x, f, 1, "FULL"), ValueError, "padding"),
    (lambda x, f: tf.conv2d(x, f, 0, "SAME"), ValueError, "strides"),
    (lambda x, f: tf.conv2d(x, f, [2, 1, 1, 1], "SAME"), ValueError, "strides"),
    (lambda x, f: tf.conv2d(x, f, [1, 1, 1, 2], "SAME"), ValueError, "strides"),
    (lambda x, f: tf.conv2d(x, f, [1, 1, 1], "SAME"), ValueError, "strides"),
    (lambda x, f: tf.conv2d(x, f, 1.5, "SAME"), TypeError, "strides"),
    (lambda x, f: tf.conv2d(x, f, 1, "SAME", dilations=[0, 1]), ValueError, "dilations"),
    (lambda x, f: tf.conv2d(x, f, 1, "SAME", data_format="NWHC"), ValueError, "data_format"),
    (lambda x, f: tf.conv2d(x[0], f, 1, "SAME"), ValueError, "input"),
    (lambda x, f: tf.conv2d(x, f[:, :, :1], 1, "SAME"), ValueError, "channels"),
    (lambda x, f: tf.conv2d(x, f, 1, [[0, 0], [1, 1], [1, 1]]), ValueError, "padding"),
    (lambda x, f: tf.conv2d(x, f, 1, [[1, 0], [1, 1], [1, 1], [0, 0]]), ValueError, "padding"),
    (lambda x, f: tf.conv2d(x, f, 1, [[0, 0], [-1, 1], [1, 1], [0, 0]]), ValueError, "padding"),
    (lambda x, f: tf.conv2d(x, f[:, :, :, :1].repeat(9, 0), 1, "VALID"), ValueError, "kernel"),
    (lambda x, f: tf.max_pool2d(x, 0, 1, "SAME"), ValueError, "ksize"),
    (lambda x, f: tf.max_pool2d(x, [2, 2, 2, 2], 1, "SAME"), ValueError, "ksize"),
    (lambda x, f: tf.avg_pool2d(x, 2, 1, [[0, 0], [1, 1], [1, 1], [0, 0]]), ValueError,
     "padding"),
    (lambda x, f: tf.max_pool_with_argmax(x, 2, 2, "SAME", output_dtype=np.float32), TypeError,
     "output_dtype"),
    (lambda x, f: tf.max_pool_grad_with_argmax(x, np.ones((2, 3, 3, 2)),
                                               np.zeros((2, 3, 3), np.int64), 2, 2, "SAME"),
     ValueError, "argmax"),
    (lambda x, f: tf.max_pool_grad_with_argmax(x, np.ones((2, 3, 3, 2)),
                                               np.full((2, 3, 3, 2), 99), 2, 2, "SAME"),
     ValueError, "indices"),
    (lambda x, f: tf.local_response_normalization(x, -1), ValueError, "depth_radius"),
    (lambda x, f: tf.local_response_normalization(x[0], 2), ValueError, "input"),
    (lambda x, f: tf.conv2d_backprop_input([1, 2], f, x, 1, "SAME"), ValueError, "out_backprop"),
    (lambda x, f: tf.conv2d_backprop_input([2, 5, 6], f, x, 1, "SAME"), ValueError,
     "input_sizes"),
    (lambda x, f: tf.conv2d_backprop_input([2, 5, 6, 3], f, x, 1, "SAME"), ValueError,
     "channels"),
    (lambda x, f: tf.conv2d_backprop_filter(x, [3, 3, 2], x, 1, "SAME"), ValueError,
     "filter_sizes"),
])
def test_bad_input(call, error, message):
    x, f = _data((2, 5, 6, 2)), _data((3, 3, 2, 4), seed=1)
    with pytest.raises(error, match=message):
        call(x, f)
