"""``search.study_nfe_budget=B``: one NFE budget for the whole prompt set, shared out in passes.

The rule (each pass is written to ``study.jsonl`` as a :class:`tts.core.records.StudyAllocation` before it runs,
and a rerun replays the passes as written, so a resumed study makes the same records as an uninterrupted one):

1. pass 1: each of the n prompts gets B / n NFEs (no more than ``search.nfe_budget`` when that is set too) and is
   searched with it as its ``nfe_budget``; with ``search.stop_at`` a prompt stops at its first hit
   (tts.run.rounds) and leaves the rest unspent;
2. the leftover (B minus what every prompt spent) is counted in whole images (``nfe_per_image``, measured on the
   pipeline); the prompts still open are those below the threshold whose strategy, replayed with one more image,
   asks for more (a search that ended its own rounds stays closed);
3. the next pass hands those images out to the open prompts (never past ``search.nfe_budget``): with
   ``search.study_order=round-robin`` (the default) one at a time, in prompt order; with ``best-first`` all it can
   take to the prompt whose best score so far is highest (closest to the threshold; ties: prompt order), then the
   next. A prompt's new budget is what it spent plus the images it got;
4. passes repeat until no open prompt is left or the leftover pays for no image; the last line says ``final``.

An in-loop (or gradient) search is one unit of work that cannot be extended, so with those strategies each pass
is a new search of every prompt it grants: with the NFEs the pass adds (its grant minus what the prompt spent)
as its ``nfe_budget``, its seeds derived from the pass, its records in round k for pass k (``searches.jsonl``
says which passes are complete); a prompt stays open until one of its finals reaches ``search.stop_at``, and the
leftover is handed out in units of the strategy's smallest search (one image for most; search=paths and
search=prune plan more). Restarting pays: a refine search stuck polishing a near miss that cannot be fixed
is replaced by a fresh one (docs/stopping.md).

The whole study runs in one process (tts.search.protocols.driver_problem refuses shards).
"""
from __future__ import annotations

import logging
import math
from typing import Callable

from ..core import runfolder as rf
from ..core.records import StudyAllocation
from ..prompts import Prompt
from ..search import best_record, oriented
from ..search.protocols import make_strategy, traits
from .summary import replayed_to_end

log = logging.getLogger(__name__)


def search_study(shared, mine: list[tuple[int, Prompt]], claim_and_search: Callable) -> None:
    """Every pass of the study: decided (or read back), then each granted prompt searched with its grant."""
    job, folder = shared.job, shared.folder
    written = rf.read_study(folder.root)
    nfe = _nfe_per_image(shared, written, mine)
    grants: dict[str, float] = {}
    step = 0
    while True:
        step += 1
        shared.index.update()
        allocation = written[step - 1] if step <= len(written) else None
        if allocation is None:
            allocation = decide(job, mine, shared.index.by_prompt, grants, step, nfe)
            rf.append_line(folder.root / rf.STUDY, rf.readable_line(allocation))
        elif allocation.study_nfe_budget != job.budget.study:
            raise ValueError(f"study.jsonl was written for search.study_nfe_budget={allocation.study_nfe_budget:g}; "
                             "a rerun of this folder must keep it")
        if allocation.final:
            return
        grants |= allocation.grants
        log.info("study pass %d: %d prompt%s, %.0f NFEs left over before it", step, len(allocation.grants),
                 "" if len(allocation.grants) == 1 else "s", allocation.leftover)
        if traits(make_strategy(job.search_factory)).in_loop:  # a new search per pass, with what the pass adds
            _search_pass(shared, mine, allocation, step, claim_and_search)
            continue
        for i, prompt in mine:
            phash = rf.prompt_hash(prompt.text)
            if phash in allocation.grants and not claim_and_search(shared, i, prompt, len(mine) > 1, grants[phash]):
                raise RuntimeError(_HELD.format(prompt.text[:40]))


_HELD = "another process holds {!r}: a study budget needs the study in one process"


def _search_pass(shared, mine, allocation: StudyAllocation, step: int, claim_and_search: Callable) -> None:
    """One pass of an in-loop study: each granted prompt searched anew with the NFEs the pass adds, in round
    ``step``; together in shared denoiser calls when ``batch_size`` > 1 (tts.run.inloop)."""
    from .inloop import search_prompts_in_loop

    adds = {h: g - allocation.spent.get(h, 0.0) for h, g in allocation.grants.items()}
    granted = [(i, p) for i, p in mine if rf.prompt_hash(p.text) in adds]
    if len(granted) > 1 and shared.job.batch_size > 1:
        search_prompts_in_loop(shared, granted, adds, step)
    for i, prompt in granted:
        if not claim_and_search(shared, i, prompt, len(granted) > 1, adds[rf.prompt_hash(prompt.text)], step):
            raise RuntimeError(_HELD.format(prompt.text[:40]))


