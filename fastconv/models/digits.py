"""scikit-learn's bundled 8x8 handwritten digits, for the same network (no download).

1,797 grey 8x8 images of the digits 0-9 (values 0..16) ship inside
scikit-learn.  The adaptation of the tutorial network is only its input:
``Architecture(input_shape=(1, 8, 8))`` (8 -> 4 -> 2 through the two SAME
poolings, so local3 sees 2x2x64 = 256 features); layers, initialisation, loss
and optimiser are unchanged.  Training input is the tutorial's per-image
standardisation after a random shift of up to one pixel (the 8x8 analogue of
its random crop); evaluation input is standardised only.
"""
from __future__ import annotations

import numpy as np

from .cifar10 import Architecture
from .cifar_data import per_image_standardization
from .data import Dataset, Split

ARCHITECTURE = Architecture(input_shape=(1, 8, 8))


def _require_sklearn():
    try:
        from sklearn import datasets, model_selection
    except ImportError as exc:
        raise ImportError("the digits data ship with scikit-learn: pip install scikit-learn") \
            from exc
    return datasets, model_selection


def shift(images: np.ndarray, rng: np.random.Generator, most: int = 1) -> np.ndarray:
    """Each image moved by up to ``most`` pixels in y and x, the uncovered border zero."""
    n, c, h, w = images.shape
    padded = np.zeros((n, c, h + 2 * most, w + 2 * most), images.dtype)
    padded[:, :, most:most + h, most:most + w] = images
    dy = rng.integers(0, 2 * most + 1, n)
    dx = rng.integers(0, 2 * most + 1, n)
    return np.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(n)])


def load(test_fraction: float = 0.25, seed: int = 0, augment: bool = True) -> Dataset:
    """The digits, split into stratified training and test sets.

    Examples
    --------
    >>> data = load()                     # doctest: +SKIP
    >>> len(data.train), len(data.test)   # doctest: +SKIP
    (1347, 450)
    """
    datasets, model_selection = _require_sklearn()
    bunch = datasets.load_digits()
    images = bunch.images.astype(np.float32)[:, np.newaxis]   # (N, 1, 8, 8), 0..16
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = model_selection.train_test_split(
        images, labels, test_size=test_fraction, random_state=seed, stratify=labels)

    def train_transform(raw, rng):
        return per_image_standardization(shift(raw, rng) if augment else raw)

    return Dataset("digits", Split(x_train, y_train), Split(x_test, y_test), (1, 8, 8), 10,
                   train_transform=train_transform, eval_transform=per_image_standardization)
