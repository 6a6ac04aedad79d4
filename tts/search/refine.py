"""Fresh candidates and cheap refinements of the best one, a wave at a time, every final scored as it ends.

Each wave (inside the denoising loop, on the deterministic sampler):

1. ``fresh`` new initial noises are denoised to the end and their finals scored by the run's verifier;
2. the best final not yet refined (of every wave so far, fresh or refined; ties: the earlier) gets ``children``
   refinements: re-noised by the forward process back to step ``renoise_to`` (a step, or a fraction of the
   steps: 0.8 is step 8 of 10), each with its own seed, and denoised to the end again, at the cost of the last
   steps only; the refinements are scored too.

This is SDEdit's partial re-noising and re-denoising (Meng et al. 2022, "SDEdit", arXiv 2108.01073) used as a
local search around the best candidate, as the search over paths of Ma et al. 2025 (arXiv 2501.09732, Sec.
3.2) re-noises and re-denoises, but late and on finished images, so that a near miss (an image with most of
what the prompt asks, say the right shapes with one wrong colour) is retried for a fifth of an image's cost.
Because every final is scored as the wave ends, ``search.stop_at`` ends the search at the first good one
(tts.sampling.particles, "Stopping"; the Verifier-Threshold rule of arXiv 2512.08985): that is what the
strategy is for, spending little on prompts solved early.

Every final is a candidate (the loop verifies and keeps the best). With ``nfe_budget`` set the waves go on while
a fresh image or a refinement still fits, the last wave cut to what fits; without one, until ``candidates``
finals are made.
"""
from __future__ import annotations

import math

from ..core.noise import fresh
from . import SearchContext, SeedFn, check_size
from ..core.validate import check_number
from ._steps import StepRequests, Advance, Score, check_step, resolve_step


class RefineSearch(StepRequests):
    #: deterministic denoising steps; only the re-noising draws noise
    eta = 0.0

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, nfe_budget: float | None = None,
                 candidates: int = 32, fresh: int = 1, children: int = 2, renoise_to: float = 0.8,
                 patience: float | None = None):
        self.candidates = check_size("search.candidates", candidates)
        self.fresh = check_size("search.fresh", fresh)
        self.children = check_size("search.children", children)
        self.renoise_to = check_step("search.renoise_to", renoise_to)
        self.patience = None if patience is None else check_number("search.patience", patience, 0.0, 1e12, lo_open=True)
        self.set_budget(nfe_budget, context)
        self.seed_fn = seed_fn

    def requests(self, engine):
        back_to = resolve_step("search.renoise_to", self.renoise_to, engine.steps, 1, engine.steps - 1)
        kept, pool, made, wave, best, since = [], [], 0, 0, None, 0.0
        while ((n := self._fits(engine, engine.steps, self.fresh, made)) or (pool and self._fits(
                engine, engine.steps - back_to, self.children, made))) and not self._gives_up(engine, since):
            wave += 1
            if n:                                                                   # 1. fresh finals
                p = engine.start([fresh(self.seed_fn(0, made + i, "fresh")) for i in range(n)])
                p = yield Advance(p)
                pool += self._scored(p, (yield Score(p, f"fresh {wave}")), len(kept))
                kept.append(p)
                made += n
            m = self._fits(engine, engine.steps - back_to, self.children, made)
            if pool and m:                                                          # 2. refine the best so far
                pool.sort(key=lambda item: item[:2])  # stable: ties keep the order they were made in
                _, _, k, row = pool.pop(0)
                q = engine.select(kept[k], [row] * m, "refine", copies=True)
                q = engine.renoise(q, back_to, [self.seed_fn(wave, j, "renoise") for j in range(m)])
                q = yield Advance(q)
                pool += self._scored(q, (yield Score(q, f"refine {wave}")), len(kept))
                kept.append(q)
                made += m
            top = pool and min(item[:2] for item in pool)
            if top and (best is None or top < best):
                best, since = top, engine.spent
        return kept

    def _gives_up(self, engine, since: float) -> bool:
        """``patience``: the search ends once it has spent that many NFEs without a better final."""
        return self.patience is not None and engine.spent - since >= self.patience - 1e-9

    def _fits(self, engine, steps: int, rows: int, made: int) -> int:
        """How many of ``rows`` new finals of ``steps`` steps each fit what is left (the budget, or
        ``candidates`` without one)."""
        left = min(engine.remaining, math.inf if self.nfe_budget is None else self.nfe_budget - engine.spent)
        if math.isinf(left):
            return max(0, min(rows, self.candidates - made))
        return max(0, min(rows, int((left + 1e-9) // (steps * engine.row_step_cost))))

    @staticmethod
    def _scored(p, scores, k: int) -> list[tuple]:
        """Pool entries (sort key: best first, failed scores last, then order made) of set ``k``'s rows."""
        bad = lambda s: s is None or (isinstance(s, float) and math.isnan(s))  # noqa: E731
        return [(bad(s), 0.0 if bad(s) else -float(s), k, r) for r, s in enumerate(scores)]

