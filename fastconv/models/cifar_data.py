"""CIFAR-10 from a local folder, in either official format, and the tutorial's input pipeline.

Formats (https://www.cs.toronto.edu/~kriz/cifar.html):

- binary (``cifar-10-batches-bin``): ``data_batch_1.bin`` .. ``data_batch_5.bin``
  and ``test_batch.bin``, each a run of 3073-byte records: 1 label byte, then
  the 1024 red, 1024 green and 1024 blue bytes of a 32x32 image, rows first;
- python (``cifar-10-batches-py``): ``data_batch_1`` .. ``data_batch_5`` and
  ``test_batch``, each a pickled dict with ``data`` (N x 3072 uint8, same pixel
  order) and ``labels`` (N ints).  Only numpy arrays and plain containers are
  unpickled: a file that asks for anything else is refused.

Images are kept as uint8 ``(N, 3, 32, 32)``, which is already the
channels-first layout the network uses.  The input pipeline is the tutorial's
``distorted_inputs`` (random 24x24 crop, random left-right flip, brightness
delta in [-63, 63], contrast factor in [0.2, 1.8], per-image standardisation)
and ``inputs`` (central 24x24 crop, standardisation).
"""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from .data import Dataset, Split

RECORD_BYTES = 1 + 3 * 32 * 32
FOLDERS = {"binary": "cifar-10-batches-bin", "python": "cifar-10-batches-py"}
FILES = {"binary": {"train": [f"data_batch_{i}.bin" for i in range(1, 6)],
                    "test": ["test_batch.bin"]},
         "python": {"train": [f"data_batch_{i}" for i in range(1, 6)],
                    "test": ["test_batch"]}}
NUM_CLASSES = 10
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
           "truck")


class DatasetNotFound(FileNotFoundError):
    """The CIFAR-10 files are not where they were looked for."""


class MalformedDataset(ValueError):
    """A CIFAR-10 file exists but does not hold what the format says."""


# ---------------------------------------------------------------- locating the files

def locate(data_dir) -> tuple[str, Path]:
    """The format and folder of a complete CIFAR-10 copy under ``data_dir``.

    ``data_dir`` itself or its ``cifar-10-batches-bin`` / ``cifar-10-batches-py``
    subfolder may hold the files; binary wins when both are complete.
    """
    root = Path(data_dir)
    looked = []
    for fmt in ("binary", "python"):
        for folder in (root, root / FOLDERS[fmt]):
            names = FILES[fmt]["train"] + FILES[fmt]["test"]
            if all((folder / name).is_file() for name in names):
                return fmt, folder
            looked.append((fmt, folder, [n for n in names if not (folder / n).is_file()]))
    partial = [item for item in looked if len(item[2]) < 6]
    detail = ""
    if partial:
        fmt, folder, missing = partial[0]
        detail = f" {folder} has part of the {fmt} format but lacks {', '.join(missing)}."
    raise DatasetNotFound(
        f"no CIFAR-10 dataset under {root}: expected the binary files "
        f"{', '.join(FILES['binary']['train'])} and test_batch.bin, or the python files "
        f"data_batch_1 .. data_batch_5 and test_batch, in {root} or in "
        f"{root / FOLDERS['binary']} / {root / FOLDERS['python']} (the folders the official "
        f"archives unpack to).{detail}")


# ---------------------------------------------------------------- reading

