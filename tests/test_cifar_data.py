"""CIFAR-10 reader (both official formats, written here byte for byte) and the input pipeline."""
from __future__ import annotations

import pickle

import numpy as np
import pytest

from fastconv.models import cifar_data
from fastconv.models.cifar_data import DatasetNotFound, MalformedDataset
from fastconv.models.data import batch_indices, step_rng

PER_FILE = 4


def _images(n, seed):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n)


def _write_binary_file(path, images, labels):
    """The format by hand: label byte, then 1024 R, 1024 G, 1024 B bytes, rows first."""
    with open(path, "wb") as f:
        for image, label in zip(images, labels):
            f.write(bytes([int(label)]))
            for channel in range(3):
                f.write(image[channel].tobytes(order="C"))


def _write_python_file(path, images, labels, byte_keys=True):
    batch = {"batch_label": "testing batch", "labels": [int(v) for v in labels],
             "data": images.reshape(len(images), 3072),
             "filenames": [f"img_{i}.png" for i in range(len(labels))]}
    if byte_keys:  # what the official archive holds: a Python 2 pickle read with bytes keys
        batch = {k.encode(): v for k, v in batch.items()}
    with open(path, "wb") as f:
        pickle.dump(batch, f, protocol=2)


def _write_dataset(folder, fmt, seed=0, byte_keys=True):
    folder.mkdir(parents=True, exist_ok=True)
    written = {"train": [], "test": []}
    for split, names in cifar_data.FILES[fmt].items():
        for k, name in enumerate(names):
            images, labels = _images(PER_FILE, seed + 10 * k + (split == "test"))
            if fmt == "binary":
                _write_binary_file(folder / name, images, labels)
            else:
                _write_python_file(folder / name, images, labels, byte_keys)
            written[split].append((images, labels))
    return {split: (np.concatenate([i for i, _ in parts]), np.concatenate([l for _, l in parts]))
            for split, parts in written.items()}


@pytest.mark.parametrize("fmt, sub", [("binary", "cifar-10-batches-bin"), ("binary", ""),
                                      ("python", "cifar-10-batches-py"), ("python", "")])
def test_reads_both_formats(tmp_path, fmt, sub):
    expected = _write_dataset(tmp_path / sub if sub else tmp_path, fmt)
    assert cifar_data.locate(tmp_path)[0] == fmt
    for split in ("train", "test"):
        data = cifar_data.load_split(tmp_path, split)
        images, labels = expected[split]
        assert data.images.dtype == np.uint8 and data.images.shape == images.shape
        assert np.array_equal(data.images, images) and np.array_equal(data.labels, labels)
    assert len(cifar_data.load_split(tmp_path, "train")) == 5 * PER_FILE


def test_python_format_with_text_keys(tmp_path):
    expected = _write_dataset(tmp_path, "python", byte_keys=False)
    assert np.array_equal(cifar_data.load_split(tmp_path, "test").labels, expected["test"][1])


def test_pixel_order_is_red_green_blue_planes(tmp_path):
    record = bytearray([7]) + bytes(range(256)) * 12        # 1 label + 3072 pixel bytes
    path = tmp_path / "one.bin"
    path.write_bytes(bytes(record))
    split = cifar_data.read_binary(path)
    assert split.labels.tolist() == [7]
    image = split.images[0]
    assert image[0, 0, :4].tolist() == [0, 1, 2, 3]          # red plane, first row
    assert image[0, 1, 0] == 32 and image[1, 0, 0] == 0       # second row; green starts over
    assert image[2, 31, 31] == 255


def test_missing_dataset_names_files_and_places(tmp_path):
    with pytest.raises(DatasetNotFound) as err:
        cifar_data.load_split(tmp_path / "nowhere")
    message = str(err.value)
    for text in ("data_batch_1.bin", "test_batch.bin", "data_batch_5", "cifar-10-batches-bin",
                 "cifar-10-batches-py", str(tmp_path / "nowhere")):
        assert text in message


def test_partial_dataset_names_what_is_missing(tmp_path):
    _write_dataset(tmp_path / "cifar-10-batches-bin", "binary")
    (tmp_path / "cifar-10-batches-bin" / "data_batch_3.bin").unlink()
    with pytest.raises(FileNotFoundError, match="lacks data_batch_3.bin"):
        cifar_data.locate(tmp_path)


