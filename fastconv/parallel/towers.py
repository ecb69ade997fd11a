"""Data-parallel towers in threads: the chapter's "Parallelism" slide on one machine.

Each batch is split into ``T`` shards; tower ``t`` computes the gradient of
its shard in its own thread with its own thread budget (fastconv's kernels and
BLAS release the GIL, so the towers really run at once, and ``T`` towers of
``n`` threads never ask for more than ``T*n`` cores); the driver waits for
all of them (the synchronous barrier), averages the gradients weighted by
shard size, and the caller applies one update.  The weighted average of the
shards' mean-loss gradients *is* the full batch's mean-loss gradient, up to
rounding.

The slide assumes every device takes the same time.  ``speed`` makes a tower
slower on purpose: a tower with factor ``f`` sleeps ``(f - 1)`` times its
compute time after computing (a slower device, not a busier CPU), and
:class:`TowerStats` shows what the synchronous average then costs: every
other tower waits at the barrier for the slowest one.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from .._config import get_num_threads
from .budget import HeldBLASThreads, compute_budget


@dataclass
class TowerStats:
    """Timings of one synchronous step over ``T`` towers (seconds)."""

    shard_sizes: list
    compute: list            # per tower: gradient time, deliberate slowdown included
    wait: list               # per tower: idle at the barrier until the slowest finished
    average: float           # the driver's averaging of the gradients
    wall: float              # split -> averaged gradient

    @property
    def examples_per_second(self) -> float:
        return sum(self.shard_sizes) / self.wall if self.wall > 0 else float("nan")

    @property
    def barrier_fraction(self) -> float:
        """Share of the towers' time spent waiting at the barrier."""
        busy = sum(self.compute) + sum(self.wait)
        return sum(self.wait) / busy if busy > 0 else 0.0


@dataclass
class TowerTotals:
    """Sums of :class:`TowerStats` over the steps run so far."""

    steps: int = 0
    examples: int = 0
    compute: list = field(default_factory=list)
    wait: list = field(default_factory=list)
    average: float = 0.0
    wall: float = 0.0

    def add(self, stats: TowerStats) -> None:
        if not self.compute:
            self.compute = [0.0] * len(stats.compute)
            self.wait = [0.0] * len(stats.wait)
        self.steps += 1
        self.examples += sum(stats.shard_sizes)
        self.compute = [a + b for a, b in zip(self.compute, stats.compute)]
        self.wait = [a + b for a, b in zip(self.wait, stats.wait)]
        self.average += stats.average
        self.wall += stats.wall


