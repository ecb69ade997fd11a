"""Training the network: state, one step, evaluation; with or without towers.

A step follows the tutorial's ``train()``: gradients of the total loss on one
batch (from one process, from threaded towers, or from Dask workers: any
callable ``gradients(params, images, labels) -> (loss, grads)``), one SGD
update with the staircase learning rate of that step, then the moving
average of the weights.  The batch of step ``s`` depends only on the seed and
``s`` (:mod:`.data`), so a state restored from a checkpoint continues exactly.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ..parallel.budget import compute_budget
from ..parallel.towers import Towers
from . import cifar10
from .optim import MovingAverage, Schedule, sgd_update


@dataclass
class TrainState:
    """Everything a run needs to continue: weights, their average, the step, the setup."""

    params: dict
    ema: MovingAverage
    step: int
    arch: cifar10.Architecture
    schedule: Schedule
    seed: int
    dataset: str


def new_state(dataset: str, arch: cifar10.Architecture, schedule: Schedule, seed: int = 0,
              dtype=np.float32, ema_decay: float = 0.9999) -> TrainState:
    """A fresh run: the tutorial's initialisation drawn from ``seed``."""
    params = cifar10.init_params(seed, arch, dtype)
    return TrainState(params, MovingAverage(params, ema_decay), 0, arch, schedule, seed, dataset)


@dataclass
class StepResult:
    """What one training step did."""

    step: int            # the step number after the update
    loss: float          # total loss on the batch, before the update
    learning_rate: float
    examples: int
    seconds: float       # wall time of the whole step (data, gradients, update, average)


def local_gradients(arch: cifar10.Architecture, threads: int | None = None):
    """``gradients(params, images, labels)`` computed here, within a thread budget."""
    def gradients(params, images, labels):
        with compute_budget(threads):
            return cifar10.loss_and_grads(params, images, labels, arch)
    return gradients


class Trainer:
    """Runs steps on a :class:`TrainState` with batches from a :class:`~.data.Dataset`.

    Examples
    --------
    >>> from fastconv.models import digits          # doctest: +SKIP
    >>> data = digits.load()                        # doctest: +SKIP
    >>> state = new_state("digits", digits.ARCHITECTURE, Schedule(64))  # doctest: +SKIP
    >>> Trainer(state, data).step().step            # doctest: +SKIP
    1
    """

    def __init__(self, state: TrainState, dataset, gradients=None):
        self.state = state
        self.dataset = dataset
        self.gradients = gradients or local_gradients(state.arch)

    def step(self) -> StepResult:
        state = self.state
        start = time.perf_counter()
        images, labels = self.dataset.train_batch(state.schedule.batch_size, state.seed,
                                                  state.step)
        images = images.astype(state.params["conv1/weights"].dtype, copy=False)
        loss, grads = self.gradients(state.params, images, labels)
        rate = state.schedule.rate(state.step)
        sgd_update(state.params, grads, rate)
        state.step += 1
        state.ema.update(state.params, state.step)
        return StepResult(state.step, loss, rate, len(labels), time.perf_counter() - start)

    def evaluate(self, use_average: bool = True, split: str = "test",
                 batch_size: int = 500) -> float:
        """Accuracy on a split, with the moving average of the weights (the tutorial's eval).

        Next to threaded towers the evaluation keeps to one tower's thread budget:
        a larger one would raise the process-wide BLAS thread count under the
        towers' feet (see :mod:`fastconv.parallel.budget`).
        """
        params = self.state.ema.averages if use_average else self.state.params
        threads = self.gradients.threads if isinstance(self.gradients, Towers) else None
        with compute_budget(threads):
            return evaluate(params, self.dataset, self.state.arch, split, batch_size)


def evaluate(params: dict, dataset, arch: cifar10.Architecture, split: str = "test",
             batch_size: int = 500) -> float:
    """Fraction of a split's examples classified correctly."""
    correct = total = 0
    dtype = params["conv1/weights"].dtype
    for images, labels in dataset.eval_batches(batch_size, split):
        logits, _ = cifar10.forward(params, images.astype(dtype, copy=False), arch)
        correct += int(np.sum(logits.argmax(axis=1) == labels))
        total += len(labels)
    return correct / total if total else float("nan")
