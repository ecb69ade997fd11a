"""The CUDA backend: the canonical correlation, its gradients, pooling and LRN on a GPU.

An optional extra (``pip install fastconv[cuda]`` brings numba-cuda).  The
backend registers only where a CUDA GPU answers; elsewhere :func:`available`
is False and :data:`UNAVAILABLE_REASON` says why, so ``method='cuda'`` fails
with that reason.  Importing this module never imports ``numba.cuda``: the
kernels (``_cuda_kernels``) load on first use.

Arrays: NumPy arrays in give NumPy arrays out (copied to the GPU and back,
which the cost model counts); device arrays in (anything exposing
``__cuda_array_interface__``, e.g. numba device arrays or CuPy arrays) give
numba device arrays out with no transfer, so a network can keep its tensors
on the GPU between layers.  Device arrays must be C-contiguous and of the
problem's dtype.

Numba's CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) runs every kernel in
Python threads: fine for tests on tiny shapes, hopeless as a backend, so the
backend does not register under it unless ``FASTCONV_CUDA_SIMULATOR=1``
asks for it.
"""
from __future__ import annotations

import ctypes
import importlib.util
import math
import os
import sys

import numpy as np

NAME = "cuda"
#: why the backend is not available here ("" when it is)
UNAVAILABLE_REASON = ""
_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_MAX_GRID_YZ = 65535
_status = None


# --- availability -----------------------------------------------------------------------------

def _simulator_on() -> bool:
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def _driver_loads() -> bool:
    """Whether a CUDA driver library loads: a cheap test before importing numba.cuda."""
    override = os.environ.get("NUMBA_CUDA_DRIVER")
    if override:
        names = [override]
    elif sys.platform.startswith("linux"):
        names = ["libcuda.so.1", "libcuda.so"]
    elif sys.platform == "win32":
        names = ["nvcuda.dll"]
    else:
        return False
    for name in names:
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def _numba_cuda_installed() -> bool:
    return importlib.util.find_spec("numba_cuda") is not None


def _probe() -> str:
    """'' where a CUDA device (or an allowed simulator) is ready, else the reason."""
    if not _numba_cuda_installed():
        return "numba-cuda not installed: pip install fastconv[cuda]"
    if _simulator_on():
        if os.environ.get("FASTCONV_CUDA_SIMULATOR", "0") in ("", "0"):
            return ("Numba's CUDA simulator is on (NUMBA_ENABLE_CUDASIM=1); set "
                    "FASTCONV_CUDA_SIMULATOR=1 to use it as a backend anyway")
    elif not _driver_loads():
        return "no CUDA GPU found (no CUDA driver library on this machine)"
    try:
        from numba import cuda
        if not cuda.is_available():
            return "no CUDA GPU found (numba.cuda.is_available() is False)"
    except Exception as exc:  # a broken driver or toolkit must not break `import fastconv`
        return f"no CUDA GPU found ({type(exc).__name__}: {exc})"
    return "" if _simulator_on() else _compiler_loads()


def _compiler_loads() -> str:
    """'' where numba-cuda's kernel compiler imports, else why not.

    The compiler's registries load lazily at the first kernel compile; a
    numba-cuda older than the installed numpy fails there (numba-cuda 0.30.4
    with numpy 2.5: ``np.row_stack`` is gone), which would surface as an
    AttributeError deep inside the first convolution.  Loading them here
    turns that into "backend unavailable" with the reason.
    """
    try:
        importlib.import_module("numba.cuda.cudaimpl")
    except Exception as exc:
        from importlib.metadata import version
        return (f"numba-cuda {version('numba-cuda')} cannot compile kernels with numpy "
                f"{np.__version__} ({type(exc).__name__}: {exc})")
    return ""


def available() -> bool:
    """Whether a CUDA GPU is usable here (cached after the first call).

    Examples
    --------
    >>> isinstance(available(), bool)
    True
    """
    global _status, UNAVAILABLE_REASON
    if _status is None:
        UNAVAILABLE_REASON = _probe()
        _status = not UNAVAILABLE_REASON
    return _status


