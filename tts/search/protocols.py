"""The strategies' contract, in one place: what an ask/tell strategy is (:class:`AskTellStrategy`), what one that
asks a person has (:class:`AsksAPerson`), the optional traits a driver reads (:class:`Traits`, read once by
:func:`traits`), the NFE budget (:class:`Budget`), and how a strategy is built for one prompt (:func:`make_strategy`,
every seed derived from the run seed and the prompt).

The drivers (tts.run), the front ends (tts.app) and the API (tts.api) go through these instead of probing a
strategy's attributes themselves.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from ..core.noise import derive_seed

if TYPE_CHECKING:
    from . import Candidate, SearchContext, SeedFn


@runtime_checkable
class AskTellStrategy(Protocol):
    """A strategy the loop asks for noise lineages and tells their scores, round by round (tts.search's docstring).

    Scores reach ``tell`` oriented (:meth:`tts.search.Candidate.of`: larger is better, whatever the metric's
    direction), as in-loop strategies' preview scores do. Optional class attributes, read through :func:`traits`:
    ``independent_rounds`` (``ask`` never depends on ``tell``), ``interactive`` (asks on the terminal: no progress
    bar), ``nfe_budget``, ``resume_keys``, ``operational_keys``."""

    def ask(self) -> list[dict]: ...

    def tell(self, candidates: list[Candidate]) -> None: ...


@runtime_checkable
class AsksAPerson(Protocol):
    """A strategy whose ``tell`` asks a person through a front-end (human-preference): its searches cannot be
    replayed from the manifest nor split over shards."""

    frontend: Any


def is_in_loop(strategy) -> bool:
    """The one test of "steps the denoiser itself" (tts.run.inloop): the declared ``in_loop = True`` of every
    in-loop strategy. Those that also yield step requests (tts.search._steps.InLoopStrategy) share denoiser
    calls across prompts; a plugin with only ``search(engine)`` runs one prompt at a time."""
    return bool(getattr(strategy, "in_loop", False))


def is_gradient(strategy) -> bool:
    """A strategy that optimises noises by gradients through the sampler (search=noise-opt, tts.run.noiseopt)."""
    return bool(getattr(strategy, "gradient", False))


#: ``search.*`` settings the drivers read, never passed to a strategy's class (tts.app.build pops them).
DRIVER_KEYS = ("stop_at", "study_nfe_budget", "study_order")
#: how tts.run.study hands out a study's leftover (docs/stopping.md)
STUDY_ORDERS = ("round-robin", "best-first")


@dataclasses.dataclass(frozen=True)
class Budget:
    """What a prompt's search may spend, owned here and read once: ``search.nfe_budget`` (denoiser evaluations per
    prompt, None: no limit), ``search.stop_at`` (a score that ends a prompt's search as soon as a candidate reaches
    it, in the metric's direction; None: never) and ``search.study_nfe_budget`` (NFEs for the whole prompt set,
    shared out by tts.run.study; None: none)."""

    nfe: float | None = None
    stop_at: float | None = None
    study: float | None = None
    study_order: str = "round-robin"

    def reached(self, score: float | None, higher_is_better: bool = True) -> bool:
        """A verifier score (not oriented) reaches ``stop_at``: equal to it, or better in the metric's direction
        (:func:`tts.search.better`)."""
        from . import better

        return self.stop_at is not None and score is not None and (score == self.stop_at or better(
            score, self.stop_at, higher_is_better))

    def with_settings(self, stop_at=None, study_nfe_budget=None, study_order=None) -> "Budget":
        """This budget with the drivers' settings checked (ValueError naming the setting)."""
        order = "round-robin" if study_order is None else study_order
        if order not in STUDY_ORDERS:
            raise ValueError(f"search.study_order must be one of {', '.join(STUDY_ORDERS)}, got {study_order!r}")
        return dataclasses.replace(self, stop_at=check_stop_at(stop_at), study=check_study(study_nfe_budget),
                                   study_order=order)

    @classmethod
    def of(cls, strategy) -> "Budget":
        """The budget a built strategy declares (every strategy takes ``nfe_budget``; one without it: no limit)."""
        nfe = getattr(strategy, "nfe_budget", None)
        return cls(None if nfe is None else float(nfe))

    @property
    def limited(self) -> bool:
        return self.nfe is not None

    def shortfall(self, nfe_per_image: float, how: str, pipeline: str, key: str = "search.nfe_budget") -> str | None:
        """The one-line refusal of a budget below one image's NFEs (it would search nothing), else None."""
        if self.nfe is None or self.nfe >= nfe_per_image:
            return None
        return (f"{key}={self.nfe:g} pays for less than one image ({nfe_per_image:g} NFEs per image on {pipeline}: "
                f"{how.removeprefix('estimated: ')}); raise it to {nfe_per_image:g} or more")


