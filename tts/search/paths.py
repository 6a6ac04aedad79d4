"""Search over paths (Ma et al. 2025, "Inference-Time Scaling for Diffusion Models beyond Scaling Denoising
Steps", arXiv 2501.09732, Sec. 3.2), inside the denoising loop.

1. N initial noises run the deterministic sampler (eta 0) to step ``start_step`` (the paper's noise level sigma).
2. Each of the N paths gets M branches: the forward process takes it back ``forward`` steps with fresh noise
   (the paper's Delta_f; a seed per branch), then the sampler denoises it ``backward`` steps (Delta_b >
   Delta_f), so each iteration advances ``backward - forward`` steps.
3. The verifier scores the N x M branches' x0 previews and the top N become the paths; repeat 2-3 until the
   end. The last iteration's branches finish the denoising: they are the prompt's candidates, and the loop's
   verification of their final images is the paper's final selection among the survivors (the best of the
   top N is the best of all N x M, so keeping all of them costs nothing more and scores no image twice).

``start_step``, ``forward`` and ``backward`` are step counts, or fractions of the pipeline's steps (0.6, 0.2 and
0.4 are 6, 2 and 4 of 10 steps; fractions are rounded and kept at least one step apart as the plan needs).
The re-noising is the only randomness; the denoising steps are deterministic. With ``nfe_budget`` set, N is
the largest number of paths whose whole plan fits (M stays ``num_branches``; a budget under one path's plan
gets one path and as many branches as it pays for, and one under a single branch's plan is refused).
"""
from __future__ import annotations

from ..core.noise import fresh
from ..core.validate import is_int
from . import SearchContext, SeedFn, check_size
from ._steps import (StepRequests, Advance, Score, check_step, largest_fitting, plan_budget, ranked, resolve_step)


class PathsSearch(StepRequests):
    #: deterministic denoising steps; the re-noising injects the noise
    eta = 0.0

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, nfe_budget: float | None = None,
                 num_paths: int = 2, num_branches: int = 4, start_step: float = 0.6, forward: float = 0.2,
                 backward: float = 0.4):
        self.num_paths = check_size("search.num_paths", num_paths)
        self.num_branches = check_size("search.num_branches", num_branches)
        self.start_step = check_step("search.start_step", start_step)
        self.forward = check_step("search.forward", forward)
        self.backward = check_step("search.backward", backward)
        if is_int(forward) == is_int(backward) and self.backward <= self.forward:  # (mixed kinds: checked per pipeline)
            raise ValueError(f"search.backward must exceed search.forward (each iteration advances backward - "
                             f"forward steps), got backward={backward}, forward={forward}")
        if is_int(forward) == is_int(start_step) and self.forward > self.start_step:
            raise ValueError(f"search.forward must be at most search.start_step (re-noising goes back to a step "
                             f">= 0), got forward={forward}, start_step={start_step}")
        self.set_budget(nfe_budget, context)
        self.seed_fn = seed_fn

    def requests(self, engine):
        start, plan = self.steps(engine.steps)[0], self.iterations(engine.steps)
        n, m = self.size(engine)                                                 # 1. how many paths, branches
        p = engine.start([fresh(self.seed_fn(0, i, "fresh")) for i in range(n)])
        p = yield Advance(p, start)                                              # 2. to noise level sigma
        for k, (back_to, until) in enumerate(plan, 1):
            p = yield Advance(self.branch(engine, p, m, k, back_to), until)      # 3. M branches per path
            if until < engine.steps:
                p = engine.select(p, ranked((yield Score(p, f"paths {k}")))[:n], "keep")  # 4. keep the top N
        return p                                                                  # 5. the last branches

    def branch(self, engine, p, m: int, k: int, back_to: int):
        """Every path's ``m`` branches, re-noised back to ``back_to`` with fresh seeds (then denoised on)."""
        p = engine.select(p, [r for r in range(len(p)) for _ in range(m)], "branch")
        return engine.renoise(p, back_to, [self.seed_fn(k, j, "renoise") for j in range(len(p))])

    def steps(self, steps: int) -> tuple[int, int, int]:
        """(start step, forward, backward) in steps on a pipeline of ``steps`` denoising steps."""
        forward = resolve_step("search.forward", self.forward, steps, 1, steps - 1)
        backward = resolve_step("search.backward", self.backward, steps, forward + 1, steps)
        return resolve_step("search.start_step", self.start_step, steps, forward, steps - 1), forward, backward

    def iterations(self, steps: int) -> list[tuple[int, int]]:
        """(the step re-noised back to, the step denoised to) of each iteration, from the start step to the end."""
        at, forward, backward = self.steps(steps)
        plan = []
        while at < steps:
            back_to = at - forward
            at = min(back_to + backward, steps)
            plan.append((back_to, at))
        return plan

    def cost(self, n: int, steps: int, m: int | None = None) -> int:
        """Row-steps of the plan with ``n`` paths of ``m`` branches (default ``num_branches``; times
        ``row_step_cost`` for NFEs)."""
        m = self.num_branches if m is None else m
        return n * self.steps(steps)[0] + n * m * sum(u - b for b, u in self.iterations(steps))

    def smallest_nfe(self, steps: int, image_cost: float) -> float:
        """One path of one branch."""
        return self.cost(1, steps, 1) * image_cost / steps

    def size(self, engine) -> tuple[int, int]:
        """(N, M): ``num_paths`` and ``num_branches``, or with a budget the largest N whose plan fits it; a
        budget under one path's plan gets one path with as many branches as it pays for."""
        budget = plan_budget(engine, self.nfe_budget)
        if budget is None:
            return self.num_paths, self.num_branches
        nfe = lambda n, m: self.cost(n, engine.steps, m) * engine.row_step_cost  # noqa: E731
        m = self.num_branches
        while m > 1 and nfe(1, m) > budget + 1e-9:
            m -= 1
        return largest_fitting(lambda n: nfe(n, m), budget, engine.image_cost, "paths"), m
