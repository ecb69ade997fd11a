"""Gradients of the convolution layers, mirroring ``torch.nn.grad``.

The chapter's ``h(K, V, s)`` (gradient for the input) and ``g(G, V, s)``
(gradient for the kernel) are both the canonical correlation again, so they
run through the dispatcher and every backend speeds up training.

Gradient for the input.  Along one axis, with padded input index
``p = i + pad_before``, ``dx[i] = sum_{j*s + m*d = p} G[j] K[m]``: the output
gradient, with ``s - 1`` zeros inserted between its entries, correlated with
the flipped kernel.  Inserting the zeros would multiply ``s**ndim`` times more
zeros than data, so the input positions are split into their ``s`` residue
classes instead (the polyphase form): positions ``i = i0 + s*u`` only meet the
taps ``m`` with ``m*d = (i0 + pad_before) mod s`` (mod ``s``), which form
an arithmetic progression ``m0, m0 + s', ...`` with ``s' = s / gcd(s, d)``.
Each class is then a plain stride-1 correlation of the *undilated* output
gradient with that sub-kernel, flipped, at dilation ``d / gcd(s, d)``: exactly
the needed multiply-adds, ``s**ndim`` dispatcher calls.  Classes that no tap
reaches, and input positions that no window touched, get zero.

Gradient for the kernel.  ``dK[o, l, m] = sum_{b, j} G[b, o, j] xpad[b, l, j*s + m*d]``
is a correlation of the input, with the batch as the channels, and the
output gradient ``(O, N, ...)`` as the kernel at dilation ``s`` and stride
``d``; the input is cut to the part the forward windows read so the result
has exactly the kernel's size.  Without groups (and up to 2-D) the input's
channels become an extra spatial axis, so the whole gradient is one
correlation of a single image, which im2col turns into one large matrix
product; with groups the channels within a group become the batch and each
group's output channels see only their own group.

Both as GEMMs.  Where im2col runs the forward problem competitively (and
always with ``method='im2col'``), the weight gradient is instead
``dW_g = sum over blocks of G_g @ R_g``, R the forward's row matrix, and, for
few input channels (a network's first layer), the input gradient is
``col2im(W^T G)``: see :func:`fastconv.backends.im2col.weight_gradient` and
:func:`~fastconv.backends.im2col.input_gradient`.  Where the Winograd backend
is the cheaper of the two, the weight gradient is its adjoint pass instead
(:func:`fastconv.backends.winograd.weight_gradient`), and stride-1 input
gradients reach it through the dispatcher.  The correlations above keep the
other cases (large kernels, where FFT wins, and forced backends).
"""
from __future__ import annotations

import itertools
import math
import operator
from dataclasses import dataclass

import numpy as np

from .. import backends, dispatch, geometry
from ..problem import make_problem
from . import _validate
from .conv import ConvArgs, check_weight, conv_args, correlate
from .local import (tiled_conv2d_input, tiled_conv2d_weight,  # noqa: F401  (re-exported)
                    unshared_conv2d_input, unshared_conv2d_weight)
from .lrn import local_response_norm_input  # noqa: F401  (re-exported)
from .pooling import (avg_pool1d_input, avg_pool2d_input, avg_pool3d_input,  # noqa: F401
                      max_pool1d_input, max_pool2d_input, max_pool3d_input)

__all__ = ["conv1d_input", "conv2d_input", "conv3d_input", "conv1d_weight", "conv2d_weight",
           "conv3d_weight", "conv_bias", "unshared_conv2d_input", "unshared_conv2d_weight",
           "tiled_conv2d_input", "tiled_conv2d_weight", "max_pool1d_input", "max_pool2d_input",
           "max_pool3d_input", "avg_pool1d_input", "avg_pool2d_input", "avg_pool3d_input",
           "local_response_norm_input"]


# ---------------------------------------------------------------------------
# argument handling shared by the input and weight gradients

def _full_size(size, nd: int, name: str, batch_and_channels) -> tuple[int, ...]:
    """``input_size``/``weight_size`` as ``(N, C, *spatial)``; spatial-only sizes take
    ``batch_and_channels`` for the two leading entries."""
    if isinstance(size, (str, bytes)) or not hasattr(size, "__len__"):
        raise TypeError(f"{name} must be a sequence of ints, got {size!r}")
    try:
        values = tuple(operator.index(v) for v in size)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {size!r}") from None
    if len(values) == nd:
        values = tuple(batch_and_channels) + values
    if len(values) != nd + 2 or any(v < 0 for v in values):
        raise ValueError(f"{name} must give {nd + 2} non-negative sizes (batch, channels, "
                         f"*spatial) or the {nd} spatial ones, got {size!r}")
    return values


