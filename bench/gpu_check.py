"""One-shot check of the CUDA backend on a machine with a GPU.

Run from the repository root, with fastconv (and numba-cuda) already
installed; it installs nothing::

    python bench/gpu_check.py                  # gpu tests, correctness, timings
    python bench/gpu_check.py --no-tests --repeats 10 --out bench/gpu_check.md

1. runs the ``gpu`` tests (tests/test_cuda_gpu.py) in a child pytest;
2. checks the benchmark layers (the chapter's CIFAR-10 conv1/conv2 at batch
   128, two ResNet-style 3x3 layers) on the GPU against the CPU reference:
   forward on a slice of the batch against ``backends.reference`` (float64),
   both gradients against torch's CPU autograd where torch is installed;
3. times forward, gradient for the input and gradient for the kernel on
   device arrays (no transfers; the forward also with NumPy in and out), and
   max pooling and LRN, against torch's CUDA ops (cuDNN) where torch has
   CUDA, with cuDNN's TF32 both allowed (torch's default for convolutions)
   and off (strict float32, the same arithmetic as fastconv);
4. prints a Markdown report naming the GPU (and writes it with ``--out``).

Times are medians of ``--repeats`` runs after a warm-up that includes the
kernels' compilation.
"""
from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastconv.backends import cuda as fc  # noqa: E402
from fastconv.backends import reference  # noqa: E402
from fastconv.problem import make_problem  # noqa: E402

# name, x shape, w shape, padding ('SAME' for the odd kernels here)
LAYERS = [
    ("CIFAR conv1 3->64 24x24 5x5, batch 128", (128, 3, 24, 24), (64, 3, 5, 5), 2),
    ("CIFAR conv2 64->64 12x12 5x5, batch 128", (128, 64, 12, 12), (64, 64, 5, 5), 2),
    ("ResNet 3x3 64->64 56x56, batch 32", (32, 64, 56, 56), (64, 64, 3, 3), 1),
    ("ResNet 3x3 256->256 14x14, batch 16", (16, 256, 14, 14), (256, 256, 3, 3), 1),
]
CHECK_BATCH = 8  # batch items compared with the CPU reference
POOL_SHAPE = (128, 64, 24, 24)  # CIFAR conv1's activations


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def _peer(torch, allow_cpu: bool):
    """(torch, device, synchronise) for the timing peer, or Nones without torch CUDA."""
    if torch is not None and torch.cuda.is_available():
        return torch, "cuda", torch.cuda.synchronize
    if torch is not None and allow_cpu:  # --tiny smoke runs exercise the code on the CPU
        return torch, "cpu", lambda: None
    return None, None, None


def _median_ms(fn, sync, repeats: int) -> float:
    fn()
    sync()  # the warm-up compiles the kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _rel_err(got, want) -> float:
    return float(np.abs(np.asarray(got, np.float64) - want).max() / max(np.abs(want).max(), 1e-30))


def run_tests() -> str:
    cmd = [sys.executable, "-m", "pytest", "-m", "gpu", "-q", "tests/test_cuda_gpu.py"]
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    tail = [line for line in run.stdout.strip().splitlines() if line.strip()]
    summary = tail[-1] if tail else run.stderr.strip()[-500:]
    if run.returncode:
        print(run.stdout[-6000:], run.stderr[-3000:], sep="\n", file=sys.stderr)
    return f"`{' '.join(cmd[2:])}`: {summary} (exit {run.returncode})"


def check_layer(problem, x, w, gy, torch) -> dict:
    """Largest relative errors of the GPU's float32 results on a slice of the batch."""
    sl = slice(0, CHECK_BATCH)
    part = make_problem((min(CHECK_BATCH, x.shape[0]),) + x.shape[1:], w.shape, "float32",
                        padding=problem.padding)
    x, gy = x[sl], gy[sl]
    exact = make_problem(part.x_shape, w.shape, "float64", padding=problem.padding)
    want = reference.correlate(x.astype(np.float64), w.astype(np.float64), exact)
    errors = {"forward": _rel_err(fc.correlate(x, w, part), want)}
    if torch is not None:
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        wt = torch.tensor(w, dtype=torch.float64, requires_grad=True)
        pad = tuple(p[0] for p in problem.padding)
        torch.nn.functional.conv2d(xt, wt, padding=pad).backward(
            torch.tensor(gy, dtype=torch.float64))
        errors["grad input"] = _rel_err(fc.correlate_grad_input(gy, w, part), xt.grad.numpy())
        errors["grad weight"] = _rel_err(fc.correlate_grad_weight(x, gy, part), wt.grad.numpy())
    return errors


