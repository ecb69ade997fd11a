"""``fastconv train`` and ``fastconv eval``: the chapter's CIFAR-10 network from the command line.

    fastconv train cifar10 --data-dir DIR --steps N --batch-size 128 --towers T \\
        [--scheduler ADDR] [--resume CKPT]
    fastconv train digits [--steps N] ...
    fastconv eval CKPT [--data-dir DIR]

``--steps`` counts from the start of the run, so a resumed run trained to the
same ``--steps`` ends where the uninterrupted one would have.  A progress bar
(on a terminal) shows the loss, examples/s and learning rate; every
``--eval-every`` steps the test accuracy of the moving average is printed and
a checkpoint written.  This module imports only argparse at the top, so
``fastconv --help`` stays instant; :func:`add_parser` registers both commands.
"""
from __future__ import annotations

import argparse

DEFAULTS = {"cifar10": {"steps": 1000, "batch_size": 128, "eval_every": 500},
            "digits": {"steps": 600, "batch_size": 64, "eval_every": 100}}


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _factor(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {text!r}") from None
    if not value >= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number >= 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {text!r}") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1], got {value}")
    return value


def add_parser(sub) -> None:
    """Register ``train`` and ``eval`` on the ``fastconv`` command's subparsers."""
    p = sub.add_parser(
        "train", help="train the chapter's CIFAR-10 network (or on the 8x8 digits)",
        description="Train the TensorFlow tutorial's CIFAR-10 network with fastconv: SGD with "
                    "the staircase learning rate, a moving average of the weights for "
                    "evaluation, optional data-parallel towers (threads, or Dask workers with "
                    "--scheduler) and checkpoints that resume exactly.  'digits' trains the same "
                    "network on scikit-learn's bundled 8x8 digits (no download).")
    p.add_argument("dataset", choices=("cifar10", "digits"))
    p.add_argument("--data-dir", metavar="DIR",
                   help="folder with the CIFAR-10 binary or python batches (cifar10 only)")
    p.add_argument("--steps", type=_positive_int, default=None, metavar="N",
                   help="train until step N, counting a resumed checkpoint's steps "
                        "(default: cifar10 1000, digits 600)")
    p.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                   help="examples per step (default: cifar10 128, digits 64)")
    p.add_argument("--learning-rate", type=float, default=None, metavar="LR",
                   help="initial learning rate (default: the tutorial's 0.1)")
    p.add_argument("--seed", type=int, default=None, help="initialisation and data order "
                                                          "(default: 0)")
    p.add_argument("--towers", type=_positive_int, default=None, metavar="T",
                   help="data-parallel towers: the batch is split T ways (default: one tower "
                        "of one thread per core, the fastest layout measured on small machines; "
                        "with --scheduler, one per Dask worker)")
    p.add_argument("--threads-per-tower", type=_positive_int, default=None, metavar="N",
                   help="thread budget of each tower (default: the threads divided by T)")
    p.add_argument("--slow-tower", type=_factor, default=None, metavar="FACTOR",
                   help="make the last tower FACTOR times slower, to see the cost of the "
                        "synchronous average")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="run the towers on the workers of this Dask scheduler "
                        "(needs fastconv[distributed])")
    p.add_argument("--resume", metavar="CKPT", help="continue from this checkpoint")
    p.add_argument("--checkpoint", metavar="PATH",
                   help="where to write checkpoints (default: fastconv-<dataset>.npz)")
    p.add_argument("--eval-every", type=_positive_int, default=None, metavar="N",
                   help="evaluate and checkpoint every N steps (default: cifar10 500, "
                        "digits 100)")
    p.add_argument("--target-accuracy", type=_fraction, default=None, metavar="A",
                   help="stop at the first evaluation whose accuracy reaches A")
    p.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads fastconv may use (default: FASTCONV_NUM_THREADS or all cores)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON document on stdout instead of text (no progress bar)")
    p.set_defaults(runner="fastconv.cli_tools.train_cmd:train")

    e = sub.add_parser("eval", help="test accuracy of a training checkpoint",
                       description="Evaluate a checkpoint written by `fastconv train` on its "
                                   "dataset's test split, with the moving average of the "
                                   "weights (the tutorial's evaluation) and the raw weights.")
    e.add_argument("checkpoint", metavar="CKPT")
    e.add_argument("--data-dir", metavar="DIR", help="CIFAR-10 folder (cifar10 checkpoints)")
    e.add_argument("--threads", type=_positive_int, default=None, metavar="N",
                   help="threads fastconv may use (default: FASTCONV_NUM_THREADS or all cores)")
    e.add_argument("--json", action="store_true", help="print one JSON document on stdout")
    e.set_defaults(runner="fastconv.cli_tools.train_cmd:evaluate")


