"""One context for a computation's whole thread budget: fastconv's kernels and BLAS.

:func:`fastconv._config.thread_budget` is thread-local and steers the
convolution backends (im2col sets BLAS threads for its own products, Numba
kernels set theirs), but the network's dense layers call numpy's ``@``
directly.  BLAS thread counts are process-wide, so they go through the same
reference-counted setter the im2col backend uses: concurrent towers asking
for the same count never undo each other's setting.

Changing OpenBLAS's thread count is not free: raising it again wakes its
worker threads, which then spin for a while and take a core from whoever
else computes.  Towers that set and restore the count around every step
ran *slower* with two towers than with one (0.25x on the digits network);
:class:`HeldBLASThreads` keeps one setting for as long as the towers live.
"""
from __future__ import annotations

import contextlib

from .._config import blas_threads, get_num_threads, thread_budget


@contextlib.contextmanager
def compute_budget(threads: int | None = None):
    """Run the body with ``threads`` threads for fastconv and BLAS (default: the current budget).

    Examples
    --------
    >>> with compute_budget(1) as n:
    ...     n
    1
    """
    n = get_num_threads() if threads is None else int(threads)
    with thread_budget(n), blas_threads(n):
        yield n


class HeldBLASThreads:
    """Keep BLAS at ``n`` threads from construction until :meth:`release`.

    Nested :func:`compute_budget` calls for the same ``n`` then find the
    setting in place and change nothing.

    Examples
    --------
    >>> hold = HeldBLASThreads(1)
    >>> hold.release()
    """

    def __init__(self, n: int):
        self._context = blas_threads(int(n))
        self._context.__enter__()

    def release(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)
