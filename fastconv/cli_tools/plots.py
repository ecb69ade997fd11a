"""The PNG figures of ``fastconv profile`` and ``fastconv bench``.

matplotlib is imported only here, only when a figure is drawn, and through
its object API (``Figure`` + the Agg canvas), so no global pyplot state or
display is involved.  Every axis says what it holds and in which unit.
"""
from __future__ import annotations

import math

import numpy as np

_COLOURS = {"direct": "tab:blue", "im2col": "tab:orange", "fft": "tab:green",
            "separable": "tab:red", "reference": "tab:gray", "cuda": "tab:purple"}
_TIME_LABEL = "CPU time per call, least of repeats (s)"
_WIDTH_LABEL = "kernel width w (samples per axis)"


def _figure(ncols: int, width: float = 5.0, height: float = 4.0, nrows: int = 1):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes.ravel()


def _save(fig, path) -> str:
    fig.savefig(path, dpi=110)
    return str(path)


def _log_axis_at(ax, values, axis="x"):
    """Log axis ticked at ``values`` themselves, as plain numbers (no 3x10^0 clutter)."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator
    target = ax.xaxis if axis == "x" else ax.yaxis
    ticks = []
    for v in sorted(set(values)):  # keep ticks at least a factor 1.8 apart
        if not ticks or v >= 1.8 * ticks[-1]:
            ticks.append(v)
    target.set_major_locator(FixedLocator(ticks))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_locator(NullLocator())


def _points(xs, ys):
    pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def _fit_line(ax, xs, slope, intercept, colour, label):
    if not math.isfinite(slope) or not xs:
        return
    grid = np.geomspace(min(xs), max(xs), 50)
    ax.plot(grid, np.exp(intercept) * grid ** slope, "--", color=colour, lw=1, label=label)


def plot_scaling(sweeps, fits: dict, path) -> str:
    """Time against kernel width for every backend, one panel per d, direct's fit dashed."""
    fig, axes = _figure(len(sweeps))
    for ax, s in zip(axes, sweeps):
        for name, times in s["times"].items():
            xs, ys = _points(s["widths"], times)
            if xs:
                ax.plot(xs, ys, "o-", color=_COLOURS.get(name), label=name, ms=4)
        slope, intercept = fits.get(s["d"], (math.nan, math.nan))
        xs = [w for w in s["widths"] if w >= s["fit_from"]]
        _fit_line(ax, xs, slope, intercept, "black",
                  f"direct fit: w^{slope:.2f} (expect w^{s['d']})")
        shape = "x".join([str(s["n"])] * s["d"])
        ax.set(xscale="log", yscale="log", xlabel=_WIDTH_LABEL, ylabel=_TIME_LABEL,
               title=f"d = {s['d']}: input {shape}, 'same' output")
        _log_axis_at(ax, s["widths"])
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Direct is O(w^d); FFT and separable overtake it as w grows")
    return _save(fig, path)


