"""The one frozen description of a convolution that every backend receives.

A front end validates its arguments once and builds a :class:`ConvProblem`;
the dispatcher and the backends trust it.  The canonical operation is a
batched, grouped, strided, dilated, zero-padded cross-correlation::

    out[b, o, j...] = sum_{l, m...} xpad[b, g(o)*Cg + l, j*s + m*d ...] * w[o, l, m...]

with ``x`` of shape ``(N, C, *spatial)``, ``w`` of shape ``(O, C // groups,
*kernel)`` and ``g(o) = o // (O // groups)``.  No conjugation, no flip: the
front ends do those.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache

import numpy as np

from . import geometry

#: dtypes the fast backends compute in; anything else goes to ``reference``.
FAST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64),
               np.dtype(np.complex64), np.dtype(np.complex128))


@dataclass(frozen=True)
class ConvProblem:
    """Shapes, dtype, geometry and data facts of one canonical correlation.

    Build it with :func:`make_problem`, which validates and fills ``out_shape``.

    Attributes
    ----------
    x_shape, w_shape, out_shape : tuple of int
        ``(N, C, *spatial)``, ``(O, C // groups, *kernel)``, ``(N, O, *out)``.
    dtype : numpy.dtype
        The dtype the backend computes and returns.
    stride, dilation : tuple of int
        One per spatial axis.
    padding : tuple of (int, int)
        Zero padding before and after, one pair per spatial axis.
    groups : int
        Channel groups.
    int_bound : float or None
        For inputs that were integers: a bound on any partial sum's magnitude,
        so the dispatcher knows which float algorithms stay exact.
    has_nonfinite : bool or None
        Whether the data hold NaN or Inf; None while not yet looked at.
    kernel_rank : int or None
        Largest numerical rank of a 2-D kernel slice (1 for a rank-1 3-D
        kernel); None while not yet looked at.
    """

    x_shape: tuple
    w_shape: tuple
    dtype: np.dtype
    stride: tuple
    dilation: tuple
    padding: tuple
    groups: int = 1
    out_shape: tuple = ()
    int_bound: float | None = None
    has_nonfinite: bool | None = None
    kernel_rank: int | None = None
    #: free-form labels a front end attaches (e.g. "signal"), shown by explain()
    origin: str = field(default="", compare=False)

    @property
    def ndim(self) -> int:
        """Number of spatial dimensions."""
        return len(self.x_shape) - 2

    @property
    def spatial(self) -> tuple:
        return self.x_shape[2:]

    @property
    def kernel(self) -> tuple:
        return self.w_shape[2:]

    @property
    def out_spatial(self) -> tuple:
        return self.out_shape[2:]

    @property
    def batch(self) -> int:
        return self.x_shape[0]

    @property
    def in_channels(self) -> int:
        return self.x_shape[1]

    @property
    def out_channels(self) -> int:
        return self.w_shape[0]

    @property
    def is_complex(self) -> bool:
        return self.dtype.kind == "c"

    @property
    def padded_spatial(self) -> tuple:
        return tuple(n + p[0] + p[1] for n, p in zip(self.spatial, self.padding))

    @property
    def macs(self) -> int:
        """Multiply-accumulates of the direct method."""
        n, o = self.out_shape[:2]
        return n * o * self.w_shape[1] * math.prod(self.out_spatial) * math.prod(self.kernel)

    @property
    def is_plain(self) -> bool:
        """Stride 1 and dilation 1 on every axis."""
        return all(s == 1 for s in self.stride) and all(d == 1 for d in self.dilation)

    def with_facts(self, **facts) -> "ConvProblem":
        """A copy with data facts (``has_nonfinite``, ``kernel_rank``...) set."""
        return replace(self, **facts)


def make_problem(x_shape, w_shape, dtype, stride=1, padding=0, dilation=1, groups=1,
                 int_bound=None, origin="") -> ConvProblem:
    """Validate a canonical correlation and describe it.

    Parameters
    ----------
    x_shape : tuple of int
        ``(N, C, *spatial)``.
    w_shape : tuple of int
        ``(O, C // groups, *kernel)``.
    dtype : dtype-like
        Compute dtype.
    stride, dilation : int or sequence of int
    padding : int, sequence of int or sequence of (before, after)
    groups : int

    Returns
    -------
    ConvProblem

    Examples
    --------
    >>> p = make_problem((1, 1, 8, 8), (1, 1, 3, 3), "float64", padding=1)
    >>> p.out_shape
    (1, 1, 8, 8)
    """
    return _make_problem(tuple(map(int, x_shape)), tuple(map(int, w_shape)), np.dtype(dtype),
                         _hashable(stride), _hashable(padding), _hashable(dilation), int(groups),
                         int_bound, origin)


def _hashable(value):
    """Ints and nested tuples of ints, for the cache key (lists and numpy ints accepted)."""
    if type(value) is int:
        return value
    if isinstance(value, (list, tuple)):
        return tuple(_hashable(v) for v in value)
    return int(value)


@lru_cache(maxsize=1024)
def _make_problem(x_shape, w_shape, dtype, stride, padding, dilation, groups, int_bound, origin):
    if len(x_shape) != len(w_shape) or len(x_shape) < 3:
        raise ValueError(f"input shape {x_shape} and weight shape {w_shape} must both be "
                         "(batch, channels, *spatial) with the same number of dimensions")
    ndim = len(x_shape) - 2
    stride = geometry.as_tuple(stride, ndim, "stride")
    dilation = geometry.as_tuple(dilation, ndim, "dilation")
    padding = geometry.padding_pairs(padding, ndim)
    if any(s < 1 for s in stride):
        raise ValueError(f"stride must be positive, got {stride}")
    if any(d < 1 for d in dilation):
        raise ValueError(f"dilation must be at least 1, got {dilation}")
    if groups < 1 or x_shape[1] % groups or w_shape[0] % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({x_shape[1]}) and "
                         f"the output channels ({w_shape[0]})")
    if w_shape[1] * groups != x_shape[1]:
        raise ValueError(f"weight expects {w_shape[1] * groups} input channels "
                         f"({w_shape[1]} per group x {groups} groups), input has {x_shape[1]}")
    out = geometry.conv_output_shape(x_shape[2:], w_shape[2:], padding, stride, dilation)
    for axis, (n, k, p, d) in enumerate(zip(x_shape[2:], w_shape[2:], padding, dilation)):
        if n + p[0] + p[1] < geometry.effective_size(k, d) and k > 0:
            raise ValueError(f"kernel size {geometry.effective_size(k, d)} (dilated) is larger than "
                             f"the padded input size {n + p[0] + p[1]} along spatial axis {axis}")
    return ConvProblem(x_shape, w_shape, dtype, stride, dilation, padding, groups,
                       (x_shape[0], w_shape[0]) + out, int_bound, None, None, origin)
