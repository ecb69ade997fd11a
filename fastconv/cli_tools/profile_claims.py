"""The chapter's claims that are about counting, memory and structure, each measured.

Edge detection's operation count against a dense layer, im2col's memory
blow-up, receptive-field growth through a stack, and max pooling's
invariance to one-pixel shifts.  Each function returns a
:class:`~fastconv.cli_tools.claim.Claim` whose verdict is computed from what
was measured here.  (The growth-rate claims are in ``profile_scaling``.)
"""
from __future__ import annotations

import math
import tracemalloc

import numpy as np

from .. import _config, backends, dispatch, nn
from ..problem import make_problem
from .claim import FAIL, PASS, SKIP, Claim
from .common import cpu_time, fmt_bytes, fmt_count, fmt_seconds
from .imageio import sample_photo

#: the chapter's numbers for the 280 x 320 edge detection
CHAPTER_EDGE_OPS = 267_960
CHAPTER_DENSE_OPS = 16e9
EDGE_IMAGE = (280, 320)
#: correlating with [-1, 1] along the 320-pixel axis: out[i, j] = x[i, j+1] - x[i, j]
EDGE_KERNEL = np.array([[-1.0, 1.0]])


# ----------------------------------------------------------------- edge detection

def conv_ops(problem) -> int:
    """Multiplies plus adds of the direct method: taps multiplies, taps - 1 adds per output."""
    outputs = math.prod(problem.out_shape)
    return problem.macs + outputs * (problem.w_shape[1] * math.prod(problem.kernel) - 1)


def dense_matrix(shape, kernel=EDGE_KERNEL) -> np.ndarray:
    """The dense layer that maps the flattened image to the flattened 'valid' correlation."""
    rows, cols = shape
    kr, kc = kernel.shape
    out_r, out_c = rows - kr + 1, cols - kc + 1
    matrix = np.zeros((out_r * out_c, rows * cols))
    r, c = np.meshgrid(np.arange(out_r), np.arange(out_c), indexing="ij")
    out_index = (r * out_c + c).ravel()
    for (dr, dc), weight in np.ndenumerate(kernel):
        matrix[out_index, ((r + dr) * cols + c + dc).ravel()] = weight
    return matrix


def _correlate_valid(image, kernel):
    problem = make_problem((1, 1) + image.shape, (1, 1) + kernel.shape, "float64")
    x, w = image.reshape(problem.x_shape), kernel.reshape(problem.w_shape)
    return problem, (lambda: dispatch.correlate(x, w, problem)), x, w


