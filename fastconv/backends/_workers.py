"""Worker threads for the backends that share a call's blocks between threads.

A backend hands :func:`run` a ``worker`` that takes blocks from a shared
source (an iterator, or an atomic counter inside a nogil kernel) until none
is left; :func:`run` starts it on this thread and on pooled helpers, each
with one BLAS thread, or runs it once with BLAS getting the whole budget.
"""
from __future__ import annotations

import os
import threading

from .._config import blas_threads

_pool_lock = threading.Lock()
_pool_state = {"executor": None}


def _forget_pool():
    # a forked child inherits the pool object but none of its threads
    _pool_state["executor"] = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def pool():
    """The threads that help callers run blocks; they sleep when idle (no spinning)."""
    with _pool_lock:
        if _pool_state["executor"] is None:
            from concurrent.futures import ThreadPoolExecutor
            _pool_state["executor"] = ThreadPoolExecutor(
                max_workers=max((os.cpu_count() or 1) - 1, 1), thread_name_prefix="fastconv")
        return _pool_state["executor"]


def run(worker, args, workers: int, threads: int) -> list:
    """``worker(*args)`` on ``workers`` threads (this one and pooled helpers) with one BLAS
    thread each, or once on this thread with BLAS getting ``threads``; the workers share
    the blocks through something in ``args``.  Returns the results, this thread's first.

    Examples
    --------
    >>> counts = run(lambda blocks: sum(1 for _ in blocks), (iter(range(5)),), 2, 2)
    >>> len(counts), sum(counts)     # two workers shared the five blocks
    (2, 5)
    """
    if workers == 1:
        with blas_threads(threads):
            return [worker(*args)]
    with blas_threads(1):
        helpers = [pool().submit(worker, *args) for _ in range(workers - 1)]
        results = []
        try:
            results.append(worker(*args))
        finally:
            # helpers that never started have nothing left to do; wait for the others
            for future in helpers:
                if not future.cancel():
                    results.append(future.result())
        return results
