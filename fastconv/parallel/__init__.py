"""Data-parallel gradient towers: threads on one machine, Dask workers beyond it.

- :class:`~fastconv.parallel.towers.Towers`: ``T`` towers in threads, each with
  its own thread budget, averaged synchronously; per-tower compute and barrier
  times, and a deliberate slowdown to show what the synchronous average costs.
- :class:`~fastconv.parallel.dask_towers.DaskTowers` (needs the ``distributed``
  extra): the same on the workers of a Dask cluster.

Examples
--------
>>> from fastconv.parallel import Towers, model_gradients
>>> from fastconv.models import cifar10
>>> towers = Towers(model_gradients(cifar10.CIFAR10), towers=2)
>>> towers.close()
"""
from __future__ import annotations

from .budget import compute_budget
from .towers import (TowerStats, TowerTotals, Towers, average_gradients, model_gradients,
                     shard_gradients, split_batch)

__all__ = ["Towers", "TowerStats", "TowerTotals", "average_gradients", "model_gradients",
           "shard_gradients", "split_batch", "compute_budget"]
