"""A drop-in for scipy.signal's convolution functions, on fastconv's engine.

Same names, signatures, output dtypes and results as scipy.signal; the work
goes to whichever backend the dispatcher picks (``method='auto'``), or to the
one named.  Each call becomes the canonical correlation of one batch and one
channel: the kernel is flipped for a convolution and conjugated for a complex
correlation, and the mode becomes zero padding (see fastconv.geometry).
"""
from __future__ import annotations

import timeit

import numpy as np

from . import dispatch, geometry
from .errors import check_fits
from .problem import make_problem

__all__ = ["convolve", "correlate", "fftconvolve", "oaconvolve", "convolve2d", "correlate2d",
           "choose_conv_method", "explain"]

_MODE_ERROR = "Acceptable mode flags are 'valid', 'same', or 'full'."
_BOUNDARIES = {"fill": "fill", "pad": "fill", "wrap": "wrap", "circular": "wrap",
               "symm": "symm", "symmetric": "symm"}
# Integer sums stay exact in float64 below this bound (53-bit significand).
_FLOAT64_EXACT = 2.0 ** 53


def _check_mode(mode) -> None:
    if mode not in geometry.MODES:
        raise ValueError(f"{_MODE_ERROR} Got mode={mode!r}.")


def _as_numeric(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "biufc":
        raise TypeError(f"{name} must hold numbers (bool, int, float or complex), got dtype {a.dtype}")
    return a


def _inputs_swap_needed(mode, shape1, shape2) -> bool:
    """scipy's rule: in 'valid' mode the larger operand becomes the input."""
    if mode != "valid":
        return False
    if all(i >= j for i, j in zip(shape1, shape2)):
        return False
    if all(j >= i for i, j in zip(shape1, shape2)):
        return True
    raise ValueError("For 'valid' mode, one must be at least as large as the other in every "
                     f"dimension; got in1 of shape {shape1} and in2 of shape {shape2}")


def _reverse_and_conj(a):
    return a[(slice(None, None, -1),) * a.ndim].conj()


def _compute_dtype(result_type, int_bound):
    """dtype the canonical correlation runs in for a given result dtype."""
    kind, size = result_type.kind, result_type.itemsize
    if kind in "biu":
        return np.dtype(np.float64 if int_bound < _FLOAT64_EXACT else np.int64)
    if kind == "f":
        return np.dtype(np.float32 if size <= 4 else np.float64 if size == 8 else np.longdouble)
    return np.dtype(np.complex64 if size <= 8 else np.complex128 if size == 16 else np.clongdouble)


def _integer_bound(a, b) -> float:
    """Largest magnitude a partial sum of a*b products can reach."""
    def peak(x):
        return max(abs(int(x.max())), abs(int(x.min()))) if x.size else 0
    return float(peak(a) * peak(b) * min(a.size, b.size))


def _prepare(in1, in2, mode, method):
    """Validated operands of 'convolve(in1, in2, mode)', swapped as scipy swaps them."""
    _check_mode(mode)
    method = dispatch.resolve_method(method)
    volume, kernel = _as_numeric(in1, "in1"), _as_numeric(in2, "in2")
    if volume.ndim != kernel.ndim:
        raise ValueError(f"in1 and in2 should have the same dimensionality; got in1.ndim="
                         f"{volume.ndim} and in2.ndim={kernel.ndim}")
    if _inputs_swap_needed(mode, volume.shape, kernel.shape):
        volume, kernel = kernel, volume
    return volume, kernel, method


def _problem(volume, kernel, padding):
    """The canonical problem of convolving ``volume`` with ``kernel`` under ``padding``."""
    result_type = np.result_type(volume, kernel)
    int_bound = _integer_bound(volume, kernel) if result_type.kind in "biu" else None
    dtype = _compute_dtype(result_type, int_bound or 0.0)
    problem = make_problem((1, 1) + volume.shape, (1, 1) + kernel.shape, dtype, padding=padding,
                           int_bound=int_bound, origin="signal")
    return problem, result_type


def _flip(a):
    return a[(slice(None, None, -1),) * a.ndim]


def _run(volume, kernel, padding, method):
    """Correlate ``volume`` with the flipped ``kernel`` and cast as scipy does."""
    problem, result_type = _problem(volume, kernel, padding)
    dtype = problem.dtype
    check_fits(problem.out_shape, max(dtype.itemsize, result_type.itemsize), "output")
    check_fits(volume.shape, dtype.itemsize, "in1 (as a contiguous copy)")
    check_fits(kernel.shape, dtype.itemsize, "in2 (as a contiguous copy)")
    x = np.ascontiguousarray(volume, dtype=dtype).reshape(problem.x_shape)
    w = np.ascontiguousarray(_flip(kernel), dtype=dtype).reshape(problem.w_shape)
    out = dispatch.correlate(x, w, problem, method).reshape(problem.out_spatial)
    if result_type.kind == "b":
        return out != 0
    if result_type.kind in "iu" and dtype.kind == "f":
        out = np.rint(out)
    return out.astype(result_type, copy=False)


def _mode_padding(mode, kernel):
    return tuple(geometry.mode_padding(mode, k) for k in kernel.shape)


def _empty_result(volume, kernel, mode):
    """scipy's answer when an operand is empty: an empty 'same' output, else an error."""
    if mode == "same" and volume.size == 0 and kernel.size:
        return np.zeros(volume.shape, np.result_type(volume, kernel))
    raise ValueError(f"in1 (shape {volume.shape}) and in2 (shape {kernel.shape}) must not be empty "
                     f"in mode {mode!r}")


def convolve(in1, in2, mode="full", method="auto"):
    """Convolve two N-dimensional arrays, as scipy.signal.convolve.

    Parameters
    ----------
    in1, in2 : array_like
        Input and kernel, with the same number of dimensions.
    mode : {'full', 'valid', 'same'}
        Output size, as in scipy.signal.convolve ('same' is centred on ``in1``).
    method : str
        'auto' lets the dispatcher choose; 'direct' and 'fft' (scipy's names)
        or any registered backend ('im2col', 'separable', 'reference', ...)
        force one.

    Returns
    -------
    ndarray
        ``np.result_type(in1, in2)``; integer inputs give exact integer results.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.convolve([1, 2, 3], [0, 1, 0.5])
    array([0. , 1. , 2.5, 4. , 1.5])
    """
    volume, kernel, method = _prepare(in1, in2, mode, method)
    if volume.ndim == 0:
        return volume * kernel
    if volume.size == 0 or kernel.size == 0:
        return _empty_result(volume, kernel, mode)
    return _run(volume, kernel, _mode_padding(mode, kernel), method)


def correlate(in1, in2, mode="full", method="auto"):
    """Cross-correlate two N-dimensional arrays, as scipy.signal.correlate.

    ``correlate(in1, in2) = convolve(in1, conj(in2[::-1, ...]))``: complex
    kernels are conjugated.

    Examples
    --------
    >>> import fastconv
    >>> fastconv.correlate([1, 2, 3], [0, 1, 0.5])
    array([0.5, 2. , 3.5, 3. , 0. ])
    """
    _check_mode(mode)
    in1, in2 = _as_numeric(in1, "in1"), _as_numeric(in2, "in2")
    if in1.ndim == in2.ndim == 0:
        return in1 * in2.conj()
    if in1.ndim != in2.ndim:
        raise ValueError(f"in1 and in2 should have the same dimensionality; got in1.ndim="
                         f"{in1.ndim} and in2.ndim={in2.ndim}")
    return convolve(in1, _reverse_and_conj(in2), mode, method)


def explain(in1, in2, mode="full", method="auto"):
    """How ``convolve(in1, in2, mode)`` would be computed, and why.

    Returns
    -------
    fastconv.dispatch.Choice
        Printable: candidates with estimated costs, the rule that decided.

    Examples
    --------
    >>> import numpy as np, fastconv
    >>> choice = fastconv.explain(np.ones((64, 64)), np.ones((3, 3)), mode="same")
    >>> choice.name in choice.__str__()
    True
    """
    volume, kernel, method = _prepare(in1, in2, mode, method)
    if volume.ndim == 0 or volume.size == 0 or kernel.size == 0:
        raise ValueError("explain needs non-empty arrays of at least one dimension")
    problem, _ = _problem(volume, kernel, _mode_padding(mode, kernel))
    x = volume.reshape(problem.x_shape)
    w = _flip(kernel).reshape(problem.w_shape)
    return dispatch.choose(problem, x, w, method)


def choose_conv_method(in1, in2, mode="full", measure=False):
    """The backend ``convolve`` would use, as scipy.signal.choose_conv_method.

    With ``measure=True`` every available backend that can compute the
    problem is timed and ``(fastest, {name: seconds})`` is returned.

    Examples
    --------
    >>> import numpy as np, fastconv.signal as fs
    >>> fs.choose_conv_method(np.ones(100), np.ones(3)) in ("direct", "im2col", "reference")
    True
    """
    if not measure:
        return explain(in1, in2, mode).name
    from . import backends
    times = {}
    for name in backends.REGISTRY:
        try:
            times[name] = _time_once(lambda: convolve(in1, in2, mode, method=name))
        except ValueError:  # this backend cannot compute this problem
            continue
    return min(times, key=times.get), times


def _time_once(call, budget=0.2) -> float:
    """Median seconds per call, repeating a cheap call to fill ``budget`` seconds."""
    timer = timeit.Timer(call)
    number, first = timer.autorange()  # also warms up JIT/plans
    runs = timer.repeat(repeat=3, number=number)
    return float(np.median(runs)) / number


# ---------------------------------------------------------------------------
# fftconvolve / oaconvolve: along chosen axes, broadcasting the others
# ---------------------------------------------------------------------------

def fftconvolve(in1, in2, mode="full", axes=None):
    """Convolve with the FFT backend, as scipy.signal.fftconvolve.

    Along ``axes`` the arrays are convolved; the other axes broadcast.

    Examples
    --------
    >>> import numpy as np, fastconv.signal as fs
    >>> np.round(fs.fftconvolve([1.0, 2.0, 3.0], [1.0, 1.0]), 12)
    array([1., 3., 5., 3.])
    """
    return _freq_convolve(in1, in2, mode, axes)


def oaconvolve(in1, in2, mode="full", axes=None):
    """Convolve by overlap-add, as scipy.signal.oaconvolve.

    The FFT backend uses overlap-add blocks whenever one operand is much
    longer than the other, so this gives the same results as
    :func:`fftconvolve`.

    Examples
    --------
    >>> import numpy as np, fastconv.signal as fs
    >>> np.round(fs.oaconvolve(np.ones(5), [1.0, -1.0]), 12)
    array([ 1.,  0.,  0.,  0.,  0., -1.])
    """
    return _freq_convolve(in1, in2, mode, axes)


def _freq_axes(in1, in2, axes):
    if axes is None:
        axes = list(range(in1.ndim))
    else:
        axes = [int(a) for a in np.atleast_1d(axes)]
        for a in axes:
            if not -in1.ndim <= a < in1.ndim:
                raise ValueError(f"axes exceeds dimensionality of input: axes={axes}, ndim={in1.ndim}")
        axes = [a % in1.ndim for a in axes]
        if len(set(axes)) != len(axes):
            raise ValueError(f"all axes must be unique, got axes={axes}")
    for a in range(in1.ndim):
        if a not in axes and in1.shape[a] != in2.shape[a] and 1 not in (in1.shape[a], in2.shape[a]):
            raise ValueError(f"incompatible shapes for in1 and in2: {in1.shape} and {in2.shape}")
    # scipy treats an axis where either operand has length 1 as a broadcast axis
    return [a for a in axes if in1.shape[a] != 1 and in2.shape[a] != 1]


def _freq_convolve(in1, in2, mode, axes):
    _check_mode(mode)
    in1, in2 = _as_numeric(in1, "in1"), _as_numeric(in2, "in2")
    if in1.ndim == in2.ndim == 0:
        return in1 * in2
    if in1.ndim != in2.ndim:
        raise ValueError(f"in1 and in2 should have the same dimensionality; got in1.ndim="
                         f"{in1.ndim} and in2.ndim={in2.ndim}")
    if in1.size == 0 or in2.size == 0:
        return np.array([])
    axes = _freq_axes(in1, in2, axes)
    if not axes:
        return in1 * in2
    if mode == "valid" and _swap_on_axes(in1.shape, in2.shape, axes):
        in1, in2 = in2, in1
    floats = [a.dtype if a.dtype.kind in "fc" else np.dtype(np.float64) for a in (in1, in2)]
    result_type = np.result_type(*floats, np.float32)
    dtype = _compute_dtype(result_type, 0.0)
    other = [a for a in range(in1.ndim) if a not in axes]
    x = np.moveaxis(in1, other + axes, range(in1.ndim))
    w = np.moveaxis(in2, other + axes, range(in1.ndim))
    batch1, batch2 = x.shape[:len(other)], w.shape[:len(other)]
    batch = np.broadcast_shapes(batch1, batch2)
    out = _batched_convolve(x, w, len(other), mode, dtype).reshape(batch + _out_spatial(x, w, len(other), mode))
    out = np.moveaxis(out, range(in1.ndim), other + axes)
    if mode == "same":  # scipy crops every axis, broadcast ones included, to in1's shape
        out = _centered(out, in1.shape)
    return out.astype(result_type, copy=False)


def _swap_on_axes(shape1, shape2, axes):
    return _inputs_swap_needed("valid", [shape1[a] for a in axes], [shape2[a] for a in axes])


def _out_spatial(x, w, nb, mode):
    return tuple(geometry.output_size(n, k, geometry.mode_padding(mode, k))
                 for n, k in zip(x.shape[nb:], w.shape[nb:]))


def _batched_convolve(x, w, nb, mode, dtype):
    """Convolve over the trailing axes, broadcasting the ``nb`` leading ones, via one problem."""
    spatial_x, spatial_w = x.shape[nb:], w.shape[nb:]
    g1, g2 = int(np.prod(x.shape[:nb])), int(np.prod(w.shape[:nb]))
    if g2 == 1:    # one kernel for every signal: a batch
        xs, ws, groups = x.reshape((g1, 1) + spatial_x), w.reshape((1, 1) + spatial_w), 1
    elif g1 == 1:  # one signal, many kernels: output channels
        xs, ws, groups = x.reshape((1, 1) + spatial_x), w.reshape((g2, 1) + spatial_w), 1
    else:          # pairs: one group per pair
        batch = np.broadcast_shapes(x.shape[:nb], w.shape[:nb])
        g = int(np.prod(batch))
        xs = np.broadcast_to(x, batch + spatial_x).reshape((1, g) + spatial_x)
        ws = np.broadcast_to(w, batch + spatial_w).reshape((g, 1) + spatial_w)
        groups = g
    padding = tuple(geometry.mode_padding(mode, k) for k in spatial_w)
    problem = make_problem(xs.shape, ws.shape, dtype, padding=padding, groups=groups, origin="signal")
    check_fits(problem.out_shape, dtype.itemsize, "output")
    xs = np.ascontiguousarray(xs, dtype=dtype)
    ws = np.ascontiguousarray(np.flip(ws, tuple(range(2, ws.ndim))), dtype=dtype)
    return dispatch.correlate(xs, ws, problem, "fft")


def _centered(arr, shape):
    start = [(cur - new) // 2 for cur, new in zip(arr.shape, shape)]
    return arr[tuple(slice(s, s + n) for s, n in zip(start, shape))]


# ---------------------------------------------------------------------------
# convolve2d / correlate2d: 2-D with boundary conditions
# ---------------------------------------------------------------------------

def convolve2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Convolve two 2-D arrays with a boundary condition, as scipy.signal.convolve2d.

    Parameters
    ----------
    boundary : {'fill', 'wrap', 'symm'}
        Pad with ``fillvalue``, wrap around, or reflect (edge repeated).
    fillvalue : scalar
        Value of the 'fill' padding.

    Examples
    --------
    >>> import numpy as np, fastconv.signal as fs
    >>> fs.convolve2d(np.eye(3), np.ones((2, 2)), mode="same", boundary="wrap")
    array([[2., 1., 1.],
           [1., 2., 1.],
           [1., 1., 2.]])
    """
    in1, in2, mode, boundary = _check_2d(in1, in2, mode, boundary)
    if _inputs_swap_needed(mode, in1.shape, in2.shape):
        in1, in2 = in2, in1
    return _boundary_convolve(in1, in2, mode, boundary, fillvalue)


def correlate2d(in1, in2, mode="full", boundary="fill", fillvalue=0):
    """Cross-correlate two 2-D arrays, as scipy.signal.correlate2d.

    Examples
    --------
    >>> import numpy as np, fastconv.signal as fs
    >>> fs.correlate2d(np.arange(9.0).reshape(3, 3), np.ones((2, 2)), mode="valid")
    array([[ 8., 12.],
           [20., 24.]])
    """
    in1, in2, mode, boundary = _check_2d(in1, in2, mode, boundary)
    swapped = _inputs_swap_needed(mode, in1.shape, in2.shape)
    if swapped:
        in1, in2 = in2, in1
    out = _boundary_convolve(in1, _reverse_and_conj(in2), mode, boundary, fillvalue, correlation=True)
    return out[::-1, ::-1] if swapped else out


def _check_2d(in1, in2, mode, boundary):
    in1, in2 = _as_numeric(in1, "in1"), _as_numeric(in2, "in2")
    if not in1.ndim == in2.ndim == 2:
        raise ValueError(f"convolve2d inputs must both be 2-D arrays; got in1.ndim={in1.ndim}, "
                         f"in2.ndim={in2.ndim}")
    _check_mode(mode)
    if boundary not in _BOUNDARIES:
        raise ValueError("Acceptable boundary flags are 'fill', 'circular' (or 'wrap'), and "
                         f"'symmetric' (or 'symm'). Got boundary={boundary!r}.")
    if in1.size == 0 or in2.size == 0:
        raise ValueError(f"in1 (shape {in1.shape}) and in2 (shape {in2.shape}) must not be empty")
    return in1, in2, mode, _BOUNDARIES[boundary]


def _boundary_convolve(in1, in2, mode, boundary, fillvalue, correlation=False):
    result_type = np.result_type(in1, in2)
    fill = np.asarray(fillvalue)
    if fill.size != 1:
        raise ValueError(f"fillvalue must be a scalar, got {fillvalue!r}")
    if fill.dtype.kind == "c" and result_type.kind != "c" and fill.imag != 0:
        raise ValueError(f"could not cast fillvalue={fillvalue!r} to the output type {result_type}")
    # scipy centres a 'same' correlation the other way round for even kernels
    pads = _mode_padding(mode, in2)
    if correlation:
        pads = tuple((after, before) for before, after in pads)
    if mode == "valid" or (boundary == "fill" and fill == 0):
        return _run(in1, in2, pads, "auto")
    if boundary == "fill":
        padded = np.pad(in1.astype(result_type, copy=False), pads, mode="constant",
                        constant_values=fill.astype(result_type))
    else:
        padded = np.pad(in1, pads, mode="wrap" if boundary == "wrap" else "symmetric")
    return _run(padded, in2, _mode_padding("valid", in2), "auto")
