"""The batched search loop: per prompt, ask the strategy for noises, generate them in batches,
verify each batch in a worker thread while the next batch generates, record every candidate,
tell the strategy, and write the round's best. Finished candidates found in the run folder's
manifest are neither regenerated nor re-scored, so a rerun of the same folder resumes.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import logging
import time
import traceback
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm.auto import tqdm

from . import runfolder as rf
from .generate import Generator
from .noise import derive_seed
from .pipelines import PipelineSpec
from .prompts import Prompt
from .records import CandidateRecord, RoundBest, ScoreSummary, Timings, Usage
from .search import Candidate, SearchContext
from .verifiers.base import Verdict, Verifier, as_verdict

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchJob:
    """Everything one search run needs, validated (tts.cli.build_job) before anything heavy happens."""

    pipeline: PipelineSpec
    verifier: Verifier
    search_factory: Callable
    prompts: list[Prompt]
    run_dir: Path
    seed: int = 0
    batch_size: int = 4
    verify_concurrency: int = 2


@dataclasses.dataclass
class _Pending:
    """A generated candidate waiting for its verification."""

    prompt_index: int
    prompt: Prompt
    round: int
    index: int
    noise: dict
    image_path: Path
    nfe: float
    generate_s: float


def run_search(job: SearchJob) -> dict:
    """1. open the run folder, 2. load pipeline and verifier, 3. search every prompt, 4. summarise."""
    folder = rf.RunFolder(job.run_dir)
    finished, failed = _resume_index(folder)
    generator = Generator(job.pipeline.load(), job.pipeline)
    job.verifier.setup()
    with cf.ThreadPoolExecutor(job.verify_concurrency, thread_name_prefix="verify") as pool:
        for i, prompt in enumerate(tqdm(job.prompts, desc="prompts", unit="prompt", disable=len(job.prompts) < 2)):
            search_prompt(job, folder, generator, pool, i, prompt, finished, failed)
    generator.close()
    job.verifier.close()
    summary = summarise(folder.records(), job)
    rf.atomic_write_json(folder.root / rf.SUMMARY, summary)
    return summary


def _resume_index(folder: rf.RunFolder):
    finished, failed = {}, {}
    for r in rf.final_records(folder.records()):  # one read of the manifest
        if (folder.root / r.image).exists():
            (finished if r.status == "ok" else failed)[r.key] = r
    if finished or failed:
        log.info("resuming %s: %d finished candidates, %d to re-verify", folder.root, len(finished), len(failed))
    return finished, failed


def search_prompt(job, folder, generator, pool, prompt_index, prompt, finished, failed) -> None:
    """Run one prompt's search to the end, round by round.

    A strategy whose rounds do not depend on scores (``independent_rounds = True``, e.g. random search)
    has its next round generated while the previous round is still being verified; otherwise each
    round is told its scores before the next is asked for.
    """
    phash = rf.prompt_hash(prompt.text)
    context = SearchContext(prompt.text, prompt_index, phash, folder.root, tuple(generator.latent_shape))
    strategy = job.search_factory(seed_fn=lambda r, i, purpose: derive_seed(job.seed, phash, r, i, purpose),
                                  context=context)
    ahead = getattr(strategy, "independent_rounds", False)
    bar = tqdm(desc=prompt.text[:40], unit="img", leave=False, total=0)
    in_flight: list[tuple[int, dict]] = []
    nfe_total, round_, exhausted = 0.0, 0, False
    while not exhausted or in_flight:
        noises = [] if exhausted else strategy.ask()
        exhausted = exhausted or not noises
        if noises:
            round_ += 1
            in_flight.append((round_, start_round(job, folder, generator, pool, prompt_index, prompt, round_, noises,
                                                  finished, failed, bar)))
        if in_flight and (exhausted or not ahead or len(in_flight) > 1):
            r, started = in_flight.pop(0)
            records = finish_round(started, bar)
            strategy.tell([Candidate(c.round, c.index, c.noise, c.score if c.status == "ok" else None, c)
                           for c in records])
            nfe_total += sum(c.nfe for c in records)
            write_round_best(folder, job, prompt, r, records, strategy.best, nfe_total)
    bar.close()


def start_round(job, folder, generator, pool, prompt_index, prompt, round_, noises, finished, failed, bar) -> dict:
    """Generate one round's missing candidates in batches, each batch handed to a verifier worker at once."""
    phash = rf.prompt_hash(prompt.text)
    done: dict[int, CandidateRecord] = {}
    todo: list[_Pending] = []
    regen: list[tuple[int, dict]] = []
    for i, noise in enumerate(noises):
        key = (phash, round_, i)
        if key in finished and finished[key].noise == noise:
            done[i] = finished[key]
        elif key in failed and failed[key].noise == noise:
            old = failed[key]
            todo.append(_Pending(prompt_index, prompt, round_, i, noise, folder.root / old.image, old.nfe,
                                 old.timings.generate_s))
        else:
            regen.append((i, noise))
    bar.total += len(noises)
    bar.update(len(done))
    futures = [pool.submit(verify_and_record, job, folder, todo[k:k + job.batch_size])
               for k in range(0, len(todo), job.batch_size)]
    for k in range(0, len(regen), job.batch_size):
        batch = regen[k:k + job.batch_size]
        pending = generate_batch(generator, folder, prompt_index, prompt, round_, batch)
        futures.append(pool.submit(verify_and_record, job, folder, pending))
    return {"done": done, "futures": futures, "n": len(noises)}


