"""The chapter's Gabor functions, sampled as convolution kernels.

    w(x, y) = alpha * exp(-beta_x x'^2 - beta_y y'^2) * cos(f x' + phi)
    x' =  (x - x0) cos(tau) + (y - y0) sin(tau)
    y' = -(x - x0) sin(tau) + (y - y0) cos(tau)

``f`` is the angular frequency along ``x'`` (wavelength ``2 pi / f``), ``tau``
the orientation, ``beta_x``/``beta_y`` the widths of the Gaussian envelope,
``phi`` the phase and ``(x0, y0)`` the centre.  Kernels are sampled on a
centred integer grid: column ``c`` is ``x = c - (cols - 1) / 2`` and row ``r``
is ``y = r - (rows - 1) / 2`` (image convention: ``y`` grows downwards, so a
positive ``tau`` turns clockwise on screen).  A bank stacked as
``(n_filters, size, size)`` becomes a conv2d weight with ``bank[:, None]``.
"""
from __future__ import annotations

import itertools
import math
import operator

import numpy as np


def _grid_shape(size) -> tuple[int, int]:
    if hasattr(size, "__len__") and not isinstance(size, (str, bytes)):
        values = tuple(size)
    else:
        values = (size, size)
    try:
        rows, cols = (operator.index(v) for v in values)
    except (TypeError, ValueError):
        raise TypeError(f"size must be an int or a (rows, cols) pair of ints, got {size!r}") from None
    if rows < 1 or cols < 1:
        raise ValueError(f"size must be positive, got {size!r}")
    return rows, cols


def gabor_kernel(size, *, beta_x, beta_y, f, alpha=1.0, phi=0.0, tau=0.0, x0=0.0, y0=0.0,
                 dtype=np.float64) -> np.ndarray:
    """The chapter's Gabor function ``w(x, y)`` sampled on a centred grid.

    Parameters
    ----------
    size : int or (int, int)
        Kernel size, square or ``(rows, cols)``.
    beta_x, beta_y : float
        Envelope coefficients along ``x'`` and ``y'`` (``1 / (2 sigma^2)``);
        non-negative.
    f : float
        Angular frequency of the cosine along ``x'`` (radians per sample).
    alpha : float
        Amplitude.
    phi : float
        Phase: 0 gives an even (symmetric) filter, pi/2 an odd one.
    tau : float
        Orientation of ``x'`` (radians, measured from the ``x`` axis towards ``y``).
    x0, y0 : float
        Centre of the filter relative to the grid centre.
    dtype : float32 or float64

    Returns
    -------
    ndarray
        ``(rows, cols)``, ``out[r, c] = w(c - (cols - 1) / 2, r - (rows - 1) / 2)``.

    Examples
    --------
    >>> k = gabor_kernel(5, beta_x=0.1, beta_y=0.1, f=1.0)
    >>> k.shape, float(k[2, 2])
    ((5, 5), 1.0)
    """
    rows, cols = _grid_shape(size)
    dtype = np.dtype(dtype)
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dtype}")
    if beta_x < 0 or beta_y < 0:
        raise ValueError(f"beta_x and beta_y must be non-negative, got beta_x={beta_x!r}, "
                         f"beta_y={beta_y!r}")
    x = np.arange(cols) - (cols - 1) / 2 - x0
    y = (np.arange(rows) - (rows - 1) / 2 - y0)[:, np.newaxis]
    xr = x * math.cos(tau) + y * math.sin(tau)
    yr = -x * math.sin(tau) + y * math.cos(tau)
    w = alpha * np.exp(-beta_x * xr**2 - beta_y * yr**2) * np.cos(f * xr + phi)
    return w.astype(dtype)


def gabor_bank(size, orientations=4, wavelengths=(4.0, 8.0), phases=(0.0,), *,
               sigma_per_wavelength=0.56, aspect=0.5, alpha=1.0, dtype=np.float64):
    """A bank of Gabor kernels over orientations, wavelengths and phases.

    For wavelength ``lam``: ``f = 2 pi / lam``, envelope width
    ``sigma = sigma_per_wavelength * lam`` along ``x'`` (0.56 gives the
    classic one-octave bandwidth), ``beta_x = 1 / (2 sigma^2)`` and
    ``beta_y = aspect^2 * beta_x`` (``aspect < 1`` stretches the envelope
    along the stripes).

    Parameters
    ----------
    size : int or (int, int)
    orientations : int or sequence of float
        A count ``n`` (angles ``k pi / n``) or the angles ``tau`` themselves.
    wavelengths : sequence of float
        In samples per cycle.
    phases : sequence of float
        Values of ``phi``.
    sigma_per_wavelength, aspect, alpha : float
    dtype : float32 or float64

    Returns
    -------
    filters : ndarray
        ``(n_filters, rows, cols)``, ordered wavelength, then orientation,
        then phase; ``filters[:, None]`` is an ``O x 1 x k x k`` conv2d weight.
    params : list of dict
        Per filter, the chapter's parameters: alpha, beta_x, beta_y, f, phi, tau, x0, y0.

    Examples
    --------
    >>> filters, params = gabor_bank(7, orientations=4, wavelengths=(3.0, 6.0))
    >>> filters.shape, len(params), sorted(params[0])
    ((8, 7, 7), 8, ['alpha', 'beta_x', 'beta_y', 'f', 'phi', 'tau', 'x0', 'y0'])
    """
    if isinstance(orientations, (int, np.integer)):
        if orientations < 1:
            raise ValueError(f"orientations must be positive, got {orientations!r}")
        angles = [math.pi * k / orientations for k in range(orientations)]
    else:
        angles = [float(a) for a in orientations]
    if any(lam <= 0 for lam in wavelengths):
        raise ValueError(f"wavelengths must be positive, got {wavelengths!r}")
    params = []
    for lam, tau, phi in itertools.product(wavelengths, angles, phases):
        beta_x = 1.0 / (2.0 * (sigma_per_wavelength * lam) ** 2)
        params.append({"alpha": float(alpha), "beta_x": beta_x, "beta_y": aspect**2 * beta_x,
                       "f": 2.0 * math.pi / lam, "phi": float(phi), "tau": float(tau),
                       "x0": 0.0, "y0": 0.0})
    rows, cols = _grid_shape(size)
    filters = np.empty((len(params), rows, cols), dtype=dtype)
    for out, p in zip(filters, params):
        out[...] = gabor_kernel((rows, cols), dtype=dtype, **p)
    return filters, params
