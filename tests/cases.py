"""The shared table of canonical-correlation cases.

Every backend is checked against ``reference`` on these (tests/test_backends.py),
and bench/ reuses the generator.  Small shapes: the whole table runs in seconds.
"""
from __future__ import annotations

import numpy as np

from fastconv.problem import make_problem

DTYPES = ("float32", "float64", "complex64", "complex128")

#: relative tolerance per dtype, against the float64/complex128 reference
TOLERANCE = {"float32": 2e-4, "complex64": 2e-4, "float64": 1e-10, "complex128": 1e-10}

# (id, x_shape, w_shape, stride, padding, dilation, groups)
SHAPES = [
    ("1d-basic", (1, 1, 50), (1, 1, 5), 1, 0, 1, 1),
    ("1d-full-even", (1, 1, 33), (1, 1, 8), 1, ((7, 7),), 1, 1),
    ("1d-same-even", (1, 1, 33), (1, 1, 8), 1, ((4, 3),), 1, 1),
    ("1d-stride-dil", (2, 3, 40), (4, 3, 3), 3, 2, 2, 1),
    ("1d-long-kernel", (1, 1, 300), (1, 1, 120), 1, ((119, 119),), 1, 1),
    ("1d-kernel-longer-than-input", (1, 1, 7), (1, 1, 12), 1, ((11, 11),), 1, 1),
    ("1d-k1", (3, 2, 17), (5, 2, 1), 1, 0, 1, 1),
    ("2d-basic", (1, 1, 20, 23), (1, 1, 3, 3), 1, 1, 1, 1),
    ("2d-even-same", (1, 1, 19, 16), (1, 1, 4, 6), 1, ((2, 1), (3, 2)), 1, 1),
    ("2d-full", (1, 1, 12, 9), (1, 1, 5, 7), 1, ((4, 4), (6, 6)), 1, 1),
    ("2d-multichannel", (2, 3, 14, 15), (4, 3, 3, 3), 1, 1, 1, 1),
    ("2d-stride2", (2, 3, 15, 16), (4, 3, 3, 3), 2, 1, 1, 1),
    ("2d-stride-asym", (1, 2, 17, 13), (3, 2, 3, 2), (3, 2), ((0, 2), (1, 0)), 1, 1),
    ("2d-dilation", (1, 2, 20, 20), (2, 2, 3, 3), 1, 2, (2, 3), 1),
    ("2d-groups", (2, 4, 10, 10), (6, 2, 3, 3), 1, 1, 1, 2),
    ("2d-depthwise", (1, 4, 9, 11), (4, 1, 5, 5), 1, 2, 1, 4),
    ("2d-large-kernel", (1, 1, 40, 40), (1, 1, 17, 17), 1, 8, 1, 1),
    ("2d-kernel-larger", (1, 1, 6, 5), (1, 1, 9, 8), 1, ((8, 8), (7, 7)), 1, 1),
    ("2d-1x1", (2, 5, 7, 6), (3, 5, 1, 1), 1, 0, 1, 1),
    ("2d-rowkernel", (1, 1, 16, 30), (1, 1, 1, 9), 1, ((0, 0), (4, 4)), 1, 1),
    ("2d-colkernel", (1, 1, 30, 16), (1, 1, 9, 1), 1, ((4, 4), (0, 0)), 1, 1),
    ("3d-basic", (1, 1, 8, 9, 10), (1, 1, 3, 3, 3), 1, 1, 1, 1),
    ("3d-even-full", (1, 1, 6, 7, 5), (1, 1, 2, 4, 3), 1, ((1, 1), (3, 3), (2, 2)), 1, 1),
    ("3d-multi-stride", (2, 2, 9, 8, 7), (3, 2, 3, 2, 3), (2, 1, 2), 1, 1, 1),
    ("3d-dil-groups", (1, 4, 9, 9, 9), (4, 2, 2, 3, 2), 1, 1, (2, 1, 3), 2),
    ("3d-large-kernel", (1, 1, 12, 12, 12), (1, 1, 7, 7, 7), 1, 3, 1, 1),
]


def make_case(case_id, dtype, seed=0):
    """(problem, x, w) for a table row and dtype, with reproducible random data."""
    row = next(r for r in SHAPES if r[0] == case_id)
    _, x_shape, w_shape, stride, padding, dilation, groups = row
    problem = make_problem(x_shape, w_shape, dtype, stride, padding, dilation, groups)
    rng = np.random.default_rng(seed)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    return problem, x, w


def random_array(rng, shape, dtype):
    """Standard-normal data of ``dtype`` (complex gets a random imaginary part)."""
    dtype = np.dtype(dtype)
    data = rng.standard_normal(shape)
    if dtype.kind == "c":
        data = data + 1j * rng.standard_normal(shape)
    return data.astype(dtype)


def rank1_kernel(rng, kernel, dtype):
    """A random separable (rank-1) kernel of the given spatial shape."""
    factors = [rng.standard_normal(k) for k in kernel]
    w = factors[0]
    for f in factors[1:]:
        w = np.multiply.outer(w, f)
    return w.astype(dtype)
