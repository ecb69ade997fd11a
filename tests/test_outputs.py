"""The pool of reused result blocks (fastconv/_outputs.py, fastconv/_bufferpool.pyx)."""
import threading

import numpy as np
import pytest
import scipy.signal

import fastconv
from fastconv import _outputs, backends, dispatch
from fastconv.backends import reference
from fastconv.problem import make_problem

pytestmark = pytest.mark.skipif(_outputs._bufferpool is None,
                                reason="the _bufferpool extension is not built")

BIG = (512, 1024)  # 4 MiB of float64: pooled
MiB = 1 << 20


@pytest.fixture(autouse=True)
def fresh_pool():
    saved = _outputs.pool_stats()["max_bytes"]
    _outputs.release()
    yield
    _outputs.set_pool_bytes(saved)
    _outputs.release()


def test_small_arrays_bypass_the_pool():
    before = _outputs.pool_stats()
    a = _outputs.empty((10, 10), np.float32)
    assert a.shape == (10, 10) and a.dtype == np.float32
    del a
    assert _outputs.pool_stats()["blocks"] == before["blocks"] == 0


def test_a_freed_block_is_reused():
    a = _outputs.empty(BIG, np.float64)
    assert a.flags.c_contiguous and a.flags.writeable and a.flags.owndata
    a[...] = 1.0
    address = a.ctypes.data
    del a
    assert _outputs.pool_stats()["blocks"] == 1
    reused = _outputs.pool_stats()["reused"]
    b = _outputs.empty(BIG, np.float64)
    assert b.ctypes.data == address
    assert _outputs.pool_stats()["reused"] == reused + 1
    assert _outputs.pool_stats()["blocks"] == 0


def test_a_view_keeps_its_block_out_of_the_pool():
    a = _outputs.empty(BIG, np.float64)
    view = a[100:200]
    del a
    assert _outputs.pool_stats()["blocks"] == 0
    view[...] = 7.0
    other = _outputs.empty(BIG, np.float64)
    other[...] = -1.0
    assert np.all(view == 7.0)


def test_zeros_from_a_reused_block_are_zero():
    a = _outputs.empty(BIG, np.float64)
    a[...] = np.nan
    del a
    with _outputs.pooled():
        z = np.zeros(BIG)
    assert _outputs.pool_stats()["reused"] >= 1
    assert not z.any()


def test_resize_keeps_the_data_across_the_threshold():
    with _outputs.pooled():
        a = np.arange(1000, dtype=np.float64)
        a.resize(400_000, refcheck=False)      # plain block -> pooled block
        assert np.array_equal(a[:1000], np.arange(1000.0)) and not a[1000:].any()
        a[-1] = 5.0
        a.resize(600_000, refcheck=False)      # pooled -> pooled
        assert a[399_999] == 5.0 and np.array_equal(a[:1000], np.arange(1000.0))
        a.resize(10, refcheck=False)           # pooled -> plain
    assert np.array_equal(a, np.arange(10.0))


def test_the_pool_holds_at_most_its_cap():
    _outputs.set_pool_bytes(10 * MiB)
    arrays = [_outputs.empty((n, 1024), np.float64) for n in (256, 384, 512, 640)]
    del arrays
    stats = _outputs.pool_stats()
    assert 0 < stats["held_bytes"] <= 10 * MiB
    _outputs.set_pool_bytes(0)
    assert _outputs.pool_stats()["held_bytes"] == 0
    a = _outputs.empty(BIG, np.float64)
    del a
    assert _outputs.pool_stats()["blocks"] == 0


def test_negative_cap_is_refused():
    with pytest.raises(ValueError, match="nbytes must be >= 0, got -1"):
        _outputs.set_pool_bytes(-1)


def test_many_threads_get_their_own_blocks():
    errors = []

    def work(value):
        for _ in range(40):
            a = _outputs.empty((300, 1000), np.float64)
            a[...] = value
            if not np.all(a == value):
                errors.append(value)

    threads = [threading.Thread(target=work, args=(v,)) for v in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert _outputs.pool_stats()["reused"] > 0


def test_large_results_of_the_front_end_come_from_the_pool():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((512, 512)), rng.standard_normal((3, 3))
    reused = _outputs.pool_stats()["reused"]
    for _ in range(3):
        got = fastconv.convolve(x, w, mode="same", method="direct")
        np.testing.assert_allclose(got, scipy.signal.convolve(x, w, mode="same"), atol=1e-12)
        del got
    assert _outputs.pool_stats()["reused"] >= reused + 2


def test_pooled_arrays_name_their_allocator_and_the_default_comes_back():
    core = getattr(np, "_core", None) or np.core  # numpy 2 renamed np.core
    handler_name = core.multiarray.get_handler_name
    before = handler_name()
    with _outputs.pooled():
        assert handler_name() == "fastconv_buffer_pool"
        inside = np.empty(BIG)
    assert handler_name() == before
    assert handler_name(inside) == "fastconv_buffer_pool"
    assert handler_name(_outputs.empty((4,), np.float64)) == before  # small: numpy's own
    previous = _outputs._bufferpool.set_handler(None)
    try:
        assert handler_name() == "default_allocator"
    finally:
        _outputs._bufferpool.set_handler(previous)


def _poison_a_block(shape):
    """Leave a NaN-filled freed block of ``shape`` float64 in the pool."""
    block = _outputs.empty(shape, np.float64)
    block[...] = np.nan
    del block


@pytest.mark.parametrize("method", ["direct", "fft", "im2col", "separable", "reference"])
def test_every_backend_writes_all_of_a_reused_block(method):
    # results come from dirty reused blocks: every element must be written
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, 1, 400, 400))
    w = np.outer(rng.standard_normal(5), rng.standard_normal(5))[None, None]
    problem = make_problem(x.shape, w.shape, "float64", padding=2)
    want = reference.correlate(x, w, problem)
    _poison_a_block(problem.out_shape)
    got = dispatch.correlate(x, w, problem, method=method)
    np.testing.assert_allclose(got, want, atol=1e-10)


def test_direct_backend_alone_takes_its_result_from_the_pool():
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal((1, 1, 400, 400)), rng.standard_normal((1, 1, 9, 9))
    problem = make_problem(x.shape, w.shape, "float64", padding=4)
    _poison_a_block(problem.out_shape)
    reused = _outputs.pool_stats()["reused"]
    got = backends.REGISTRY["direct"].correlate(x, w, problem)
    assert _outputs.pool_stats()["reused"] == reused + 1
    np.testing.assert_allclose(got, reference.correlate(x, w, problem), atol=1e-10)
