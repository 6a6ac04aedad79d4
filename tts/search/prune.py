"""Best-of-N with early pruning: successive halving on x0 previews, inside the denoising loop.

N initial noises are denoised together on the deterministic sampler (eta 0). At each step k of ``prune_at`` (a
step index, or a fraction of the pipeline's steps: 0.2 is step 2 of 10, step 6 of 28)
the rows' x0 previews are scored by the run's verifier and only the best ``keep`` fraction (rounded up, at
least one row) goes on; the survivors finish and are the prompt's candidates (the loop verifies their final
images and keeps the best). This is successive halving (Karnin, Koren & Somekh 2013, "Almost optimal
exploration in multi-armed bandits", ICML; Jamieson & Talwalkar 2016, arXiv 1502.07943) with denoising steps
as the resource, and the verifier applied to intermediate samples of the denoising loop as in Ma et al. 2025
(arXiv 2501.09732, Sec. 3.2), here to stop spending steps on noises whose previews already lose.

With ``nfe_budget`` set, N is the largest number of noises whose whole schedule fits: N rows to the first
pruning step, then the kept rows to the next, ... to the end.

Sizing to the budget and the step options live in tts.search._steps, shared with the other in-loop strategies.
"""
from __future__ import annotations

import math
from typing import Sequence

from ..core.noise import fresh
from ..core.validate import check_number
from . import SearchContext, SeedFn, check_size
from ._steps import (StepRequests, Advance, Score, check_steps, largest_fitting, plan_budget, ranked, resolve_steps)


class PruneSearch(StepRequests):
    #: the deterministic sampler: a row's image depends on its initial noise alone
    eta = 0.0

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, nfe_budget: float | None = None,
                 num_particles: int = 16, prune_at: Sequence[float] = (0.2, 0.5), keep: float = 0.5):
        self.num_particles = check_size("search.num_particles", num_particles)
        self.prune_at = check_steps("search.prune_at", prune_at)
        self.keep = check_number("search.keep", keep, 0.0, 1.0, lo_open=True)
        self.set_budget(nfe_budget, context)
        self.seed_fn = seed_fn

    def requests(self, engine):
        n = self.size(engine)                                                   # 1. how many noises
        p = engine.start([fresh(self.seed_fn(0, i, "fresh")) for i in range(n)])  # 2. start them
        for k, step in enumerate(self.points(engine.steps), 1):                 # 3. prune on previews
            p = yield Advance(p, step)
            keep = kept_rows(len(p), self.keep)
            if keep < len(p):
                p = engine.select(p, ranked((yield Score(p, f"prune {k}")))[:keep], "prune")
        return (yield Advance(p))                                                 # 4. finish the survivors

    def size(self, engine) -> int:
        """``num_particles``, or with a budget the largest N whose schedule fits it."""
        budget = plan_budget(engine, self.nfe_budget)
        if budget is None:
            return self.num_particles
        return largest_fitting(lambda n: self.cost(n, engine.steps) * engine.row_step_cost, budget,
                               engine.image_cost, "prune")

    def points(self, steps: int) -> tuple[int, ...]:
        """The pruning steps on a pipeline of ``steps`` denoising steps."""
        return resolve_steps("search.prune_at", self.prune_at, steps)

    def smallest_nfe(self, steps: int, image_cost: float) -> float:
        """The schedule from one noise."""
        return self.cost(1, steps) * image_cost / steps

    def cost(self, n: int, steps: int) -> int:
        """Row-steps of the schedule from ``n`` noises (times ``row_step_cost`` for NFEs)."""
        total, at = 0, 0
        for step in (*self.points(steps), steps):
            total += n * (step - at)
            n, at = kept_rows(n, self.keep), step
        return total


def kept_rows(n: int, keep: float) -> int:
    """Rows a pruning step keeps of ``n``: the ``keep`` fraction rounded up, at least one."""
    return max(1, min(n, math.ceil(n * keep - 1e-9)))