# ---------------------------------------------------------------- running

def _load_dataset(name: str, data_dir):
    from .common import CLIError
    if name == "digits":
        from ..models import digits
        return digits.load()
    if not data_dir:
        raise CLIError("cifar10 needs --data-dir DIR: the folder holding the CIFAR-10 binary "
                       "(cifar-10-batches-bin) or python (cifar-10-batches-py) batches")
    from ..models import cifar_data
    return cifar_data.load(data_dir)


def _architecture(dataset):
    from ..models.cifar10 import Architecture
    return Architecture(input_shape=dataset.input_shape, num_classes=dataset.num_classes)


def _state(args, dataset):
    """A fresh or resumed training state; explicit options must agree with a checkpoint."""
    from ..models import checkpoint, optim, train
    from .common import CLIError
    if args.resume:
        state = checkpoint.load(args.resume)
        if state.dataset != args.dataset:
            raise CLIError(f"{args.resume} is a {state.dataset} checkpoint, not {args.dataset}")
        given = {"batch_size": (args.batch_size, state.schedule.batch_size),
                 "seed": (args.seed, state.seed),
                 "learning_rate": (args.learning_rate, state.schedule.initial)}
        for name, (value, saved) in given.items():
            if value is not None and value != saved:
                raise CLIError(f"--{name.replace('_', '-')} {value} differs from the "
                               f"checkpoint's {saved}; a resumed run keeps its setup")
        return state
    defaults = DEFAULTS[args.dataset]
    batch = args.batch_size or defaults["batch_size"]
    if batch > len(dataset.train):
        raise CLIError(f"--batch-size {batch} is larger than the {len(dataset.train)} training "
                       f"examples")
    schedule = optim.Schedule(batch_size=batch,
                              initial=0.1 if args.learning_rate is None else args.learning_rate,
                              examples_per_epoch=len(dataset.train))
    return train.new_state(args.dataset, _architecture(dataset), schedule,
                           seed=0 if args.seed is None else args.seed)


def _gradients(args, state):
    """The gradient function of a step, and what to close afterwards."""
    from .._config import get_num_threads
    from ..models.train import local_gradients
    from .common import CLIError
    if args.scheduler:
        from ..parallel import dask_towers
        if args.slow_tower:
            raise CLIError("--slow-tower slows a threaded tower; it does not apply to "
                           "--scheduler")
        if not dask_towers.available():
            raise CLIError("--scheduler needs dask.distributed: pip install "
                           "\"fastconv[distributed]\"")
        towers = dask_towers.DaskTowers(args.scheduler, state.arch, towers=args.towers,
                                        threads_per_tower=args.threads_per_tower or 1)
        return towers, towers
    count = args.towers or min(get_num_threads(), state.schedule.batch_size)
    if count == 1 and not args.slow_tower:
        return local_gradients(state.arch), None
    if state.schedule.batch_size < count:
        raise CLIError(f"--towers {count} needs a batch of at least {count}")
    from ..parallel import Towers, model_gradients
    speed = [1.0] * count
    speed[-1] = args.slow_tower or 1.0
    towers = Towers(model_gradients(state.arch), count, args.threads_per_tower, speed)
    return towers, towers


