"""Argument checking shared by the ``fastconv.nn`` ops.

torch users expect torch's rules and errors that name the argument and the
value they passed; these helpers give them, and turn every accepted spelling
of stride, dilation and padding into plain tuples before anything reaches
:func:`fastconv.problem.make_problem`.  Pure checks: nothing here computes.
"""
from __future__ import annotations

import operator

import numpy as np

from .. import geometry

#: dtypes the nn ops compute in
FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
PADDING_STRINGS = ("valid", "same")


def float_array(value, name: str) -> np.ndarray:
    """``value`` as an array, checked to be float32 or float64 (any byte order, any layout).

    Nothing is copied here; :func:`prepare` makes the one copy a backend may need.

    Examples
    --------
    >>> float_array([1.0, 2.0], "input").dtype
    dtype('float64')
    """
    array = np.asarray(value)
    if array.dtype.kind != "f" or array.dtype.newbyteorder("=") not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be a float32 or float64 array, got dtype {array.dtype}")
    return array


def result_dtype(*arrays) -> np.dtype:
    """numpy's promotion of the operands' dtypes (float32 with float64 gives float64), native."""
    return _native(np.result_type(*arrays))


def _native(dtype) -> np.dtype:
    dtype = np.dtype(dtype)
    return dtype if dtype.isnative else dtype.newbyteorder()


def prepare(array: np.ndarray, dtype) -> np.ndarray:
    """``array`` as a C-contiguous, native-order array of ``dtype``.

    Copies only when it must (another dtype or byte order, a strided view);
    a read-only array comes back as it is, since nothing writes to it.

    Examples
    --------
    >>> x = np.zeros((4, 4))
    >>> prepare(x, np.float64) is x, prepare(x.T, np.float64).flags.c_contiguous
    (True, True)
    """
    return np.asarray(array, dtype=_native(dtype), order="C")


def batched(array: np.ndarray, ndim: int, name: str, op: str) -> tuple[np.ndarray, bool]:
    """Add a batch axis to an unbatched ``(C, *spatial)`` array, as torch accepts.

    Returns the ``(N, C, *spatial)`` view and whether the axis was added.

    Examples
    --------
    >>> x, added = batched(np.zeros((3, 8, 8)), 2, "input", "conv2d")
    >>> x.shape, added
    ((1, 3, 8, 8), True)
    """
    if array.ndim == ndim + 2:
        return array, False
    if array.ndim == ndim + 1:
        return array[np.newaxis], True
    raise ValueError(f"expected {name} of {op} to be {ndim + 1}-D (unbatched) or {ndim + 2}-D "
                     f"(batched), got {name} of shape {array.shape}")


def int_tuple(value, ndim: int, name: str) -> tuple[int, ...]:
    """An int, or a sequence of one or ``ndim`` ints, as a tuple of ``ndim`` ints.

    Rejects floats, strings and bools-in-disguise with a TypeError naming ``name``.

    Examples
    --------
    >>> int_tuple(2, 3, "stride"), int_tuple([1, 2], 2, "stride")
    ((2, 2, 2), (1, 2))
    """
    if isinstance(value, (str, bytes)):
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}")
    if not hasattr(value, "__len__"):
        return (_as_int(value, name, value),) * ndim
    values = tuple(_as_int(v, name, value) for v in value)
    if len(values) == 1:
        return values * ndim
    if len(values) != ndim:
        raise ValueError(f"{name} must be an int or a sequence of {ndim} ints (one per spatial "
                         f"dimension), got {value!r}")
    return values


def _as_int(item, name: str, whole) -> int:
    try:
        return operator.index(item)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of ints, got {whole!r}") from None


def stride_tuple(value, ndim: int, name: str = "stride") -> tuple[int, ...]:
    """Strides, each at least 1 (torch: 'non-positive stride is not supported')."""
    values = int_tuple(value, ndim, name)
    if any(v < 1 for v in values):
        raise ValueError(f"non-positive {name} is not supported: {name}={value!r}")
    return values


def dilation_tuple(value, ndim: int, name: str = "dilation") -> tuple[int, ...]:
    """Dilations, each at least 1."""
    values = int_tuple(value, ndim, name)
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be at least 1, got {name}={value!r}")
    return values


