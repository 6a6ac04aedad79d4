"""Many prompts' searches advanced together, with prompts mixed inside each pipeline call.

A study of small searches (zero-order asks for 3-4 candidates a round) leaves most of each pipeline call
empty when prompts are searched one at a time. Here every prompt's strategy is asked in turn, all the
noises they asked for are generated together (one prompt per row, ``batch_size`` rows per call), each
prompt's candidates are scored and its strategy told, until every prompt has ``max_candidates``. The
candidates are the ones each strategy would get searched alone with the same seeds (tts.run.loop derives seeds
the same way), since a candidate's image depends only on its prompt and noise lineage. Used by the
benchmarks (scripts/); ``tts-search`` keeps one prompt at a time so its run folders stay resumable.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

from ..core.runfolder import prompt_hash
from ..search import Candidate
from ..search.protocols import make_strategy

#: ``score(prompt, images) -> one dict of metric values per image``
ScoreFn = Callable[[str, list], list[dict]]


@dataclasses.dataclass
class LockstepStudy:
    """What to search: the prompts, a strategy factory as Hydra builds it (``factory(seed_fn=..., context=None)``),
    how candidates are scored and which metric steers, the run seed."""

    prompts: Sequence[str]
    search_factory: Callable
    score: ScoreFn
    steer: str
    seed: int = 0


def generate_mixed(generator, items: list[tuple[str, dict]], batch_size: int) -> tuple[list, float]:
    """Images for ``(prompt, lineage)`` pairs, ``batch_size`` rows per pipeline call, prompts mixed inside a
    call; returns (images, NFEs per image)."""
    images, nfe = [], 0.0
    for s in range(0, len(items), batch_size):
        chunk = items[s:s + batch_size]
        out, nfe, _ = generator.generate([p for p, _ in chunk], [n for _, n in chunk])
        images += out
    return images, nfe


def search_lockstep(generator, study: LockstepStudy, max_candidates: int, batch_size: int,
                    progress: Callable[[int, int], None] | None = None) -> tuple[list[list[dict]], float]:
    """1. build each prompt's strategy, 2. until each prompt has ``max_candidates``: ask every unfinished
    strategy, generate all their noises together, score and tell each. Returns, per prompt, its candidates'
    scores in the order they were generated (``noise`` added to each), and the NFEs per candidate."""
    strategies = [_strategy(study, p) for p in study.prompts]
    pools: list[list[dict]] = [[] for _ in study.prompts]
    nfe = 0.0
    while True:
        asks = [(i, noises) for i, pool in enumerate(pools) if len(pool) < max_candidates
                and (noises := strategies[i].ask())]
        if not asks:
            break
        images, nfe = generate_mixed(generator, [(study.prompts[i], n) for i, noises in asks for n in noises],
                                     batch_size)
        _score_and_tell(study, strategies, pools, asks, images)
        if progress:
            progress(sum(min(len(p), max_candidates) for p in pools), max_candidates * len(pools))
    return [pool[:max_candidates] for pool in pools], nfe


def _strategy(study: LockstepStudy, prompt: str):
    return make_strategy(study.search_factory, study.seed, prompt_hash(prompt))


def _score_and_tell(study: LockstepStudy, strategies, pools, asks, images) -> None:
    pos = 0
    for i, noises in asks:
        scores = study.score(study.prompts[i], images[pos:pos + len(noises)])
        pos += len(noises)
        strategies[i].tell([Candidate(0, j, n, s[study.steer]) for j, (n, s) in enumerate(zip(noises, scores))])
        pools[i] += [s | {"noise": n} for n, s in zip(noises, scores)]
