"""Pick a backend for a problem, and say why.

Rules come first (a forced method, what each backend supports, what the data
allow), then the cost models of :mod:`fastconv.costs` rank what is left.  A
backend may define ``inspect(problem, x, w) -> problem`` to look at the data
before it is trusted (the FFT backend refuses NaN/Inf and inexact integer
sums; the separable backend measures the kernel's rank).  Inspection runs
only for a backend that is cheapest on paper, so small problems never pay for
it.  A backend may also define ``inspect_for_run``, used when the choice runs
at once (:func:`correlate`): it may leave a check to the run, which then
checks the data as it reads them and hands the call on if they fail (the
FFT's fused tile loop and NaN/Inf).  The static part of every decision is
cached per problem, which keeps the overhead of ``method='auto'`` in the
microseconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from . import _outputs, backends
from ._config import get_num_threads

#: scipy's method names, mapped to the backends that implement them here
ALIASES = {"direct": "direct", "fft": "fft"}


@dataclass
class Choice:
    """The backend picked for a problem, the candidates and the deciding rule.

    ``str(choice)`` is a readable account, as printed by :func:`fastconv.explain`.
    """

    name: str
    rule: str
    problem: object
    candidates: list = field(default_factory=list)  # (name, estimated seconds), cheapest first
    rejected: dict = field(default_factory=dict)    # name -> why it was not used

    def __str__(self) -> str:
        p = self.problem
        lines = [f"problem: input {p.x_shape}, kernel {p.w_shape} -> output {p.out_shape}, "
                 f"{p.dtype}, stride {p.stride}, dilation {p.dilation}, padding {p.padding}, "
                 f"groups {p.groups}",
                 f"chosen: {self.name}", f"rule: {self.rule}", "candidates (estimated time):"]
        for name, seconds in self.candidates:
            mark = "*" if name == self.name else " "
            lines.append(f"  {mark} {name:<10} {seconds * 1e3:12.4f} ms")
        for name, why in self.rejected.items():
            lines.append(f"    {name:<10} not used: {why}")
        return "\n".join(lines)


def resolve_method(method: str) -> str:
    """Map a user's ``method=`` to a backend name or 'auto'; ValueError if unknown."""
    if method == "auto":
        return method
    if not isinstance(method, str):
        raise ValueError(f"method must be a string, got {method!r}")
    name = ALIASES.get(method, method)
    backends.get(name)  # raises ValueError naming the available ones
    return name


@lru_cache(maxsize=2048)
def _ranking(problem, threads=None):
    """Candidates that support the problem, cheapest first, and those that don't.

    ``threads`` is part of the cache key only: costs depend on the thread budget.
    """
    ranked, rejected = [], {}
    for name, module in backends.REGISTRY.items():
        if module.supports(problem):
            ranked.append((name, module.cost(problem)))
        else:
            rejected[name] = "does not support this problem"
    ranked.sort(key=lambda item: item[1])
    return tuple(ranked), rejected