def info() -> dict:
    """The GPU this backend would use, or why there is none (for ``fastconv info``).

    Returns
    -------
    dict
        ``available`` and ``reason``; where available also ``name``,
        ``compute_capability``, ``memory_total_bytes``, ``memory_free_bytes``,
        ``multiprocessors``, ``simulator`` and ``numba_cuda_version``.

    Examples
    --------
    >>> sorted(info())[:2]
    ['available', 'reason']
    """
    if not available():
        return {"available": False, "reason": UNAVAILABLE_REASON}
    from importlib.metadata import version
    from numba import cuda
    device = cuda.get_current_device()
    free, total = cuda.current_context().get_memory_info()
    name = getattr(device, "name", "Numba CUDA simulator")  # the simulator's device has none
    name = name.decode() if isinstance(name, bytes) else str(name)
    return {"available": True, "reason": "", "name": name,
            "compute_capability": ".".join(str(v) for v in device.compute_capability),
            "memory_total_bytes": _bytes(total), "memory_free_bytes": _bytes(free),
            "multiprocessors": int(getattr(device, "MULTIPROCESSOR_COUNT", 0)),
            "simulator": _simulator_on(), "numba_cuda_version": version("numba-cuda")}


def _bytes(value):
    """An int, or None where the simulator reports infinite memory."""
    return int(value) if math.isfinite(value) else None


def supports(problem) -> bool:
    """float32/float64 correlations in 1, 2 or 3 dimensions, any geometry."""
    return problem.dtype in _DTYPES and 1 <= problem.ndim <= 3


def cost(problem) -> float:
    from .. import costs
    return costs.estimate(NAME, problem)


# --- arrays -----------------------------------------------------------------------------------

def _k():
    from . import _cuda_kernels
    return _cuda_kernels


def is_device_array(a) -> bool:
    """Whether ``a`` lives on a GPU (``__cuda_array_interface__`` or a numba device array).

    Examples
    --------
    >>> is_device_array(np.zeros(3))
    False
    """
    return hasattr(a, "__cuda_array_interface__") or bool(getattr(a, "__cuda_ndarray__", False))


def to_device(a, dtype=None):
    """A numba device array holding ``a``: no copy when ``a`` already is on the GPU.

    Host arrays are copied (C-contiguous, cast to ``dtype`` if given); device
    arrays are wrapped without copying and must already have ``dtype``.

    Examples
    --------
    >>> d = to_device(np.arange(3.0))            # doctest: +SKIP
    >>> to_host(d)                               # doctest: +SKIP
    array([0., 1., 2.])
    """
    from numba import cuda
    if is_device_array(a):
        if not getattr(a, "__cuda_ndarray__", False):
            a = cuda.as_cuda_array(a)
        if dtype is not None and np.dtype(dtype) != a.dtype:
            raise ValueError(f"device array has dtype {a.dtype}, expected {np.dtype(dtype)}; "
                             "cast it on the GPU first")
        return a
    return cuda.to_device(np.ascontiguousarray(a, dtype=dtype))


def to_host(a) -> np.ndarray:
    """A NumPy copy of a device array (NumPy arrays pass through)."""
    if is_device_array(a):
        return to_device(a).copy_to_host()
    return np.asarray(a)


def _empty(shape, dtype):
    from numba import cuda
    return cuda.device_array(tuple(int(s) for s in shape), dtype=np.dtype(dtype))


def _lift5(a, spatial_axes: int):
    """The (N, C, D, H, W) view of a contiguous (N, C, *spatial) device array."""
    if not a.is_c_contiguous():
        raise ValueError("device arrays must be C-contiguous (copy it on the GPU first, e.g. "
                         "cupy.ascontiguousarray)")
    shape = tuple(a.shape)
    return a.reshape(shape[:2] + (1,) * (3 - spatial_axes) + shape[2:])


def _lift(values, fill) -> tuple:
    return (fill,) * (3 - len(values)) + tuple(values)