def _torch_conv_timers(peer, problem, x, w, gy):
    """op -> callable for the peer's forward and its two gradients (aten's backward op)."""
    torch, device, _ = peer
    xt, wt, gt = (torch.tensor(a, device=device) for a in (x, w, gy))
    pad = [p[0] for p in problem.padding]
    F, aten = torch.nn.functional, torch.ops.aten

    def backward(mask):
        return lambda: aten.convolution_backward(gt, xt, wt, None, [1, 1], pad, [1, 1], False,
                                                 [0, 0], 1, mask)
    return {"forward": lambda: F.conv2d(xt, wt, padding=pad),
            "grad input": backward([True, False, False]),
            "grad weight": backward([False, True, False])}


def time_layer(problem, x, w, gy, peer, repeats: int) -> dict:
    """op -> {'fastconv': ms, 'fastconv host': ms, 'cudnn tf32': ms, 'cudnn fp32': ms}."""
    from numba import cuda
    xd, wd, gd = fc.to_device(x), fc.to_device(w), fc.to_device(gy)
    out = cuda.device_array(problem.out_shape, np.float32)
    ours = {"forward": lambda: fc.correlate(xd, wd, problem, out=out),
            "grad input": lambda: fc.correlate_grad_input(gd, wd, problem),
            "grad weight": lambda: fc.correlate_grad_weight(xd, gd, problem)}
    times = {op: {"fastconv": _median_ms(fn, cuda.synchronize, repeats)} for op, fn in ours.items()}
    times["forward"]["fastconv host"] = _median_ms(lambda: fc.correlate(x, w, problem),
                                                   cuda.synchronize, max(3, repeats // 4))
    if peer[0] is not None:
        torch, _, sync = peer
        timers = _torch_conv_timers(peer, problem, x, w, gy)
        for tf32 in (True, False):
            torch.backends.cudnn.allow_tf32 = tf32
            for op, fn in timers.items():
                times[op]["cudnn tf32" if tf32 else "cudnn fp32"] = _median_ms(fn, sync, repeats)
        torch.backends.cudnn.allow_tf32 = True
    return times


def time_pool_lrn(peer, shape, repeats: int) -> dict:
    from numba import cuda
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    xd = fc.to_device(x)
    out, idx = fc.max_pool(xd, 3, 2, 1)
    g = fc.to_device(np.ones(out.shape, np.float32))
    gl = fc.to_device(np.ones(shape, np.float32))
    ours = {"max pool 3x3/2": lambda: fc.max_pool(xd, 3, 2, 1),
            "max pool backward": lambda: fc.max_pool_backward(g, idx, shape, 3, 2, 1),
            "LRN size 9": lambda: fc.local_response_norm(xd, 9, 1e-3, 0.75, 1.0),
            "LRN backward": lambda: fc.local_response_norm_backward(gl, xd, 9, 1e-3, 0.75, 1.0)}
    times = {op: {"fastconv": _median_ms(fn, cuda.synchronize, repeats)} for op, fn in ours.items()}
    if peer[0] is not None:
        torch, device, sync = peer
        F = torch.nn.functional
        xt = torch.tensor(x, device=device, requires_grad=True)
        pooled = F.max_pool2d(xt, 3, 2, 1)
        lrn_out = F.local_response_norm(xt, 9, 1e-3, 0.75, 1.0)
        gt, glt = torch.ones_like(pooled), torch.ones_like(xt)
        theirs = {
            "max pool 3x3/2": lambda: F.max_pool2d(xt.detach(), 3, 2, 1, return_indices=True),
            "max pool backward": lambda: torch.autograd.grad(pooled, xt, gt, retain_graph=True),
            "LRN size 9": lambda: F.local_response_norm(xt.detach(), 9, 1e-3, 0.75, 1.0),
            "LRN backward": lambda: torch.autograd.grad(lrn_out, xt, glt, retain_graph=True)}
        for op, fn in theirs.items():
            times[op]["torch"] = _median_ms(fn, sync, repeats)
    return times


def _fmt(value, digits=3):
    return "-" if value is None else f"{value:.{digits}f}"


def report(info, tests, conv_rows, pool_times, torch, peer_device, pool_shape) -> str:
    memory = (info["memory_total_bytes"] or 0) / 2**30
    peer = (f"torch {torch.__version__} on {peer_device}" if peer_device
            else "torch with CUDA: not installed, no cuDNN columns")
    lines = [f"## CUDA backend on {info['name']}", "",
             f"compute capability {info['compute_capability']}, {memory:.1f} GiB, "
             f"{info['multiprocessors']} SMs, numba-cuda {info['numba_cuda_version']}, {peer}",
             ""]
    if tests:
        lines += [f"gpu tests: {tests}", ""]
    lines += ["float32, medians in ms on device arrays (forward also with NumPy in/out). "
              "Ratio = fastconv / cuDNN (lower is better; the target is <= 3 on the 5x5 CIFAR "
              "layers). Errors: largest |error| / largest |value| against the float64 CPU "
              f"reference on {CHECK_BATCH} batch items.", "",
              "| layer | op | fastconv | with transfers | cuDNN fp32 | cuDNN tf32 | ratio fp32 "
              "| ratio tf32 | fastconv TFLOP/s | rel. error |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name, problem, times, errors in conv_rows:
        flops = 2 * problem.macs
        for op, t in times.items():
            ours, fp32, tf32 = t["fastconv"], t.get("cudnn fp32"), t.get("cudnn tf32")
            lines.append(
                f"| {name} | {op} | {_fmt(ours)} | {_fmt(t.get('fastconv host'))} | "
                f"{_fmt(fp32)} | {_fmt(tf32)} | {_fmt(fp32 and ours / fp32, 2)} | "
                f"{_fmt(tf32 and ours / tf32, 2)} | {flops / ours / 1e9:.2f} | "
                f"{errors.get(op, float('nan')):.1e} |")
    lines += ["", f"pooling and LRN on {pool_shape} float32 (ms):", "",
              f"| op | fastconv | torch ({peer_device}) | ratio |", "|---|---|---|---|"]
    for op, t in pool_times.items():
        theirs = t.get("torch")
        lines.append(f"| {op} | {_fmt(t['fastconv'])} | {_fmt(theirs)} | "
                     f"{_fmt(theirs and t['fastconv'] / theirs, 2)} |")
    return "\n".join(lines) + "\n"


TINY_LAYERS = [("tiny 5x5", (2, 3, 6, 6), (4, 3, 5, 5), 2), ("tiny 3x3", (1, 8, 5, 5), (8, 8, 3, 3), 1)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-tests", action="store_true", help="skip the gpu pytest run")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, help="also write the Markdown report here")
    parser.add_argument("--tiny", action="store_true",
                        help="smoke-run this script on tiny shapes (works under the simulator)")
    args = parser.parse_args(argv)
    info = fc.info()
    if not info["available"] or (info.get("simulator") and not args.tiny):
        print(f"no CUDA GPU: {info['reason'] or 'simulator only'}", file=sys.stderr)
        return 2
    tests = "" if args.no_tests else run_tests()
    torch = _torch()
    peer = _peer(torch, allow_cpu=args.tiny)
    rng = np.random.default_rng(0)
    conv_rows = []
    for name, x_shape, w_shape, pad in (TINY_LAYERS if args.tiny else LAYERS):
        problem = make_problem(x_shape, w_shape, "float32", padding=pad)
        x = rng.standard_normal(x_shape).astype(np.float32)
        w = (rng.standard_normal(w_shape) / math.sqrt(math.prod(w_shape[1:]))).astype(np.float32)
        gy = rng.standard_normal(problem.out_shape).astype(np.float32)
        errors = check_layer(problem, x, w, gy, torch)
        conv_rows.append((name, problem, time_layer(problem, x, w, gy, peer, args.repeats),
                          errors))
        print(f"done: {name}", file=sys.stderr, flush=True)
    pool_shape = (2, 4, 7, 7) if args.tiny else POOL_SHAPE
    pool_times = time_pool_lrn(peer, pool_shape, args.repeats)
    text = report(info, tests, conv_rows, pool_times, torch, peer[1], pool_shape)
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