def test_malformed_binary(tmp_path):
    path = tmp_path / "cut.bin"
    path.write_bytes(bytes(3073 + 10))
    with pytest.raises(MalformedDataset, match="3073-byte records"):
        cifar_data.read_binary(path)
    images, labels = _images(2, 0)
    labels[1] = 12
    _write_binary_file(tmp_path / "labels.bin", images, labels)
    with pytest.raises(MalformedDataset, match="labels must be 0..9"):
        cifar_data.read_binary(tmp_path / "labels.bin")


def test_malformed_python(tmp_path):
    path = tmp_path / "batch"
    with open(path, "wb") as f:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, f)
    with pytest.raises(MalformedDataset, match=r"\(N, 3072\)"):
        cifar_data.read_python(path)
    with open(path, "wb") as f:
        pickle.dump({b"pixels": 1}, f)
    with pytest.raises(MalformedDataset, match="lacks 'data' or 'labels'"):
        cifar_data.read_python(path)
    path.write_bytes(b"not a pickle")
    with pytest.raises(MalformedDataset, match="not a CIFAR-10 python batch"):
        cifar_data.read_python(path)


def test_pickle_asking_for_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled code ran",))

    path = tmp_path / "evil"
    with open(path, "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(MalformedDataset, match="refusing to load builtins.print"):
        cifar_data.read_python(path)


# ---------------------------------------------------------------- the input pipeline

def test_per_image_standardization_is_tensorflows():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 3, 6, 6)).astype(np.uint8)
    out = cifar_data.per_image_standardization(images)
    x = images.astype(np.float64)
    for i in range(3):
        expected = (x[i] - x[i].mean()) / max(x[i].std(), 1 / np.sqrt(x[i].size))
        np.testing.assert_allclose(out[i], expected, rtol=1e-5, atol=1e-5)
    flat = cifar_data.per_image_standardization(np.full((1, 3, 4, 4), 9, np.uint8))
    assert np.all(flat == 0)            # the 1/sqrt(size) floor keeps a constant image finite


def test_central_crop_for_evaluation():
    images, _ = _images(2, 1)
    crop = cifar_data.central_crop(images)
    assert np.array_equal(crop, images[:, :, 4:28, 4:28])
    out = cifar_data.eval_inputs(images)
    assert out.shape == (2, 3, 24, 24) and out.dtype == np.float32


def test_distortions_crop_flip_and_jitter():
    images, _ = _images(16, 2)
    plain = cifar_data.distort(images, np.random.default_rng(3), max_brightness=0.0,
                               contrast=(1.0, 1.0))
    assert plain.shape == (16, 3, 24, 24) and plain.dtype == np.float32
    flips = 0
    for image, out in zip(images, plain):
        windows = [cifar_data.per_image_standardization(
            image[None, :, t:t + 24, l:l + 24].astype(np.float32))[0]
            for t in range(9) for l in range(9)]
        found = [k for k, w in enumerate(windows) if np.allclose(out, w, atol=1e-4)]
        flipped = [k for k, w in enumerate(windows) if np.allclose(out, w[..., ::-1], atol=1e-4)]
        assert found or flipped           # every output is one window, maybe mirrored
        flips += bool(flipped)
    assert 0 < flips < 16
    jittered = cifar_data.distort(images, np.random.default_rng(3))
    # brightness and contrast change the image before standardisation, so not all equal
    assert not np.allclose(jittered, plain, atol=1e-3)
    np.testing.assert_allclose(jittered.mean(axis=(1, 2, 3)), 0, atol=1e-4)
    np.testing.assert_allclose(jittered.std(axis=(1, 2, 3)), 1, atol=1e-3)


def test_batches_depend_only_on_seed_and_step():
    epoch = np.concatenate([batch_indices(50, 10, 3, s) for s in range(5)])
    assert sorted(epoch.tolist()) == list(range(50))          # an epoch sees every example once
    assert np.array_equal(batch_indices(50, 10, 3, 7), batch_indices(50, 10, 3, 7))
    assert not np.array_equal(batch_indices(50, 10, 3, 0), batch_indices(50, 10, 3, 5))
    assert step_rng(1, 2).random() == step_rng(1, 2).random()
    with pytest.raises(ValueError, match="larger than"):
        batch_indices(5, 10, 0, 0)