def claim_edge(preset, tick) -> Claim:
    """267,960 operations for the edge map, ~16 billion for a dense layer doing the same."""
    photo = sample_photo(EDGE_IMAGE)
    problem, run, x, w = _correlate_valid(photo, EDGE_KERNEL)
    edges = run()[0, 0]
    ops = conv_ops(problem)
    dense_ops = 2 * math.prod(problem.out_spatial) * photo.size  # a multiply and an add per entry
    conv_seconds = cpu_time(run, preset.budget)
    chosen = dispatch.choose(problem, x, w).name
    tick()
    small = sample_photo(preset.dense_shape)
    matrix = dense_matrix(small.shape)
    _, run_small, *_ = _correlate_valid(small, EDGE_KERNEL)
    same = bool(np.allclose(matrix @ small.ravel(), run_small().ravel(), rtol=0, atol=1e-12))
    flat = small.ravel()
    dense_small_seconds = cpu_time(lambda: matrix @ flat, preset.budget)
    dense_small_ops = 2 * matrix.size
    dense_seconds = dense_small_seconds * dense_ops / dense_small_ops
    tick()
    counts_ok = (ops == CHAPTER_EDGE_OPS
                 and abs(dense_ops - CHAPTER_DENSE_OPS) <= 0.01 * CHAPTER_DENSE_OPS)
    full_matrix_bytes = math.prod(problem.out_spatial) * photo.size * 8
    return Claim(
        key="edge", title="Edge detection: convolution vs dense layer",
        claim="Vertical-neighbour difference on a 280x320 image takes 267,960 operations; a "
              "fully connected layer would take 16 billion.",
        counted=f"{fmt_count(ops)} ops (280x319 outputs x 2 multiplies + 1 add); dense "
                f"{dense_ops / 1e9:.2f} billion ({fmt_count(dense_ops)})",
        measured=f"conv {fmt_seconds(conv_seconds)} ({chosen}); dense "
                 f"~{fmt_seconds(dense_seconds)} extrapolated from {preset.dense_shape[0]}x"
                 f"{preset.dense_shape[1]}: {dense_seconds / conv_seconds:,.0f}x slower",
        verdict=PASS if counts_ok and same else FAIL,
        criterion="counted operations equal the chapter's 267,960 exactly and the dense count "
                  "is within 1% of 16 billion; the dense matrix reproduces the convolution",
        detail=(f"The output is {problem.out_spatial[0]}x{problem.out_spatial[1]} (the "
                f"difference runs along the 320-pixel axis, as the chapter's count implies). "
                f"The dense layer mapping the same input to the same output is a "
                f"{math.prod(problem.out_spatial):,} x {photo.size:,} matrix "
                f"({fmt_bytes(full_matrix_bytes)} in float64), which does not fit here, so it "
                f"was built and timed for a {preset.dense_shape[0]}x{preset.dense_shape[1]} "
                f"image ({matrix.shape[0]:,} x {matrix.shape[1]:,}, {fmt_bytes(matrix.nbytes)}): "
                f"{fmt_seconds(dense_small_seconds)} for {dense_small_ops:,} operations "
                f"({dense_small_ops / dense_small_seconds / 1e9:.2f} Gop/s), giving the "
                f"extrapolated {fmt_seconds(dense_seconds)} at full size (an extrapolation, "
                f"not a measurement). Its product equals the convolution's output: {same}."),
        data={"ops": ops, "chapter_ops": CHAPTER_EDGE_OPS, "dense_ops": dense_ops,
              "conv_seconds": conv_seconds, "backend": chosen,
              "dense_small_shape": list(preset.dense_shape),
              "dense_small_seconds": dense_small_seconds, "dense_small_ops": dense_small_ops,
              "dense_seconds_extrapolated": dense_seconds, "dense_matches_conv": same,
              "image": photo, "edges": edges})


# ----------------------------------------------------------------- im2col memory

#: bookkeeping allocations (array headers, small index tables) the memory claim tolerates
SLACK = 64 * 1024
#: the direct backend's blocked kernel keeps a per-thread schedule of its kernel taps (about
#: 260 bytes a tap in float64): scratch that grows with the kernel, never with the input
DIRECT_TAP_BYTES = 320


def _peak_bytes(call) -> int:
    """Peak bytes allocated (as tracemalloc sees them) while ``call`` ran, after a warm-up.

    The warm-up call keeps one-off allocations (caches, plans, imports) out of the count.
    """
    call()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


