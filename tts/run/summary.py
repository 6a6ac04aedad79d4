"""When the study is complete: :func:`finish` writes ``summary.json`` (and, if asked, the collages) once, after
every shard has finished; a prompt's search counts as finished when its strategy, replayed from the recorded
candidates, asks for nothing more (:func:`unfinished`)."""
from __future__ import annotations

import collections
import json
import logging
from pathlib import Path

from ..core import runfolder as rf
from ..core.records import CandidateRecord, SearchRecord, Usage
from ..prompts import Prompt
from ..search import Candidate, SearchContext, best_record
from ..search.protocols import make_strategy, traits
from .job import SearchJob

log = logging.getLogger(__name__)


def finish(job: SearchJob, folder: rf.RunFolder) -> dict | None:
    """Write ``summary.json`` (and the collages) if the study is complete and this process is the first to
    see it so, and return the summary; None while prompts of other shards are unfinished, or to a shard
    that found the same summary already written by another."""
    with folder.locked():
        records, searches = folder.records(), rf.read_searches(folder.root)
        waiting = unfinished(job, records, searches)
        if waiting:
            who = job.shard.label if job.shard.count > 1 else "this process"
            log.info("%s finished its prompts; %d of %d prompts of the study are still being searched: the process "
                     "that completes the study writes %s", who, len(waiting), len(job.prompts), folder.root / rf.SUMMARY)
            return None
        summary = summarise(records, job, searches)
        path = folder.root / rf.SUMMARY
        new = not path.exists() or _read_json(path) != summary
        if new:
            rf.atomic_write_json(path, summary)
    if new and job.collages:
        from ..views.collage import collage_run

        try:
            written = collage_run(folder.root)
            log.info("%d collages in %s", len(written), folder.root / "collages")
        except Exception as e:  # noqa: BLE001 - the study is done and summarised; collages can be redrawn
            log.warning("collages not written (%s: %s); draw them with: tts-collage %s", type(e).__name__, e,
                        folder.root)
    return summary if new or job.shard.count == 1 else None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def unfinished(job: SearchJob, records: list[CandidateRecord], searches: dict[str, SearchRecord]) -> list[Prompt]:
    """The study's prompts whose search the manifest does not hold to its end: each prompt's strategy is
    replayed from the recorded candidates (as a resume would ask for them) until it asks for nothing more.
    A strategy that asks a person (human-preference) cannot be replayed: its prompts count as finished."""
    by_key = {r.key: r for r in rf.final_records(records)}
    grants = None
    if job.budget.study is not None:  # the study's passes (tts.run.study): unfinished until the last is decided
        allocation = rf.read_study(job.run_dir)
        if not allocation or not allocation[-1].final:
            return list(job.prompts)
        grants = final_grants(allocation)
    return [p for i, p in enumerate(job.prompts)
            if not replayed_to_end(job, i, p, by_key, searches, grants and grants.get(rf.prompt_hash(p.text)))]


def final_grants(allocation) -> dict[str, float]:
    """Each prompt's NFE budget after the study's passes (search.study_nfe_budget; records.StudyAllocation)."""
    out: dict[str, float] = {}
    for a in allocation:
        out |= a.grants
    return out


def replayed_to_end(job: SearchJob, index: int, prompt: Prompt, by_key: dict,
                     searches: dict[str, SearchRecord], grant: float | None = None) -> bool:
    """The prompt's strategy (built with ``grant`` as its NFE budget when given), replayed from the recorded
    candidates, asks for nothing more, or (``search.stop_at``) one of them reached the threshold: the rule of
    tts.run.rounds, a candidate at a time in round and index order."""
    phash = rf.prompt_hash(prompt.text)
    held = [r for r in by_key.values() if r.prompt_hash == phash]
    # the run folder: a search over pipelines reads its recorded routes there (tts.search.over_models)
    context = SearchContext(prompt.text, phash, Path(job.run_dir), (), min(r.nfe for r in held)) if held else None
    strategy = make_strategy(job.factory_for(grant), job.seed, phash, context)
    kind = traits(strategy)
    if kind.in_loop:  # IN-LOOP DISPATCH: a search is finished when searches.jsonl says so
        return phash in searches
    if kind.asks_a_person:
        return True
    number = 0
    while noises := strategy.ask():
        number += 1
        told = []
        for i, noise in enumerate(noises):
            r = by_key.get((phash, number, i))
            if r is None or r.noise != noise:
                return False
            if r.status == "ok" and job.budget.reached(r.score, job.verifier.higher_is_better()):
                return True
            told.append(Candidate.of(r, job.verifier.higher_is_better()))
        strategy.tell(told)
    return True


def best_per_prompt(records: list[CandidateRecord], higher_is_better: bool = True) -> dict[str, CandidateRecord]:
    """The best-scoring successful candidate of each prompt in the metric's direction (ties: earliest round,
    lowest index)."""
    by_prompt: dict[str, list[CandidateRecord]] = collections.defaultdict(list)
    for r in records:
        by_prompt[r.prompt].append(r)
    return {p: b for p, rs in by_prompt.items() if (b := best_record(rs, higher_is_better)) is not None}


