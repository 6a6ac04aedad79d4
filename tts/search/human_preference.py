"""Human-preference search: a person steers the noise search; a value model learned from their choices
screens the proposals they are shown.

Round 1 shows ``per_round`` fresh noises. Each later round shows proposals near the person's latest
favourites (neighbours at an angle ``step`` from them, exactly as zero-order search steps; Ma et al.
2025, Sec. 3.2) plus ``explore`` share of fresh noises. The step shrinks by ``shrink`` when the person
picks a proposal near their favourites (choices agree) and grows back, up to ``step_degrees``, when
they pick an exploration noise or reject all. Proposals are screened by a value model: kernel ridge
regression (Gaussian-process mean with a linear kernel) on the candidates' initial noises, fitted to
every choice so far (picked = 1, ranked picks 1, 0.9, ..., shown and not picked = 0); from
``pool_factor`` times as many proposals as are shown, those it predicts the person will like most are
shown. Why ridge on the noise: a session has tens of labels, so a closed-form, tuning-free linear
model is what the data supports; proposals all lie within ``step`` of the favourites (a trust radius
where a linear model is a fair local fit); and a ridge value model over the latent, proposing within
a trust radius around the current best, is what image preference optimisation from human feedback
uses. Features are the noises themselves, at the pipeline's latent shape.

The front-end (``frontend``: a nested ``_target_`` config, tts/search/frontends) only shows and answers;
every answer is appended to the run folder's feedback log (tts/search/frontends/feedback.py). A rerun
of the folder replays logged answers (rebuilding the value model and step size exactly) and asks the
person again from the first round without one; a stop on its own is not replayed, so a stopped
session continues where it stopped.
"""
from __future__ import annotations

import math

import torch

from ..core.noise import fresh, make_noise, neighbor
from ..core.validate import check_number, check_size, check_total
from . import Candidate, SearchContext, SeedFn, budget_candidates, check_budget
from .frontends import Choice, ShownItem, one_per_process
from .frontends.feedback import Answer, FeedbackLog

#: Where the flat front-end options of older tts versions live now (the CLI names them when an old key is used).
_MOVED = {"interface": "search/frontend=<terminal|web|scripted> (configs/search/frontend/)"} | {
    key: f"search.frontend.{key} (with search/frontend={name})"
    for name, keys in (("web", ("host", "port", "open_browser")), ("terminal", ("inline_images",)),
                       ("scripted", ("script", "simulate_top_k", "simulate_noise"))) for key in keys}


