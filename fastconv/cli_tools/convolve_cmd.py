"""``fastconv convolve IN KERNEL -o OUT``: one convolution from the command line.

``IN`` and ``KERNEL`` are .npy arrays, text tables or images; ``KERNEL`` may
also be a named kernel.  A colour image with a 2-D kernel is filtered channel
by channel.  ``--explain`` prints the dispatcher's reasoning.
"""
from __future__ import annotations

import re
import time
from pathlib import Path

import numpy as np

from .common import CLIError, fmt_seconds, print_json
from .imageio import load_array, save_array

_NAMED = {
    # correlation kernels as written; the command flips them for a convolution
    "edge": [[-1.0, 1.0]],                # the chapter's neighbour difference, along columns
    "edge-v": [[-1.0], [1.0]],            # the same along rows
    "sobel-x": [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
    "sobel-y": [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]],
    "laplace": [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]],
}
_PARAMETRIC = re.compile(r"^(box|gauss):([0-9.]+)$")
KERNEL_NAMES = tuple(_NAMED) + ("box:N", "gauss:SIGMA")


def named_kernel(spec: str):
    """The 2-D kernel called ``spec`` (see KERNEL_NAMES), or None if it names none."""
    if spec in _NAMED:
        return np.array(_NAMED[spec])
    match = _PARAMETRIC.match(spec)
    if not match:
        return None
    kind, value = match.group(1), float(match.group(2))
    if kind == "box":
        if value < 1 or value != int(value):
            raise CLIError(f"box:N needs a positive integer width, got {spec!r}")
        return np.full((int(value), int(value)), 1.0 / value ** 2)
    if value <= 0:
        raise CLIError(f"gauss:SIGMA needs a positive sigma, got {spec!r}")
    radius = max(1, int(np.ceil(3 * value)))
    g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / value) ** 2)
    return np.outer(g, g) / g.sum() ** 2


def load_kernel(spec: str) -> np.ndarray:
    kernel = named_kernel(spec)
    if kernel is not None:
        return kernel
    if not Path(spec).exists() and not Path(spec).suffix:
        raise CLIError(f"KERNEL {spec!r} is neither a file nor a kernel name "
                       f"({', '.join(KERNEL_NAMES)})")
    return load_array(spec, gray=True)


def _is_colour(volume, kernel) -> bool:
    return volume.ndim == 3 and kernel.ndim == 2 and volume.shape[-1] in (3, 4)


def compute(volume, kernel, mode, method, correlate):
    """The convolution (or correlation), channel by channel for a colour image."""
    import fastconv
    op = fastconv.correlate if correlate else fastconv.convolve
    if _is_colour(volume, kernel):
        return np.stack([op(volume[..., c], kernel, mode, method)
                         for c in range(volume.shape[-1])], axis=-1)
    return op(volume, kernel, mode, method)


def plan(volume, kernel, mode, method, correlate):
    """The dispatcher's choice for :func:`compute` (for one channel of a colour image)."""
    import fastconv
    if correlate:  # correlate(a, k) = convolve(a, conj(flipped k))
        kernel = np.conj(kernel[(slice(None, None, -1),) * kernel.ndim])
    if _is_colour(volume, kernel):
        volume = volume[..., 0]
    return fastconv.explain(volume, kernel, mode, method)


def run(args) -> int:
    if not args.output and not args.explain:
        raise CLIError("give an output file with -o OUT (or --explain to only see the plan)")
    if args.output and Path(args.output).suffix.lower() not in (".npy", ".png", ".txt", ".csv",
                                                               ".tif", ".tiff", ".bmp", ".jpg",
                                                               ".jpeg"):
        raise CLIError(f"cannot tell the format of {args.output!r} from its extension; "
                       "use .npy or .png")
    volume = load_array(args.input, gray=args.gray)
    kernel = load_kernel(args.kernel)
    if volume.ndim == 3 and kernel.ndim == 2 and not _is_colour(volume, kernel):
        raise CLIError(f"IN has shape {volume.shape} and KERNEL {kernel.shape}: they need the "
                       "same number of dimensions")
    choice = plan(volume, kernel, args.mode, args.method, args.correlate)
    start = time.perf_counter()
    result = compute(volume, kernel, args.mode, args.method, args.correlate)
    seconds = time.perf_counter() - start
    if args.output:
        save_array(args.output, result, args.scale)
    if args.json:
        print_json({"input": args.input, "input_shape": volume.shape, "kernel": args.kernel,
                    "kernel_shape": kernel.shape, "mode": args.mode, "output": args.output,
                    "output_shape": result.shape, "dtype": str(result.dtype),
                    "method": choice.name, "rule": choice.rule, "seconds": seconds,
                    "candidates": [{"name": n, "estimated_seconds": s}
                                   for n, s in choice.candidates]})
        return 0
    if args.explain:
        print(choice)
    if args.output:
        print(f"wrote {args.output}: {'x'.join(map(str, result.shape))} {result.dtype}, "
              f"{choice.name}, {fmt_seconds(seconds)}")
    return 0
