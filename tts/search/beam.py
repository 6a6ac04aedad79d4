"""Beam search over denoising paths at fixed branching steps, on a stochastic sampler.

The search tree of the denoising process (Li et al. 2025, DSearch, arXiv 2503.02039; the breadth-first tree
search of Zhang et al. 2025, arXiv 2505.23614): a node is a partial trajectory, its children continue it with
different noise. Beam search with width W and branching factor b keeps W nodes per level:

1. The root's children are W x b fresh initial noises, denoised together to the first step of ``branch_at``.
2. At each step of ``branch_at`` (step indices, or fractions of the pipeline's steps) the verifier scores the
   rows' x0 previews; the top W are the beams, and each spawns b children that go on with new segment seeds
   (stochastic steps, ``eta`` > 0, so children diverge), all denoised to the next branching step.
3. After the last branching step the W x b children finish; they are the prompt's candidates, and the loop's
   verification of their final images is the last level's selection.

Every level has W x b rows, so a beam search costs what best-of-(W x b) costs: W x b whole images. With
``nfe_budget`` set, W is the largest width that fits (b stays ``branching``; a budget under b images gets one
beam and as many children as it pays for).
"""
from __future__ import annotations

from ..core.noise import fresh
from ..core.validate import check_number
from . import SearchContext, SeedFn, check_size
from ._steps import (StepRequests, Advance, Score, check_steps, largest_fitting, plan_budget, ranked, resolve_steps)


class BeamSearch(StepRequests):

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, nfe_budget: float | None = None,
                 width: int = 2, branching: int = 4, branch_at=(0.3, 0.6), eta: float = 1.0):
        self.width = check_size("search.width", width)
        self.branching = check_size("search.branching", branching)
        self.branch_at = check_steps("search.branch_at", branch_at)
        self.eta = float(check_number("search.eta", eta, 0.0, 1.0, lo_open=True))
        self.set_budget(nfe_budget, context)
        self.seed_fn = seed_fn

    def requests(self, engine):
        w, b = self.size(engine)                                                 # 1. width, branching
        p = engine.start([fresh(self.seed_fn(0, i, "fresh")) for i in range(w * b)])  # 2. the root's children
        for k, step in enumerate(resolve_steps("search.branch_at", self.branch_at, engine.steps), 1):
            p = yield Advance(p, step)                                           # 3. to the branching step
            beams = ranked((yield Score(p, f"beam {k}")))[:w]                    # 4. the top W
            seeds = [self.seed_fn(k, j, "branch") for j in range(w * b)]
            p = engine.select(p, [r for r in beams for _ in range(b)], "branch", seeds)  # 5. b children each
        return (yield Advance(p))                                                # 6. the last children finish

    def size(self, engine) -> tuple[int, int]:
        """(W, b): ``width`` and ``branching``, or with a budget the largest W such that W x b whole images fit
        it; a budget under b images gets one beam with as many children as it pays for."""
        budget = plan_budget(engine, self.nfe_budget)
        if budget is None:
            return self.width, self.branching
        images = int(budget // engine.image_cost + 1e-9)
        if images < self.branching:
            return 1, images
        return largest_fitting(lambda w: w * self.branching * engine.image_cost, budget, engine.image_cost,
                               "beam"), self.branching
