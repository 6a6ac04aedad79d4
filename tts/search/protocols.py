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


@dataclasses.dataclass(frozen=True)
class Budget:
    """``search.nfe_budget``: denoiser evaluations per prompt (None: no limit), owned here and read once."""

    nfe: float | None = None

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