def size_tuple(value, ndim: int, name: str) -> tuple[int, ...]:
    """Window sizes (kernel_size of pooling), each at least 1."""
    values = int_tuple(value, ndim, name)
    if any(v < 1 for v in values):
        raise ValueError(f"{name} must be positive, got {name}={value!r}")
    return values


def positive_int(value, name: str) -> int:
    """A single positive int (``groups``)."""
    if isinstance(value, (str, bytes)) or hasattr(value, "__len__"):
        raise TypeError(f"{name} must be an int, got {value!r}")
    number = _as_int(value, name, value)
    if number < 1:
        raise ValueError(f"non-positive {name} is not supported: {name}={value!r}")
    return number


def padding_pairs(padding, ndim: int, kernel=None, stride=None, dilation=None,
                  name: str = "padding") -> tuple[tuple[int, int], ...]:
    """Normalise torch-style padding to one ``(before, after)`` pair per axis.

    Accepts an int, one int per spatial axis, one ``(before, after)`` pair per
    axis, or the strings 'valid' and 'same' (torch's 'same': stride 1 only,
    the odd extra padding goes after; needs ``kernel`` and ``dilation``).

    Examples
    --------
    >>> padding_pairs(1, 2)
    ((1, 1), (1, 1))
    >>> padding_pairs("same", 2, kernel=(4, 3), stride=(1, 1), dilation=(1, 1))
    ((1, 2), (1, 1))
    >>> padding_pairs(((0, 1), (2, 3)), 2)
    ((0, 1), (2, 3))
    """
    if isinstance(padding, str):
        return _string_padding(padding, ndim, kernel, stride, dilation, name)
    if hasattr(padding, "__len__") and any(hasattr(p, "__len__") for p in padding):
        pairs = _explicit_pairs(padding, ndim, name)
    elif hasattr(padding, "__len__") and len(padding) not in (1, ndim):
        raise ValueError(f"{name} must be an int, {ndim} ints or {ndim} (before, after) pairs, "
                         f"got {padding!r}; write before/after padding as pairs, e.g. "
                         f"{tuple((0, 1) for _ in range(ndim))}")
    else:
        pairs = tuple((p, p) for p in int_tuple(padding, ndim, name))
    if any(before < 0 or after < 0 for before, after in pairs):
        raise ValueError(f"negative {name} is not supported: {name}={padding!r}")
    return pairs


def _explicit_pairs(padding, ndim: int, name: str) -> tuple[tuple[int, int], ...]:
    items = list(padding)
    if len(items) != ndim or not all(hasattr(p, "__len__") and len(p) == 2 for p in items):
        raise ValueError(f"{name} must be an int, {ndim} ints or {ndim} (before, after) pairs, "
                         f"got {padding!r}")
    return tuple((_as_int(p[0], name, padding), _as_int(p[1], name, padding)) for p in items)


def _string_padding(padding: str, ndim: int, kernel, stride, dilation, name: str):
    if padding not in PADDING_STRINGS:
        raise ValueError(f"invalid {name} string {padding!r}, should be one of "
                         f"{set(PADDING_STRINGS)}")
    if kernel is None:
        raise ValueError(f"{name}={padding!r} is not supported by this operation")
    if padding == "valid":
        return ((0, 0),) * ndim
    if stride is not None and any(s != 1 for s in stride):
        raise ValueError(f"{name}='same' is not supported for strided convolutions "
                         f"(stride={tuple(stride)})")
    dilation = dilation or (1,) * ndim
    return tuple(geometry.torch_same_padding(k, d) for k, d in zip(kernel, dilation))


def check_kernel_fits(spatial, kernel, pairs, dilation, name: str = "kernel") -> None:
    """torch's 'Kernel size can't be greater than actual input size'."""
    padded = tuple(n + p[0] + p[1] for n, p in zip(spatial, pairs))
    effective = tuple(geometry.effective_size(k, d) for k, d in zip(kernel, dilation))
    if any(e > n for e, n in zip(effective, padded)):
        raise ValueError(f"calculated padded input size per channel: {_xs(padded)}; "
                         f"{name} size (dilated): {_xs(effective)}; "
                         f"{name} size can't be greater than the padded input size")


def _xs(values) -> str:
    return "(" + " x ".join(str(v) for v in values) + ")"
