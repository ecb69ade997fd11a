"""The CIFAR-10 tutorial network: layers, whole-network gradients, optimiser, training, resume."""
from __future__ import annotations

import math

import numpy as np
import pytest

from fastconv import thread_budget
from fastconv.models import checkpoint, cifar10, layers, optim, train
from fastconv.models.data import Dataset, Split

# small enough for finite differences, same layer types and constants as the tutorial's
TINY = cifar10.Architecture(input_shape=(3, 9, 7), conv_channels=(5, 6), local_units=(7, 6),
                            num_classes=4)


def _batch(arch, n, dtype, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + arch.input_shape).astype(dtype)
    return x, rng.integers(0, arch.num_classes, n)


def _random_params(arch, seed=2):
    """Initialised weights, biases made random too so that every gradient is exercised."""
    params = cifar10.init_params(seed, arch, np.float64)
    rng = np.random.default_rng(seed + 1)
    for name in params:
        if name.endswith("biases"):
            params[name] = rng.uniform(-0.1, 0.2, params[name].shape)
    params["softmax_linear/weights"] *= 40     # the tutorial's 1/192 gives a flat softmax
    return params


# ---------------------------------------------------------------- architecture and init

def test_tutorial_shapes():
    shapes = cifar10.param_shapes()
    assert shapes["conv1/weights"] == (64, 3, 5, 5)
    assert shapes["conv2/weights"] == (64, 64, 5, 5)
    assert shapes["local3/weights"] == (2304, 384)       # 6 x 6 x 64 after two SAME pools
    assert shapes["local4/weights"] == (384, 192)
    assert shapes["softmax_linear/weights"] == (192, 10)
    x, _ = _batch(cifar10.CIFAR10, 2, np.float32)
    logits, cache = cifar10.forward(cifar10.init_params(0), x)
    assert logits.shape == (2, 10) and logits.dtype == np.float32
    assert cache["r1_shape"] == (2, 64, 24, 24) and cache["p1"].shape == (2, 64, 12, 12)
    assert cache["p2_shape"] == (2, 64, 6, 6)


def test_initialisation_is_the_tutorials():
    params = cifar10.init_params(0)
    for name, std in (("conv1/weights", 5e-2), ("conv2/weights", 5e-2),
                      ("local3/weights", 0.04), ("local4/weights", 0.04),
                      ("softmax_linear/weights", 1 / 192)):
        w = params[name]
        assert np.abs(w).max() <= 2 * std * (1 + 1e-6), name      # truncated at two std
        # a normal truncated at +-2 std has std 0.880 of the untruncated one
        assert abs(w.std() / std - 0.880) < 0.05, name
    assert np.all(params["conv1/biases"] == 0) and np.all(params["conv2/biases"] == 0.1)
    assert np.all(params["local3/biases"] == 0.1) and np.all(params["softmax_linear/biases"] == 0)
    again = cifar10.init_params(0)
    assert all(np.array_equal(params[n], again[n]) for n in params)


# ---------------------------------------------------------------- layers against plain formulas

def test_same_max_pool_ignores_padding():
    x = -np.abs(np.random.default_rng(0).standard_normal((2, 3, 6, 5)))  # all negative
    out, idx = layers.max_pool_same(x, 3, 2)
    assert out.shape == (2, 3, 3, 3)
    # TF SAME: 6 rows pad (0, 1), 5 columns pad (1, 1); padding never wins
    assert layers.same_pairs((6, 5), 3, 2) == ((0, 1), (1, 1))
    padded = np.pad(x, ((0, 0), (0, 0), (0, 1), (1, 1)), constant_values=-np.inf)
    for i in range(3):
        for j in range(3):
            window = padded[:, :, 2 * i:2 * i + 3, 2 * j:2 * j + 3]
            assert np.array_equal(out[:, :, i, j], window.max(axis=(2, 3)))
    flat = x.reshape(2, 3, -1)
    assert np.array_equal(np.take_along_axis(flat, idx.reshape(2, 3, -1), 2), out.reshape(2, 3, -1))


def test_lrn_is_the_chapters_formula():
    x = np.random.default_rng(0).standard_normal((2, 11, 3, 2))
    r, bias, alpha, beta = 4, 1.0, 0.001 / 9, 0.75
    expected = np.empty_like(x)
    for d in range(11):
        window = x[:, max(0, d - r):d + r + 1]
        expected[:, d] = x[:, d] / (bias + alpha * (window ** 2).sum(axis=1)) ** beta
    np.testing.assert_allclose(layers.lrn(x, r, bias, alpha, beta), expected, rtol=1e-13)


