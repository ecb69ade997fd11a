"""Threaded data-parallel towers: the averaged gradient is the full batch's, timings add up."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from fastconv import get_num_threads
from fastconv.models import cifar10, optim, train
from fastconv.parallel import Towers, average_gradients, model_gradients, split_batch

ARCH = cifar10.Architecture(input_shape=(3, 12, 12), conv_channels=(16, 16))


def _batch(n, dtype, arch=ARCH, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n,) + arch.input_shape).astype(dtype),
            rng.integers(0, arch.num_classes, n))


@pytest.mark.parametrize("towers, n", [(2, 16), (3, 16), (4, 13)])
def test_averaged_gradient_is_the_full_batch_gradient(towers, n):
    for dtype, rtol in ((np.float64, 1e-12), (np.float32, 2e-5)):
        params = cifar10.init_params(0, ARCH, dtype)
        x, y = _batch(n, dtype)
        loss, grads = cifar10.loss_and_grads(params, x, y, ARCH)
        with Towers(model_gradients(ARCH), towers=towers, threads_per_tower=1) as group:
            tower_loss, tower_grads = group(params, x, y)
        assert group.last_stats.shard_sizes == [len(s) for _, s in split_batch(x, y, towers)]
        assert tower_loss == pytest.approx(loss, rel=rtol)
        for name, full in grads.items():
            assert tower_grads[name].dtype == dtype
            # float32: rounding of sums over a few hundred terms, relative to the largest entry
            np.testing.assert_allclose(tower_grads[name], full, rtol=0,
                                       atol=rtol * np.abs(full).max(), err_msg=name)


def test_split_and_weighted_average():
    x, y = np.arange(10.0)[:, None], np.arange(10)
    shards = split_batch(x, y, 3)
    assert [len(s) for _, s in shards] == [4, 3, 3]
    assert np.array_equal(np.concatenate([s for _, s in shards]), y)
    results = [(float(s.mean()), {"g": s.astype(float).mean(keepdims=True)}) for _, s in shards]
    loss, grads = average_gradients(results, [4, 3, 3])
    assert loss == pytest.approx(4.5) and grads["g"][0] == pytest.approx(4.5)
    with pytest.raises(ValueError, match="cannot split"):
        split_batch(x[:2], y[:2], 3)


def test_each_tower_runs_in_its_own_thread_with_its_budget():
    seen = []
    lock = threading.Lock()

    def gradients(params, x, y):
        with lock:
            seen.append((threading.current_thread().name, get_num_threads()))
        return 0.0, {"w": np.zeros(1)}

    with Towers(gradients, towers=2, threads_per_tower=1) as group:
        group({}, np.zeros((4, 1)), np.zeros(4))
    assert len({name for name, _ in seen}) == 2
    assert all(name.startswith("fastconv-tower") and budget == 1 for name, budget in seen)


def test_towers_run_concurrently():
    """Two towers whose work releases the GIL overlap: the step takes one tower's time."""
    def gradients(params, x, y):
        time.sleep(0.2)                       # a GIL-free wait, like the engine's kernels
        return 0.0, {"w": np.zeros(1)}

    with Towers(gradients, towers=2, threads_per_tower=1) as group:
        group({}, np.zeros((4, 1)), np.zeros(4))
        stats = group.last_stats
    assert stats.wall < 0.35
    assert all(c >= 0.2 for c in stats.compute)


def test_slow_tower_makes_the_others_wait():
    def gradients(params, x, y):
        time.sleep(0.05)
        return 0.0, {"w": np.zeros(1)}

    with Towers(gradients, towers=2, threads_per_tower=1, speed=[1.0, 3.0]) as group:
        group({}, np.zeros((4, 1)), np.zeros(4))
        stats = group.last_stats
    fast, slow = stats.compute
    assert slow == pytest.approx(3 * fast, rel=0.3)           # the slow tower took ~3x
    assert stats.wait[1] == 0.0 and stats.wait[0] == pytest.approx(slow - fast, abs=0.03)
    assert stats.wall >= slow and 0.25 < stats.barrier_fraction < 0.45   # ideal 1/3
    assert group.totals.steps == 1 and group.totals.wait == stats.wait
    with pytest.raises(ValueError, match="speed must give 2 factors"):
        Towers(gradients, towers=2, speed=[0.5, 1.0])


def test_training_with_towers_matches_one_process():
    """Two steps with T=2 land where two single-process steps land, to float32 rounding."""
    arch = ARCH
    rng = np.random.default_rng(1)
    images = rng.standard_normal((32,) + arch.input_shape).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    from fastconv.models.data import Dataset, Split
    data = Dataset("toy", Split(images, labels), Split(images, labels), arch.input_shape, 10,
                   train_transform=lambda raw, rng: raw, eval_transform=lambda raw: raw)
    schedule = optim.Schedule(8, examples_per_epoch=32)
    single = train.Trainer(train.new_state("toy", arch, schedule), data)
    with Towers(model_gradients(arch), towers=2, threads_per_tower=1) as group:
        parallel = train.Trainer(train.new_state("toy", arch, schedule), data, group)
        for _ in range(2):
            a, b = single.step(), parallel.step()
            assert a.loss == pytest.approx(b.loss, rel=1e-5)
    for name, value in single.state.params.items():
        np.testing.assert_allclose(parallel.state.params[name], value, rtol=0,
                                   atol=1e-5 * np.abs(value).max(), err_msg=name)
