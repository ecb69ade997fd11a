"""Batches that depend only on (seed, step), so a resumed run sees the same data.

Every epoch is a fresh permutation drawn from ``(seed, epoch)``; step ``s``
takes the ``s``-th slice of ``batch_size`` (the last, short slice of an epoch
is dropped, as a shuffling queue of the tutorial never yields one).  Random
augmentation of step ``s`` draws from its own generator ``(seed, s)``.  A
checkpoint therefore needs only the seed and the step to continue exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def step_rng(seed: int, step: int, stream: int = 0) -> np.random.Generator:
    """The random generator of one step (``stream`` separates independent uses).

    Examples
    --------
    >>> float(step_rng(0, 5).random()) == float(step_rng(0, 5).random())
    True
    """
    return np.random.default_rng([int(seed), int(step), int(stream)])


def batch_indices(n: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """Indices of the examples of training step ``step`` out of ``n``.

    Examples
    --------
    >>> a = [batch_indices(10, 5, 0, s) for s in (0, 1)]
    >>> sorted(np.concatenate(a).tolist()) == list(range(10))
    True
    """
    if batch_size > n:
        raise ValueError(f"batch_size {batch_size} is larger than the {n} training examples")
    per_epoch = n // batch_size
    epoch, position = divmod(int(step), per_epoch)
    order = np.random.default_rng([int(seed), epoch, 7]).permutation(n)
    return order[position * batch_size:(position + 1) * batch_size]


@dataclass
class Split:
    """Examples (any array with the batch first) and integer labels."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    """A training and a test split, and how to turn raw examples into network input.

    ``train_transform(raw, rng)`` augments a training batch; ``eval_transform(raw)``
    prepares an evaluation batch.  Both return float32 ``(N, C, H, W)``.
    """

    name: str
    train: Split
    test: Split
    input_shape: tuple
    num_classes: int
    train_transform: object
    eval_transform: object

    def train_batch(self, batch_size: int, seed: int, step: int):
        """Input and labels of training step ``step``."""
        idx = batch_indices(len(self.train), batch_size, seed, step)
        images = self.train_transform(self.train.images[idx], step_rng(seed, step))
        return images, self.train.labels[idx]

    def eval_batches(self, batch_size: int = 500, split: str = "test"):
        """``(input, labels)`` batches covering a split, in order."""
        data = self.test if split == "test" else self.train
        for start in range(0, len(data), batch_size):
            stop = start + batch_size
            yield self.eval_transform(data.images[start:stop]), data.labels[start:stop]
