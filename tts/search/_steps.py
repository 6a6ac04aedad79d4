"""What the in-loop strategies (prune, paths, beam, smc, evolution) share: the :class:`InLoopStrategy` protocol
and its step requests, step options given as a step or a fraction of the pipeline's steps, ranking previews, and
sizing a search to ``search.nfe_budget``.

An in-loop strategy says what to do and the engine does it: ``requests(engine)`` is a generator that yields
``Advance(p, until)`` (answered with the advanced particles) and ``Score(p, label)`` (answered with one preview
score per row, larger is better) and returns the particles it keeps; the cheap operations (``engine.start``,
``select``, ``renoise``) it calls directly. ``search(engine)`` drives that generator for one prompt
(:func:`drive`); tts.sampling.batching drives several prompts' generators together, their steps stacked into
shared denoiser calls.

A helper module, not a strategy: strategies import it, never each other.
"""
from __future__ import annotations

import math
from typing import Callable, Protocol, Sequence, runtime_checkable

from ..core.validate import is_int, is_number
# the step requests and their one-prompt driver, for the strategies (which import only this module and the package)
from ..sampling.particles import Advance, Engine, Particles, Score, StepRequest, Steps, drive  # noqa: F401


@runtime_checkable
class InLoopStrategy(Protocol):
    """A search inside the denoising loop (module docstring)."""

    in_loop: bool  # True
    eta: float  # the sampler's stochasticity (0: deterministic steps)

    def requests(self, engine: Engine) -> Steps:
        """The search's step requests for one prompt; returns the kept (finished) particles."""

    def search(self, engine: Engine) -> Particles | list[Particles]:
        """The search on one prompt, its requests answered by ``engine`` alone: ``drive(self.requests(engine),
        engine)``."""


def ranked(scores: Sequence[float | None]) -> list[int]:
    """Row indices best first: larger scores first, a failed score (None or NaN) last, ties in row order."""
    def key(r: int):
        s = scores[r]
        bad = s is None or (isinstance(s, float) and math.isnan(s))
        return (bad, 0.0 if bad else -float(s), r)
    return sorted(range(len(scores)), key=key)


def is_step(value) -> bool:
    """A step option: a step index >= 1, or a fraction in (0, 1) of the pipeline's steps."""
    return (is_int(value) and value >= 1) or (is_number(value) and not is_int(value) and 0.0 < value < 1.0)


def check_step(name: str, value) -> float:
    if not is_step(value):
        raise ValueError(f"{name} must be a denoising step >= 1 or a fraction in (0, 1) of the pipeline's steps, "
                         f"got {value!r}")
    return value


def check_steps(name: str, steps) -> tuple[float, ...]:
    """A non-empty, strictly increasing list of step options (see :func:`is_step`)."""
    iterable = hasattr(steps, "__iter__") and not isinstance(steps, (str, bytes, dict))
    values = tuple(steps) if iterable else None
    if not values or not all(is_step(v) for v in values) or any(b <= a for a, b in zip(values, values[1:])):
        raise ValueError(f"{name} must be a non-empty, strictly increasing list of denoising steps >= 1 or of "
                         f"fractions in (0, 1) of the pipeline's steps (e.g. [0.2, 0.5] or [2, 5]), got {steps!r}")
    return values


def resolve_step(name: str, value: float, steps: int, lo: int, hi: int) -> int:
    """A step option on a pipeline of ``steps`` steps: a step index must lie in [lo, hi]; a fraction is rounded
    to the nearest step and clamped into [lo, hi]."""
    if hi < lo:
        raise ValueError(f"{name} needs more denoising steps than this pipeline's {steps}")
    if is_int(value):
        if not lo <= value <= hi:
            raise ValueError(f"{name} must be a step in [{lo}, {hi}] on this pipeline's {steps} denoising steps "
                             f"(or a fraction of them), got {value}")
        return int(value)
    return min(hi, max(lo, math.floor(value * steps + 0.5)))


def resolve_steps(name: str, values: Sequence[float], steps: int) -> tuple[int, ...]:
    """Step options as distinct steps in [1, steps - 1], in order."""
    out = tuple(dict.fromkeys(resolve_step(name, v, steps, 1, steps - 1) for v in values))
    if any(b <= a for a, b in zip(out, out[1:])):
        raise ValueError(f"{name} must give increasing steps on this pipeline's {steps} steps, got {list(values)}")
    return out


def check_image_budget(nfe_budget: float | None, image_cost: float | None) -> None:
    """A budget must pay for at least one whole image."""
    if nfe_budget is not None and image_cost and nfe_budget + 1e-9 < image_cost:
        raise ValueError(f"search.nfe_budget={nfe_budget:g} pays for less than one image ({image_cost:g} NFEs per "
                         "image on this pipeline); raise it")


def plan_budget(engine, nfe_budget: float | None) -> float | None:
    """What a search may plan to spend: the smaller of ``nfe_budget`` and what the engine has left
    (None: no limit, use the size options)."""
    budget = min(math.inf if nfe_budget is None else nfe_budget, engine.remaining)
    if math.isinf(budget):
        return None
    check_image_budget(budget, engine.image_cost)
    return budget


def largest_fitting(cost: Callable[[int], float], budget: float, image_cost: float, name: str) -> int:
    """The largest n >= 1 with ``cost(n) <= budget`` (``cost`` nondecreasing in n); ValueError if none fits."""
    if cost(1) > budget + 1e-9:
        raise ValueError(f"search.nfe_budget={budget:g} pays for less than the smallest {name} search "
                         f"({cost(1):g} NFEs on this pipeline, {image_cost:g} per image); raise it or shrink "
                         "the search's sizes")
    lo, hi = 1, 2
    while cost(hi) <= budget + 1e-9:
        lo, hi = hi, hi * 2
    while hi - lo > 1:  # cost(lo) fits, cost(hi) does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if cost(mid) <= budget + 1e-9 else (lo, mid)
    return lo


def smallest_nfe(strategy, steps: int, image_cost: float) -> float:
    """The NFEs of the smallest search an in-loop strategy runs under a budget: :meth:`StepRequests.smallest_nfe`,
    or one image for one that does not derive from it."""
    return strategy.smallest_nfe(steps, image_cost) if isinstance(strategy, StepRequests) else image_cost


class StepRequests:
    """What every in-loop strategy that yields step requests shares: its budget, checked against one image's
    NFEs, and ``search(engine)``, the requests answered by ``engine`` alone (one prompt at a time)."""

    in_loop = True

    def smallest_nfe(self, steps: int, image_cost: float) -> float:
        """The NFEs of the smallest search this strategy runs under a budget (``image_cost``: one image's NFEs of
        ``steps`` steps); a study hands out its leftover in such units (tts.run.study). One image, unless a
        strategy's plan needs more."""
        return image_cost

    def set_budget(self, nfe_budget, context) -> None:
        from . import check_budget

        self.nfe_budget = check_budget(nfe_budget)
        check_image_budget(self.nfe_budget, context.nfe_per_image if context else None)

    def search(self, engine):
        return drive(self.requests(engine), engine)