def _grid(n: int):
    """(blocks, threads) for a grid-stride loop over ``n`` items."""
    threads = max(1, min(_k().MAX_THREADS, n))
    return max(1, min(-(-n // threads), 8192)), threads


def _gather(src, offset, strides, shape, dtype):
    """A new contiguous 4-d device array ``dst[i,j,k,l] = src.flat[offset + i*s0 + ...]``."""
    dst = _empty(shape, dtype)
    if dst.size:
        blocks, threads = _grid(dst.size)
        _k().gather4[blocks, threads](src.reshape(-1), offset, tuple(strides), dst)
    return dst


def _fill(a, value):
    if a.size:
        blocks, threads = _grid(a.size)
        _k().fill[blocks, threads](a.reshape(-1), a.dtype.type(value))


# --- the correlation --------------------------------------------------------------------------

def _run(x5, wt, out5, stride, dilation, pad, in_dilation, groups):
    """Launch the tiled kernel: ``out5`` (N, O, OD, OH, OW) from ``x5`` and ``wt`` (Cg, K3, O).

    ``pad`` is the leading padding per axis (may be negative: a crop);
    trailing padding needs no number since taps past the input read zeros.
    """
    k = _k()
    n, o = out5.shape[:2]
    cg = wt.shape[0]
    if out5.size == 0:
        return
    if cg == 0 or math.prod(wt.shape[1:4]) == 0:
        _fill(out5, 0)
        return
    p = k.plan(tuple(out5.shape), o // groups, groups, tuple(wt.shape[1:4]), stride, dilation,
               out5.dtype.itemsize)
    splits = k.channel_splits(p["blocks"], cg)
    lsplit = -(-cg // splits)
    splits = -(-cg // lsplit)
    target = out5 if splits == 1 else _empty((splits * n,) + tuple(out5.shape[1:]), out5.dtype)
    kernel = k.correlate_kernel(out5.dtype, p["ry"], p["ocb"], max(in_dilation) > 1)
    geo = tuple(int(v) for v in (*stride, *dilation, *pad, *in_dilation))
    grid_x, grid_y = p["grid_xy"]
    for y0 in range(0, grid_y, _MAX_GRID_YZ):
        for z0 in range(0, splits * n, _MAX_GRID_YZ):
            grid = (grid_x, min(_MAX_GRID_YZ, grid_y - y0), min(_MAX_GRID_YZ, splits * n - z0))
            kernel[grid, p["block"], 0, p["shared"]](
                x5, wt, target, geo, lsplit, z0, y0, groups, p["per_group"], p["tiles_x"],
                p["tiles_y"], p["khc"], p["kwc"], p["prows"], p["pcols"])
    if splits > 1:
        blocks, threads = _grid(out5.size)
        k.sum_splits[blocks, threads](target.reshape(splits, -1), out5.reshape(-1))


def _weights_for_kernel(w):
    """(O, Cg, *kernel) device weights as the kernel reads them: (Cg, KD, KH, KW, O)."""
    o, cg = w.shape[:2]
    taps = math.prod(w.shape[2:])
    kernel3 = _lift(tuple(w.shape[2:]), 1)
    wt = _gather(w, 0, (taps, 1, 0, cg * taps), (cg, taps, 1, o), w.dtype)
    return wt.reshape((cg,) + kernel3 + (o,))


def _device_out(out, shape, dtype):
    """(array to compute into, whether it is ``out`` itself): ``out`` when it is a fitting
    device array, else a new one."""
    if out is not None and is_device_array(out):
        target = to_device(out)
        if (tuple(target.shape) == tuple(shape) and target.dtype == np.dtype(dtype)
                and target.is_c_contiguous()):
            return target, True
    return _empty(shape, dtype), False


def _finish(result, out, on_device: bool, in_place: bool = False):
    """Hand ``result`` (a device array) back the way the caller gave the operands."""
    if out is not None and is_device_array(out):
        if not in_place:
            to_device(out).copy_to_device(result)
        return out
    if on_device:
        return result
    host = result.copy_to_host()
    if out is None:
        return host
    out[...] = host
    return out


def correlate(x, w, problem, out=None):
    """Canonical correlation (``fastconv.problem``) of ``x`` with ``w`` on the GPU.

    Parameters
    ----------
    x, w : ndarray or device array
        ``(N, C, *spatial)`` and ``(O, C // groups, *kernel)``, ``problem.dtype``.
    problem : ConvProblem
    out : ndarray or device array, optional
        Written and returned.

    Returns
    -------
    ndarray, or a numba device array when ``x`` (or ``out``) is a device array.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> correlate(np.ones((1, 1, 4)), np.ones((1, 1, 2)), p)   # doctest: +SKIP
    array([[[2., 2., 2.]]])
    """
    xd, wd = to_device(x, problem.dtype), to_device(w, problem.dtype)
    result, in_place = _device_out(out, problem.out_shape, problem.dtype)
    spatial = problem.ndim
    _run(_lift5(xd, spatial), _weights_for_kernel(wd), _lift5(result, spatial),
         _lift(problem.stride, 1), _lift(problem.dilation, 1),
         _lift([p[0] for p in problem.padding], 0), (1, 1, 1), problem.groups)
    return _finish(result, out, is_device_array(x), in_place)


def correlate_grad_input(grad_out, w, problem, out=None):
    """Gradient of :func:`correlate` for its input: ``(N, C, *spatial)``.

    The output gradient, read with ``stride - 1`` zeros between entries,
    correlated with the flipped, channel-transposed kernel: the chapter's
    ``h``, on the same tiled kernel.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> correlate_grad_input(np.ones((1, 1, 3)), np.ones((1, 1, 2)), p)  # doctest: +SKIP
    array([[[1., 2., 2., 1.]]])
    """
    gd, wd = to_device(grad_out, problem.dtype), to_device(w, problem.dtype)
    o, cg = problem.w_shape[:2]
    g = problem.groups
    og, taps = o // g, math.prod(problem.kernel)
    # wt[o', tap, group, c'] = w[group*og + o', c', taps - 1 - tap]: flipped, transposed
    wt = _gather(wd, taps - 1, (cg * taps, -1, og * cg * taps, taps), (og, taps, g, cg),
                 wd.dtype).reshape((og,) + _lift(problem.kernel, 1) + (g * cg,))
    result, in_place = _device_out(out, problem.x_shape, problem.dtype)
    dilation = _lift(problem.dilation, 1)
    pad = _lift([(k - 1) * d - p[0] for k, d, p in
                 zip(problem.kernel, problem.dilation, problem.padding)], 0)
    _run(_lift5(gd, problem.ndim), wt, _lift5(result, problem.ndim), (1, 1, 1), dilation, pad,
         _lift(problem.stride, 1), g)
    return _finish(result, out, is_device_array(grad_out), in_place)


def correlate_grad_weight(x, grad_out, problem, out=None):
    """Gradient of :func:`correlate` for its weights: ``(O, C // groups, *kernel)``.

    The input with batch and channel roles swapped, correlated with the
    output gradient as the kernel, at stride ``dilation`` and dilation
    ``stride`` (the chapter's ``g``); each group's channels see only their
    own block of the swapped batch.

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> x = np.arange(4.0).reshape(1, 1, 4)
    >>> correlate_grad_weight(x, np.ones((1, 1, 3)), p)   # doctest: +SKIP
    array([[[3., 6.]]])
    """
    xd, gd = to_device(x, problem.dtype), to_device(grad_out, problem.dtype)
    n, c = problem.x_shape[:2]
    o, cg = problem.w_shape[:2]
    g = problem.groups
    size, osize = math.prod(problem.spatial), math.prod(problem.out_spatial)
    # x'[c', group, b, s] = x[b, group*cg + c', s]: batch Cg, input channels G*N
    xs = _gather(xd, 0, (size, cg * size, c * size, 1), (cg, g, n, size), xd.dtype)
    xs = xs.reshape((cg, g * n) + _lift(problem.spatial, 1))
    # the output gradient as weights (N per group, *out, O) in the kernel's layout
    gt = _gather(gd, 0, (o * osize, 1, 0, osize), (n, osize, 1, o), gd.dtype)
    gt = gt.reshape((n,) + _lift(problem.out_spatial, 1) + (o,))
    swapped = _empty((cg, o) + _lift(problem.kernel, 1), problem.dtype)
    _run(xs, gt, swapped, _lift(problem.dilation, 1), _lift(problem.stride, 1),
         _lift([p[0] for p in problem.padding], 0), (1, 1, 1), g)
    taps = math.prod(problem.kernel)
    result = _gather(swapped, 0, (taps, o * taps, 1, 0), (o, cg, taps, 1), problem.dtype)
    return _finish(result.reshape(problem.w_shape), out, is_device_array(x))


# --- pooling and local response normalisation -------------------------------------------------

def _per_axis(value, ndim: int, name: str) -> tuple:
    values = tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else (int(value),)
    if len(values) == 1:
        values *= ndim
    if len(values) != ndim:
        raise ValueError(f"{name} must be an int or {ndim} ints, got {value!r}")
    return values


def _pads(padding, ndim: int) -> tuple:
    """Per-axis (before, after) pairs from an int, ints or pairs."""
    if isinstance(padding, (tuple, list)) and any(isinstance(p, (tuple, list)) for p in padding):
        pairs = tuple((int(p[0]), int(p[1])) for p in padding)
        if len(pairs) != ndim:
            raise ValueError(f"padding needs {ndim} (before, after) pairs, got {padding!r}")
        return pairs
    return tuple((p, p) for p in _per_axis(padding, ndim, "padding"))


def _pool_setup(x, kernel_size, stride, padding, dilation, ceil_mode):
    """Device input as (planes, D, H, W), the output shape and the 3-d geometry."""
    from .. import geometry
    xd = to_device(x)
    if xd.dtype not in _DTYPES or not 3 <= xd.ndim <= 5:
        raise ValueError(f"pooling takes float32/float64 (N, C, *spatial) arrays with 1 to 3 "
                         f"spatial axes, got {xd.dtype} of shape {tuple(xd.shape)}")
    nd = xd.ndim - 2
    kernel = _per_axis(kernel_size, nd, "kernel_size")
    stride = kernel if stride is None else _per_axis(stride, nd, "stride")
    dilation = _per_axis(dilation, nd, "dilation")
    pads = _pads(padding, nd)
    spatial = tuple(xd.shape[2:])
    out = tuple(geometry.output_size(n, k, p, s, d, ceil_mode)
                for n, k, p, s, d in zip(spatial, kernel, pads, stride, dilation))
    if min(kernel + stride + dilation) < 1 or min(out) < 1:
        raise ValueError(f"pooling of spatial size {spatial} with kernel_size {kernel}, stride "
                         f"{stride}, padding {pads}, dilation {dilation} gives output {out}")
    planes = _planes(xd, nd)
    geo = (_lift(kernel, 1), _lift(stride, 1), _lift(dilation, 1),
           _lift([p[0] for p in pads], 0), _lift([p[1] for p in pads], 0))
    return xd, planes, tuple(xd.shape[:2]) + out, geo


def _planes(a, nd: int):
    """The (N*C, D, H, W) view of a contiguous (N, C, *spatial) device array."""
    lifted = _lift5(a, nd)
    return lifted.reshape((a.shape[0] * a.shape[1],) + tuple(lifted.shape[2:]))


def max_pool(x, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
    """Max pooling with torch's indices (flat positions within each input plane).

    Parameters
    ----------
    x : ndarray or device array
        ``(N, C, *spatial)``, 1 to 3 spatial axes, float32 or float64.
    kernel_size, stride, dilation : int or tuple
        ``stride`` defaults to ``kernel_size``.
    padding : int, tuple of int, or tuple of (before, after)
    ceil_mode : bool

    Returns
    -------
    out, indices : arrays (``indices`` int64), on the device when ``x`` is.

    Examples
    --------
    >>> max_pool(np.arange(4.0).reshape(1, 1, 4), 2)   # doctest: +SKIP
    (array([[[1., 3.]]]), array([[[1, 3]]]))
    """
    xd, planes, out_shape, geo = _pool_setup(x, kernel_size, stride, padding, dilation,
                                             ceil_mode)
    out, indices = _empty(out_shape, xd.dtype), _empty(out_shape, np.int64)
    nd = len(out_shape) - 2
    if out.size:
        blocks, threads = _grid(out.size)
        _k().max_pool[blocks, threads](planes, sum(geo[:4], ()), xd.dtype.type(-np.inf),
                                       _planes(out, nd), _planes(indices, nd))
    device = is_device_array(x)
    return _finish(out, None, device), _finish(indices, None, device)


def max_pool_backward(grad_out, indices, input_shape, kernel_size, stride=None, padding=0,
                      dilation=1):
    """Gradient of :func:`max_pool` for its input, from the forward's indices.

    Examples
    --------
    >>> max_pool_backward(np.ones((1, 1, 2)), np.array([[[1, 3]]]), (1, 1, 4), 2)  # doctest: +SKIP
    array([[[0., 1., 0., 1.]]])
    """
    gd, idx = to_device(grad_out), to_device(indices, np.int64)
    nd = len(input_shape) - 2
    kernel = _per_axis(kernel_size, nd, "kernel_size")
    stride = kernel if stride is None else _per_axis(stride, nd, "stride")
    geo = (_lift(kernel, 1), _lift(stride, 1), _lift(_per_axis(dilation, nd, "dilation"), 1),
           _lift([p[0] for p in _pads(padding, nd)], 0))
    grad_in = _empty(input_shape, gd.dtype)
    if grad_in.size:
        if gd.size == 0:
            _fill(grad_in, 0)
        else:
            blocks, threads = _grid(grad_in.size)
            _k().max_pool_backward[blocks, threads](_planes(gd, nd), _planes(idx, nd),
                                                    sum(geo, ()), gd.dtype.type(0),
                                                    _planes(grad_in, nd))
    return _finish(grad_in, None, is_device_array(grad_out))


def _avg_geo(geo):
    kernel, stride, _, pad, pad_end = geo
    return kernel + stride + pad + pad_end


def avg_pool(x, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True):
    """Average pooling as torch computes it (divisor rules included).

    Examples
    --------
    >>> avg_pool(np.arange(4.0).reshape(1, 1, 4), 2)   # doctest: +SKIP
    array([[[0.5, 2.5]]])
    """
    xd, planes, out_shape, geo = _pool_setup(x, kernel_size, stride, padding, 1, ceil_mode)
    out = _empty(out_shape, xd.dtype)
    if out.size:
        blocks, threads = _grid(out.size)
        forward = _k().avg_pool_kernels(xd.dtype)[0]
        forward[blocks, threads](planes, _avg_geo(geo), bool(count_include_pad),
                                 xd.dtype.type(0), _planes(out, len(out_shape) - 2))
    return _finish(out, None, is_device_array(x))


def avg_pool_backward(grad_out, input_shape, kernel_size, stride=None, padding=0,
                      count_include_pad=True):
    """Gradient of :func:`avg_pool` for its input.

    Examples
    --------
    >>> avg_pool_backward(np.ones((1, 1, 2)), (1, 1, 4), 2)   # doctest: +SKIP
    array([[[0.5, 0.5, 0.5, 0.5]]])
    """
    gd = to_device(grad_out)
    nd = len(input_shape) - 2
    kernel = _per_axis(kernel_size, nd, "kernel_size")
    stride = kernel if stride is None else _per_axis(stride, nd, "stride")
    pads = _pads(padding, nd)
    geo = (_lift(kernel, 1), _lift(stride, 1), None, _lift([p[0] for p in pads], 0),
           _lift([p[1] for p in pads], 0))
    grad_in = _empty(input_shape, gd.dtype)
    if grad_in.size:
        blocks, threads = _grid(grad_in.size)
        backward = _k().avg_pool_kernels(gd.dtype)[1]
        backward[blocks, threads](_planes(gd, nd), _avg_geo(geo), bool(count_include_pad),
                                  gd.dtype.type(0), _planes(grad_in, nd))
    return _finish(grad_in, None, is_device_array(grad_out))


def _lrn_view(a):
    shape = tuple(a.shape)
    if len(shape) < 3:
        raise ValueError(f"local_response_norm needs (N, C, *spatial) input, got shape {shape}")
    if not a.is_c_contiguous():
        raise ValueError("device arrays must be C-contiguous")
    return a.reshape(shape[:2] + (math.prod(shape[2:]),))


def _lrn_forward(xd, size, alpha, beta, k):
    t = xd.dtype.type
    out, base = _empty(xd.shape, xd.dtype), _empty(xd.shape, xd.dtype)
    if xd.size:
        blocks, threads = _grid(xd.size)
        _k().lrn[blocks, threads](_lrn_view(xd), int(size), t(alpha / size), t(beta), t(k),
                                  t(0), _lrn_view(out), _lrn_view(base))
    return out, base


def local_response_norm(x, size, alpha=1e-4, beta=0.75, k=1.0):
    """torch.nn.functional.local_response_norm: across channels of ``(N, C, *spatial)``.

    ``out = x / (k + alpha/size * sum of x**2 over the size channels around c)**beta``.

    Examples
    --------
    >>> local_response_norm(np.ones((1, 2, 1)), 2, alpha=1.0, beta=1.0)  # doctest: +SKIP
    array([[[0.66666667],
            [0.5       ]]])
    """
    xd = to_device(x)
    return _finish(_lrn_forward(xd, size, alpha, beta, k)[0], None, is_device_array(x))


def local_response_norm_backward(grad_out, x, size, alpha=1e-4, beta=0.75, k=1.0):
    """Gradient of :func:`local_response_norm` for its input.

    Examples
    --------
    >>> x = np.full((1, 1, 1), 2.0)   # d/dx x / (1 + x**2) = (1 - x**2) / (1 + x**2)**2
    >>> local_response_norm_backward(np.ones((1, 1, 1)), x, 1, alpha=1.0,
    ...                              beta=1.0)   # doctest: +SKIP
    array([[[-0.12]]])
    """
    xd, gd = to_device(x), to_device(grad_out, x.dtype)
    _, base = _lrn_forward(xd, size, alpha, beta, k)
    grad_in = _empty(xd.shape, xd.dtype)
    if xd.size:
        t = xd.dtype.type
        blocks, threads = _grid(xd.size)
        _k().lrn_backward[blocks, threads](_lrn_view(gd), _lrn_view(xd), _lrn_view(base),
                                           int(size), t(beta), t(2 * alpha * beta / size), t(0),
                                           _lrn_view(grad_in))
    return _finish(grad_in, None, is_device_array(grad_out))
