"""Towers beyond one machine: each Dask worker computes its shard's gradient.

The engine is Dask distributed (``pip install "fastconv[distributed]"``);
nothing here schedules, serialises or moves data by itself.  Per step the
driver scatters the parameters to the workers once (a broadcast), submits one
task per tower pinned to its worker, gathers ``(loss, grads, seconds)`` and
averages exactly as the threaded towers do
(:func:`fastconv.parallel.towers.average_gradients`), so both give the same
gradient.  Each task runs under a thread budget (default 1: a worker process
with one thread per core is the usual Dask layout).

Examples
--------
>>> from dask.distributed import Client, LocalCluster        # doctest: +SKIP
>>> from fastconv.models import cifar10
>>> with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, \\
...         Client(cluster) as client:                         # doctest: +SKIP
...     towers = DaskTowers(client, cifar10.CIFAR10)
...     loss, grads = towers(params, images, labels)
"""
from __future__ import annotations

import time

from .towers import TowerStats, TowerTotals, average_gradients, model_gradients, \
    shard_gradients, split_batch

try:
    from dask.distributed import Client
except ImportError:  # the optional extra is not installed
    Client = None


def available() -> bool:
    """Whether dask.distributed can be imported."""
    return Client is not None


def worker_gradients(arch, params, images, labels, threads: int = 1):
    """The task a worker runs: its shard's loss, gradients and compute seconds."""
    loss, grads, seconds, _ = shard_gradients(model_gradients(arch), params, images, labels,
                                              threads)
    return loss, grads, seconds


class DaskTowers:
    """Synchronous data-parallel gradients over the workers of a Dask cluster.

    Parameters
    ----------
    client : dask.distributed.Client or str
        A client, or a scheduler address (``tcp://host:8786``) to connect to.
    arch : fastconv.models.cifar10.Architecture
        The network whose gradients the workers compute.
    towers : int, optional
        Number of towers (default: one per worker); towers are assigned to
        workers round-robin.
    threads_per_tower : int
        Thread budget of each task on its worker.
    """

    def __init__(self, client, arch, towers: int | None = None, threads_per_tower: int = 1):
        if Client is None:
            raise ImportError("Dask towers need dask.distributed: pip install "
                              "\"fastconv[distributed]\" (or \"dask[distributed]\")")
        self._own_client = not isinstance(client, Client)
        self.client = Client(client) if self._own_client else client
        self.arch = arch
        self.workers = sorted(self.client.scheduler_info()["workers"])
        if not self.workers:
            raise ValueError("the Dask cluster has no workers")
        self.towers = int(towers or len(self.workers))
        if self.towers < 1:
            raise ValueError(f"towers must be at least 1, got {towers}")
        self.threads = int(threads_per_tower)
        self.last_stats: TowerStats | None = None
        self.totals = TowerTotals()

    def __call__(self, params, images, labels):
        start = time.perf_counter()
        shards = split_batch(images, labels, self.towers)
        placed = [self.workers[t % len(self.workers)] for t in range(self.towers)]
        # one object for the whole dict: scattering a dict would name a future per entry
        # after its keys, the same names every step
        [shared] = self.client.scatter([params], broadcast=True, hash=False,
                                       workers=sorted(set(placed)))
        futures = [self.client.submit(worker_gradients, self.arch, shared, x, y, self.threads,
                                      workers=[w], allow_other_workers=False, pure=False)
                   for (x, y), w in zip(shards, placed)]
        results = self.client.gather(futures)
        gathered = time.perf_counter()
        sizes = [len(y) for _, y in shards]
        loss, grads = average_gradients([(r[0], r[1]) for r in results], sizes)
        end = time.perf_counter()
        slowest = max(r[2] for r in results)
        # a worker's clock is not ours: the barrier wait is measured against the slowest
        # worker's compute time; what remains of the wall time is transfer and scheduling
        self.last_stats = TowerStats(sizes, [r[2] for r in results],
                                     [slowest - r[2] for r in results], end - gathered,
                                     end - start)
        self.totals.add(self.last_stats)
        return loss, grads

    def close(self) -> None:
        if self._own_client:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