def split_batch(images: np.ndarray, labels: np.ndarray, towers: int):
    """``towers`` shards of near-equal size (the first ones one larger when it does not divide).

    Examples
    --------
    >>> [len(y) for _, y in split_batch(np.zeros((7, 1)), np.arange(7), 3)]
    [3, 2, 2]
    """
    if towers > len(labels):
        raise ValueError(f"cannot split a batch of {len(labels)} into {towers} towers")
    base, extra = divmod(len(labels), towers)
    bounds = np.cumsum([0] + [base + (t < extra) for t in range(towers)])
    return [(images[a:b], labels[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def average_gradients(results, sizes):
    """Losses and gradients of the shards averaged with weights ``size / total``.

    Examples
    --------
    >>> loss, grads = average_gradients([(1.0, {"w": np.ones(2)}), (3.0, {"w": np.zeros(2)})],
    ...                                 [3, 1])
    >>> loss, grads["w"]
    (1.5, array([0.75, 0.75]))
    """
    total = float(sum(sizes))
    weights = [n / total for n in sizes]
    loss = float(sum(w * r[0] for w, r in zip(weights, results)))
    grads = {}
    for name, first in results[0][1].items():
        acc = np.multiply(first, first.dtype.type(weights[0]))
        for w, (_, g) in zip(weights[1:], results[1:]):
            acc += g[name].dtype.type(w) * g[name]
        grads[name] = acc
    return loss, grads


def shard_gradients(gradient_fn, params, images, labels, threads: int, slowdown: float = 1.0):
    """One tower's work: its shard's loss and gradients within ``threads``, and the time taken.

    Returns ``(loss, grads, compute_seconds, finished_at)``; ``finished_at`` is a
    ``time.perf_counter`` reading (comparable within one process only).
    """
    start = time.perf_counter()
    with compute_budget(threads):
        loss, grads = gradient_fn(params, images, labels)
    if slowdown > 1.0:
        time.sleep((slowdown - 1.0) * (time.perf_counter() - start))
    end = time.perf_counter()
    return loss, grads, end - start, end


def model_gradients(arch):
    """The network's ``gradients(params, images, labels)`` for one shard."""
    from ..models import cifar10

    def gradients(params, images, labels):
        return cifar10.loss_and_grads(params, images, labels, arch)
    return gradients


class Towers:
    """Synchronous data-parallel gradients over ``towers`` threads.

    Parameters
    ----------
    gradient_fn : callable
        ``gradient_fn(params, images, labels) -> (loss, grads)`` for one shard
        (see :func:`model_gradients`).
    towers : int
        Number of towers ``T``.
    threads_per_tower : int, optional
        Thread budget of each tower (default: the current budget divided by ``T``).
    speed : sequence of float, optional
        Slowdown factor of each tower, 1 for full speed (see the module docstring).

    While the towers live, BLAS keeps ``threads_per_tower`` threads process-wide
    (resetting it every step costs more than it saves); :meth:`close` them, or
    use them in a ``with``.

    Examples
    --------
    >>> def grad(params, x, y):
    ...     return float(x.sum()), {"w": x.sum(axis=0)}
    >>> with Towers(grad, towers=2) as towers:
    ...     loss, grads = towers({}, np.ones((4, 3)), np.zeros(4))
    >>> loss, grads["w"], towers.last_stats.shard_sizes
    (6.0, array([2., 2., 2.]), [2, 2])
    """

    def __init__(self, gradient_fn, towers: int = 2, threads_per_tower: int | None = None,
                 speed=None):
        if int(towers) < 1:
            raise ValueError(f"towers must be at least 1, got {towers}")
        self.gradient_fn = gradient_fn
        self.towers = int(towers)
        self.threads = int(threads_per_tower or max(1, get_num_threads() // self.towers))
        self.speed = [1.0] * self.towers if speed is None else [float(s) for s in speed]
        if len(self.speed) != self.towers or min(self.speed) < 1.0:
            raise ValueError(f"speed must give {self.towers} factors >= 1, got {speed!r}")
        self.last_stats: TowerStats | None = None
        self.totals = TowerTotals()
        # one long-lived thread per tower, so tower t always runs in the same thread
        self._pools = [ThreadPoolExecutor(1, thread_name_prefix=f"fastconv-tower{t}")
                       for t in range(self.towers)]
        # one BLAS setting for the towers' lifetime (see fastconv.parallel.budget)
        self._blas = HeldBLASThreads(self.threads)

    def __call__(self, params, images, labels):
        start = time.perf_counter()
        shards = split_batch(images, labels, self.towers)
        futures = [pool.submit(shard_gradients, self.gradient_fn, params, x, y, self.threads, s)
                   for pool, (x, y), s in zip(self._pools, shards, self.speed)]
        results = [f.result() for f in futures]
        barrier = max(r[3] for r in results)
        sizes = [len(y) for _, y in shards]
        t0 = time.perf_counter()
        loss, grads = average_gradients([(r[0], r[1]) for r in results], sizes)
        end = time.perf_counter()
        self.last_stats = TowerStats(sizes, [r[2] for r in results],
                                     [barrier - r[3] for r in results], end - t0, end - start)
        self.totals.add(self.last_stats)
        return loss, grads

    def close(self) -> None:
        """Stop the tower threads and give BLAS its thread count back."""
        for pool in self._pools:
            pool.shutdown(wait=True)
        self._blas.release()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
