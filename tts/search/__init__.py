"""Search strategies: one file each, all with the same ask/tell interface.

A strategy is built once per prompt as ``factory(seed_fn=..., context=...)`` (Hydra ``_partial_: true``),
where ``seed_fn(round, index, purpose) -> int`` derives every seed from the run seed and the prompt, so
the strategy never touches a global RNG, and ``context`` (:class:`SearchContext`: the prompt, the run
folder, the latent shape; None when a config is only being validated) tells it where it runs. Then,
round after round:

* ``ask() -> list[dict]``: the noise lineages (tts.core.noise) to generate this round; ``[]`` when done;
* ``tell(candidates: list[Candidate])``: the same candidates, in order, with their scores oriented so that larger
  is better (:meth:`Candidate.of`; ``score is None`` for a candidate whose verification failed;
  ``Candidate.metric_score`` is the score as the verifier gave it);
* ``best``: the best candidate seen so far (the global best, across rounds and restarts);
* ``independent_rounds`` (optional, default False): True when ``ask()`` never depends on ``tell()``
  (random search), so the loop generates the next round while the previous one is being verified;
  ``tell()`` still receives the rounds in order;
* ``resume_keys`` (optional): settings a rerun of a run folder may change and that extend the search
  (``rounds``); ``operational_keys`` (optional): settings a rerun may change freely (how it runs).

Strategies compare candidates only through :meth:`Candidate.beats`, which follows the verifier's
declared direction (``Verifier.higher_is_better``), so no strategy assumes that larger is better.
A new strategy is one module here plus one YAML in configs/search/. The contract (protocols, traits, the budget,
how a strategy is built for a prompt) is :mod:`tts.search.protocols`.

**In-loop strategies** (``in_loop = True``: prune, smc, paths, beam, evolution, refine, tree) act inside the denoising loop
instead: built the same way, they have ``eta`` (the sampler they need: 0 deterministic, > 0 stochastic steps,
tts.sampling.sampler) and ``requests(engine)``, a generator that says what to do with a
:class:`tts.sampling.particles.Engine`'s particles and lets the engine do it (``Advance`` them, ``Score`` their x0
previews with the run's verifier; start, select, duplicate and re-noise are direct calls) and returns the finished
particles it keeps (protocol: ``tts.search._steps.InLoopStrategy``; ``search(engine)`` drives it for one prompt,
tts.sampling.batching drives several prompts' together in shared denoiser calls); the loop decodes, verifies and
records them
(round 1, one record per particle, each with its path so tts-replay regenerates it). A prompt's in-loop
search is one unit of work: a rerun redoes a prompt that was interrupted, and skips a finished one.

**Gradient strategies** (``gradient = True``: noise-opt, tts.search.noise_opt) optimise initial noises by gradients
of a differentiable verifier through the sampler; tts.run.noiseopt drives them and records every iterate.

Every strategy accepts ``nfe_budget`` (``search.nfe_budget``: denoiser evaluations per prompt, None for no
limit): ask/tell strategies stop asking when the next candidate would not fit (``SearchContext.nfe_per_image``),
in-loop ones size their particle sets from it and the engine refuses any step beyond it. A human-preference
strategy's ``tell()`` asks its front-end which candidates the person prefers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from ..core.validate import check_positive_int, check_size, check_total  # noqa: F401 - the strategies' import path

SeedFn = Callable[[int, int, str], int]


@dataclasses.dataclass
class SearchContext:
    """Where a strategy runs: its prompt, the run folder, and the pipeline's latent shape."""

    prompt: str
    prompt_hash: str
    run_dir: Path
    latent_shape: tuple[int, ...]
    #: denoiser evaluations one whole candidate costs (steps x passes per step), for ``nfe_budget``
    nfe_per_image: float | None = None


@dataclasses.dataclass
class Candidate:
    round: int
    index: int
    noise: dict
    score: float | None
    record: Any = None  # the CandidateRecord, for strategies that want more than the score
    higher_is_better: bool = True  # the direction ``score`` is in (True once oriented, as the loop tells them)
    #: the verifier's direction for the chosen metric (None: ``higher_is_better``), to show the score as it was given
    metric_higher_is_better: bool | None = None

    @classmethod
    def of(cls, record, higher_is_better: bool = True) -> "Candidate":
        """A recorded candidate (tts.core.records.CandidateRecord) as the loop tells it to a strategy: its score
        oriented once here, so larger is better whatever the metric's direction (None unless verified ``ok``)."""
        score = record.score if record.status == "ok" else None
        return cls(record.round, record.index, record.noise, None if score is None else oriented(score, higher_is_better),
                   record, True, higher_is_better)

    @property
    def metric_score(self) -> float | None:
        """The score as the verifier gave it (not oriented)."""
        same = self.metric_higher_is_better is None or self.metric_higher_is_better == self.higher_is_better
        return self.score if self.score is None or same else -self.score

    @property
    def metric_direction(self) -> bool:
        """True when the verifier's metric is larger-is-better."""
        return self.higher_is_better if self.metric_higher_is_better is None else self.metric_higher_is_better

    def beats(self, other: "Candidate | None") -> bool:
        """A scored candidate beats no candidate, a failed one, and one with a worse score."""
        if self.score is None:
            return False
        return other is None or other.score is None or better(self.score, other.score, self.higher_is_better)


def check_budget(nfe_budget) -> float | None:
    """``search.nfe_budget``: None (no limit) or a positive number of denoiser evaluations per prompt."""
    return positive_nfe(nfe_budget, "search.nfe_budget", "per prompt (or null for no limit)")


def positive_nfe(value, key: str, what: str) -> float | None:
    """None, or ``value`` as a positive finite number of NFEs; else a one-line error naming ``key``."""
    from ..core.validate import is_number

    if value is None:
        return None
    if not is_number(value) or not 0 < value < float("inf"):
        raise ValueError(f"{key} must be a positive number of denoiser evaluations {what}, got {value!r}")
    return float(value)


def budget_candidates(nfe_budget: float | None, context: SearchContext | None) -> int | None:
    """How many whole candidates ``nfe_budget`` pays for (None: no limit, or no context to tell yet, as when a
    config is only validated); a budget the run cannot measure is an error, not ignored."""
    if nfe_budget is None or context is None:
        return None
    if not context.nfe_per_image:
        raise ValueError("search.nfe_budget needs the NFEs per image, which a pipeline on a server "
                         "(pipeline.server) does not report: drop one of them")
    return int(nfe_budget // context.nfe_per_image + 1e-9)


def better(a: float, b: float, higher_is_better: bool = True) -> bool:
    """``a`` is strictly better than ``b`` in the metric's direction."""
    return a > b if higher_is_better else a < b


def best_record(records, higher_is_better: bool = True):
    """THE best candidate, wherever tts names one (strategies' incumbents, round JSONs, summary.json, collages,
    tts-report, tts.search): the best score in the metric's direction among candidates verified ``ok``; ties go
    to the earliest round, then the lowest index. ``records``: anything with ``status``, ``score``, ``round`` and
    ``index`` (tts.core.records.CandidateRecord); None when none is scored."""
    top = None
    for r in sorted(records, key=lambda r: (r.round, r.index)):
        if getattr(r, "status", "ok") == "ok" and r.score is not None and (top is None or better(r.score, top.score, higher_is_better)):
            top = r
    return top


def oriented(score: float, higher_is_better: bool = True) -> float:
    """The score turned so that larger is better: a sort key for ``max`` / ``sorted`` in either direction."""
    return score if higher_is_better else -score

