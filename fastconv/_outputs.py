"""Large result arrays from a pool of reused memory blocks.

A fresh multi-megabyte array is page-faulted in on first touch; on virtual
machines that was measured to cost up to 7x a 2048x2048 convolution for the
first calls of a process and half of it in steady state.  Results of the same
size come back call after call, so the dispatcher takes them from
:mod:`fastconv._bufferpool`, a numpy memory handler that keeps the blocks of
freed results (at most ``FASTCONV_OUTPUT_POOL_MB`` MiB, default 256; 0 turns
the pool off) and hands them out again.  The arrays are ordinary numpy
arrays: they return their block to the pool whenever their owner drops them.
Without the compiled extension results come from ``np.empty`` as usual.
"""
from __future__ import annotations

import contextlib
import math
import os

import numpy as np

try:
    from . import _bufferpool
except ImportError:  # pragma: no cover - a source tree without the built extension
    _bufferpool = None

#: results smaller than this come from numpy's own allocator
MIN_POOLED_BYTES = 1 << 20


def _pool_bytes_from_env() -> int:
    raw = os.environ.get("FASTCONV_OUTPUT_POOL_MB", "")
    try:
        return max(0, int(raw)) << 20
    except ValueError:
        return 256 << 20


_max_bytes = _pool_bytes_from_env()
if _bufferpool is not None:
    _bufferpool.configure(threshold=MIN_POOLED_BYTES, max_bytes=_max_bytes)


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised C-ordered array, from the pool when it is large.

    Examples
    --------
    >>> a = empty((2048, 2048), np.float64)
    >>> a.shape, a.dtype, a.flags.c_contiguous
    ((2048, 2048), dtype('float64'), True)
    """
    dtype = np.dtype(dtype)
    if _bufferpool is None or _max_bytes == 0:
        return np.empty(shape, dtype)
    if math.prod(shape) * dtype.itemsize < MIN_POOLED_BYTES:
        return np.empty(shape, dtype)
    with pooled():
        return np.empty(shape, dtype)


@contextlib.contextmanager
def pooled():
    """Arrays numpy allocates in this block (in this thread) come from the pool.

    Examples
    --------
    >>> with pooled():
    ...     a = np.ones((512, 1024))
    >>> float(a.sum())
    524288.0
    """
    if _bufferpool is None:
        yield
        return
    previous = _bufferpool.set_handler(_bufferpool.HANDLER)
    try:
        yield
    finally:
        _bufferpool.set_handler(previous)


def set_pool_bytes(nbytes: int) -> None:
    """Keep at most ``nbytes`` of freed results for reuse (0: keep none); frees the excess.

    Examples
    --------
    >>> set_pool_bytes(pool_stats()["max_bytes"])
    """
    global _max_bytes
    nbytes = int(nbytes)
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0, got {nbytes}")
    _max_bytes = nbytes
    if _bufferpool is not None:
        _bufferpool.configure(max_bytes=nbytes)


def release() -> None:
    """Return every block the pool holds to the system.

    Examples
    --------
    >>> release()
    >>> pool_stats()["held_bytes"]
    0
    """
    if _bufferpool is not None:
        _bufferpool.trim(0)


def pool_stats() -> dict:
    """Blocks and bytes held, blocks reused and freshly allocated so far, and the settings.

    Examples
    --------
    >>> sorted(pool_stats())
    ['blocks', 'fresh', 'held_bytes', 'max_bytes', 'reused', 'threshold']
    """
    if _bufferpool is None:
        return {"blocks": 0, "held_bytes": 0, "reused": 0, "fresh": 0,
                "threshold": MIN_POOLED_BYTES, "max_bytes": 0}
    return _bufferpool.stats()
