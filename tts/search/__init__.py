"""Search strategies: one file each, all with the same ask/tell interface.

A strategy is built once per prompt as ``factory(seed_fn=..., context=...)`` (Hydra ``_partial_: true``),
where ``seed_fn(round, index, purpose) -> int`` derives every seed from the run seed and the prompt, so
the strategy never touches a global RNG, and ``context`` (:class:`SearchContext`: the prompt, the run
folder, the latent shape; None when a config is only being validated) tells it where it runs. Then,
round after round:

* ``ask() -> list[dict]``: the noise lineages (tts.noise) to generate this round; ``[]`` when done;
* ``tell(candidates: list[Candidate])``: the same candidates, in order, with their scores
  (``score is None`` for a candidate whose verification failed);
* ``best``: the best candidate seen so far (the global best, across rounds and restarts);
* ``independent_rounds`` (optional, default False): True when ``ask()`` never depends on ``tell()``
  (random search), so the loop generates the next round while the previous one is being verified;
  ``tell()`` still receives the rounds in order.

Strategies that act inside the denoising loop (search over paths, particle resampling) will
return richer lineages (a trajectory with branch points) from ``ask()``; the generator, not the
loop, interprets a lineage, so the loop and run folder stay as they are. A human-preference
strategy's ``tell()`` asks its front-end which candidates the person prefers.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

SeedFn = Callable[[int, int, str], int]


@dataclasses.dataclass
class SearchContext:
    """Where a strategy runs: its prompt, the run folder, and the pipeline's latent shape."""

    prompt: str
    prompt_index: int
    prompt_hash: str
    run_dir: Path
    latent_shape: tuple[int, ...]


@dataclasses.dataclass
class Candidate:
    round: int
    index: int
    noise: dict
    score: float | None
    record: Any = None  # the CandidateRecord, for strategies that want more than the score

    def beats(self, other: "Candidate | None") -> bool:
        return self.score is not None and (other is None or other.score is None or self.score > other.score)


def check_positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value