def check_stop_at(value) -> float | None:
    """``search.stop_at``: None or a finite number (a score of the chosen metric)."""
    import math

    from ..core.validate import is_number

    if value is None:
        return None
    if not is_number(value) or not math.isfinite(value):
        raise ValueError(f"search.stop_at must be a score of the chosen metric (a finite number), or null to search "
                         f"to the end; got {value!r}")
    return float(value)


def check_study(value) -> float | None:
    """``search.study_nfe_budget``: None or a positive number of NFEs for the whole prompt set."""
    from . import positive_nfe

    return positive_nfe(value, "search.study_nfe_budget", "for the whole prompt set (or null)")


def driver_problem(kind: "Traits", budget: Budget, shards: int = 1, server: bool = False) -> str | None:
    """Why the drivers' settings cannot run with this strategy and process layout (one line), or None."""
    if budget.study is None:
        return None
    if kind.asks_a_person:
        return "search.study_nfe_budget cannot share a budget over prompts a person judges: drop it"
    if shards > 1:
        return ("search.study_nfe_budget shares one budget over every prompt, which needs the whole study in one "
                "process: drop shard.count (or search.study_nfe_budget)")
    if server:
        return "search.study_nfe_budget counts NFEs per image, which a pipeline on a server does not report: drop pipeline.server"
    return None


@dataclasses.dataclass(frozen=True)
class Traits:
    """What a driver needs to know of a built strategy, read once (:func:`traits`)."""

    #: searches on the loaded pipeline as one unit of work, finished when searches.jsonl says so (in-loop or gradient)
    in_loop: bool = False
    gradient: bool = False
    asks_a_person: bool = False
    interactive: bool = False
    independent_rounds: bool = False
    budget: Budget = Budget()


def traits(strategy) -> Traits:
    """The strategy's declared traits (the optional attributes of :class:`AskTellStrategy`, defaults when absent)."""
    return Traits(in_loop=is_in_loop(strategy) or is_gradient(strategy), gradient=is_gradient(strategy), asks_a_person=isinstance(strategy, AsksAPerson),
                  interactive=bool(getattr(strategy, "interactive", False)),
                  independent_rounds=bool(getattr(strategy, "independent_rounds", False)),
                  budget=Budget.of(strategy))


def kind_problem(strategy) -> str | None:
    """Why a built object is no strategy (neither ask/tell nor in-loop), or None."""
    if isinstance(strategy, AskTellStrategy) or (is_in_loop(strategy) and hasattr(strategy, "search")) or (
            is_gradient(strategy) and hasattr(strategy, "objective")):
        return None
    return f"a {type(strategy).__name__} without ask()/tell() (or in_loop and search(engine)); see tts/search"


def resume_keys(factory) -> tuple[str, ...]:
    """The settings a rerun of a run folder may change to extend the search (the class's ``resume_keys``)."""
    return tuple(getattr(getattr(factory, "func", factory), "resume_keys", ()))


def seed_fn(seed: int, prompt_hash: str) -> SeedFn:
    """``seed_fn(round, index, purpose)`` for one prompt: every seed derived from the run seed and the prompt."""
    return lambda r, i, purpose: derive_seed(seed, prompt_hash, r, i, purpose)


def make_strategy(factory: Callable, seed: int = 0, prompt_hash: str = "", context: SearchContext | None = None):
    """The strategy of one prompt, as every driver builds it (``context`` None: only validated, as tts-search's
    checks and tts-plan do)."""
    return factory(seed_fn=seed_fn(seed, prompt_hash), context=context)