def choose(problem, x=None, w=None, method: str = "auto", run: bool = False) -> Choice:
    """Choose the backend for ``problem`` (data ``x``, ``w`` optional).

    Parameters
    ----------
    problem : ConvProblem
    x, w : ndarray, optional
        The operands; without them no data facts are checked.
    method : str
        'auto', or a backend name (or scipy's 'direct'/'fft') to force.
    run : bool
        The choice is for running now (:func:`correlate`): under 'auto', a
        backend may leave a data check to the run itself
        (``inspect_for_run``), and hands the call on if the check fails.

    Returns
    -------
    Choice

    Examples
    --------
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 16, 16), (1, 1, 3, 3), "float64")
    >>> choose(p, method="reference").name
    'reference'
    """
    method = resolve_method(method)
    if _on_device(x) or _on_device(w):
        return _device_choice(problem, method)
    if method != "auto":
        module = backends.get(method)
        if x is not None and hasattr(module, "inspect"):
            problem = module.inspect(problem, x, w)
        if not module.supports(problem):
            raise ValueError(f"method {method!r} cannot compute this problem "
                             f"({_describe(problem)}); use method='auto'")
        return Choice(method, "forced by method=", problem, [(method, module.cost(problem))])
    ranked, static_rejected = _ranking(problem, get_num_threads())
    ranked, rejected = list(ranked), dict(static_rejected)
    inspected = set()
    while ranked:
        name, _ = ranked[0]
        module = backends.REGISTRY[name]
        if name not in inspected and x is not None and hasattr(module, "inspect"):
            inspected.add(name)
            inspect = getattr(module, "inspect_for_run", module.inspect) if run else module.inspect
            problem = inspect(problem, x, w)
            if not module.supports(problem):
                rejected[name] = f"rejected after looking at the data ({_facts(problem)})"
                ranked.pop(0)
                continue
            ranked[0] = (name, module.cost(problem))
            ranked.sort(key=lambda item: item[1])
            continue
        rule = "lowest estimated cost"
        if rejected and any("data" in why for why in rejected.values()):
            rule += " among the backends the data allow"
        if len(ranked) == 1:
            rule = "the only backend that supports this problem"
        return Choice(name, rule, problem, ranked, rejected)
    raise ValueError(f"no available backend computes this problem ({_describe(problem)})")


def _on_device(a) -> bool:
    return a is not None and hasattr(a, "__cuda_array_interface__")


def _device_choice(problem, method) -> Choice:
    """Operands already on a GPU are computed there, never copied to a CPU backend."""
    if method not in ("auto", "cuda"):
        raise ValueError(f"method {method!r} runs on the CPU but the operands are CUDA device "
                         "arrays; use method='auto' or 'cuda', or copy them to the host first")
    module = backends.get("cuda")  # ValueError with the reason when there is no GPU
    return Choice("cuda", "operands are CUDA device arrays: computed where they live", problem,
                  [("cuda", module.cost(problem))])


def _facts(problem) -> str:
    facts = []
    if problem.has_nonfinite:
        facts.append("data hold NaN or Inf")
    if problem.int_bound is not None:
        facts.append(f"integer sums up to {problem.int_bound:.3g}")
    if problem.kernel_rank is not None:
        facts.append(f"kernel rank {problem.kernel_rank}")
    return ", ".join(facts) or "no facts"


def _describe(problem) -> str:
    return (f"{problem.ndim}-d, {problem.dtype}, stride {problem.stride}, dilation "
            f"{problem.dilation}, groups {problem.groups}")


def correlate(x, w, problem, method: str = "auto", out=None, bias=None):
    """Run the canonical correlation with the backend ``choose`` picks.

    ``x`` and ``w`` must already be arrays of ``problem.dtype`` with the
    problem's shapes; front ends make sure of that.  ``bias``, one value per
    output channel, is added to the result: inside the backend where it
    can (``FUSED_BIAS``: while each block of the result is in cache), else
    after it.

    Examples
    --------
    >>> import numpy as np
    >>> from fastconv.problem import make_problem
    >>> p = make_problem((1, 1, 4), (1, 1, 2), "float64")
    >>> correlate(np.ones((1, 1, 4)), np.ones((1, 1, 2)), p)
    array([[[2., 2., 2.]]])
    """
    choice = choose(problem, x, w, method, run=True)
    backend = backends.REGISTRY[choice.name]
    if out is None and choice.name != "cuda":
        # large results come from reused blocks: fresh ones page-fault (see _outputs)
        out = _outputs.empty(problem.out_shape, problem.dtype)
    if bias is None:
        return backend.correlate(x, w, choice.problem, out=out)
    bias = np.asarray(bias, dtype=problem.dtype)
    if getattr(backend, "FUSED_BIAS", False):
        return backend.correlate(x, w, choice.problem, out=out, bias=bias)
    result = backend.correlate(x, w, choice.problem, out=out)
    result += bias.reshape((-1,) + (1,) * problem.ndim)  # the result is ours (or the caller's out)
    return result


def clear_cache() -> None:
    """Forget cached decisions (after loading a new calibration profile)."""
    _ranking.cache_clear()
