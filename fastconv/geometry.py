"""Shape and padding arithmetic, in one place.

Every front end turns its own notion of padding (scipy's modes, torch's
``padding=``, TensorFlow's ``'SAME'``) into explicit ``(before, after)`` pairs
per spatial axis with the functions here, and every backend reads the output
shape from :func:`output_size`.  Pure functions on integers; nothing here
touches array data.
"""
from __future__ import annotations

from typing import Sequence

MODES = ("full", "same", "valid")


def effective_size(kernel: int, dilation: int) -> int:
    """Extent covered by a kernel of ``kernel`` taps spaced ``dilation`` apart.

    Examples
    --------
    >>> effective_size(3, 2)
    5
    """
    return (kernel - 1) * dilation + 1


def output_size(size: int, kernel: int, pad: tuple[int, int] = (0, 0),
                stride: int = 1, dilation: int = 1, ceil_mode: bool = False) -> int:
    """Number of outputs of a strided, dilated correlation along one axis.

    ``ceil_mode`` counts a last window that starts inside the padded input
    but runs past it (torch pooling), provided it starts before the end of the
    input plus the leading padding.

    Examples
    --------
    >>> output_size(10, 3, (1, 1), stride=2)
    5
    """
    span = size + pad[0] + pad[1] - effective_size(kernel, dilation)
    if span < 0:
        return 0
    if not ceil_mode:
        return span // stride + 1
    n = -(-span // stride) + 1
    if (n - 1) * stride >= size + pad[0]:
        n -= 1
    return n


def mode_padding(mode: str, kernel: int) -> tuple[int, int]:
    """Padding that turns a 'full'/'same'/'valid' correlation into a plain one.

    Used with the kernel already oriented for correlation (flipped for a
    convolution).  'same' follows scipy.signal: for an even kernel the extra
    tap of padding goes before, so the output is centred as scipy centres it.

    Examples
    --------
    >>> mode_padding("full", 4), mode_padding("same", 4), mode_padding("valid", 4)
    ((3, 3), (2, 1), (0, 0))
    """
    if mode == "full":
        return (kernel - 1, kernel - 1)
    if mode == "same":
        return (kernel // 2, (kernel - 1) // 2)
    if mode == "valid":
        return (0, 0)
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def same_padding(size: int, kernel: int, stride: int = 1, dilation: int = 1) -> tuple[int, int]:
    """TensorFlow's 'SAME' padding: output ``ceil(size / stride)``, extra after.

    Examples
    --------
    >>> same_padding(24, 5), same_padding(24, 3, stride=2)
    ((2, 2), (0, 1))
    """
    out = -(-size // stride)
    total = max((out - 1) * stride + effective_size(kernel, dilation) - size, 0)
    return (total // 2, total - total // 2)


def torch_same_padding(kernel: int, dilation: int = 1) -> tuple[int, int]:
    """torch's ``padding='same'`` (stride 1): the extra padding goes after.

    Examples
    --------
    >>> torch_same_padding(4)
    (1, 2)
    """
    total = effective_size(kernel, dilation) - 1
    return (total // 2, total - total // 2)


def as_tuple(value, ndim: int, name: str) -> tuple[int, ...]:
    """Broadcast an int or a sequence of ``ndim`` ints to a tuple.

    Examples
    --------
    >>> as_tuple(2, 3, "stride"), as_tuple((1, 2), 2, "stride")
    ((2, 2, 2), (1, 2))
    """
    if isinstance(value, (int,)) or (hasattr(value, "__index__") and not isinstance(value, (str, bytes))
                                     and not hasattr(value, "__len__")):
        return (int(value),) * ndim
    try:
        values = tuple(int(v) for v in value)
    except TypeError:
        raise TypeError(f"{name} must be an int or a sequence of {ndim} ints, got {value!r}") from None
    if len(values) == 1:
        return values * ndim
    if len(values) != ndim:
        raise ValueError(f"{name} must have {ndim} values, one per spatial dimension, got {value!r}")
    return values


def padding_pairs(padding, ndim: int, name: str = "padding") -> tuple[tuple[int, int], ...]:
    """Normalise an int, per-axis ints or (before, after) pairs to pairs.

    Examples
    --------
    >>> padding_pairs(1, 2)
    ((1, 1), (1, 1))
    >>> padding_pairs(((0, 1), (2, 3)), 2)
    ((0, 1), (2, 3))
    """
    if isinstance(padding, (int,)) or hasattr(padding, "__index__") and not hasattr(padding, "__len__"):
        pairs = ((int(padding), int(padding)),) * ndim
    else:
        items = list(padding)
        if len(items) == ndim and all(hasattr(p, "__len__") for p in items):
            pairs = tuple(_pair(p, name) for p in items)
        elif all(not hasattr(p, "__len__") for p in items):
            pairs = tuple((int(p), int(p)) for p in as_tuple(items, ndim, name))
        else:
            raise ValueError(f"{name} must be an int, {ndim} ints or {ndim} (before, after) pairs, "
                             f"got {padding!r}")
    for before, after in pairs:
        if before < 0 or after < 0:
            raise ValueError(f"{name} must be non-negative, got {padding!r}")
    return pairs


def _pair(p, name: str) -> tuple[int, int]:
    if len(p) != 2:
        raise ValueError(f"{name} pairs must be (before, after), got {p!r}")
    return (int(p[0]), int(p[1]))


def conv_output_shape(spatial: Sequence[int], kernel: Sequence[int], padding, stride, dilation
                      ) -> tuple[int, ...]:
    """Output spatial shape of the canonical correlation.

    Examples
    --------
    >>> conv_output_shape((8, 8), (3, 3), ((1, 1), (1, 1)), (2, 2), (1, 1))
    (4, 4)
    """
    return tuple(output_size(n, k, p, s, d)
                 for n, k, p, s, d in zip(spatial, kernel, padding, stride, dilation))


def transposed_padding(size: int, kernel: int, pad: tuple[int, int], stride: int, dilation: int,
                       out: int) -> tuple[int, int]:
    """Padding of the stride-dilated output gradient for the input gradient.

    The gradient for the input of a correlation is a correlation of the output
    gradient, dilated by ``stride``, with the flipped kernel.  This returns the
    padding that makes that correlation produce exactly ``size`` values.

    Examples
    --------
    >>> transposed_padding(5, 3, (1, 1), 1, 1, 5)
    (1, 1)
    """
    ke = effective_size(kernel, dilation)
    before = ke - 1 - pad[0]
    dilated = (out - 1) * stride + 1
    after = size + ke - 1 - before - dilated
    return (before, after)
