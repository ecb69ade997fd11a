"""Exceptions fastconv raises beyond the built-in ones, and the memory guard."""
from __future__ import annotations

import math
import os
from functools import lru_cache


class TooLargeError(MemoryError, ValueError):
    """An array the call would allocate cannot fit in this machine's memory.

    Raised before anything is allocated.  It is both a MemoryError (what numpy
    raises) and a ValueError (bad arguments), so either ``except`` catches it.
    """


@lru_cache(maxsize=1)
def physical_memory_bytes() -> int:
    """Total physical memory, or 2**62 where the system does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 2**62


def check_fits(shape, itemsize: int, what: str) -> None:
    """Refuse, before allocating, an array larger than physical memory.

    Examples
    --------
    >>> check_fits((10, 10), 8, "output")
    >>> check_fits((10**9, 10**9), 8, "output")
    Traceback (most recent call last):
    ...
    fastconv.errors.TooLargeError: output of shape (1000000000, 1000000000) would need 8e+18 bytes (8000000000.0 GB); this machine has ...
    """
    nbytes = math.prod(shape) * itemsize
    limit = physical_memory_bytes()
    if nbytes > limit:
        raise TooLargeError(f"{what} of shape {tuple(shape)} would need {nbytes:.3g} bytes "
                            f"({nbytes / 1e9:.1f} GB); this machine has {limit / 1e9:.1f} GB")
