"""The compiled (Cython + BLAS) kernels of the im2col and winograd backends.

Both extensions are optional: without them their backend is unavailable and
says why.  Both call BLAS through the routines scipy exports, bound once per
extension on first use (importing ``scipy.linalg`` is slow, so not at import).
"""
from __future__ import annotations

import importlib
from functools import cache


def load(name: str):
    """``(module, "")`` for the extension ``fastconv.<name>``, or ``(None, why it is missing)``.

    Examples
    --------
    >>> load("_no_such_extension")[0] is None
    True
    """
    try:
        return importlib.import_module(f"fastconv.{name}"), ""
    except ImportError as exc:  # the extension was not compiled
        return None, (f"the Cython extension fastconv.{name} is not built ({exc}); install "
                      "with `pip install .` or run `python setup.py build_ext --inplace`")


@cache
def bind_blas(module) -> None:
    """Bind scipy's BLAS into the kernels of the extension ``module``, the first time only."""
    module.load_blas()