def test_softmax_cross_entropy_matches_definition():
    logits = np.random.default_rng(0).standard_normal((5, 4)) * 10
    labels = np.array([0, 3, 1, 1, 2])
    loss, grad = layers.softmax_cross_entropy(logits, labels)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert loss == pytest.approx(-np.mean(np.log(p[np.arange(5), labels])), rel=1e-12)
    np.testing.assert_allclose(grad, (p - np.eye(4)[labels]) / 5, atol=1e-15)


# ---------------------------------------------------------------- whole-network gradients

def _total_loss(params, x, y, arch):
    logits, _ = cifar10.forward(params, x, arch)
    data, _ = layers.softmax_cross_entropy(logits, y)
    return data + cifar10.weight_decay_loss(params, arch)


def test_network_gradient_matches_finite_differences():
    arch = TINY
    params = _random_params(arch)
    x, y = _batch(arch, 3, np.float64)
    loss, grads = cifar10.loss_and_grads(params, x, y, arch)
    assert loss == pytest.approx(_total_loss(params, x, y, arch), rel=1e-14)
    rng = np.random.default_rng(5)
    h = 1e-6
    for name, value in params.items():
        for flat in rng.choice(value.size, size=min(4, value.size), replace=False):
            index = np.unravel_index(flat, value.shape)
            plus, minus = ({**params, name: value.copy()} for _ in range(2))
            plus[name][index] += h
            minus[name][index] -= h
            numeric = (_total_loss(plus, x, y, arch) - _total_loss(minus, x, y, arch)) / (2 * h)
            assert grads[name][index] == pytest.approx(numeric, rel=1e-5, abs=1e-8), (name, index)


def test_network_directional_derivative_full_size():
    """The tutorial's real sizes: one random direction through every parameter at once."""
    arch = cifar10.CIFAR10
    params = cifar10.init_params(3, arch, np.float64)
    params["softmax_linear/weights"] *= 40
    x, y = _batch(arch, 2, np.float64)
    _, grads = cifar10.loss_and_grads(params, x, y, arch)
    rng = np.random.default_rng(6)
    direction = {n: rng.standard_normal(v.shape) for n, v in params.items()}
    norm = math.sqrt(sum(float(np.vdot(d, d)) for d in direction.values()))
    direction = {n: d / norm for n, d in direction.items()}
    h = 1e-5      # small enough that no ReLU or pooling window switches
    plus = {n: params[n] + h * direction[n] for n in params}
    minus = {n: params[n] - h * direction[n] for n in params}
    numeric = (_total_loss(plus, x, y, arch) - _total_loss(minus, x, y, arch)) / (2 * h)
    analytic = sum(float(np.vdot(grads[n], direction[n])) for n in params)
    assert analytic == pytest.approx(numeric, rel=1e-6)
    assert abs(analytic) > 1e-3


def test_network_matches_torch_autograd():
    torch_twin = pytest.importorskip("fastconv.models.torch_twin")
    for arch, dtype, rtol in ((TINY, np.float64, 1e-10), (cifar10.CIFAR10, np.float32, 2e-4)):
        params = _random_params(arch) if dtype == np.float64 else cifar10.init_params(0, arch)
        x, y = _batch(arch, 4, dtype)
        loss, grads = cifar10.loss_and_grads(params, x, y, arch)
        loss_t, grads_t = torch_twin.loss_and_grads(params, x, y, arch)
        assert loss == pytest.approx(loss_t, rel=rtol)
        for name in grads:
            scale = np.abs(grads_t[name]).max()
            np.testing.assert_allclose(grads[name], grads_t[name], rtol=0, atol=rtol * scale,
                                       err_msg=name)


# ---------------------------------------------------------------- optimiser

def test_staircase_learning_rate():
    schedule = optim.Schedule(batch_size=128)
    steps = schedule.decay_steps
    assert steps == int(50000 / 128 * 350)
    assert schedule.rate(0) == schedule.rate(steps - 1) == 0.1
    assert schedule.rate(steps) == pytest.approx(0.01)
    assert schedule.rate(2 * steps + 5) == pytest.approx(0.001)