def read_binary(path) -> Split:
    """One binary batch file: uint8 images ``(N, 3, 32, 32)`` and int64 labels."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % RECORD_BYTES:
        raise MalformedDataset(f"{path}: {raw.size} bytes is not a whole, non-zero number of "
                               f"{RECORD_BYTES}-byte records (1 label byte + 3072 pixel bytes)")
    records = raw.reshape(-1, RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    _check_labels(labels, path)
    return Split(records[:, 1:].reshape(-1, 3, 32, 32).copy(), labels)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and builtin containers, nothing else."""

    ALLOWED = {(module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
               for name in ("_reconstruct", "scalar")} | {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("copyreg", "_reconstructor"), ("builtins", "object")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _entry(batch: dict, key: str):
    for k in (key, key.encode()):
        if k in batch:
            return batch[k]
    return None


def read_python(path) -> Split:
    """One python-format batch file (a pickled dict with ``data`` and ``labels``)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            batch = _ArrayUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, AttributeError, ValueError, TypeError) as exc:
        raise MalformedDataset(f"{path}: not a CIFAR-10 python batch ({exc})") from None
    if not isinstance(batch, dict):
        raise MalformedDataset(f"{path}: expected a pickled dict, found {type(batch).__name__}")
    data, labels = _entry(batch, "data"), _entry(batch, "labels")
    if data is None or labels is None:
        raise MalformedDataset(f"{path}: the pickled dict lacks 'data' or 'labels' "
                               f"(keys: {sorted(map(str, batch))})")
    data = np.asarray(data)
    labels = np.asarray(labels, dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise MalformedDataset(f"{path}: 'data' must be uint8 of shape (N, 3072), got "
                               f"{data.dtype} {data.shape}")
    if labels.shape != (len(data),):
        raise MalformedDataset(f"{path}: {len(labels)} labels for {len(data)} images")
    _check_labels(labels, path)
    return Split(data.reshape(-1, 3, 32, 32).copy(), labels)


def _check_labels(labels: np.ndarray, path) -> None:
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise MalformedDataset(f"{path}: labels must be 0..9, found {labels.min()}..{labels.max()}")


def load_split(data_dir, split: str = "train") -> Split:
    """All images and labels of the ``'train'`` or ``'test'`` split under ``data_dir``.

    Examples
    --------
    >>> load_split("/nonexistent")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    fastconv.models.cifar_data.DatasetNotFound: no CIFAR-10 dataset under /nonexistent: ...
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    fmt, folder = locate(data_dir)
    reader = read_binary if fmt == "binary" else read_python
    parts = [reader(folder / name) for name in FILES[fmt][split]]
    return Split(np.concatenate([p.images for p in parts]),
                 np.concatenate([p.labels for p in parts]))


# ---------------------------------------------------------------- the input pipeline

def per_image_standardization(images: np.ndarray) -> np.ndarray:
    """``(x - mean) / max(std, 1/sqrt(size))`` per image, TF's ``per_image_standardization``."""
    x = images.astype(np.float32, copy=True)
    axes = tuple(range(1, x.ndim))
    count = np.prod(x.shape[1:])
    mean = x.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = x.std(axis=axes, keepdims=True, dtype=np.float64)
    x -= mean.astype(np.float32)
    x /= np.maximum(std, 1.0 / np.sqrt(count)).astype(np.float32)
    return x


def central_crop(images: np.ndarray, size: int = 24) -> np.ndarray:
    """The central ``size`` x ``size`` window (``resize_image_with_crop_or_pad`` when shrinking)."""
    h, w = images.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top:top + size, left:left + size]


def distort(images: np.ndarray, rng: np.random.Generator, size: int = 24,
            max_brightness: float = 63.0, contrast=(0.2, 1.8)) -> np.ndarray:
    """The tutorial's training distortions of uint8 ``(N, C, H, W)`` images; float32 out."""
    n, _, h, w = images.shape
    tops = rng.integers(0, h - size + 1, n)
    lefts = rng.integers(0, w - size + 1, n)
    flips = rng.random(n) < 0.5
    x = np.empty((n, images.shape[1], size, size), np.float32)
    for i in range(n):
        crop = images[i, :, tops[i]:tops[i] + size, lefts[i]:lefts[i] + size]
        x[i] = crop[..., ::-1] if flips[i] else crop
    x += rng.uniform(-max_brightness, max_brightness, (n, 1, 1, 1)).astype(np.float32)
    mean = x.mean(axis=(2, 3), keepdims=True)
    factor = rng.uniform(contrast[0], contrast[1], (n, 1, 1, 1)).astype(np.float32)
    x = (x - mean) * factor + mean
    return per_image_standardization(x)


def eval_inputs(images: np.ndarray, size: int = 24) -> np.ndarray:
    """Evaluation input: central crop, standardised, float32."""
    return per_image_standardization(central_crop(images, size))


def load(data_dir, size: int = 24) -> Dataset:
    """CIFAR-10 under ``data_dir`` with the tutorial's pipelines, cropping to ``size``."""
    train, test = load_split(data_dir, "train"), load_split(data_dir, "test")
    return Dataset("cifar10", train, test, (3, size, size), NUM_CLASSES,
                   train_transform=lambda raw, rng: distort(raw, rng, size),
                   eval_transform=lambda raw: eval_inputs(raw, size))


def write_binary(path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images ``(N, 3, 32, 32)`` uint8 and labels as a binary batch file (for tests/tools)."""
    records = np.empty((len(labels), RECORD_BYTES), np.uint8)
    records[:, 0] = labels
    records[:, 1:] = np.asarray(images, np.uint8).reshape(len(labels), -1)
    tmp = f"{path}.tmp{os.getpid()}"
    records.tofile(tmp)
    os.replace(tmp, path)
