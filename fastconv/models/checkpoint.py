"""Checkpoints: one ``.npz`` with the weights, their moving average, the step and the setup.

Arrays are stored under ``params/<name>`` and ``ema/<name>``; the rest
(step, seed, dataset, architecture, learning-rate schedule, moving-average
decay, format version) is one JSON string under ``meta``.  Because the batches
and augmentation of a step depend only on the seed and the step
(:mod:`.data`), a restored state continues with exactly the loss curve the
uninterrupted run would have had.  Files are written to a temporary name and
renamed, so an interrupted save never leaves half a checkpoint.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .cifar10 import PARAM_NAMES, Architecture
from .optim import MovingAverage, Schedule
from .train import TrainState

FORMAT = "fastconv-checkpoint-1"


def save(path, state: TrainState) -> Path:
    """Write ``state`` to ``path`` (``.npz`` is appended when missing); the path written.

    Examples
    --------
    >>> import tempfile, os
    >>> from fastconv.models.train import new_state
    >>> from fastconv.models.digits import ARCHITECTURE
    >>> state = new_state("digits", ARCHITECTURE, Schedule(32))
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     load(save(os.path.join(tmp, "run"), state)).step
    0
    """
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    meta = {"format": FORMAT, "step": int(state.step), "seed": int(state.seed),
            "dataset": state.dataset, "architecture": state.arch.to_dict(),
            "schedule": state.schedule.to_dict(), "ema_decay": state.ema.decay}
    arrays = {f"params/{n}": v for n, v in state.params.items()}
    arrays.update({f"ema/{n}": v for n, v in state.ema.averages.items()})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, meta=np.array(json.dumps(meta)), **arrays)
    os.replace(tmp, path)
    return path


def load(path) -> TrainState:
    """The state saved by :func:`save`; ValueError naming the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["meta"]))
            params = {n: npz[f"params/{n}"].copy() for n in PARAM_NAMES}
            averages = {n: npz[f"ema/{n}"].copy() for n in PARAM_NAMES}
    except (KeyError, ValueError, OSError) as exc:
        raise ValueError(f"{path} is not a fastconv checkpoint ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has checkpoint format {meta.get('format')!r}, expected "
                         f"{FORMAT!r}")
    arch = Architecture.from_dict(meta["architecture"])
    ema = MovingAverage(averages, meta["ema_decay"])
    return TrainState(params, ema, int(meta["step"]), arch, Schedule(**meta["schedule"]),
                      int(meta["seed"]), meta["dataset"])
