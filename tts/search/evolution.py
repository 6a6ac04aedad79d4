"""Evolutionary search over initial noises, scored on cheap previews (EvoSearch, He et al. 2025, arXiv 2505.17618).

EvoSearch evolves a population of initial noises: each generation is scored, the best (elites) survive and
breed children by mutation, and fresh noises keep the population diverse. Here every candidate is scored on
the x0 preview after ``preview_step`` of the pipeline's steps instead of a whole image (cheap previews, as
"Spectral Evolution Search" scores low-step previews, arXiv 2602.03208), so a generation of P
noises costs P x preview_step steps; at the end only the best ``finals`` candidates of all generations run on
to the last step, and the loop verifies those finished images.

1. Generation 0: ``population`` fresh noises ``fresh(seed_fn(0, i, "fresh"))``, run to ``preview_step``, scored.
2. Generations 1..G-1: the elites are the best ``elite_fraction`` x P of every candidate so far ((mu + lambda)
   selection: an elite is never re-run); children mutate elites round-robin, best first, on the noise sphere:
   ``neighbor(elite, seed_fn(g, j, "mutate"), threshold)`` (tts.core.noise: cosine exactly ``threshold`` with the
   elite, same norm, the variance-preserving mutation of EvoSearch), so every child is a recorded lineage that
   replays exactly; ``fresh_fraction`` of each generation are fresh noises ``fresh(seed_fn(g, j, "fresh"))``.
3. The ``finals`` best previews over all generations (a failed score is worst; ties: earlier first) continue
   from ``preview_step`` to the end, each from its generation's set (a list of Particles).

``preview_step`` is a step (an int) or a fraction of the pipeline's steps (a float in (0, 1): 0.6 is step 6 of 10,
step 2 of 4). The sampler is deterministic (eta = 0): a noise's preview and final image depend on the noise alone.

**Budget** (``nfe_budget`` B; c NFEs per row per step, T steps, s = ``preview_step``): the search spends
P G s c + F (T - s) c <= B. For G generations, P is the largest population with P G s c + min(F, P G) (T - s) c
<= B (F = ``finals``), F becomes min(F, P G), and what is left finishes more candidates, F += floor(left /
((T - s) c)), up to P G. G is the most generations, at most ``generations``, whose plan leaves less than one
image unspent (P >= 2 when G > 1; else the plan that spends most). B must pay for one image (P = G = F = 1).
"""
from __future__ import annotations

import dataclasses
import math

from ..core.noise import fresh, neighbor
from ..core.validate import check_number
from . import SearchContext, SeedFn, check_budget, check_size, check_total
from ._steps import Advance, Score, check_image_budget, check_step, drive, resolve_step


@dataclasses.dataclass(frozen=True)
class Plan:
    """The search's size: population per generation, generations, finished candidates."""

    population: int
    generations: int
    finals: int

    def nfe(self, steps: int, preview_step: int, cost: float) -> float:
        return (self.population * self.generations * preview_step + self.finals * (steps - preview_step)) * cost


def plan_for_budget(budget: float, steps: int, preview_step: int, cost: float, generations: int, finals: int) -> Plan:
    """The plan within ``budget`` (module docstring: the rule)."""
    units = budget / cost + 1e-9  # row-steps the budget pays for
    check_image_budget(budget, steps * cost)
    plans = [_plan(units, steps, preview_step, g, finals) for g in range(generations, 0, -1)]
    plans = [p for p in plans if p.population >= 2 or p.generations == 1]
    close = [p for p in plans if units - p.nfe(steps, preview_step, 1) < steps]
    return close[0] if close else max(plans, key=lambda p: p.nfe(steps, preview_step, 1))