def test_dataset_feeds_the_network(tmp_path):
    _write_dataset(tmp_path, "binary")
    data = cifar_data.load(tmp_path)
    images, labels = data.train_batch(8, seed=0, step=1)
    assert images.shape == (8, 3, 24, 24) and images.dtype == np.float32 and labels.shape == (8,)
    again, _ = data.train_batch(8, seed=0, step=1)
    assert np.array_equal(images, again)
    batches = list(data.eval_batches(3))
    assert sum(len(y) for _, y in batches) == PER_FILE


# ---------------------------------------------------------------- fastconv train / eval

@pytest.fixture
def fastconv_main(capsys):
    """``main(argv) -> (status, stdout, stderr)`` with ``train``/``eval`` registered."""
    import json

    from fastconv import cli
    capsys.readouterr()

    def run(*argv):
        try:
            status = cli.main([str(a) for a in argv])
        except SystemExit as exc:
            status = exc.code
        out, err = capsys.readouterr()
        return status, (json.loads(out) if "--json" in argv and status == 0 else out), err
    return run


def test_train_resume_and_eval_on_cifar_files(tmp_path, fastconv_main):
    _write_dataset(tmp_path / "data" / "cifar-10-batches-py", "python")
    common = ("train", "cifar10", "--data-dir", tmp_path / "data", "--batch-size", 4,
              "--eval-every", 2, "--threads", 1, "--json")
    status, straight, err = fastconv_main(*common, "--steps", 4, "--checkpoint", tmp_path / "a")
    assert status == 0, err
    assert straight["steps"] == 4 and len(straight["history"]) == 4
    assert [e["step"] for e in straight["evaluations"]] == [2, 4]
    status, first, _ = fastconv_main(*common, "--steps", 2, "--checkpoint", tmp_path / "b.npz")
    status, resumed, err = fastconv_main(*common, "--steps", 4, "--checkpoint", tmp_path / "c.npz",
                                         "--resume", tmp_path / "b.npz")
    assert status == 0, err
    losses = [h["loss"] for h in first["history"] + resumed["history"]]
    assert losses == [h["loss"] for h in straight["history"]]       # exactly the same curve
    status, report, _ = fastconv_main("eval", tmp_path / "c.npz", "--data-dir", tmp_path / "data",
                                      "--json")
    assert status == 0 and report["step"] == 4 and report["test_examples"] == PER_FILE
    assert report["accuracy_moving_average"] == straight["final_accuracy"]


def test_train_with_towers_reports_barrier(tmp_path, fastconv_main):
    _write_dataset(tmp_path, "binary")
    status, out, err = fastconv_main("train", "cifar10", "--data-dir", tmp_path, "--steps", 2,
                                     "--batch-size", 4, "--towers", 2, "--threads-per-tower", 1,
                                     "--slow-tower", 3, "--checkpoint", tmp_path / "t.npz")
    assert status == 0, err
    assert "compute per tower" in out and "waiting at the barrier" in out
    assert "test accuracy (moving average)" in out


def test_train_errors_are_one_line(tmp_path, fastconv_main):
    status, _, err = fastconv_main("train", "cifar10", "--steps", 1)
    assert status == 1 and "needs --data-dir" in err and len(err.strip().splitlines()) == 1
    status, _, err = fastconv_main("train", "cifar10", "--data-dir", tmp_path, "--steps", 1)
    assert status == 1 and "data_batch_1.bin" in err and str(tmp_path) in err
    _write_dataset(tmp_path, "binary")
    status, _, err = fastconv_main("train", "cifar10", "--data-dir", tmp_path, "--steps", 1,
                                   "--batch-size", 64)
    assert status == 1 and "larger than the 20 training examples" in err
    status, _, err = fastconv_main("train", "cifar10", "--data-dir", tmp_path, "--towers", 0)
    assert status == 2
    status, _, err = fastconv_main("eval", tmp_path / "missing.npz")
    assert status == 1 and "no checkpoint" in err