def test_moving_average_follows_tensorflow():
    ema = optim.MovingAverage({"w": np.array([0.0])}, decay=0.9999)
    value, expected = np.array([0.0]), 0.0
    for step in range(1, 30):
        value = value + 1.0
        decay = min(0.9999, (1 + step) / (10 + step))
        expected = decay * expected + (1 - decay) * value[0]
        ema.update({"w": value}, step)
    assert ema.averages["w"][0] == pytest.approx(expected, rel=1e-12)


def test_sgd_update_in_place():
    params = {"w": np.ones(3, np.float32)}
    optim.sgd_update(params, {"w": np.full(3, 2.0, np.float32)}, 0.25)
    assert params["w"].dtype == np.float32 and np.all(params["w"] == 0.5)


# ---------------------------------------------------------------- training and checkpoints

def _toy_dataset(arch, n=96, seed=0):
    """Four classes told apart by the quadrant of a bright square: learnable in a few steps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, n)
    images = rng.standard_normal((n,) + arch.input_shape).astype(np.float32) * 0.3
    _, h, w = arch.input_shape
    for i, label in enumerate(labels):
        top, left = (label // 2) * (h // 2), (label % 2) * (w // 2)
        images[i, :, top:top + h // 2, left:left + w // 2] += 2.0
    split = Split(images, labels)

    def augment(raw, rng):
        return raw + rng.normal(0, 0.05, raw.shape).astype(np.float32)

    return Dataset("toy", split, split, arch.input_shape, arch.num_classes,
                   train_transform=augment, eval_transform=lambda raw: raw)


# the tutorial's dense widths: its initial standard deviations are tuned to them
SMALL = cifar10.Architecture(input_shape=(2, 8, 8), conv_channels=(16, 16), num_classes=4)


def _trainer(seed=0):
    data = _toy_dataset(SMALL)
    state = train.new_state("toy", SMALL, optim.Schedule(16, initial=0.1, examples_per_epoch=96),
                            seed=seed)
    return train.Trainer(state, data)


def test_training_lowers_the_loss():
    trainer = _trainer()
    with thread_budget(1):      # small problems: one thread is the fastest
        losses = [trainer.step().loss for _ in range(60)]
    assert np.mean(losses[-10:]) < 0.5 * np.mean(losses[:10])
    assert trainer.evaluate(use_average=False) > 0.9
    assert trainer.state.step == 60


def test_checkpoint_resumes_exactly(tmp_path):
    straight = _trainer()
    expected = [straight.step().loss for _ in range(6)]
    first = _trainer()
    losses = [first.step().loss for _ in range(3)]
    path = checkpoint.save(tmp_path / "run", first.state)
    assert path.name == "run.npz"
    resumed = train.Trainer(checkpoint.load(path), _toy_dataset(SMALL))
    losses += [resumed.step().loss for _ in range(3)]
    assert losses == expected
    for name, value in straight.state.params.items():
        assert np.array_equal(value, resumed.state.params[name]), name
        assert np.array_equal(straight.state.ema.averages[name],
                              resumed.state.ema.averages[name]), name
    assert resumed.state.arch == SMALL and resumed.state.step == 6


def test_checkpoint_refuses_other_files(tmp_path):
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros(2))
    with pytest.raises(ValueError, match="not a fastconv checkpoint"):
        checkpoint.load(bad)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load(tmp_path / "missing.npz")


# ---------------------------------------------------------------- digits (scikit-learn)

def test_digits_network_learns():
    """The tutorial network on the 8x8 digits: learning shows within seconds.

    The full run (>= 95 % test accuracy) is ``fastconv train digits``; see bench/.
    """
    pytest.importorskip("sklearn")
    from fastconv.models import digits
    data = digits.load()
    assert data.train.images.shape[1:] == (1, 8, 8) and len(data.test) == 450
    state = train.new_state("digits", digits.ARCHITECTURE,
                            optim.Schedule(32, initial=0.1, examples_per_epoch=len(data.train)))
    trainer = train.Trainer(state, data)
    before = trainer.evaluate(use_average=False)
    with thread_budget(1):      # a network this small runs fastest on one thread
        losses = [trainer.step().loss for _ in range(200)]
    # lr 0.1 on batches of 32 is a bumpy ride; over three seeds, 200 steps took the loss
    # down by 0.5-0.85 and the averaged weights to 66-79 % (raw weights 48-58 %)
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.4
    assert trainer.evaluate() > 0.5 and trainer.evaluate(use_average=False) > 0.35
    assert before < 0.2                                                   # chance is 0.1
    assert not math.isnan(losses[-1])
