"""A search over several pipelines (``search.pipelines``, docs/search-over-models.md): one inner strategy per
pipeline (the ``search=`` strategy, random or zero-order, built once per pipeline with seeds of its own), and an
allocation rule (tts.search.allocation) that decides, round by round, which pipelines play. Every noise it asks for
names its pipeline (``noise["pipeline"]``, the pipeline's label); the generator (tts.sampling.multi) reads it.

``nfe_budget`` counts charged NFEs (NFEs x the pipeline's cost per NFE relative to the first, tts.pipelines.arms):
each round is cut to what the budget still pays for, by each pipeline's estimated NFEs per image. A router
(tts.search.router) may pick the pipelines per prompt first: ``router_mode=restrict`` searches only its choice,
``prior`` searches all and starts from its choice (played first; UCB counts it as prior successes). The route is
written once per prompt to ``routes/<prompt hash>.json`` and read back by a rerun, so a resumed search (and its
allocation, derived only from recorded scores) repeats every decision.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Callable

from . import Candidate, SearchContext, SeedFn, check_budget
from .allocation import Arms, make_rule

ROUTER_MODES = ("restrict", "prior")


@dataclasses.dataclass(frozen=True)
class ArmInfo:
    """What the search needs of a pipeline: its label and the NFEs one image is charged there (estimated)."""

    label: str
    nfe_per_image: float


class PipelineSearch:
    """Ask/tell over several pipelines; built by tts.app.build / tts.search from ``search.pipelines``."""

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, *, inner: Callable,
                 arms: list[ArmInfo], allocation: str = "uniform", router=None, router_mode: str = "restrict",
                 c: float = 1.0, prior_weight: float = 1.0, nfe_budget: float | None = None):
        if router_mode not in ROUTER_MODES:
            raise ValueError(f"router_mode must be one of {', '.join(ROUTER_MODES)}, got {router_mode!r}")
        self.arms, self.rule = list(arms), make_rule(allocation, c, prior_weight)
        self.allocation, self.nfe_budget = allocation, check_budget(nfe_budget)
        labels = [a.label for a in self.arms]
        self.route = _route(router, context, labels) if router is not None and context is not None else None
        chosen = [labels.index(x) for x in (self.route or {}).get("chosen", []) if x in labels]
        in_play = chosen if chosen and router_mode == "restrict" else list(range(len(labels)))
        order = [*chosen, *[a for a in range(len(labels)) if a not in chosen]]
        self.state = Arms([[] for _ in labels], [a in in_play for a in range(len(labels))], order,
                          [1.0 if a in chosen and router_mode == "prior" else 0.0 for a in range(len(labels))])
        self.inner = [inner(seed_fn=_arm_seeds(seed_fn, a.label), nfe_budget=None,
                            context=None if context is None else dataclasses.replace(context, nfe_per_image=a.nfe_per_image))
                      for a in self.arms]
        from .protocols import traits

        kinds = [traits(s) for s in self.inner]
        if any(k.in_loop or k.asks_a_person for k in kinds):
            raise ValueError("search.pipelines works with ask/tell strategies (random, zero-order, ...), not with "
                             "in-loop or human-preference ones: drop search.pipelines or pick another search")
        self.independent_rounds = allocation == "uniform" and all(k.independent_rounds for k in kinds)
        self.resume_keys = getattr(self.inner[0], "resume_keys", ())
        self.best: Candidate | None = None
        self.spent, self.round = 0.0, 0
        self._segments: list[list[tuple[int, int]]] = []  # per asked round not yet told: (arm, candidates)

    def ask(self) -> list[dict]:
        while any(self.state.live):
            noises, segments = [], []
            picked = self.rule.pick(self.state)
            if not picked:  # halving: the pipelines left are spent; the dropped ones stay dropped
                return []
            for a in picked:
                got = self._ask_arm(a)
                if got:
                    noises += got
                    segments.append((a, len(got)))
            if noises:
                self.round += 1
                self._segments.append(segments)
                return noises
        return []

    def _ask_arm(self, a: int) -> list[dict]:
        cost = self.arms[a].nfe_per_image
        can = None if self.nfe_budget is None else int((self.nfe_budget - self.spent) / cost + 1e-9)
        if can is not None and can <= 0:
            self.state.live[a] = False
            return []
        noises = self.inner[a].ask()
        if not noises:
            self.state.live[a] = False
            return []
        noises = noises if can is None else noises[:can]
        self.spent += cost * len(noises)
        return [dict(n, pipeline=self.arms[a].label) for n in noises]

    def tell(self, candidates: list[Candidate]) -> None:
        k = 0
        for a, n in self._segments.pop(0):
            part = [dataclasses.replace(c, noise={x: v for x, v in c.noise.items() if x != "pipeline"})
                    for c in candidates[k:k + n]]
            k += n
            self.inner[a].tell(part)
            self.state.scores[a] += [c.score for c in part if c.score is not None]
            for c in candidates[k - n:k]:
                if c.beats(self.best):
                    self.best = c
        self.rule.after_round(self.state)


def _arm_seeds(seed_fn: SeedFn, label: str) -> SeedFn:
    """Each pipeline's own seeds (so two pipelines never draw one noise twice in a round, nor share image names)."""
    return lambda r, i, purpose: seed_fn(r, i, f"{purpose}@{label}")


def _route(router, context: SearchContext, labels: list[str]) -> dict:
    """This prompt's route: read back from the run folder when a run already asked the router, else asked now
    and written (``routes/<prompt hash>.json``: router, chosen, reason, raw answer)."""
    path = context.run_dir / "routes" / f"{context.prompt_hash}.json" if context.run_dir else None
    if path is not None and path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    route = router.route(context.prompt, labels)
    doc = {"prompt": context.prompt, "router": route.router, "chosen": list(route.chosen), "reason": route.reason,
           "answer": route.answer}
    if path is not None:
        from ..core.runfolder import atomic_write_json

        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(path, doc)
    return doc
