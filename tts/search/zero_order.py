"""Zero-order search (Ma et al. 2025, Sec. 3.2; tt-scale-flux): hill-climb in noise space.

Start from a fresh pivot; each round draws ``num_neighbors`` neighbours at cosine exactly
``threshold`` and equal norm (tts.core.noise.neighbor). If the best neighbour beats the pivot it becomes
the pivot; otherwise the next round restarts from a fresh pivot (generated with its neighbours).
The pivot is never regenerated or re-scored, and the global best survives restarts. With ``nfe_budget`` the
search stops at the candidates the budget pays for (the last round cut short).
"""
from __future__ import annotations

from ..core.noise import fresh, neighbor
from . import Candidate, SearchContext, SeedFn, budget_candidates, check_budget, check_size, check_total
from ..core.validate import is_number


class ZeroOrderSearch:
    #: a rerun of a run folder may change these: rounds are replayed from recorded scores, so more extend it.
    resume_keys = ("rounds",)

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, rounds: int = 4, num_neighbors: int = 4, threshold: float = 0.95,
                 nfe_budget: float | None = None):
        self.rounds = check_size("search.rounds", rounds)
        self.num_neighbors = check_size("search.num_neighbors", num_neighbors)
        check_total(self.rounds * (self.num_neighbors + 1), "search.rounds and search.num_neighbors")
        if not is_number(threshold) or not 0.0 < threshold < 1.0:
            raise ValueError(f"search.threshold must lie strictly between 0 and 1 (a cosine), got {threshold!r}")
        self.threshold = float(threshold)
        self.seed_fn, self.round, self.best = seed_fn, 0, None
        self.pivot: Candidate | None = None
        self._fresh_pivot = False
        self.nfe_budget = check_budget(nfe_budget)
        self.cap, self.asked = budget_candidates(self.nfe_budget, context), 0

    def ask(self) -> list[dict]:
        left = None if self.cap is None else self.cap - self.asked
        if self.round >= self.rounds or left == 0:
            return []
        self.round += 1
        noises = []
        self._fresh_pivot = self.pivot is None
        if self._fresh_pivot:
            pivot_noise = fresh(self.seed_fn(self.round, 0, "pivot"))
            noises.append(pivot_noise)
        else:
            pivot_noise = self.pivot.noise
        start = len(noises)
        noises += [neighbor(pivot_noise, self.seed_fn(self.round, start + k, "neighbor"), self.threshold)
                   for k in range(self.num_neighbors)]
        noises = noises if left is None else noises[:left]
        self.asked += len(noises)
        return noises

    def tell(self, candidates: list[Candidate]) -> None:
        if self._fresh_pivot:
            self.pivot, candidates = candidates[0], candidates[1:]
        for c in [self.pivot, *candidates]:
            if c.beats(self.best):
                self.best = c
        best_neighbor = None
        for c in candidates:
            if c.beats(best_neighbor):
                best_neighbor = c
        if best_neighbor is not None and best_neighbor.beats(self.pivot):
            self.pivot = best_neighbor
        else:
            self.pivot = None  # no neighbour improved: restart from a fresh pivot next round