def _nfe_per_image(shared, written: list[StudyAllocation], mine) -> float:
    """The NFEs of one image: as the first pass recorded it, else measured on the loaded pipeline."""
    if written:
        return written[0].nfe_per_image
    from ..sampling.particles import nfe_per_image

    return float(nfe_per_image(shared.generator, mine[0][1].text))


def decide(job, mine, by_prompt: dict, grants: dict[str, float], step: int, nfe: float) -> StudyAllocation:
    """The next pass by the module's rule, from what the manifest holds."""
    study, cap = job.budget.study, job.budget.nfe
    hashes = [rf.prompt_hash(p.text) for _, p in mine]
    spent = {h: sum(r.nfe for r in by_prompt.get(h, {}).values()) for h in hashes}
    unit = _unit(job, nfe)
    if step == 1:
        share = study / len(mine) if cap is None else min(study / len(mine), cap)
        if share + 1e-9 < unit:
            raise rf.RunFolderError(
                f"search.study_nfe_budget={study:g} gives each of the {len(mine)} prompts {share:g} NFEs, less than "
                f"the smallest search of this strategy ({unit:g} NFEs on this pipeline): raise it to at least "
                f"{unit * len(mine):g}" + ("" if cap is None or cap >= unit else f" and search.nfe_budget to {unit:g}"))
        return StudyAllocation(study_nfe_budget=study, nfe_per_image=nfe, step=1, grants={h: share for h in hashes},
                               spent=spent, leftover=study)
    leftover = study - sum(spent.values())
    images = int(leftover // unit + 1e-9)  # in units: one image, or an in-loop strategy's smallest search
    open_ = [h for (i, p), h in zip(mine, hashes) if _open(job, i, p, by_prompt.get(h, {}), spent[h] + unit)
             and (cap is None or spent[h] + unit <= cap + 1e-9)]
    if job.budget.study_order == "best-first":
        new = _best_first(job, open_, by_prompt, spent, images, unit, cap)
        return StudyAllocation(study_nfe_budget=study, nfe_per_image=nfe, step=step, grants=new, spent=spent,
                               leftover=leftover, final=not new)
    extra = dict.fromkeys(open_, 0)
    while images > 0 and extra:
        for h in list(extra):
            if images == 0:
                break
            if cap is not None and spent[h] + (extra[h] + 1) * unit > cap + 1e-9:
                continue
            extra[h] += 1
            images -= 1
        if all(cap is not None and spent[h] + (extra[h] + 1) * unit > cap + 1e-9 for h in extra):
            break
    new = {h: spent[h] + k * unit for h, k in extra.items() if k}
    return StudyAllocation(study_nfe_budget=study, nfe_per_image=nfe, step=step, grants=new, spent=spent,
                           leftover=leftover, final=not new)


def _unit(job, nfe: float) -> float:
    """What the leftover is handed out in: one image's NFEs, or (an in-loop strategy, which runs a new search per
    pass) its smallest search's, in whole images."""
    from ..search._steps import smallest_nfe

    strategy, steps = make_strategy(job.search_factory), job.pipeline.num_inference_steps
    if not traits(strategy).in_loop or not steps:
        return nfe
    return math.ceil(smallest_nfe(strategy, steps, nfe) / nfe - 1e-9) * nfe


def _best_first(job, open_: list[str], by_prompt: dict, spent: dict, images: int, nfe: float, cap) -> dict:
    """The leftover images to the open prompts by their best score so far (oriented: larger is closer to the
    threshold; a prompt with none scored last), each taking all it can (up to ``search.nfe_budget``)."""
    up = job.verifier.higher_is_better()

    def key(h):
        top = best_record(by_prompt.get(h, {}).values(), up)
        return (0, -oriented(top.score, up)) if top is not None else (1, 0.0)

    new = {}
    for h in sorted(open_, key=key):  # sorted is stable: ties keep prompt order
        take = images if cap is None else min(images, int((cap - spent[h]) // nfe + 1e-9))
        if take > 0:
            new[h], images = spent[h] + take * nfe, images - take
    return new


def _open(job, index: int, prompt: Prompt, held: dict, grant: float) -> bool:
    """Below the threshold, and its strategy, given ``grant``, asks for a candidate the manifest does not hold
    (an in-loop search: a new one can always run, so below the threshold is enough)."""
    if traits(make_strategy(job.search_factory)).in_loop:
        up = job.verifier.higher_is_better()
        return not any(r.status == "ok" and job.budget.reached(r.score, up) for r in held.values())
    return not replayed_to_end(job, index, prompt, held, {}, grant)