def finish_round(started: dict, bar) -> list[CandidateRecord]:
    """Wait for a round's verifications; its records in candidate order."""
    done = started["done"]
    for fut in started["futures"]:
        for rec in fut.result():
            done[rec.index] = rec
            bar.update(1)
    return [done[i] for i in range(started["n"])]


def generate_batch(generator: Generator, folder, prompt_index, prompt, round_, batch) -> list[_Pending]:
    images, nfe, seconds = generator.generate(prompt.text, [noise for _, noise in batch])
    pending = []
    for (i, noise), image in zip(batch, images):
        path = folder.root / rf.image_name(prompt.text, round_, noise["seed"])
        rf.save_image(path, image)
        pending.append(_Pending(prompt_index, prompt, round_, i, noise, path, nfe, seconds / len(batch)))
    return pending


def verify_and_record(job: SearchJob, folder: rf.RunFolder, pending: list[_Pending]) -> list[CandidateRecord]:
    """Score a batch (worker thread) and append a record per candidate; a failure is recorded, not raised."""
    if not pending:
        return []
    start = time.perf_counter()
    try:
        images = [Image.open(p.image_path).convert("RGB") for p in pending]
        verdicts = [as_verdict(s) for s in job.verifier.score([p.prompt.text for p in pending], images)]
        if len(verdicts) != len(pending):
            raise RuntimeError(f"verifier returned {len(verdicts)} results for {len(pending)} images")
    except Exception as e:  # noqa: BLE001 - a verifier failure must be recorded, never lose the run
        log.warning("verification failed for %d candidates: %s", len(pending), e)
        log.debug("%s", traceback.format_exc())
        verdicts = [Verdict(error=f"{type(e).__name__}: {e}")] * len(pending)
    seconds = (time.perf_counter() - start) / len(pending)
    records = []
    for p, v in zip(pending, verdicts):
        rec = make_record(job, folder, p, v, seconds)
        folder.append(rec)
        records.append(rec)
    return records


