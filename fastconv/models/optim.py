"""The tutorial's optimiser: staircase-decayed learning rate, plain SGD, moving average.

``cifar10.train()`` of the tutorial uses ``tf.train.exponential_decay(0.1,
global_step, decay_steps, 0.1, staircase=True)`` with ``decay_steps`` the
batches in 350 epochs of 50,000 images, ``GradientDescentOptimizer``, and
``ExponentialMovingAverage(0.9999, global_step)`` of the trainable variables,
whose average (not the raw weights) is evaluated.  TF's moving average with
``num_updates`` uses ``min(decay, (1 + step) / (10 + step))``, so the average
follows the weights closely early on.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """Exponentially decaying, staircase learning rate.

    ``rate(step) = initial * factor ** floor(step / decay_steps)`` with
    ``decay_steps = int(examples_per_epoch / batch_size * epochs_per_decay)``.

    Examples
    --------
    >>> s = Schedule(batch_size=128)
    >>> s.decay_steps, s.rate(0), s.rate(136718)
    (136718, 0.1, 0.010000000000000002)
    """

    batch_size: int = 128
    initial: float = 0.1
    factor: float = 0.1
    epochs_per_decay: float = 350.0
    examples_per_epoch: int = 50000

    @property
    def decay_steps(self) -> int:
        return max(int(self.examples_per_epoch / self.batch_size * self.epochs_per_decay), 1)

    def rate(self, step: int) -> float:
        return self.initial * self.factor ** (int(step) // self.decay_steps)

    def to_dict(self) -> dict:
        return asdict(self)


def sgd_update(params: dict, grads: dict, learning_rate: float) -> None:
    """``params -= learning_rate * grads`` in place, in each parameter's dtype."""
    for name, value in params.items():
        value -= value.dtype.type(learning_rate) * grads[name]


class MovingAverage:
    """TF's ``ExponentialMovingAverage(decay, num_updates=step)`` of a parameter dict.

    Examples
    --------
    >>> ema = MovingAverage({"w": np.zeros(2)}, decay=0.9999)
    >>> ema.update({"w": np.ones(2)}, step=0)
    >>> ema.averages["w"]        # decay min(0.9999, 1/10) = 0.1
    array([0.9, 0.9])
    """

    def __init__(self, params: dict, decay: float = 0.9999):
        self.decay = float(decay)
        self.averages = {name: np.array(value, copy=True) for name, value in params.items()}

    def effective_decay(self, step: int) -> float:
        return min(self.decay, (1.0 + step) / (10.0 + step))

    def update(self, params: dict, step: int) -> None:
        """``average -= (1 - decay) * (average - value)``, TF's in-place form."""
        keep = self.effective_decay(step)
        for name, value in params.items():
            average = self.averages[name]
            average -= average.dtype.type(1.0 - keep) * (average - value)