def _plan(units: float, steps: int, s: int, generations: int, finals: int) -> Plan:
    """The largest population for these generations; what is left finishes more candidates (up to all)."""
    population = _largest_population(units, steps, s, generations, finals)
    finals = min(finals, population * generations)
    left = units - population * generations * s - finals * (steps - s)
    return Plan(population, generations, min(population * generations, finals + int(left // (steps - s))))


def _largest_population(units: float, steps: int, s: int, g: int, f: int) -> int:
    """The largest P with P g s + min(f, P g) (steps - s) <= units: either every candidate is finished
    (P g <= f) or f of them are (P g >= f)."""
    all_finished = int(units // (g * steps))
    some = int((units - f * (steps - s)) // (g * s))
    return max(all_finished, some if some * g >= f else 0)


@dataclasses.dataclass
class Generation:
    """One generation: its particles at ``preview_step``, their noises and preview scores (None: failed)."""

    index: int
    particles: object
    noises: list[dict]
    scores: list


def ranked(generations: list[Generation]) -> list[tuple[int, int]]:
    """(generation, row) of every candidate so far, best preview first; failed scores last, ties: earlier first."""
    keyed = [(-_value(s), g.index, row) for g in generations for row, s in enumerate(g.scores)]
    return [(gi, row) for _, gi, row in sorted(keyed)]


def preview_at(preview_step: int | float, steps: int) -> int:
    """The step previews are scored at: ``preview_step`` itself (an int), or that fraction of ``steps`` (a float
    in (0, 1), rounded, kept within 1 .. steps - 1)."""
    return resolve_step("search.preview_step", preview_step, steps, 1, steps - 1)


def _nearest(x: float) -> int:
    """x rounded half up (Python's round() rounds half to even)."""
    return int(math.floor(x + 0.5))


def _value(score) -> float:
    return -math.inf if score is None or not math.isfinite(float(score)) else float(score)


class EvolutionSearch:
    """Evolutionary search over initial noises on previews (module docstring)."""

    in_loop = True
    eta = 0.0  # deterministic sampler: a noise's preview and its final image depend on the noise alone

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, nfe_budget: float | None = None,
                 population: int = 8, generations: int = 3, preview_step: int | float = 0.6, finals: int = 8,
                 elite_fraction: float = 0.25, fresh_fraction: float = 0.25, threshold: float = 0.9):
        self.seed_fn, self.context = seed_fn, context
        self.nfe_budget = check_budget(nfe_budget)
        self.population = check_size("search.population", population)
        self.generations = check_size("search.generations", generations)
        check_total(self.population * self.generations, "search.population and search.generations")
        self.preview_step = check_step("search.preview_step", preview_step)
        self.finals = check_size("search.finals", finals)
        if self.nfe_budget is None and self.finals > self.population * self.generations:
            raise ValueError(f"search.finals must be at most population x generations "
                             f"({self.population * self.generations}), got {finals}")
        self.elite_fraction = check_number("search.elite_fraction", elite_fraction, 0.0, 1.0, lo_open=True)
        self.fresh_fraction = check_number("search.fresh_fraction", fresh_fraction, 0.0, 1.0, hi_open=True)
        self.threshold = check_number("search.threshold", threshold, 0.0, 1.0, lo_open=True, hi_open=True)
        self.history: list[Generation] = []
        self.plan: Plan | None = None
        self.at = 0  # the preview step on this pipeline (preview_step, or that fraction of its steps)

    def search(self, engine):
        """1. size the search; 2. evaluate generation after generation on previews; 3. finish the best."""
        return drive(self.requests(engine), engine)

    def requests(self, engine):
        """:meth:`search` as step requests."""
        self.plan = self.size(engine)
        self.history = []
        for g in range(self.plan.generations):
            noises = self._noises(g)
            p = yield Advance(engine.start(noises), self.at)
            self.history.append(Generation(g, p, noises, list((yield Score(p, f"evolution generation {g}")))))
        return (yield from self._finish(engine))

    def size(self, engine) -> Plan:
        """The preview step on this pipeline, then the plan: the options, or the budget's (module docstring)."""
        steps = engine.steps
        self.at = preview_at(self.preview_step, steps)
        if self.nfe_budget is None:
            return Plan(self.population, self.generations, self.finals)
        return plan_for_budget(min(self.nfe_budget, engine.remaining), steps, self.at, engine.row_step_cost,
                               self.generations, self.finals)

    def _noises(self, g: int) -> list[dict]:
        """Generation g's initial noises: all fresh at first, then children of the elites and some fresh."""
        size = self.plan.population
        if g == 0:
            return [fresh(self.seed_fn(0, i, "fresh")) for i in range(size)]
        elites = ranked(self.history)[:max(1, _nearest(self.elite_fraction * size))]
        n_fresh = min(size - 1, _nearest(self.fresh_fraction * size))
        children = []
        for j in range(size - n_fresh):
            gi, row = elites[j % len(elites)]
            children.append(neighbor(self.history[gi].noises[row], self.seed_fn(g, j, "mutate"), self.threshold))
        return children + [fresh(self.seed_fn(g, j, "fresh")) for j in range(n_fresh)]

    def _finish(self, engine):
        """The ``finals`` best previews, each run on from its generation's set to the last step."""
        best = ranked(self.history)[:self.plan.finals]
        sets = []
        for g in self.history:
            rows = [row for gi, row in best if gi == g.index]
            if rows:
                sets.append((yield Advance(engine.select(g.particles, rows, "keep"))))
        return sets
