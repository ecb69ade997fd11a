"""Measure training of the chapter's CIFAR-10 network; print a Markdown section for RESULTS.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/training_results.py \
        [--quick] [--out FILE]

Everything compared is measured in the same run, interleaved round by round
(a shared machine's load then hits every configuration alike); tables give
medians and minima.  Sections: one training step at batch 128 against the
same model in torch; where the time goes, layer by layer, on one thread;
T = 1 and T = 2 towers of one thread; the synchronous average with a slowed
tower; the digits run of ``fastconv train digits``.
"""
from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastconv import nn  # noqa: E402
from fastconv.models import cifar10, layers  # noqa: E402
from fastconv.models.optim import sgd_update  # noqa: E402
from fastconv.parallel import Towers, compute_budget, model_gradients  # noqa: E402

COMMAND = "env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python bench/training_results.py"
BATCH = 128


#: pause before each timed call: thread pools that spin after use (OpenBLAS's workers, an
#: OpenMP team) must be asleep again, or they slow whatever is measured next
SETTLE_S = 0.25


def interleaved(configs: dict, rounds: int) -> dict:
    """``{name: (median s, min s)}`` of calling each config once per round, in turn."""
    for call in configs.values():
        call()                                   # warm-up: JIT, plans, caches
    times = {name: [] for name in configs}
    for _ in range(rounds):
        for name, call in configs.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: (float(np.median(t)), float(np.min(t))) for name, t in times.items()}


def _batch():
    rng = np.random.default_rng(0)
    return (rng.standard_normal((BATCH, 3, 24, 24)).astype(np.float32),
            rng.integers(0, 10, BATCH))


# ---------------------------------------------------------------- one training step

def step_table(rounds: int, torch) -> tuple[list[str], dict]:
    from fastconv.models import torch_twin
    x, y = _batch()
    params = cifar10.init_params(0)

    def fastconv_step(threads=None):
        def step():
            if threads is None:
                loss, grads = cifar10.loss_and_grads(params, x, y)
            else:
                with compute_budget(threads):      # fastconv's kernels and BLAS
                    loss, grads = cifar10.loss_and_grads(params, x, y)
            sgd_update(params, grads, 0.0)       # the update's cost, weights unchanged
        return step

    def towers_step():
        # towers made per step (two thread starts, well under a millisecond): living towers
        # hold BLAS at one thread, and the other configurations here would change that
        # under their feet (fastconv._config.blas_threads is process-wide)
        with Towers(model_gradients(cifar10.CIFAR10), towers=2, threads_per_tower=1) as towers:
            loss, grads = towers(params, x, y)
        sgd_update(params, grads, 0.0)

    twin = torch_twin.TrainStep(params, learning_rate=0.0)
    threads = torch.get_num_threads()

    def torch_one_thread():
        torch.set_num_threads(1)
        try:
            twin(x, y)
        finally:
            torch.set_num_threads(threads)

    configs = {f"fastconv, one process, {os.cpu_count()} threads (engine threading)":
               fastconv_step(),
               "fastconv, 2 towers x 1 thread": towers_step,
               "fastconv, one process, 1 thread": fastconv_step(1),
               f"torch {torch.__version__}, {threads} threads": lambda: twin(x, y),
               "torch, 1 thread": torch_one_thread}
    result = interleaved(configs, rounds)
    ref = result[f"torch {torch.__version__}, {threads} threads"][0]
    rows = ["| configuration | median ms | min ms | time / torch (all threads) |",
            "|---|---:|---:|---:|"]
    for name, (median, least) in result.items():
        rows.append(f"| {name} | {median * 1e3:.1f} | {least * 1e3:.1f} | {median / ref:.2f} |")
    return rows, {name: med for name, (med, _) in result.items()}


# ---------------------------------------------------------------- per layer, one thread