def _check_grad_output(gy: np.ndarray, x_shape, w_shape, args: ConvArgs) -> None:
    out = geometry.conv_output_shape(x_shape[2:], w_shape[2:], args.padding, args.stride,
                                     args.dilation)
    expected = (x_shape[0], w_shape[0]) + out
    if gy.shape != expected:
        raise ValueError(f"grad_output of shape {gy.shape} does not match the output "
                         f"{expected} of a convolution of an input of shape {tuple(x_shape)} "
                         f"with a weight of shape {tuple(w_shape)}")


# ---------------------------------------------------------------------------
# h(K, V, s): the gradient for the input

@dataclass(frozen=True)
class _Phase:
    """One residue class of input positions along one axis (see the module docstring)."""

    start: int        # first input position i0 of the class; the class is i0::stride
    count: int        # positions in the class
    taps: slice       # kernel taps m0::s' that reach the class
    dilation: int     # spacing of those taps, in output-gradient units
    crop: slice       # the part of the output gradient the class reads
    pad: tuple        # zeros before/after that part


def _phases(size: int, out: int, kernel: int, pad_before: int, stride: int, dilation: int):
    """The residue classes of one axis that receive a gradient."""
    step = stride // math.gcd(stride, dilation)     # s': tap spacing within one class
    tap_dilation = dilation // math.gcd(stride, dilation)
    phases = []
    for start in range(min(stride, size)):
        count = -(-(size - start) // stride)
        base, residue = divmod(start + pad_before, stride)
        first = next((m for m in range(min(step, kernel)) if (m * dilation - residue) % stride == 0),
                     None)
        if first is None:
            continue
        taps = len(range(first, kernel, step))
        # dx[start + s*u] = sum_k G[base + u - t0 - k*tap_dilation] * K[first + k*step]
        lo = base - (first * dilation - residue) // stride - (taps - 1) * tap_dilation
        hi = lo + count - 1 + (taps - 1) * tap_dilation      # last G index read, inclusive
        crop = slice(max(lo, 0), min(hi + 1, out))
        if crop.stop <= crop.start:
            continue
        phases.append(_Phase(start, count, slice(first, kernel, step), tap_dilation, crop,
                             (crop.start - lo, hi + 1 - crop.stop)))
    return phases


def _transposed_weight(w: np.ndarray, groups: int) -> np.ndarray:
    """``(O, C/g, *k)`` -> ``(C, O/g, *k)``, each group's block transposed."""
    o, cg = w.shape[:2]
    blocks = w.reshape((groups, o // groups, cg) + w.shape[2:])
    return blocks.swapaxes(1, 2).reshape((groups * cg, o // groups) + w.shape[2:])


def conv_input(nd: int, op: str, input_size, weight, grad_output, stride, padding, dilation,
               groups, method):
    """Gradient for the input of ``conv{nd}d``; see :func:`conv2d_input`."""
    w = _validate.float_array(weight, "weight")
    gy = _validate.float_array(grad_output, "grad_output")
    check_weight(w, nd, op)
    groups = _validate.positive_int(groups, "groups")
    gy, unbatched = _validate.batched(gy, nd, "grad_output", op)
    if unbatched and hasattr(input_size, "__len__") and len(input_size) == nd + 1:
        input_size = (1,) + tuple(input_size)
    x_shape = _full_size(input_size, nd, "input_size", (gy.shape[0], w.shape[1] * groups))
    args = conv_args(nd, x_shape, w.shape, stride, padding, dilation, groups)
    _check_grad_output(gy, x_shape, w.shape, args)
    dtype = _validate.result_dtype(w, gy)
    dx = _input_gradient(x_shape, w, gy, args, dtype, method)
    return dx[0] if unbatched else dx


def _input_gradient(x_shape, w, gy, args: ConvArgs, dtype, method) -> np.ndarray:
    spatial, kernel = x_shape[2:], w.shape[2:]
    per_axis = [_phases(n, l, k, p[0], s, d) for n, l, k, p, s, d in
                zip(spatial, gy.shape[2:], kernel, args.padding, args.stride, args.dilation)]
    wt = _transposed_weight(w, args.groups)
    axes = tuple(range(2, len(x_shape)))
    parts = []
    for combo in itertools.product(*per_axis):
        taps = (slice(None), slice(None)) + tuple(ph.taps for ph in combo)
        sub_w = np.flip(wt[taps], axis=axes)
        sub_g = gy[(slice(None), slice(None)) + tuple(ph.crop for ph in combo)]
        sub_args = ConvArgs((1,) * len(axes), tuple(ph.pad for ph in combo),
                            tuple(ph.dilation for ph in combo), args.groups)
        where = (slice(None), slice(None)) + tuple(slice(ph.start, None, s)
                                                   for ph, s in zip(combo, args.stride))
        parts.append((where, sub_g, sub_w, sub_args))
    problem = _forward_problem(x_shape, w.shape, args, dtype)
    gemm = _gemm_backend(problem, method)
    if gemm is not None and _columns_copy_less(gemm, problem, parts, dtype):
        return gemm.input_gradient(_validate.prepare(gy, dtype), _validate.prepare(w, dtype),
                                   problem)
    whole = all(len(ph) == 1 and ph[0].count == n for ph, n in zip(per_axis, spatial))
    dx = None if whole else np.zeros(x_shape, dtype=dtype)
    for where, sub_g, sub_w, sub_args in parts:
        part = correlate(sub_g, sub_w, dtype, sub_args, method)
        if dx is None:
            return part
        dx[where] = part
    return dx


def _columns_copy_less(gemm, problem, parts, dtype) -> bool:
    """Whether ``col2im(W^T G)`` copies less than the correlations of ``parts`` would.

    Both do the same multiply-adds; the columns write (and scatter back) one
    value per input channel and kernel tap at every output position, the
    correlations lower the output gradient, one value per *output* channel
    and tap: the columns win for few input channels (a network's first layer).
    """
    columns = problem.batch * math.prod(problem.out_spatial) * problem.in_channels \
        * math.prod(problem.kernel)
    rows = 0
    for _, sub_g, sub_w, sub_args in parts:
        if 0 in sub_g.shape or 0 in sub_w.shape:
            continue
        sub = make_problem(sub_g.shape, sub_w.shape, dtype, sub_args.stride, sub_args.padding,
                           sub_args.dilation, sub_args.groups, origin="nn")
        rows += gemm.work(sub)["copied"]
    return columns < rows


# ---------------------------------------------------------------------------
# both gradients as GEMMs on im2col's lowering

#: with method='auto', the GEMM gradients (im2col's or winograd's) run where that
#: backend's estimate for the forward problem is within this factor of the cheapest
#: backend's (the correlations they replace are cheaper only for large kernels, by FFT)
GEMM_COST_FACTOR = 2.0


def _forward_problem(x_shape, w_shape, args: ConvArgs, dtype):
    return make_problem(x_shape, w_shape, dtype, args.stride, args.padding, args.dilation,
                        args.groups, origin="nn")


def _gemm_backend(problem, method):
    """im2col's module where the gradients should run as its GEMMs, else None.

    ``method='im2col'`` forces them; with 'auto' they run where im2col is
    competitive on the forward problem (same multiply-adds); any other
    backend name keeps the correlations, run by that backend.
    """
    name = dispatch.resolve_method(method)
    gemm = backends.REGISTRY.get("im2col")
    if name not in ("auto", "im2col") or gemm is None or not gemm.supports(problem):
        return None
    if name == "auto":
        costs = dict(dispatch.choose(problem).candidates)
        if costs.get("im2col", math.inf) > GEMM_COST_FACTOR * min(costs.values()):
            return None
    return gemm


def _weight_backend(problem, x, gy, method):
    """The backend whose own ``weight_gradient`` should run, else None (the correlations).

    A forced method uses its own where it has one; with 'auto', the backend
    with a ``weight_gradient`` that is cheapest on the forward problem, if
    within :data:`GEMM_COST_FACTOR` of the cheapest backend (im2col's GEMMs,
    Winograd's transformed GEMMs), once its data check passes.
    """
    name = dispatch.resolve_method(method)
    offering = [n for n, m in backends.REGISTRY.items()
                if hasattr(m, "weight_gradient") and m.supports(problem) and (name in ("auto", n))]
    if not offering:
        return None
    if name == "auto":
        costs = dict(dispatch.choose(problem).candidates)
        name = min(offering, key=lambda n: costs.get(n, math.inf))
        if costs.get(name, math.inf) > GEMM_COST_FACTOR * min(costs.values()):
            return None
    module = backends.REGISTRY[name]
    if hasattr(module, "inspect") and not module.supports(module.inspect(problem, x, gy)):
        return None   # e.g. NaN/Inf, which Winograd would spread over whole tiles
    return module


# ---------------------------------------------------------------------------
# g(G, V, s): the gradient for the kernel

def conv_weight(nd: int, op: str, input, weight_size, grad_output, stride, padding, dilation,
                groups, method):
    """Gradient for the weight of ``conv{nd}d``; see :func:`conv2d_weight`."""
    x = _validate.float_array(input, "input")
    gy = _validate.float_array(grad_output, "grad_output")
    groups = _validate.positive_int(groups, "groups")
    x, unbatched = _validate.batched(x, nd, "input", op)
    if unbatched:
        gy = gy[np.newaxis] if gy.ndim == nd + 1 else gy
    if gy.ndim != nd + 2:
        raise ValueError(f"expected grad_output of {op} to be {nd + 1}-D (unbatched) or "
                         f"{nd + 2}-D (batched), got grad_output of shape {gy.shape}")
    w_shape = _full_size(weight_size, nd, "weight_size", (gy.shape[1], x.shape[1] // groups))
    args = conv_args(nd, x.shape, w_shape, stride, padding, dilation, groups)
    _check_grad_output(gy, x.shape, w_shape, args)
    dtype = _validate.result_dtype(x, gy)
    return _weight_gradient(x, w_shape, gy, args, dtype, method)


def _weight_gradient(x, w_shape, gy, args: ConvArgs, dtype, method) -> np.ndarray:
    problem = _forward_problem(x.shape, w_shape, args, dtype)
    backend = _weight_backend(problem, x, gy, method)
    if backend is not None:
        return backend.weight_gradient(_validate.prepare(x, dtype), _validate.prepare(gy, dtype),
                                       problem)
    crop, pads = [], []
    for size, k, l, (before, _), s, d in zip(x.shape[2:], w_shape[2:], gy.shape[2:], args.padding,
                                             args.stride, args.dilation):
        read = (k - 1) * d + (l - 1) * s + 1   # padded extent the forward windows read
        length = min(size, read - before)
        if length <= 0:
            return np.zeros(w_shape, dtype=dtype)
        crop.append(slice(0, length))
        pads.append((before, read - before - length))
    x = x[(slice(None), slice(None)) + tuple(crop)]
    gt = gy.swapaxes(0, 1)                  # (O, N, ...): the kernel, N its input channels
    if args.groups == 1 and x.ndim <= 4:
        return _weight_gradient_folded(x, gt, pads, args, dtype, method)
    return _weight_gradient_grouped(x, gt, pads, args, dtype, method)


def _weight_gradient_folded(x, gt, pads, args: ConvArgs, dtype, method) -> np.ndarray:
    """One correlation with the channels as an extra spatial axis.

    ``x`` becomes a single image ``(1, N, C, *spatial)`` and the output
    gradient a kernel ``(O, N, 1, *out)``: the result ``(1, O, C, *kernel)``
    is the whole weight gradient, and im2col-type backends turn it into one
    large matrix product (rows N x out, columns C x kernel).
    """
    n, c = x.shape[:2]
    image = x.reshape((1, n, c) + x.shape[2:])
    kernel = gt.reshape(gt.shape[:2] + (1,) + gt.shape[2:])
    sub_args = ConvArgs((1,) + args.dilation, ((0, 0),) + tuple(pads), (1,) + args.stride, 1)
    return correlate(image, kernel, dtype, sub_args, method)[0]


def _weight_gradient_grouped(x, gt, pads, args: ConvArgs, dtype, method) -> np.ndarray:
    """Batch and channel roles swapped: channels-within-group become the batch.

    ``x`` goes to ``(C/g, g*N, ...)`` so that group ``k``'s output channels,
    reading input channels ``k*N .. k*N + N - 1``, see only their own group's
    channels; the result ``(C/g, O, *kernel)`` is transposed back.
    """
    n, c = x.shape[:2]
    g = args.groups
    xt = x.reshape((n, g, c // g) + x.shape[2:]).transpose((2, 1, 0) + tuple(range(3, x.ndim + 1)))
    xt = xt.reshape((c // g, g * n) + x.shape[2:])
    sub_args = ConvArgs(args.dilation, tuple(pads), args.stride, g)
    dw = correlate(xt, gt, dtype, sub_args, method)   # (C/g, O, *kernel)
    return np.ascontiguousarray(dw.swapaxes(0, 1))


def conv_bias(grad_output, ndim: int | None = None) -> np.ndarray:
    """Gradient for the bias: ``grad_output`` summed over batch and space.

    Parameters
    ----------
    grad_output : array_like
        ``(N, O, *spatial)``; with ``ndim`` given, ``(O, *spatial)`` of that
        many spatial axes is taken as unbatched.
    ndim : int, optional
        Number of spatial axes, needed only to recognise unbatched input.

    Returns
    -------
    ndarray
        ``(O,)``.

    Examples
    --------
    >>> import numpy as np
    >>> conv_bias(np.ones((2, 3, 4, 4)))
    array([32., 32., 32.])
    """
    gy = _validate.float_array(grad_output, "grad_output")
    if ndim is not None and gy.ndim == ndim + 1:
        gy = gy[np.newaxis]
    if gy.ndim < 2:
        raise ValueError(f"grad_output must be (N, O, *spatial), got shape {gy.shape}")
    return gy.sum(axis=(0,) + tuple(range(2, gy.ndim)), dtype=gy.dtype)


# ---------------------------------------------------------------------------
# the torch.nn.grad names

_INPUT_DOC = """Gradient of ``conv{n}d`` for its input (the chapter's ``h(K, V, s)``), as
    ``torch.nn.grad.conv{n}d_input``.

    Parameters
    ----------
    input_size : sequence of int
        Shape of the input: ``(N, C, *spatial)``, ``(C, *spatial)`` with
        unbatched ``grad_output``, or the spatial sizes alone.
    weight : array_like
        ``(O, C // groups, *kernel)``.
    grad_output : array_like
        Gradient of the loss for the output, ``(N, O, *out)``.
    stride, padding, dilation, groups :
        As given to ``conv{n}d``.
    method : str
        'auto' or a backend name, for every correlation it runs.

    Returns
    -------
    ndarray
        ``input_size``-shaped gradient; input positions no window read get 0.

    Examples
    --------
    >>> import numpy as np
    >>> w = np.ones((1, 1) + (2,) * {n})
    >>> conv{n}d_input((1, 1) + (3,) * {n}, w, np.ones((1, 1) + (2,) * {n})).shape
    (1, 1{shape})
    """

_WEIGHT_DOC = """Gradient of ``conv{n}d`` for its weight (the chapter's ``g(G, V, s)``), as
    ``torch.nn.grad.conv{n}d_weight``.

    Parameters
    ----------
    input : array_like
        The forward input, ``(N, C, *spatial)`` (or unbatched).
    weight_size : sequence of int
        ``(O, C // groups, *kernel)``, or the kernel sizes alone.
    grad_output : array_like
        Gradient of the loss for the output, ``(N, O, *out)``.
    stride, padding, dilation, groups :
        As given to ``conv{n}d``.
    method : str
        'auto' or a backend name, for every correlation it runs.

    Returns
    -------
    ndarray
        ``weight_size``-shaped gradient.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.ones((1, 1) + (3,) * {n})
    >>> conv{n}d_weight(x, (1, 1) + (2,) * {n}, np.ones((1, 1) + (2,) * {n})).shape
    (1, 1{shape})
    """


def _make(nd: int):
    def input_grad(input_size, weight, grad_output, stride=1, padding=0, dilation=1, groups=1,
                   method="auto"):
        return conv_input(nd, f"conv{nd}d_input", input_size, weight, grad_output, stride,
                          padding, dilation, groups, method)

    def weight_grad(input, weight_size, grad_output, stride=1, padding=0, dilation=1, groups=1,
                    method="auto"):
        return conv_weight(nd, f"conv{nd}d_weight", input, weight_size, grad_output, stride,
                           padding, dilation, groups, method)

    input_grad.__name__ = input_grad.__qualname__ = f"conv{nd}d_input"
    weight_grad.__name__ = weight_grad.__qualname__ = f"conv{nd}d_weight"
    input_grad.__doc__ = _INPUT_DOC.format(n=nd, shape=", 3" * nd)
    weight_grad.__doc__ = _WEIGHT_DOC.format(n=nd, shape=", 2" * nd)
    input_grad.__module__ = weight_grad.__module__ = __name__
    return input_grad, weight_grad


conv1d_input, conv1d_weight = _make(1)
conv2d_input, conv2d_weight = _make(2)
conv3d_input, conv3d_weight = _make(3)