def claim_memory(preset, tick) -> Claim:
    """im2col's column matrix holds w^d copies of the input; direct allocates no copy of it."""
    im2col = backends.REGISTRY.get("im2col")
    direct = backends.REGISTRY.get("direct")
    base = dict(key="memory", title="im2col memory blow-up vs direct",
                claim="im2col copies every receptive field: its column matrix is w^d times the "
                      "input, where direct convolution needs no copy of the input.")
    if im2col is None or direct is None:
        return Claim(**base, counted="", measured="", verdict=SKIP,
                     detail=f"needs the im2col and direct backends: {backends.UNAVAILABLE}")
    rng = np.random.default_rng(3)
    rows, ok = [], True
    for d, n, widths in preset.memory:
        x = rng.standard_normal((1, 1) + (n,) * d)
        for width in widths:
            w = rng.standard_normal((1, 1) + (width,) * d)
            p = make_problem(x.shape, w.shape, "float64", padding=width // 2)
            out = np.empty(p.out_shape)
            columns = _peak_bytes(lambda: im2col.im2col(x, p))
            scratch = _peak_bytes(lambda: im2col.correlate(x, w, p, out=out))
            direct_extra = _peak_bytes(lambda: direct.correlate(x, w, p, out=out))
            ratio = columns / x.nbytes
            expected = width ** d * x.nbytes
            schedule = _config.get_num_threads() * DIRECT_TAP_BYTES * width ** d
            ok &= abs(columns - expected) <= 0.02 * expected + SLACK \
                and direct_extra <= SLACK + schedule
            rows.append({"d": d, "n": n, "w": width, "input_bytes": x.nbytes,
                         "columns_bytes": columns, "ratio": ratio, "expected": width ** d,
                         "im2col_scratch_bytes": scratch, "direct_extra_bytes": direct_extra})
        tick()
    worst = max(rows, key=lambda r: r["ratio"])
    return Claim(
        **base,
        counted="column matrix = C * w^d * (output positions) elements; direct: a schedule of "
                "the kernel's taps per thread",
        measured=f"ratio columns/input = w^d on {len(rows)} problems (up to "
                 f"{worst['ratio']:.0f}x = {fmt_bytes(worst['columns_bytes'])} for a "
                 f"{fmt_bytes(worst['input_bytes'])} input); direct peak extra "
                 f"{fmt_bytes(max(r['direct_extra_bytes'] for r in rows))}",
        verdict=PASS if ok else FAIL,
        criterion="measured column bytes within 2% of w^d x the input bytes, and direct's "
                  f"extra allocation within its per-thread schedule ({DIRECT_TAP_BYTES} bytes a "
                  "kernel tap, whatever the input size), both up to 64 KiB of bookkeeping "
                  "(array headers, index tables)",
        detail="Peak allocations traced with tracemalloc around one call each, after a "
               "warm-up call. fastconv's im2col backend does not hold the whole matrix: it "
               "fills and multiplies it block by block within a scratch budget (at most the "
               f"workspace cap, {fmt_bytes(_config.get_workspace_bytes())}, "
               "FASTCONV_WORKSPACE_MB), so its peak scratch levels off while the matrix the "
               "method needs grows as w^d: "
               + ", ".join(f"w={r['w']} (d={r['d']}): {fmt_bytes(r['im2col_scratch_bytes'])}"
                           for r in rows[-3:]) + ".",
        data={"rows": rows})


# ----------------------------------------------------------------- receptive field

STACKS = {
    "conv3 x 6": [("conv", 3, 1)] * 6,
    "conv3, conv3, pool2 (x 3)": [("conv", 3, 1), ("conv", 3, 1), ("pool", 2, 2)] * 3,
}


def receptive_fields(layers) -> list:
    """Receptive field size after each layer: r += (k - 1) * jump, jump *= stride."""
    size, jump, sizes = 1, 1, []
    for _, k, s in layers:
        size += (k - 1) * jump
        jump *= s
        sizes.append(size)
    return sizes


def impulse_fields(layers, length: int) -> list:
    """Receptive field of the centre unit of each layer, found by pushing impulses through.

    A batch of ``length`` inputs, each one impulse, goes through the stack
    (all-ones kernels, max pooling); the inputs that reach a layer's centre
    unit are the ones whose impulse leaves it non-zero.
    """
    x = np.eye(length)[:, None, :]  # (batch = impulse position, channel, length)
    sizes = []
    for kind, k, s in layers:
        if kind == "conv":
            x = nn.conv1d(x, np.ones((1, 1, k)))
        else:
            x = nn.max_pool1d(x, k, s)
        sizes.append(int(np.count_nonzero(x[:, 0, x.shape[-1] // 2])))
    return sizes


def claim_receptive_field(preset, tick) -> Claim:
    """Receptive fields grow through depth, faster with pooling; checked by impulses."""
    results, ok = {}, True
    for name, layers in STACKS.items():
        formula = receptive_fields(layers)
        impulse = impulse_fields(layers, length=4 * formula[-1] + 8)
        ok &= formula == impulse
        results[name] = {"layers": [f"{kind}{k}/{s}" for kind, k, s in layers],
                         "formula": formula, "impulse": impulse}
    tick()
    plain, pooled = (results[name] for name in STACKS)
    return Claim(
        key="receptive_field", title="Receptive field in a deeper network",
        claim="Connections are local, but deeper units see (indirectly) most of the input; "
              "pooling makes the receptive field grow faster.",
        counted=f"r_l = r_(l-1) + (k_l - 1) * jump_(l-1): {plain['formula'][-1]} inputs after "
                f"6 conv3 layers, {pooled['formula'][-1]} with pooling every third layer",
        measured=f"impulses reaching the centre unit: {plain['impulse']} and "
                 f"{pooled['impulse']}",
        verdict=PASS if ok else FAIL,
        criterion="the impulse count equals the formula at every layer of both stacks",
        detail="Each input position gets an impulse of its own (one batch entry), the batch "
               "goes through the stack (fastconv.nn.conv1d with all-ones kernels, "
               "fastconv.nn.max_pool1d), and the centre unit's receptive field is the set of "
               "impulses that reach it.",
        data=results)


# ----------------------------------------------------------------- pooling invariance

def _unchanged(a, b) -> float:
    scale = max(float(np.abs(a).max()), 1e-300)
    return float(np.mean(np.isclose(a, b, rtol=1e-9, atol=1e-12 * scale)))


def shift_fractions(image) -> dict:
    """Fraction of detector / pooled outputs unchanged when the image moves one pixel right."""
    shifted = np.empty_like(image)
    shifted[:, 1:], shifted[:, 0] = image[:, :-1], image[:, 0]
    maps = []
    for picture in (image, shifted):
        detector = np.maximum(nn.conv2d(picture[None, None], EDGE_KERNEL[None, None]), 0)
        maps.append(detector)
    skip = 4  # columns next to the left border see the padding column, not the shift
    fractions = {"detector (no pooling)": _unchanged(*(m[..., skip:] for m in maps))}
    for k, s in ((3, 1), (2, 2), (4, 4)):
        pooled = [nn.max_pool2d(m, k, s)[..., skip // s:] for m in maps]
        fractions[f"max pool {k}x{k}, stride {s}"] = _unchanged(*pooled)
    return fractions


def claim_pooling(preset, tick) -> Claim:
    """Max pooling makes the detector output invariant to small shifts."""
    photo = sample_photo(preset.pooling_shape)
    noise = np.random.default_rng(4).random(preset.pooling_shape)
    results = {"photo": shift_fractions(photo), "noise": shift_fractions(noise)}
    tick()
    ok = all(min(v for k, v in r.items() if k.startswith("max")) > r["detector (no pooling)"]
             for r in results.values())
    p = results["photo"]
    return Claim(
        key="pooling", title="Max pooling and one-pixel shifts",
        claim="When the input moves by a pixel, the max-pooled output stays mostly the same "
              "while the detector output below it changes.",
        counted="fraction of outputs whose value is unchanged after a 1-pixel shift",
        measured=", ".join(f"{k}: {v:.0%}" for k, v in p.items()) + " (photo)",
        verdict=PASS if ok else FAIL,
        criterion="every pooling keeps more outputs unchanged than the unpooled detector, on "
                  "the photograph and on white noise",
        detail=f"Detector: ReLU of the edge claim's neighbour difference on the "
               f"{preset.pooling_shape[0]}x{preset.pooling_shape[1]} photograph; the image is "
               "shifted one pixel to the right and each map is compared position by position "
               "(a value counts as unchanged within 1e-9 relative). The same on white noise: "
               + ", ".join(f"{k}: {v:.0%}" for k, v in results["noise"].items()) + ".",
        data=results)
