"""Thread and memory settings, kept in one place.

``FASTCONV_NUM_THREADS`` sets how many threads every engine may use (BLAS via
threadpoolctl, Numba, FFTW); ``FASTCONV_WORKSPACE_MB`` caps the scratch memory
one call may allocate (im2col's column buffer, FFT planes).  The thread budget
is thread-local so that data-parallel towers can each take a share without
oversubscribing the machine.
"""
from __future__ import annotations

import contextlib
import os
import threading

_local = threading.local()


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        value = int(raw)
    except ValueError:
        return default
    return value if value > 0 else default


_default_threads = _env_int("FASTCONV_NUM_THREADS", os.cpu_count() or 1)
_workspace_bytes = _env_int("FASTCONV_WORKSPACE_MB", 256) * 2**20


def get_num_threads() -> int:
    """Threads this calling thread's convolutions may use.

    Examples
    --------
    >>> get_num_threads() >= 1
    True
    """
    return getattr(_local, "threads", _default_threads)


def set_num_threads(n: int) -> None:
    """Set the default thread budget for every thread that has not set its own.

    Examples
    --------
    >>> set_num_threads(get_num_threads())
    """
    global _default_threads
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    _default_threads = n


@contextlib.contextmanager
def thread_budget(n: int):
    """Limit the calling thread's convolutions to ``n`` threads inside a ``with``.

    Examples
    --------
    >>> with thread_budget(1):
    ...     get_num_threads()
    1
    """
    n = int(n)
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    previous = getattr(_local, "threads", None)
    _local.threads = n
    try:
        yield n
    finally:
        if previous is None:
            del _local.threads
        else:
            _local.threads = previous


def get_workspace_bytes() -> int:
    """Cap on the scratch memory one call may allocate, in bytes.

    Examples
    --------
    >>> get_workspace_bytes() > 0
    True
    """
    return _workspace_bytes


def set_workspace_bytes(nbytes: int) -> None:
    """Set the scratch-memory cap (``FASTCONV_WORKSPACE_MB`` sets the default).

    Examples
    --------
    >>> set_workspace_bytes(get_workspace_bytes())
    """
    global _workspace_bytes
    nbytes = int(nbytes)
    if nbytes < 1 << 20:
        raise ValueError(f"nbytes must be at least 1 MiB, got {nbytes}")
    _workspace_bytes = nbytes


# BLAS threads are process-wide, not per thread: one reference-counted setter
# serves every caller (the im2col backend, data-parallel towers).
_blas_lock = threading.Lock()
_blas_state = {"controllers": None, "active": 0, "saved": None}


def _blas_controllers():
    """threadpoolctl's BLAS controllers (numpy's and scipy's), found once."""
    if _blas_state["controllers"] is None:
        try:
            import scipy.linalg.cython_blas  # noqa: F401  scipy's BLAS must be loaded to be found
            from threadpoolctl import ThreadpoolController
            _blas_state["controllers"] = ThreadpoolController().select(user_api="blas") \
                .lib_controllers
        except Exception:  # no threadpoolctl or an unknown BLAS: leave BLAS alone
            _blas_state["controllers"] = []
    return _blas_state["controllers"]


class blas_threads:
    """Run BLAS with ``n`` threads inside a ``with``, touching it only if needed.

    threadpoolctl's ``threadpool_limits`` costs about half a millisecond, so
    this calls the library controllers directly (a microsecond or two), and
    only when the current setting differs.  The setting is process-wide:
    while any call has changed it, the value found before the first of them
    is kept and restored when the last one leaves, so concurrent callers
    never leak their budget.  The ``with`` value is ``n``.

    Examples
    --------
    >>> with blas_threads(1) as n:
    ...     n
    1
    """

    __slots__ = ("n", "tracked")

    def __init__(self, n: int):
        self.n = int(n)
        self.tracked = False

    def __enter__(self):
        controllers = _blas_controllers()
        if not controllers:
            return self.n
        with _blas_lock:
            current = [ctl.num_threads for ctl in controllers]
            if _blas_state["active"] == 0 and all(t == self.n for t in current):
                return self.n
            if _blas_state["active"] == 0:
                _blas_state["saved"] = current
            _blas_state["active"] += 1
            self.tracked = True
            for ctl, t in zip(controllers, current):
                if t != self.n:
                    ctl.set_num_threads(self.n)
        return self.n

    def __exit__(self, *exc):
        if not self.tracked:
            return
        self.tracked = False
        with _blas_lock:
            _blas_state["active"] -= 1
            if _blas_state["active"] == 0:
                for ctl, t in zip(_blas_state["controllers"], _blas_state["saved"]):
                    ctl.set_num_threads(t)
