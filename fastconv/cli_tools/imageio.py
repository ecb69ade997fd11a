"""Reading and writing the command's arrays: .npy through numpy, images through Pillow.

Images are read as float64 in [0, 1] (grey: ``(H, W)``; colour: ``(H, W, 3)``)
and written as 8-bit PNG after a scaling the caller picks.  Every failure to
read or write becomes a :class:`~fastconv.cli_tools.common.CLIError` naming
the file, so the command prints one line.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import CLIError

#: matplotlib's sample photograph, shipped with every matplotlib install
SAMPLE_PHOTO = "grace_hopper.jpg"
_TEXT_SUFFIXES = (".txt", ".csv", ".tsv")


def load_array(path, gray: bool = False) -> np.ndarray:
    """An array from a .npy file, a text table (.txt/.csv) or an image file."""
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise CLIError(f"cannot read {str(path)!r}: no such file")
    if suffix == ".npy":
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CLIError(f"cannot read {str(path)!r} as a .npy array: {exc}") from None
        if array.dtype.kind not in "biufc":
            raise CLIError(f"{str(path)!r} holds {array.dtype} values, not numbers")
        return array
    if suffix in _TEXT_SUFFIXES:
        try:
            return np.loadtxt(path, delimiter="," if suffix == ".csv" else None, ndmin=1)
        except ValueError as exc:
            raise CLIError(f"cannot read {str(path)!r} as a table of numbers: {exc}") from None
    return load_image(path, gray)


_GREY_MODES = ("1", "L", "LA", "I", "I;16", "F")


def load_image(path, gray: bool = False) -> np.ndarray:
    """An image file as float64 in [0, 1]: ``(H, W)`` grey or ``(H, W, 3)`` colour."""
    from PIL import Image, UnidentifiedImageError
    try:
        with Image.open(path) as image:
            image.load()
            wide = image.mode in ("I", "I;16", "F")  # 16-bit or float pixels
            if gray or image.mode in _GREY_MODES:
                data = np.asarray(image.convert("F" if wide else "L"), dtype=np.float64)
                peak = 1.0 if image.mode == "F" else 65535.0 if wide else 255.0
            else:
                data = np.asarray(image.convert("RGB"), dtype=np.float64)
                peak = 255.0
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise CLIError(f"cannot read {str(path)!r} as an image or .npy array: "
                       f"{exc}") from None
    return data / peak


def sample_photo(shape=None) -> np.ndarray:
    """matplotlib's sample photograph (Grace Hopper) as grey float64 in [0, 1].

    With ``shape=(rows, cols)`` it is resized (Lanczos) to cover that shape and
    centre-cropped, keeping its aspect ratio.
    """
    from matplotlib import cbook
    try:
        path = cbook.get_sample_data(SAMPLE_PHOTO, asfileobj=False)
    except (OSError, ValueError) as exc:
        raise CLIError(f"matplotlib's sample photograph {SAMPLE_PHOTO} is missing "
                       f"({exc}); pass an image with --image") from None
    photo = load_image(path, gray=True)
    return photo if shape is None else resize_cover(photo, shape)


def resize_cover(image: np.ndarray, shape) -> np.ndarray:
    """Resize a grey image to cover ``shape`` (keeping aspect), then centre-crop to it."""
    from PIL import Image
    rows, cols = shape
    scale = max(rows / image.shape[0], cols / image.shape[1])
    size = (max(cols, round(image.shape[1] * scale)), max(rows, round(image.shape[0] * scale)))
    resized = np.asarray(Image.fromarray(image.astype(np.float32), mode="F")
                         .resize(size, Image.Resampling.LANCZOS), dtype=np.float64)
    top, left = (resized.shape[0] - rows) // 2, (resized.shape[1] - cols) // 2
    return np.clip(resized[top:top + rows, left:left + cols], 0.0, 1.0)


def to_uint8(values: np.ndarray, scale: str = "auto") -> np.ndarray:
    """Map values to 0-255 grey levels.

    ``clip``: [0, 1] -> [0, 255], clipped.  ``minmax``: min..max -> 0..255.
    ``abs``: |v| / max|v| -> 0..255.  ``auto``: clip when the values lie in
    [0, 1], else minmax.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.dtype.kind == "c" or np.iscomplexobj(values):
        v = np.abs(values)
    finite = v[np.isfinite(v)]
    if scale == "auto":
        inside = finite.size == 0 or (finite.min() >= -1e-9 and finite.max() <= 1 + 1e-9)
        scale = "clip" if inside else "minmax"
    if scale == "abs":
        v = np.abs(v)
        peak = finite.size and np.abs(finite).max()
        v = v / peak if peak else v
    elif scale == "minmax" and finite.size:
        low, high = finite.min(), finite.max()
        v = (v - low) / (high - low) if high > low else np.zeros_like(v)
    return np.round(np.clip(np.nan_to_num(v), 0.0, 1.0) * 255).astype(np.uint8)


def save_array(path, values: np.ndarray, scale: str = "auto") -> None:
    """Write ``values`` to ``path``: raw .npy, or an 8-bit image (PNG...) after scaling."""
    path = Path(path)
    try:
        if path.suffix.lower() == ".npy":
            np.save(path, values)
            return
        if path.suffix.lower() in _TEXT_SUFFIXES:
            if values.ndim > 2:
                raise CLIError(f"cannot write a {values.ndim}-d array as text; use .npy")
            np.savetxt(path, values, delimiter="," if path.suffix.lower() == ".csv" else " ")
            return
        _save_image(path, values, scale)
    except OSError as exc:
        raise CLIError(f"cannot write {str(path)!r}: {exc.strerror or exc}") from None


def _save_image(path, values, scale) -> None:
    from PIL import Image
    is_colour = values.ndim == 3 and values.shape[-1] in (3, 4)
    if values.ndim != 2 and not is_colour:
        raise CLIError(f"cannot write an array of shape {values.shape} as an image "
                       f"(needs (H, W) or (H, W, 3)); use .npy")
    try:
        Image.fromarray(to_uint8(values, scale)).save(path)
    except (KeyError, ValueError) as exc:  # Pillow: unknown extension
        raise CLIError(f"cannot write {str(path)!r}: {exc}; use .png or .npy") from None