def _tower_summary(towers) -> dict:
    totals = towers.totals
    if not totals.steps:
        return {}
    return {"towers": len(totals.compute), "steps": totals.steps,
            "compute_s_per_tower": totals.compute, "barrier_wait_s_per_tower": totals.wait,
            "average_s": totals.average, "examples_per_s": totals.examples / totals.wall,
            "barrier_fraction": sum(totals.wait) / max(sum(totals.compute) + sum(totals.wait),
                                                       1e-12)}


def train(args) -> int:
    import time

    from ..models import checkpoint
    from ..models.train import Trainer
    from .common import fmt_seconds, print_json, progress

    dataset = _load_dataset(args.dataset, args.data_dir)
    state = _state(args, dataset)
    defaults = DEFAULTS[args.dataset]
    steps = args.steps or defaults["steps"]
    every = args.eval_every or defaults["eval_every"]
    path = args.checkpoint or f"fastconv-{args.dataset}.npz"
    gradients, towers = _gradients(args, state)
    trainer = Trainer(state, dataset, gradients)
    history, evals, reached = [], [], None
    start = time.perf_counter()
    try:
        with progress(max(steps - state.step, 0), f"train {args.dataset}", args) as bar:
            while state.step < steps:
                result = trainer.step()
                history.append({"step": result.step, "loss": result.loss,
                                "learning_rate": result.learning_rate,
                                "examples_per_s": result.examples / result.seconds})
                bar.update(1)
                bar.set_description(f"step {result.step} loss {result.loss:.3f} "
                                    f"{result.examples / result.seconds:.0f} ex/s "
                                    f"lr {result.learning_rate:.3g}")
                if result.step % every == 0 or result.step == steps:
                    accuracy = trainer.evaluate()
                    elapsed = time.perf_counter() - start
                    evals.append({"step": result.step, "accuracy": accuracy,
                                  "seconds": elapsed})
                    checkpoint.save(path, state)
                    if not args.json:
                        print(f"step {result.step:6d}  loss {result.loss:.4f}  test accuracy "
                              f"(moving average) {accuracy:.4f}  {fmt_seconds(elapsed)}",
                              flush=True)
                    if args.target_accuracy and accuracy >= args.target_accuracy:
                        reached = result.step
                        break
    finally:
        if towers is not None:
            towers.close()
    elapsed = time.perf_counter() - start
    summary = {"dataset": args.dataset, "steps": state.step, "seconds": elapsed,
               "checkpoint": str(path), "final_accuracy": evals[-1]["accuracy"] if evals else None,
               "target_reached_at_step": reached, "evaluations": evals, "history": history}
    if towers is not None:
        summary["towers"] = _tower_summary(towers)
    if args.json:
        print_json(summary)
        return 0
    print(f"trained to step {state.step} in {fmt_seconds(elapsed)}; checkpoint {path}")
    if towers is not None and summary["towers"]:
        t = summary["towers"]
        print(f"towers: {t['examples_per_s']:.0f} examples/s; compute per tower "
              + ", ".join(fmt_seconds(c) for c in t["compute_s_per_tower"])
              + "; waiting at the barrier " + ", ".join(fmt_seconds(w) for w in
                                                       t["barrier_wait_s_per_tower"])
              + f" ({100 * t['barrier_fraction']:.0f}% of tower time)")
    return 0


def evaluate(args) -> int:
    from ..models import checkpoint
    from ..models.train import evaluate as accuracy_of
    from .common import print_json

    state = checkpoint.load(args.checkpoint)
    dataset = _load_dataset(state.dataset, args.data_dir)
    averaged = accuracy_of(state.ema.averages, dataset, state.arch)
    raw = accuracy_of(state.params, dataset, state.arch)
    if args.json:
        print_json({"checkpoint": args.checkpoint, "dataset": state.dataset, "step": state.step,
                    "accuracy_moving_average": averaged, "accuracy_raw": raw,
                    "test_examples": len(dataset.test)})
        return 0
    print(f"{args.checkpoint}: {state.dataset}, step {state.step}, {len(dataset.test)} test "
          f"examples\n  accuracy (moving average of the weights): {averaged:.4f}\n"
          f"  accuracy (raw weights):                    {raw:.4f}")
    return 0
