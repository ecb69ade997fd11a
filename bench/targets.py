"""The engine issue's performance targets, evaluated on measured medians."""
from __future__ import annotations


def _row(name, value, goal, ok):
    return f"| {name} | {value} | {goal} | {'met' if ok else 'NOT met'} |"


def engine_targets(groups: dict) -> list[str]:
    """Markdown rows: each target, the measured ratio, and whether it is met."""
    rows = ["| target | measured | goal | verdict |", "|---|---|---|---|"]
    for group in sorted(g for g in groups if g.startswith("image2048 k=")):
        e = groups[group]
        if "fastconv_auto" not in e:
            continue
        auto = e["fastconv_auto"]
        if "scipy_auto" in e:
            r = e["scipy_auto"] / auto
            rows.append(_row(f"{group}: scipy.signal.convolve auto / fastconv", f"{r:.1f}x", ">= 10x", r >= 10))
        if "opencv_filter2d" in e:
            r = e["opencv_filter2d"] / auto
            rows.append(_row(f"{group}: OpenCV filter2D / fastconv", f"{r:.2f}x", ">= 1.0x", r >= 1.0))
    e = groups.get("image2048 gaussian31", {})
    if "fastconv_auto" in e and "opencv_sepfilter" in e:
        r = e["fastconv_auto"] / e["opencv_sepfilter"]
        rows.append(_row("Gaussian 31x31: fastconv / OpenCV sepFilter2D", f"{r:.2f}x", "<= 1.2x", r <= 1.2))
    e = groups.get("image2048 k=65", {})
    if "fastconv_fft" in e and "scipy_fftconvolve" in e:
        r = e["scipy_fftconvolve"] / e["fastconv_fft"]
        rows.append(_row("k=65: scipy.signal.fftconvolve / fastconv fft", f"{r:.2f}x", ">= 2.5x", r >= 2.5))
    for group in sorted(g for g in groups if g.startswith("signal1e6")):
        e = groups[group]
        if "fastconv_auto" not in e:
            continue
        peers = {k: v for k, v in e.items() if k in ("numpy_convolve", "scipy_oaconvolve")}
        if peers:
            best = min(peers.values())
            r = best / e["fastconv_auto"]
            rows.append(_row(f"{group}: fastest of numpy.convolve/oaconvolve / fastconv", f"{r:.2f}x",
                             ">= 1.0x", r >= 1.0))
    for group in sorted(g for g in groups if g.startswith("volume128")):
        e = groups[group]
        if "fastconv_auto" in e and "scipy_auto" in e:
            r = e["scipy_auto"] / e["fastconv_auto"]
            rows.append(_row(f"{group}: scipy.signal.convolve auto / fastconv", f"{r:.1f}x", ">= 5x", r >= 5))
    regrets = []
    for group, e in groups.items():
        ours = [v for k, v in e.items() if k.startswith("fastconv_") and k != "fastconv_auto"]
        if "fastconv_auto" in e and len(ours) >= 2:
            regrets.append(e["fastconv_auto"] / min(ours))
    if regrets:
        share = sum(r <= 1.2 for r in regrets) / len(regrets)
        rows.append(_row("dispatcher: share of problems where auto is within 1.2x of the fastest backend",
                         f"{share * 100:.0f}% of {len(regrets)}", ">= 90%", share >= 0.9))
        rows.append(_row("dispatcher: worst auto / fastest backend", f"{max(regrets):.2f}x", "<= 2x",
                         max(regrets) <= 2))
    return rows


def layer_targets(groups: dict, flops: dict) -> list[str]:
    """Rows for the network-layer targets: torch / fastconv, GFLOP/s, share of matmul rate."""
    rows = ["| layer | torch / fastconv | goal | verdict | fastconv GFLOP/s | share of numpy matmul rate |",
            "|---|---|---|---|---|---|"]
    matmul = groups.get("numpy float32 matmul 2048", {}).get("numpy_matmul")
    rate = flops.get("numpy float32 matmul 2048", 0) / matmul if matmul else None
    for group in sorted(groups):
        e = groups[group]
        if "torch" not in e or "fastconv_auto" not in e:
            continue
        ratio = e["torch"] / e["fastconv_auto"]
        goal = 0.7 if "conv" in group or "resnet" in group else 1.0
        gflops = flops.get(group, 0) / e["fastconv_auto"] / 1e9 if flops.get(group) else None
        share = f"{gflops * 1e9 / rate:.2f}" if gflops and rate else ""
        rows.append(f"| {group} | {ratio:.2f}x | >= {goal}x | {'met' if ratio >= goal else 'NOT met'} | "
                    f"{'' if gflops is None else f'{gflops:.0f}'} | {share} |")
    if rate:
        rows.append(f"| numpy float32 matmul 2048 (reference rate) | | | | {rate / 1e9:.0f} | 1.00 |")
    return rows
