"""Random search (Ma et al. 2025, Sec. 3.2; tt-scale-flux): best of N i.i.d. initial noises.

Round r (1-based) draws 2**r fresh noises by default (the reference project's schedule:
4 rounds = 2 + 4 + 8 + 16 = 30 candidates); ``schedule=constant`` draws ``per_round`` each round.
The global best is kept across rounds. With ``nfe_budget`` the search stops at the candidates the budget pays
for (the last round cut short), so best-of-N at B NFEs is N = B / (NFEs per image).
"""
from __future__ import annotations

import math

from ..core.noise import fresh
from ..core.validate import MAX_SIZE
from . import Candidate, SearchContext, SeedFn, budget_candidates, check_budget, check_size, check_total

SCHEDULES = ("exponential", "constant")


class RandomSearch:
    #: ask() never depends on tell(): the loop may generate round r+1 while round r is verified.
    independent_rounds = True
    #: a rerun of a run folder may change these (more rounds extend a finished search).
    resume_keys = ("rounds",)

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, rounds: int = 4, schedule: str = "exponential", base: int = 2,
                 per_round: int = 4, nfe_budget: float | None = None):
        self.rounds = check_size("search.rounds", rounds)
        if schedule not in SCHEDULES:
            raise ValueError(f"search.schedule must be one of {', '.join(SCHEDULES)}, got {schedule!r}")
        self.schedule, self.base = schedule, check_size("search.base", base)
        self.per_round = check_size("search.per_round", per_round)
        if self.schedule == "exponential" and self.base > 1 and self.rounds > math.log(MAX_SIZE, self.base) + 1e-9:
            raise ValueError(f"search.rounds={self.rounds} with search.base={self.base} asks "
                             f"{self.base}**{self.rounds} candidates in its last round, more than tts allows "
                             f"({MAX_SIZE:,}); lower search.rounds")
        check_total(sum(self.round_size(r) for r in range(1, self.rounds + 1)), "search.rounds and search.per_round"
                    if self.schedule == "constant" else "search.rounds and search.base")
        self.seed_fn, self.round, self.best = seed_fn, 0, None
        self.nfe_budget = check_budget(nfe_budget)
        self.cap, self.asked = budget_candidates(self.nfe_budget, context), 0

    def round_size(self, round_: int) -> int:
        return self.base ** round_ if self.schedule == "exponential" else self.per_round

    def ask(self) -> list[dict]:
        if self.round >= self.rounds:
            return []
        size = self.round_size(self.round + 1)
        if self.cap is not None:
            size = min(size, self.cap - self.asked)
        if size <= 0:
            return []
        self.round += 1
        self.asked += size
        return [fresh(self.seed_fn(self.round, i, "fresh")) for i in range(size)]

    def tell(self, candidates: list[Candidate]) -> None:
        for c in candidates:
            if c.beats(self.best):
                self.best = c