def _layer_cases(torch):
    """(name, fastconv forward+backward, torch forward+backward) at the network's shapes."""
    import torch.nn.functional as F
    rng = np.random.default_rng(1)
    arch = cifar10.CIFAR10
    lrn = (arch.lrn_depth_radius, arch.lrn_bias, arch.lrn_alpha, arch.lrn_beta)
    pad = ((2, 2), (2, 2))

    def arr(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    x, w1, g1 = arr(BATCH, 3, 24, 24), arr(64, 3, 5, 5) * 0.05, arr(BATCH, 64, 24, 24)
    a2, w2, g2 = arr(BATCH, 64, 12, 12), arr(64, 64, 5, 5) * 0.05, arr(BATCH, 64, 12, 12)
    p1, gp1 = arr(BATCH, 64, 24, 24), arr(BATCH, 64, 12, 12)
    f, w3, g3 = arr(BATCH, 2304), arr(2304, 384) * 0.04, arr(BATCH, 384)

    def tconv(name, *arrays):
        t = [torch.from_numpy(a) for a in arrays]
        ops = {"forward": lambda: F.conv2d(t[0], t[1], padding=2),
               "input grad": lambda: torch.nn.grad.conv2d_input(t[0].shape, t[1], t[2], padding=2),
               "weight grad": lambda: torch.nn.grad.conv2d_weight(t[0], t[1].shape, t[2],
                                                                  padding=2)}
        return ops[name]

    def fconv(name, inp, w, g):
        ops = {"forward": lambda: nn.conv2d(inp, w, padding=pad),
               "input grad": lambda: nn.grad.conv2d_input(inp.shape, w, g, padding=pad),
               "weight grad": lambda: nn.grad.conv2d_weight(inp, w.shape, g, padding=pad)}
        return ops[name]

    def fc_pool():
        out, idx = layers.max_pool_same(p1, 3, 2)
        layers.max_pool_backward(gp1, idx, p1.shape)

    def fc_lrn():
        layers.lrn(a2, *lrn)
        layers.lrn_backward(a2, g2, *lrn)

    def fc_dense():
        layers.dense_forward(f, w3, np.zeros(384, np.float32))
        layers.dense_backward(f, w3, g3)

    def tc(fn, *arrays):
        tensors = [torch.from_numpy(a).requires_grad_() for a in arrays[:-1]]
        grad = torch.from_numpy(arrays[-1])

        def run():
            torch.autograd.backward(fn(*tensors), grad)
        return run

    def t_pool(t):
        return F.max_pool2d(F.pad(t, (0, 1, 0, 1), value=float("-inf")), 3, 2)

    size = 2 * arch.lrn_depth_radius + 1
    cases = []
    convs = (("conv1 5x5 3->64, 24x24", (x, w1, g1), ("forward", "weight grad")),
             ("conv2 5x5 64->64, 12x12", (a2, w2, g2), ("forward", "input grad", "weight grad")))
    for label, arrays, grads in convs:
        for op in grads:
            cases.append((f"{label}: {op}", fconv(op, *arrays), tconv(op, *arrays)))
    return cases + [
        ("max pool 3x3/2 SAME, 64x24x24: forward + backward", fc_pool, tc(t_pool, p1, gp1)),
        ("LRN depth_radius 4, 64x12x12: forward + backward", fc_lrn,
         tc(lambda a: F.local_response_norm(a, size, arch.lrn_alpha * size, arch.lrn_beta,
                                            arch.lrn_bias), a2, g2)),
        ("local3 2304->384: forward + backward", fc_dense, tc(lambda a, w: a @ w, f, w3, g3)),
    ]


def layer_table(rounds: int, torch) -> list[str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rows = ["| layer (batch 128, float32, 1 thread each) | fastconv ms | torch ms "
            "| fastconv / torch |", "|---|---:|---:|---:|"]
    try:
        with compute_budget(1):
            for name, ours, theirs in _layer_cases(torch):
                result = interleaved({"fastconv": ours, "torch": theirs}, rounds)
                a, b = result["fastconv"][0], result["torch"][0]
                rows.append(f"| {name} | {a * 1e3:.2f} | {b * 1e3:.2f} | {a / b:.2f} |")
    finally:
        torch.set_num_threads(threads)
    return rows


# ---------------------------------------------------------------- towers

def tower_tables(rounds: int) -> list[str]:
    x, y = _batch()
    params = cifar10.init_params(0)
    arch = cifar10.CIFAR10
    groups = {"T = 1": Towers(model_gradients(arch), 1, 1),
              "T = 2": Towers(model_gradients(arch), 2, 1)}
    slow = {f: Towers(model_gradients(arch), 2, 1, speed=[1.0, f]) for f in (1.5, 2.0, 3.0)}
    stats = {name: [] for name in [*groups, *slow]}
    everything = {**groups, **slow}
    try:
        for group in everything.values():
            group(params, x, y)
        for _ in range(rounds):
            for name, group in everything.items():
                time.sleep(SETTLE_S)
                group(params, x, y)
                stats[name].append(group.last_stats)
    finally:
        for group in everything.values():
            group.close()

    def med(values):
        return float(np.median(values))

    base = med([s.wall for s in stats["T = 1"]])
    rows = ["| towers, 1 thread each | examples/s | speedup | per-tower compute ms | "
            "barrier wait ms (per tower) |", "|---|---:|---:|---:|---:|"]
    for name in groups:
        s = stats[name]
        wall = med([t.wall for t in s])
        compute = ", ".join(f"{med([t.compute[k] for t in s]) * 1e3:.0f}"
                            for k in range(len(s[0].compute)))
        wait = ", ".join(f"{med([t.wait[k] for t in s]) * 1e3:.1f}"
                         for k in range(len(s[0].wait)))
        rows.append(f"| {name} | {BATCH / wall:.0f} | {base / wall:.2f}x | {compute} | {wait} |")
    rows += ["", "Synchronous averaging with tower 2 slowed on purpose (T = 2, 1 thread each; a "
             "factor f makes the tower take f times its compute time, sleeping the extra, like "
             "a slower device):", "",
             "| slowdown of tower 2 | step ms | examples/s | fast tower idle at the barrier ms "
             "| share of tower time lost waiting | examples/s if nobody waited |",
             "|---|---:|---:|---:|---:|---:|"]
    for name, f in [("T = 2", 1.0)] + [(f, f) for f in slow]:
        s = stats[name]
        wall = med([t.wall for t in s])
        wait = med([t.wait[0] for t in s])
        share = med([t.barrier_fraction for t in s])
        # each tower at its own pace, no barrier: the sum of the towers' own rates
        free = sum(med([t.shard_sizes[k] / t.compute[k] for t in s]) for k in range(2))
        rows.append(f"| {f:g}x | {wall * 1e3:.0f} | {BATCH / wall:.0f} | {wait * 1e3:.0f} | "
                    f"{100 * share:.0f}% | {free:.0f} |")
    return rows


# ---------------------------------------------------------------- digits

def digits_rows() -> list[str]:
    try:
        from fastconv.models import digits
    except ImportError:
        return ["(scikit-learn not installed: digits run skipped)"]
    from fastconv.models import optim, train
    data = digits.load()
    state = train.new_state("digits", digits.ARCHITECTURE,
                            optim.Schedule(64, examples_per_epoch=len(data.train)))
    start = time.perf_counter()
    reached, accuracy = None, 0.0
    with Towers(model_gradients(digits.ARCHITECTURE), towers=min(2, os.cpu_count() or 1),
                threads_per_tower=1) as group:
        trainer = train.Trainer(state, data, group)
        while state.step < 1000:
            trainer.step()
            if state.step % 50 == 0:
                accuracy = trainer.evaluate()
                if accuracy >= 0.95:
                    reached = state.step
                    break
        seconds = time.perf_counter() - start
    verdict = "met" if reached and seconds < 120 else "NOT met"
    return [f"`fastconv train digits --eval-every 50 --target-accuracy 0.95` (defaults: batch 64, "
            f"learning rate 0.1, {group.towers} towers x 1 thread): test accuracy "
            f"{accuracy:.4f} (moving average of the weights) at step {state.step}, "
            f"{seconds:.1f} s of training, 1,347 training / 450 test images.  "
            f"Target >= 95 % in under two minutes: {verdict}."]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--out", help="also write the section to this file")
    args = parser.parse_args(argv)
    rounds = 5 if args.quick else 11
    try:
        import torch
    except ImportError:
        torch = None
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = ["## Training the chapter's CIFAR-10 network (issue 5)", "",
             f"Measured {datetime.datetime.now():%Y-%m-%d %H:%M} with `{COMMAND}` on "
             f"{os.cpu_count()} cores (load average {load:.1f} at the start; other work on a "
             f"shared machine shows as spread between median and minimum).", ""]
    if torch is not None:
        rows, medians = step_table(rounds, torch)
        lines += ["### One training step (forward, backward, SGD update), batch 128, float32",
                  "", *rows, ""]
        torch_all = next(v for k, v in medians.items() if k.startswith("torch") and "1 thread"
                         not in k)
        best = min(v for k, v in medians.items() if k.startswith("fastconv"))
        one = next(v for k, v in medians.items() if k.startswith("fastconv, one process")
                   and "engine" in k)
        lines += [f"Target: fastconv at most 1.4x torch's time.  Best fastconv layout: "
                  f"{best / torch_all:.2f}x ({'met' if best <= 1.4 * torch_all else 'NOT met'}); "
                  f"one process with the engine's own threads: {one / torch_all:.2f}x "
                  f"({'met' if one <= 1.4 * torch_all else 'NOT met'}).", ""]
        lines += ["### Where the time goes: layer by layer, one thread each", "",
                  *layer_table(rounds, torch), ""]
    lines += ["### Data-parallel towers (the chapter's Parallelism slide), batch 128", "",
              *tower_tables(rounds), "", "### Learning on real data without a download", "",
              *digits_rows(), ""]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