def make_record(job: SearchJob, folder: rf.RunFolder, p: _Pending, v: Verdict, verify_s: float) -> CandidateRecord:
    metric, name = job.verifier.choice_of_metric, job.verifier.name
    ok = v.error is None and v.scores is not None and metric in v.scores
    error = None if ok else (v.error or f"no {metric!r} in the verifier's answer")
    if not ok:
        log.warning("candidate %s round %d #%d: verification failed: %s", p.prompt.text[:40], p.round, p.index, error)
    return CandidateRecord(
        prompt=p.prompt.text, prompt_index=p.prompt_index, prompt_hash=rf.prompt_hash(p.prompt.text),
        prompt_tags=p.prompt.tags, round=p.round, index=p.index, seed=p.noise["seed"], noise=p.noise,
        nfe=p.nfe, status="ok" if ok else "failed", error=error, verifier=name, choice_of_metric=metric,
        score=v.scores[metric].score if ok else None,
        scores=({name: v.scores} if v.scores else {}) | v.members, image=p.image_path.name,
        timings=Timings(generate_s=p.generate_s, verify_s=verify_s), worker=folder.worker, usage=v.usage)


def write_round_best(folder, job, prompt: Prompt, round_: int, records, best: Candidate | None, nfe_total: float):
    scored = [r for r in records if r.status == "ok"]
    top = max(scored, key=lambda r: r.score, default=None)
    metric = job.verifier.choice_of_metric
    top_metric = top.scores[job.verifier.name][metric] if top else None
    doc = RoundBest(
        prompt=prompt.text, search_round=round_, num_noises=len(records),
        best_noise_seed=top.seed if top else None,
        best_score=ScoreSummary(explanation=top_metric.explanation if top_metric else None,
                                score=top.score if top else None),
        choice_of_metric=metric, best_img_path=str(folder.root / top.image) if top else None,
        best_noise=top.noise if top else None, best_scores=top.scores if top else {},
        global_best_score=best.score if best else None,
        global_best_img_path=str(folder.root / best.record.image) if best and best.record else None,
        num_failed=len(records) - len(scored), nfe_round=sum(r.nfe for r in records), nfe_total=nfe_total)
    rf.atomic_write_json(folder.root / rf.round_json_name(prompt.text, round_), doc.model_dump())


def best_per_prompt(records: list[CandidateRecord]) -> dict[str, CandidateRecord]:
    """The highest-scoring successful candidate of each prompt (ties: earliest round, lowest index)."""
    best: dict[str, CandidateRecord] = {}
    for r in sorted(records, key=lambda r: (r.round, r.index)):
        if r.status == "ok" and (r.prompt not in best or r.score > best[r.prompt].score):
            best[r.prompt] = r
    return best


def total_usage(records: list[CandidateRecord]) -> Usage | None:
    """API requests, tokens and estimated cost summed over records (None when no verifier reported usage)."""
    used = [r.usage for r in records if r.usage is not None]
    total = Usage()
    for u in used:
        total = total.add(u)
    return total if used else None


def summarise(records: list[CandidateRecord], job: SearchJob) -> dict:
    """summary.json: per prompt its best; means of every metric of the bests, overall and per tag value;
    verifier usage (requests, tokens, cost) summed over every record, failed attempts included."""
    usage = total_usage(records)
    records = rf.final_records(records)
    best = best_per_prompt(records)
    groups: dict[str, list[CandidateRecord]] = collections.defaultdict(list)
    for r in best.values():
        groups["all"].append(r)
        for tag, value in r.prompt_tags.items():
            groups[f"{tag}={value}"].append(r)

    def means(rs):
        values = collections.defaultdict(list)
        for r in rs:
            for metric, s in r.scores.get(r.verifier, {}).items():
                values[metric].append(s.score)
        return {"n": len(rs)} | {m: sum(v) / len(v) for m, v in values.items()}

    return {
        "schema_version": 2,
        "verifier": job.verifier.name, "choice_of_metric": job.verifier.choice_of_metric,
        "candidates": len(records), "failed": sum(r.status == "failed" for r in records),
        "nfe_total": sum(r.nfe for r in records),
        "usage": usage.model_dump() if usage else None,
        "groups": {k: means(v) for k, v in sorted(groups.items())},
        "prompts": {p: {"best_score": r.score, "best_image": r.image, "round": r.round, "seed": r.seed}
                    for p, r in best.items()},
    }