class HumanPreferenceSearch:
    independent_rounds = False
    #: more rounds extend a session: logged answers are replayed, the person is asked from the first new round
    resume_keys = ("rounds",)
    #: how the person is asked never changes what was computed (and the flat keys of older run folders)
    operational_keys = ("frontend", *_MOVED)
    renamed_keys = _MOVED

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, rounds: int = 20, per_round: int = 8,
                 explore: float = 0.25, step_degrees: float = 30.0, min_step_degrees: float = 5.0, shrink: float = 0.7,
                 pool_factor: int = 4, ridge_alpha: float = 1.0, frontend=None, nfe_budget: float | None = None):
        self.rounds = check_size("search.rounds", rounds)
        self.per_round = check_size("search.per_round", per_round)
        self.pool_factor = check_size("search.pool_factor", pool_factor)
        check_total(self.rounds * self.per_round * self.pool_factor, "search.rounds, search.per_round and "
                    "search.pool_factor")
        check_number("search.explore", explore, 0.0, 1.0, hi_open=True)
        check_number("search.step_degrees", step_degrees, 0.0, 90.0, lo_open=True, hi_open=True)
        check_number("search.min_step_degrees", min_step_degrees, 0.0, step_degrees, lo_open=True)
        check_number("search.shrink", shrink, 0.0, 1.0, lo_open=True)
        check_number("search.ridge_alpha", ridge_alpha, 0.0, math.inf, lo_open=True)
        self.frontend = _check_frontend(frontend)
        self.nfe_budget = check_budget(nfe_budget)  # the session ends when the next image would not fit
        self.cap, self.asked = budget_candidates(self.nfe_budget, context), 0
        self.seed_fn, self.context = seed_fn, context
        #: the terminal front-end asks questions on the console: the loop draws no progress bar over them
        self.interactive = bool(getattr(self.frontend, "interactive", False))
        self.explore, self.max_step, self.min_step, self.shrink = explore, step_degrees, min_step_degrees, shrink
        self.alpha, self.step = ridge_alpha, step_degrees
        self.round, self.best, self.stopped = 0, None, False
        self.anchors: list[dict] = []
        self.features: list[torch.Tensor] = []
        self.labels: list[float] = []
        self.shown: list[tuple[dict, bool]] = []  # this round: (lineage, is exploration)
        self.feedback = FeedbackLog.of(context.run_dir) if context else None
        self.log = self.feedback.by_round(context.prompt_hash) if context else {}
        if context is not None and hasattr(self.frontend, "start"):
            self.frontend.start()  # the page is up (and its URL printed) before the first round is generated

    # -- ask ---------------------------------------------------------------------------------------------
    def ask(self) -> list[dict]:
        """This round's noises: fresh at first; then screened neighbours of the favourites plus fresh ones."""
        left = None if self.cap is None else self.cap - self.asked
        if self.stopped or self.round >= self.rounds or left == 0:
            self._finish()
            return []
        self.round += 1
        if not self.anchors:
            self.shown = [(fresh(self.seed_fn(self.round, i, "fresh")), True) for i in range(self.per_round)]
            return self._within(left)
        n_explore = min(self.per_round - 1, math.ceil(self.explore * self.per_round)) if self.explore > 0 else 0
        local = self._screen(self._proposals((self.per_round - n_explore) * self.pool_factor), self.per_round - n_explore)
        explore = [fresh(self.seed_fn(self.round, k, "explore")) for k in range(n_explore)]
        self.shown = [(n, False) for n in local] + [(n, True) for n in explore]
        return self._within(left)

    def _within(self, left: int | None) -> list[dict]:
        """This round's noises, cut to what is left of ``nfe_budget``."""
        self.shown = self.shown if left is None else self.shown[:left]
        self.asked += len(self.shown)
        return [n for n, _ in self.shown]

    def _proposals(self, count: int) -> list[dict]:
        tau = math.cos(math.radians(self.step))
        return [neighbor(self.anchors[k % len(self.anchors)], self.seed_fn(self.round, k, "proposal"), tau)
                for k in range(count)]

    def _screen(self, pool: list[dict], keep: int) -> list[dict]:
        """The ``keep`` proposals the value model rates highest (all, in order, until it has both labels)."""
        if len(set(self.labels)) < 2 or self.context is None:
            return pool[:keep]
        predicted = self._predict(torch.stack([self._feature(n) for n in pool]))
        order = sorted(range(len(pool)), key=lambda i: (-float(predicted[i]), i))
        return [pool[i] for i in order[:keep]]

    def _feature(self, lineage: dict) -> torch.Tensor:
        x = make_noise(lineage, self.context.latent_shape).flatten().double()
        return x / x.norm()

    def _predict(self, x: torch.Tensor) -> torch.Tensor:
        """Kernel ridge regression with a linear (cosine) kernel: k(x)^T (K + alpha I)^-1 (y - mean) + mean."""
        train = torch.stack(self.features)
        y = torch.tensor(self.labels, dtype=torch.float64)
        mean = y.mean()
        gram = train @ train.T + self.alpha * torch.eye(len(y), dtype=torch.float64)
        weights = torch.linalg.solve(gram, y - mean)
        return x @ train.T @ weights + mean

    # -- tell --------------------------------------------------------------------------------------------
    def tell(self, candidates: list[Candidate]) -> None:
        """Get the person's choice (replayed from the log when there is one), learn from it, move the step."""
        choice = self._logged_choice() or self._ask_person(candidates)
        picked = [candidates[k - 1] for k in choice.picks]
        for rank, c in enumerate(candidates):
            self.features.append(self._feature(c.noise) if self.context else torch.zeros(1, dtype=torch.float64))
            self.labels.append(max(0.1, 1.0 - 0.1 * choice.picks.index(rank + 1)) if rank + 1 in choice.picks else 0.0)
        if picked:
            near = any(not self.shown[c.index][1] for c in picked)
            self.step = max(self.min_step, self.step * self.shrink) if near else min(self.max_step, self.step / self.shrink)
            self.anchors = [c.noise for c in picked]
            self.best = picked[0]
        elif choice.action == "reject":
            self.step = min(self.max_step, self.step / self.shrink)
        if choice.stop:
            self.stopped = True

    def _logged_choice(self) -> Choice | None:
        """The logged answer of this round; None when not answered yet, or a bare stop (asked again)."""
        answer = self.log.get(self.round)
        return answer.replayable() if answer is not None else None

    def _ask_person(self, candidates: list[Candidate]) -> Choice:
        ctx = self.context
        items = [ShownItem(number=k + 1, image=ctx.run_dir / c.record.image, seed=c.record.seed,
                           score=c.metric_score, metric=c.record.choice_of_metric, explore=self.shown[k][1],
                           higher_is_better=c.metric_direction)
                 for k, c in enumerate(candidates)]
        choice = self.frontend.present(self.round, ctx.prompt, items, ctx.run_dir)
        self.feedback.append(Answer(
            prompt=ctx.prompt, prompt_hash=ctx.prompt_hash, round=self.round,
            interface=getattr(self.frontend, "name", type(self.frontend).__name__), action=choice.action,
            picks=choice.picks, stop=choice.stop, step_degrees=self.step, labels_before=len(self.labels),
            shown=[{"number": i.number, "image": i.image.name, "seed": i.seed, "score": i.score, "explore": i.explore}
                   for i in items]))
        return choice

    def _finish(self) -> None:
        finish = getattr(self.frontend, "finish", None)
        if finish is not None and self.context is not None:
            record = self.best.record if self.best is not None else None
            if record is None:
                finish(run_dir=self.context.run_dir)
            else:
                finish(best_image=self.context.run_dir / record.image, run_dir=self.context.run_dir,
                       label=f"round {record.round}, candidate #{record.index + 1}")


def _check_frontend(frontend):
    """The front-end object Hydra built from ``search.frontend`` (the terminal one when none is given)."""
    if frontend is None:
        from .frontends.terminal import TerminalFrontend

        return TerminalFrontend()
    if not callable(getattr(frontend, "present", None)):
        raise ValueError(f"search.frontend must be a front-end config (a _target_ class with present()), got "
                         f"{frontend!r}: choose one with search/frontend=terminal, web or scripted")
    return one_per_process(frontend)
