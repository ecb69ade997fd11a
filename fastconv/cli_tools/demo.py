"""``fastconv demo``: the chapter's pipeline on a real photograph, as one labelled PNG.

Edge detection (the neighbour difference), a bank of the chapter's Gabor
functions applied as one multi-channel convolution, a detector stage (the
response's magnitude) and max pooling: convolution, detector, pooling, the
layout of a convolutional network's layer.  The photograph is matplotlib's
sample of Grace Hopper, installed with matplotlib, so no network is needed.
"""
from __future__ import annotations

import math
import time

import numpy as np

from .common import fmt_seconds, print_json
from .imageio import load_image, sample_photo

POOL = 4  # max-pooling window and stride


def _timed(call):
    """``(result, seconds)``; the time is of a second, warm call (the first loads JIT code)."""
    result = call()
    start = time.perf_counter()
    call()
    return result, time.perf_counter() - start


def _backend(x_shape, w_shape, padding, x, w) -> str:
    from .. import dispatch
    from ..problem import make_problem
    problem = make_problem(x_shape, w_shape, x.dtype, padding=padding)
    return dispatch.choose(problem, x.reshape(x_shape), w.reshape(w_shape)).name


def pipeline(photo, orientations: int) -> dict:
    """Run every stage on a grey image; return the arrays, timings and backends."""
    import fastconv
    from .. import nn
    from ..gabor import gabor_bank
    edge_kernel = np.array([[-1.0, 1.0]])
    edges, t_edges = _timed(lambda: fastconv.correlate(photo, edge_kernel, "valid"))
    wavelength = max(4.0, round(min(photo.shape) / 60))
    size = int(2 * round(1.2 * wavelength) + 1)
    bank, params = gabor_bank(size, orientations=orientations,
                                       wavelengths=(wavelength,), phases=(0.0, math.pi / 2))
    x = photo[None, None]
    weight = bank[:, None]
    responses, t_gabor = _timed(lambda: nn.conv2d(x, weight, padding="same"))
    # the detector: the local energy of each (even, odd) Gabor pair, orientation by orientation
    energy = np.sqrt(responses[:, 0::2] ** 2 + responses[:, 1::2] ** 2)
    pooled, t_pool = _timed(lambda: nn.max_pool2d(energy, POOL, POOL))
    return {
        "photo": photo, "edges": edges, "bank": bank[0::2], "params": params[0::2],
        "energy": energy[0], "pooled": pooled[0],
        "steps": [
            {"step": "edge detection (neighbour difference, 'valid')", "output": edges.shape,
             "backend": _backend((1, 1) + photo.shape, (1, 1, 1, 2), 0, photo, edge_kernel),
             "seconds": t_edges},
            {"step": f"Gabor bank: {len(bank)} filters {size}x{size} (conv2d, 'same')",
             "output": responses.shape[1:],
             "backend": _backend(x.shape, weight.shape, size // 2, x, weight),
             "seconds": t_gabor},
            {"step": f"max pooling {POOL}x{POOL}, stride {POOL}", "output": pooled.shape[1:],
             "backend": "nn.max_pool2d", "seconds": t_pool}]}


def draw(result, path, source: str) -> str:
    """The labelled grid: photo and edges on top, then per orientation kernel, energy, pooled."""
    from matplotlib.figure import Figure
    n = len(result["bank"])
    cols = max(n, 4)
    fig = Figure(figsize=(3.0 * cols, 11.5), layout="constrained")
    axes = fig.subplots(4, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    steps = result["steps"]
    _image(axes[0, 0], result["photo"], f"input {_shape(result['photo'])}", "gray", pixels=True)
    edges = result["edges"]
    limit = float(np.percentile(np.abs(edges), 99)) or 1.0
    _image(axes[0, 1], edges, f"edges x[i,j+1] - x[i,j]\n{_shape(edges)}, {steps[0]['backend']}, "
           f"{fmt_seconds(steps[0]['seconds'])}", "RdBu_r", vmin=-limit, vmax=limit, pixels=True)
    total = result["energy"].sum(axis=0)
    _image(axes[0, 2], total, f"Gabor energy, all orientations\n{steps[1]['backend']}, "
           f"{fmt_seconds(steps[1]['seconds'])}", "magma", pixels=True)
    pooled_total = result["pooled"].sum(axis=0)
    _image(axes[0, 3], pooled_total, f"max pooled energy, all orientations\n"
           f"{_shape(pooled_total)}, {fmt_seconds(steps[2]['seconds'])}", "magma", pixels=True)
    for i in range(n):
        tau = result["params"][i]["tau"]
        wavelength = 2 * math.pi / result["params"][i]["f"]
        _image(axes[1, i], result["bank"][i], f"Gabor kernel, tau = {math.degrees(tau):.0f} deg\n"
               f"wavelength {wavelength:.0f} px, {_shape(result['bank'][i])}", "RdBu_r")
        _image(axes[2, i], result["energy"][i], f"energy (detector), tau = "
               f"{math.degrees(tau):.0f} deg\n{_shape(result['energy'][i])}", "magma")
        _image(axes[3, i], result["pooled"][i], f"max pool {POOL}x{POOL}/{POOL}, tau = "
               f"{math.degrees(tau):.0f} deg\n{_shape(result['pooled'][i])}", "magma")
    fig.suptitle(f"fastconv demo: convolution -> detector -> pooling\non {source} "
                 f"(axes in pixels; times of a warm call)")
    fig.savefig(path, dpi=90)
    return str(path)


def _shape(a) -> str:
    return "x".join(str(n) for n in a.shape)


def _image(ax, data, title, cmap, pixels=False, **kwargs):
    ax.imshow(data, cmap=cmap, **kwargs)
    ax.set_title(title, fontsize=9)
    if pixels:  # the photo-sized panels keep pixel axes; the small tiles would only clutter
        ax.set_axis_on()
        ax.set_xlabel("column (px)", fontsize=8)
        ax.set_ylabel("row (px)", fontsize=8)
        ax.tick_params(labelsize=7)


def run(args) -> int:
    from .common import CLIError
    if args.image:
        photo, source = load_image(args.image, gray=True), args.image
    else:
        photo, source = sample_photo(), "matplotlib's sample photograph (grace_hopper.jpg)"
    if min(photo.shape) < 16:
        raise CLIError(f"the image is {_shape(photo)} pixels; the demo needs at least 16x16")
    result = pipeline(photo, args.orientations)
    try:
        written = draw(result, args.out, source)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or exc
        raise CLIError(f"cannot write {args.out!r}: {reason}") from None
    if args.json:
        print_json({"image": source, "out": written, "steps": result["steps"]})
        return 0
    for step in result["steps"]:
        print(f"{step['step']:<55} -> {_shape_text(step['output']):<12} "
              f"{step['backend']:<14} {fmt_seconds(step['seconds'])}")
    print(f"wrote {written}")
    return 0


def _shape_text(shape) -> str:
    return "x".join(str(n) for n in shape)
