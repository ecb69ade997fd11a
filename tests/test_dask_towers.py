"""Towers on Dask distributed: two worker processes give the threaded towers' gradient."""
from __future__ import annotations

import numpy as np
import pytest

distributed = pytest.importorskip("dask.distributed")

from fastconv.models import cifar10  # noqa: E402
from fastconv.parallel import Towers, model_gradients  # noqa: E402
from fastconv.parallel.dask_towers import DaskTowers  # noqa: E402

ARCH = cifar10.Architecture(input_shape=(1, 8, 8), conv_channels=(8, 8))


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=40)
    client = distributed.Client(cluster)
    yield client
    client.close()
    cluster.close()


def test_dask_towers_average_like_threaded_towers(client):
    params = cifar10.init_params(0, ARCH)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((10,) + ARCH.input_shape).astype(np.float32)
    y = rng.integers(0, 10, 10)
    with Towers(model_gradients(ARCH), towers=2, threads_per_tower=1) as threaded:
        loss, grads = threaded(params, x, y)
    towers = DaskTowers(client, ARCH)
    assert towers.towers == 2 and len(towers.workers) == 2
    dask_loss, dask_grads = towers(params, x, y)
    # same shards, same single-threaded arithmetic: the same numbers
    assert dask_loss == pytest.approx(loss, rel=1e-6)
    for name, g in grads.items():
        np.testing.assert_allclose(dask_grads[name], g, rtol=0, atol=1e-6 * np.abs(g).max(),
                                   err_msg=name)
    stats = towers.last_stats
    assert stats.shard_sizes == [5, 5] and min(stats.compute) > 0 and min(stats.wait) == 0
    full_loss, _ = cifar10.loss_and_grads(params, x, y, ARCH)
    assert dask_loss == pytest.approx(full_loss, rel=1e-5)
    # a second step sees the updated parameters, not the first step's copy
    stepped = {n: p - 0.1 * grads[n] for n, p in params.items()}
    second, _ = towers(stepped, x, y)
    assert second == pytest.approx(cifar10.loss_and_grads(stepped, x, y, ARCH)[0], rel=1e-5)
    assert second != pytest.approx(dask_loss, rel=1e-6)


def test_dask_towers_connect_by_address(client):
    params = cifar10.init_params(0, ARCH)
    x = np.zeros((4,) + ARCH.input_shape, np.float32)
    with DaskTowers(client.scheduler.address, ARCH, towers=4) as towers:
        loss, grads = towers(params, x, np.arange(4))
        assert towers.last_stats.shard_sizes == [1, 1, 1, 1]
    assert np.isfinite(loss) and set(grads) == set(params)


def test_train_command_on_a_scheduler(client, tmp_path, capsys):
    import json

    from fastconv import cli
    from fastconv.models import cifar_data
    rng = np.random.default_rng(0)
    for name in cifar_data.FILES["binary"]["train"] + cifar_data.FILES["binary"]["test"]:
        cifar_data.write_binary(tmp_path / name, rng.integers(0, 256, (4, 3, 32, 32)),
                                rng.integers(0, 10, 4))
    status = cli.main(["train", "cifar10", "--data-dir", str(tmp_path), "--steps", "2",
                       "--batch-size", "4", "--scheduler", client.scheduler.address,
                       "--checkpoint", str(tmp_path / "run.npz"), "--json"])
    out, err = capsys.readouterr()
    assert status == 0, err
    report = json.loads(out)
    assert report["steps"] == 2 and report["towers"]["towers"] == 2
    assert len(report["towers"]["compute_s_per_tower"]) == 2
