"""Registry of the convolution backends that can run here.

Each backend is a module with ``NAME``, ``available()``, ``supports(problem)``,
``cost(problem)`` and ``correlate(x, w, problem, out=None)``.  Adding one
means one new module and one entry in ``_MODULES``; the dispatcher reads
only :data:`REGISTRY`.
"""
from __future__ import annotations

import importlib

_MODULES = ("reference", "direct", "im2col", "fft", "separable", "winograd", "cuda")

#: name -> module, for every backend whose dependencies import and work here
REGISTRY: dict = {}
#: name -> reason, for every backend that is not available here
UNAVAILABLE: dict = {}


def _load() -> None:
    for name in _MODULES:
        try:
            module = importlib.import_module(f"{__name__}.{name}")
        except ImportError as exc:  # an optional dependency or extension is missing
            UNAVAILABLE[name] = f"import failed: {exc}"
            continue
        if module.available():
            REGISTRY[module.NAME] = module
        else:
            UNAVAILABLE[name] = getattr(module, "UNAVAILABLE_REASON", "not available")


_load()


def get(name: str):
    """The backend module called ``name``; ValueError listing the valid names.

    Examples
    --------
    >>> get("reference").NAME
    'reference'
    """
    try:
        return REGISTRY[name]
    except KeyError:
        why = f" ({UNAVAILABLE[name]})" if name in UNAVAILABLE else ""
        raise ValueError(f"method {name!r} is not an available backend{why}; "
                         f"choose 'auto' or one of {sorted(REGISTRY)}") from None