def total_usage(records: list[CandidateRecord]) -> Usage | None:
    """API requests, tokens and estimated cost summed over records (None when no verifier reported usage)."""
    used = [r.usage for r in records if r.usage is not None]
    total = Usage()
    for u in used:
        total = total.add(u)
    return total if used else None


def summarise(records: list[CandidateRecord], job: SearchJob, searches: dict[str, SearchRecord] | None = None) -> dict:
    """summary.json: per prompt its best; means of every metric of the bests, overall and per value of the
    prompt source's grouping tags; verifier usage (requests, tokens, cost) summed over every record,
    failed attempts included; NFEs in all (in-loop candidates are charged what dropped particles cost, so
    this is what the searches spent), preview decodes and verifier calls (final images and previews)."""
    searches = searches or {}
    usage = total_usage(records)
    for s in searches.values():  # what in-loop searches' preview scores cost
        if s.usage is not None:
            usage = s.usage if usage is None else usage.add(s.usage)
    records = rf.final_records(records)
    best = best_per_prompt(records, job.verifier.higher_is_better())
    groups: dict[str, list[CandidateRecord]] = collections.defaultdict(list)
    for r in best.values():
        groups["all"].append(r)
        for tag, value in r.prompt_tags.items():
            if job.group_by is None or tag in job.group_by:
                groups[f"{tag}={value}"].append(r)

    def means(rs):
        values = collections.defaultdict(list)
        for r in rs:
            for metric, s in r.scores.get(r.verifier, {}).items():
                values[metric].append(s.score)
        return {"n": len(rs)} | {m: sum(v) / len(v) for m, v in values.items()}

    out = {
        "schema_version": 3,
        "verifier": job.verifier.name, "choice_of_metric": job.verifier.choice_of_metric,
        "candidates": len(records), "failed": sum(r.status == "failed" for r in records),
        "blocked": sum(r.status == "blocked" for r in records),
        "blocked_per_prompt": dict(collections.Counter(r.prompt for r in records if r.status == "blocked")),
        "nfe_total": sum(r.nfe for r in records),
        "preview_decodes": sum(s.preview_decodes for s in searches.values()),
        "verifier_calls": sum(r.status != "blocked" for r in records) + sum(s.preview_scores for s in searches.values()),
        "usage": usage.model_dump() if usage else None,
        "groups": {k: means(v) for k, v in sorted(groups.items())},
        "prompts": {p: {"best_score": r.score, "best_image": r.image, "round": r.round, "seed": r.seed}
                    for p, r in best.items()},
    }
    if job.budget.stop_at is not None or job.budget.study is not None:
        out |= cost_to_quality(records, job, best, out["prompts"])
    return out


def cost_to_quality(records: list[CandidateRecord], job: SearchJob, best: dict[str, CandidateRecord],
                    per_prompt: dict[str, dict]) -> dict:
    """``search.stop_at`` / ``search.study_nfe_budget``: per prompt (added to ``per_prompt``) the NFEs it spent,
    the score that stopped it (None: it never reached ``stop_at``), its budget and what it left unspent; for the
    study, the NFEs per prompt (mean and quantiles) and the share of prompts that reached the threshold."""
    up = job.verifier.higher_is_better()
    spent = collections.Counter()
    for r in records:
        spent[r.prompt] += r.nfe
    grants = final_grants(rf.read_study(job.run_dir)) if job.budget.study is not None else {}
    for p, row in per_prompt.items():
        b = best[p]
        reached = job.budget.reached(b.score, up)
        budget = grants.get(b.prompt_hash, job.budget.nfe)
        row |= {"nfe_spent": spent[p], "stopped_at_score": b.score if reached else None, "nfe_budget": budget,
                "nfe_unspent": max(0.0, budget - spent[p]) if reached and budget is not None else None}
    texts = [p.text for p in job.prompts]
    nfes = sorted(spent[t] for t in texts)
    hits = [t for t in texts if t in per_prompt and per_prompt[t]["stopped_at_score"] is not None]
    section = {"stop_at": job.budget.stop_at, "n": len(texts), "reached": len(hits),
               "success": len(hits) / len(texts) if texts and job.budget.stop_at is not None else None,
               "nfe_per_prompt": _distribution(nfes),
               "nfe_per_prompt_reached": _distribution(sorted(spent[t] for t in hits))}
    if job.budget.study is not None:
        section["study_nfe_budget"] = job.budget.study
        section["study_passes"] = len(rf.read_study(job.run_dir))
    return {"cost_to_quality": section}


def _distribution(values: list[float]) -> dict | None:
    """Mean and quantiles (linear interpolation) of sorted values; None when there are none."""
    if not values:
        return None

    def q(f):
        x = f * (len(values) - 1)
        lo = int(x)
        return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (x - lo)

    return {"mean": sum(values) / len(values), "min": values[0], "q10": q(0.1), "q25": q(0.25), "median": q(0.5),
            "q75": q(0.75), "q90": q(0.9), "max": values[-1]}
