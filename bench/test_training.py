"""Training the chapter's CIFAR-10 network: one step against PyTorch, and data-parallel towers.

Run: env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest bench/test_training.py \
        --benchmark-enable --benchmark-only -p no:cacheprovider
(``python bench/training_results.py`` measures the same and more, and prints a Markdown section.)

- group "cifar10 train step b128": forward, backward and SGD update of the
  whole network, float32, batch 128; fastconv in one process with the
  engine's threads (``fastconv_step``) and as two towers of one thread
  (``fastconv_step_towers2``), and the same model in torch on CPU
  (``torch_step``) with its default threads.
  Target: fastconv time <= 1.4x torch's, i.e. ratio torch/fastconv >= 0.71.
- group "cifar10 towers b128, 1 thread each": the gradient of a batch of 128
  by T = 1 and T = 2 towers of one thread (``fastconv_towers1`` / ``_towers2``).
  Target: T = 2 at least 1.6x the examples/s of T = 1 (ratio towers2/towers1 <= 0.625).
"""
from __future__ import annotations

import numpy as np
import pytest

from fastconv.models import cifar10
from fastconv.models.optim import sgd_update
from fastconv.parallel import Towers, model_gradients

BATCH = 128


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((BATCH, 3, 24, 24)).astype(np.float32),
            rng.integers(0, 10, BATCH))


def fastconv_step(params):
    """One training step: loss, gradients, SGD update in place."""
    def step(images, labels):
        loss, grads = cifar10.loss_and_grads(params, images, labels)
        sgd_update(params, grads, 0.1)
        return loss
    return step


def test_train_step_fastconv(run, benchmark, batch):
    benchmark.group = f"cifar10 train step b{BATCH}"
    benchmark.extra_info["label"] = "fastconv_step"
    run(fastconv_step(cifar10.init_params(0)), *batch, rounds=5)


def test_train_step_fastconv_towers(run, benchmark, batch):
    benchmark.group = f"cifar10 train step b{BATCH}"
    benchmark.extra_info["label"] = "fastconv_step_towers2"
    params = cifar10.init_params(0)
    with Towers(model_gradients(cifar10.CIFAR10), towers=2, threads_per_tower=1) as group:
        def step(images, labels):
            loss, grads = group(params, images, labels)
            sgd_update(params, grads, 0.1)
            return loss
        run(step, *batch, rounds=5)


def test_train_step_torch(run, benchmark, batch):
    torch_twin = pytest.importorskip("fastconv.models.torch_twin")
    benchmark.group = f"cifar10 train step b{BATCH}"
    benchmark.extra_info["label"] = "torch_step"
    run(torch_twin.TrainStep(cifar10.init_params(0)), *batch, rounds=5)


@pytest.mark.parametrize("towers", [1, 2])
def test_towers_fastconv(run, benchmark, batch, towers):
    benchmark.group = f"cifar10 towers b{BATCH}, 1 thread each"
    benchmark.extra_info["label"] = f"fastconv_towers{towers}"
    params = cifar10.init_params(0)
    with Towers(model_gradients(cifar10.CIFAR10), towers=towers, threads_per_tower=1) as group:
        run(group, params, *batch, rounds=5)
        benchmark.extra_info["examples_per_s"] = BATCH / benchmark.stats.stats.median