def plot_fft(fixed, sizes, slope_nlogn, path) -> str:
    """FFT time against w at a fixed transform size, and against the signal length."""
    fig, axes = _figure(2)
    ax = axes[0]
    for s in fixed:
        for name, style in (("fft", "o-"), ("direct", "s:")):
            xs, ys = _points(s["widths"], s["times"][name])
            if xs:
                shape = "x".join([str(s["size"])] * s["d"])
                ax.plot(xs, ys, style, label=f"{name}, d={s['d']}, padded {shape}", ms=4)
    ax.set(xscale="log", yscale="log", xlabel=_WIDTH_LABEL, ylabel=_TIME_LABEL,
           title="fixed padded ('full') size: FFT flat in w")
    _log_axis_at(ax, [w for s in fixed for w in s["widths"]])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    xs, ys = _points(sizes["sizes"], sizes["times"])
    ax.plot(xs, ys, "o-", color=_COLOURS["fft"], label=f"fft, kernel width {sizes['width']}")
    if xs:
        nlogn = np.array([n * math.log2(n) for n in xs])
        scale = np.exp(np.mean(np.log(np.array(ys) / nlogn)))
        ax.plot(xs, scale * nlogn, "k--", lw=1,
                label=f"c * n log2 n (fitted exponent on it: {slope_nlogn:.2f})")
    ax.set(xscale="log", yscale="log", xlabel="signal length n (samples)", ylabel=_TIME_LABEL,
           title="1-D FFT convolution against signal length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_separable(sep, fits: dict, path) -> str:
    """Separable against the other backends on rank-one kernels of growing width."""
    fig, axes = _figure(1, width=6.0)
    ax = axes[0]
    for name, times in sep["times"].items():
        xs, ys = _points(sep["widths"], times)
        if xs:
            ax.plot(xs, ys, "o-", color=_COLOURS.get(name), label=name, ms=4)
    for name, colour in (("separable", "black"), ("direct", "gray")):
        slope, intercept = fits.get(name, (math.nan, math.nan))
        xs = [w for w, t in zip(sep["widths"], sep["times"][name]) if t and w >= sep["fit_from"]]
        _fit_line(ax, xs, slope, intercept, colour, f"{name} fit: w^{slope:.2f}")
    ax.set(xscale="log", yscale="log", xlabel=_WIDTH_LABEL, ylabel=_TIME_LABEL,
           title=f"rank-one kernels on a {sep['n']}x{sep['n']} image: separable is O(d w)")
    _log_axis_at(ax, sep["widths"])
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_memory(rows, path) -> str:
    """Column-matrix bytes against w^d, im2col's actual scratch, and direct's (none)."""
    fig, axes = _figure(1, width=6.0)
    ax = axes[0]
    rows = sorted(rows, key=lambda r: r["expected"])
    taps = [r["expected"] for r in rows]
    series = (("columns_bytes", "o-", "im2col column matrix (whole)"),
              ("im2col_scratch_bytes", "^:", "fastconv im2col backend, peak scratch"),
              ("direct_extra_bytes", "s--", "direct backend, peak scratch"))
    for key, style, label in series:
        ax.plot(taps, [r[key] / r["input_bytes"] for r in rows], style, label=label, ms=5)
    reference = np.geomspace(1, taps[-1], 100)  # dense: the y axis is symlog, not log
    ax.plot(reference, reference, "k-", lw=0.8, alpha=0.5, label="w^d x input")
    dims = ", ".join(str(d) for d in sorted({r["d"] for r in rows}))
    ax.set_yscale("symlog", linthresh=0.1)  # linear near 0, where direct's scratch sits
    ax.set(xscale="log", xlabel="kernel taps w^d",
           ylabel="peak scratch memory / input size (x)",
           title=f"memory beyond input and output (d = {dims})")
    _log_axis_at(ax, taps)
    ax.set_ylim(bottom=0)
    ax.tick_params(axis="x", labelsize=7)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_edge(data, path) -> str:
    """The photograph, its edge map and the two operation counts."""
    fig, axes = _figure(3, width=4.2, height=3.6)
    axes[0].imshow(data["image"], cmap="gray")
    axes[0].set(title=f"input {data['image'].shape[0]}x{data['image'].shape[1]}",
                xlabel="column (pixel)", ylabel="row (pixel)")
    edges = data["edges"]
    limit = np.percentile(np.abs(edges), 99) or 1.0
    im = axes[1].imshow(edges, cmap="RdBu_r", vmin=-limit, vmax=limit)
    axes[1].set(title=f"x[i, j+1] - x[i, j]: {edges.shape[0]}x{edges.shape[1]}",
                xlabel="column (pixel)", ylabel="row (pixel)")
    fig.colorbar(im, ax=axes[1], shrink=0.8, label="difference (grey levels)")
    ax = axes[2]
    bars = ax.bar(["convolution", "dense layer"], [data["ops"], data["dense_ops"]],
                  color=["tab:blue", "tab:gray"])
    ax.set_yscale("log")
    ax.set(ylabel="floating-point operations", title="operations for the same output")
    for bar, value in zip(bars, (data["ops"], data["dense_ops"])):
        ax.annotate(f"{value:,.0f}" if value < 1e9 else f"{value / 1e9:.1f} billion",
                    (bar.get_x() + bar.get_width() / 2, value), ha="center", va="bottom",
                    fontsize=8)
    return _save(fig, path)


def plot_receptive_field(results, path) -> str:
    """Receptive field size against depth: the formula (lines) and the impulses (markers)."""
    fig, axes = _figure(1, width=6.0)
    ax = axes[0]
    for (name, r), colour in zip(results.items(), ("tab:blue", "tab:red")):
        depth = range(1, len(r["formula"]) + 1)
        ax.plot(depth, r["formula"], "-", color=colour, label=f"{name}: formula")
        ax.plot(depth, r["impulse"], "o", color=colour, mfc="none", ms=8,
                label=f"{name}: impulses reaching the centre unit")
    ax.set(xlabel="layer depth", ylabel="receptive field (input samples)",
           title="receptive field in a deeper network")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_pooling(results, path) -> str:
    """Fraction of outputs unchanged by a one-pixel shift, per stage, photo and noise."""
    fig, axes = _figure(1, width=7.0)
    ax = axes[0]
    labels = list(next(iter(results.values())))
    x = np.arange(len(labels))
    width = 0.8 / len(results)
    for i, (name, fractions) in enumerate(results.items()):
        ax.bar(x + i * width - 0.4 + width / 2, [100 * fractions[k] for k in labels], width,
               label=name)
    ax.set_xticks(x, labels, fontsize=8)
    ax.set(ylabel="outputs unchanged by a 1-pixel shift (%)", ylim=(0, 100),
           title="max pooling makes the output invariant to small shifts")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_bench(rows, path) -> str:
    """Peer time / fastconv time per problem, as horizontal bars (log scale)."""
    labels = [f"{r['problem']}: {r['peer']}" for r in rows]
    ratios = [r["ratio"] for r in rows]
    fig, axes = _figure(1, width=7.5, height=0.28 * len(rows) + 1.5)
    ax = axes[0]
    colours = ["tab:green" if v >= 1 else "tab:red" for v in ratios]
    # bars grow from 1 (parity) towards the ratio, so a peer that wins points left
    ax.barh(range(len(rows)), [v - 1 for v in ratios], left=1, color=colours)
    from matplotlib.patches import Patch
    ax.legend(handles=[Patch(color="tab:green", label="fastconv faster"),
                       Patch(color="tab:red", label="peer faster")], fontsize=8)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_yticks(range(len(rows)), labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="peer time / fastconv time (above 1: fastconv faster)",
           title="fastconv against its peers (medians, same run)")
    ax.grid(True, axis="x", which="both", alpha=0.3)
    return _save(fig, path)
