"""The batched search loop: per prompt, ask the strategy for noises, generate them in batches,
verify each batch in a worker thread while the next batch generates, record every candidate,
tell the strategy, and write the round's best. Finished candidates found in the run folder's
manifest (with a readable image) are neither regenerated nor re-scored, so a rerun of the same
folder resumes; a prompt another live process has claimed is left to it.

Several processes may share one study (tts.run.shard): each searches the prompts of its shard, and the one
that finds the study complete when it finishes (every prompt's search replayed to its end from the
manifest) writes ``summary.json`` and, if asked, the collages: once, after every shard has finished.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import json
import logging
import math
import threading
import time
import traceback
from pathlib import Path
from typing import Callable

from PIL import Image
from tqdm.auto import tqdm

from ..core import runfolder as rf
from ..core.noise import derive_seed
from ..pipelines import PipelineSpec
from ..prompts import Prompt
from ..core.records import CandidateRecord, PathRecord, RoundBest, SafetyRecord, ScoreSummary, SearchRecord, Timings, Usage
from .safety import Safety
from ..search import Candidate, SearchContext, best_record
from .shard import Shard
from ..core.validate import is_int
from ..verifiers.base import Verdict, Verifier, as_verdict

log = logging.getLogger(__name__)


@dataclasses.dataclass
class SearchJob:
    """Everything one search run needs, validated (tts.app.cli.build_job) before anything heavy happens."""

    pipeline: PipelineSpec
    verifier: Verifier
    search_factory: Callable
    prompts: list[Prompt]
    run_dir: Path
    seed: int = 0
    batch_size: int = 4
    #: verifier batches in flight; None: enough for the verifier's own ``max_concurrency`` at this batch size
    verify_concurrency: int | None = None
    #: prompt tags the summary groups by (None: every tag)
    group_by: tuple[str, ...] | None = None
    #: this process's share of the prompts (tts.run.shard)
    shard: Shard = dataclasses.field(default_factory=Shard)
    #: one manifest per writer and no locks (file systems without cross-host flock)
    per_shard_manifest: bool = False
    #: write tts-collage's strips when the study is complete
    collages: bool = False
    #: blocked candidates: detection, prompt rewriting, fallback pipeline (tts.run.safety)
    safety: Safety = dataclasses.field(default_factory=Safety)
    #: progress bars on the terminal (tts-search: on; tts.search: only when asked)
    progress: bool = True
    per_prompt_total: int | None = None  # candidates a prompt's search makes, when the plan knows it exactly

    @property
    def verify_workers(self) -> int:
        """Worker threads for verification: the set value, or enough batches in flight for the verifier's
        ``max_concurrency`` requests (API graders split a batch into one request per image)."""
        if self.verify_concurrency is not None:
            return self.verify_concurrency
        limit = getattr(self.verifier, "max_concurrency", None)
        if is_int(limit) and limit > 0:
            return max(2, math.ceil(limit / self.batch_size))
        return 2


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
    safety: SafetyRecord | None = None  # blocked when safety.blocked: recorded, never verified
    path_record: PathRecord | None = None  # an in-loop strategy's candidate: its whole path (tts.run.inloop)


@dataclasses.dataclass
class _Resume:
    """What the run folder already holds for a prompt: finished candidates, and ones whose verification failed."""

    finished: dict[tuple, CandidateRecord]
    failed: dict[tuple, CandidateRecord]


class _Index:
    """The folder's records by prompt, brought up to date (only what was appended since) before each prompt,
    so a prompt another writer finished after this process started is not redone."""

    def __init__(self, folder: rf.RunFolder):
        self.folder, self.tail = folder, rf.ManifestTail(folder.root)
        self.by_prompt: dict[str, dict[tuple, CandidateRecord]] = collections.defaultdict(dict)
        self.update()

    def update(self) -> None:
        for r in self.tail.read():
            held = self.by_prompt[r.prompt_hash]
            if r.status == "ok" or r.key not in held or held[r.key].status != "ok":  # rf.final_records' rule
                held[r.key] = r

    def resume(self, phash: str, regenerate_blocked: bool = False) -> _Resume:
        """A prompt's finished (ok, blocked) and failed candidates whose image is still readable; the rest are
        redone (blocked ones too when ``regenerate_blocked``: safety.rewrite or a fallback pipeline is on)."""
        resume, unreadable = _Resume({}, {}), 0
        for r in self.by_prompt.get(phash, {}).values():
            if r.status == "blocked" and regenerate_blocked:
                continue
            image = rf.run_file(self.folder.root, r.image)  # never a file outside the folder (a tampered record)
            if image is not None and rf.image_ok(image):
                (resume.finished if r.status != "failed" else resume.failed)[r.key] = r
            else:
                unreadable += 1
        if unreadable:
            log.warning("%d candidate image%s missing or unreadable in %s: regenerating them", unreadable,
                        "s are" if unreadable > 1 else " is", self.folder.root)
        return resume


class _Progress:
    """One bar per prompt counting candidates generated, with how many are verified beside it."""

    def __init__(self, prompt: str, disable: bool, leave: bool, total: int | None = None):
        self.bar = tqdm(desc=prompt[:40], unit="img", total=total, disable=disable, leave=leave, dynamic_ncols=True)
        self.verified = 0
        self._lock = threading.Lock()

    def generated(self, n: int) -> None:
        self.bar.update(n)

    def verified_(self, n: int) -> None:
        with self._lock:
            self.verified += n
            self.bar.set_postfix_str(f"verified {self.verified}", refresh=True)

    def close(self) -> None:
        self.bar.close()


@dataclasses.dataclass
class _Shared:
    """What every prompt of this process's search shares: the job, the folder, the generator, the verifier pool."""

    job: SearchJob
    folder: rf.RunFolder
    generator: object
    pool: cf.ThreadPoolExecutor
    index: _Index


@dataclasses.dataclass
class _PromptRun:
    """One prompt's search in progress: where it writes, what it reuses, its bar."""

    job: SearchJob
    folder: rf.RunFolder
    generator: object
    pool: cf.ThreadPoolExecutor
    index: int
    prompt: Prompt
    resume: _Resume
    progress: _Progress

    @property
    def phash(self) -> str:
        return rf.prompt_hash(self.prompt.text)


@dataclasses.dataclass
class _Round:
    """A round in flight: candidates reused from the folder, verifications under way."""

    number: int
    size: int
    done: dict[int, CandidateRecord]
    futures: list[cf.Future]


def run_search(job: SearchJob) -> dict | None:
    """1. open the run folder, 2. load pipeline and verifier, 3. search this shard's prompts, 4. if the study
    is complete, summarise it (None when other shards are still at work)."""
    from ..sampling.generate import make_generator

    folder = rf.RunFolder(job.run_dir, per_shard=job.per_shard_manifest)
    folder.clean()
    index = _Index(folder)
    held = sum(len(v) for v in index.by_prompt.values())
    if held:
        log.info("resuming %s: %d candidates recorded", folder.root, held)
    mine = [(i, p) for i, p in enumerate(job.prompts) if job.shard.owns(i)]
    if job.shard.count > 1:
        log.info("%s: %d of %d prompts", job.shard.label, len(mine), len(job.prompts))
    if mine:
        generator = make_generator(job.pipeline)
        try:
            job.verifier.setup()
            with cf.ThreadPoolExecutor(job.verify_workers, thread_name_prefix="verify") as pool:
                _search_all(_Shared(job, folder, generator, pool, index), mine)
        finally:
            generator.close()
            job.verifier.close()
            job.safety.close()
    return finish(job, folder)


#: Seconds between looks at this shard's prompts that another process holds.
CLAIM_POLL_S = 2.0


def _search_all(shared: _Shared, mine: list[tuple[int, Prompt]]) -> None:
    """Every prompt of this shard. A prompt another live process holds is left to it, then waited for: done by
    that process, or taken over once its holder dies or (another host) stops its heartbeat, as when a
    preempted job is requeued on another node while its old claim still looks alive."""
    job, many = shared.job, len(mine) > 1
    if many and job.batch_size > 1:  # an in-loop strategy's prompts searched together (tts.run.inloop)
        from .inloop import search_prompts_in_loop

        search_prompts_in_loop(shared, mine)
    held = [(i, p) for i, p in tqdm(mine, desc="prompts", unit="prompt", disable=not many or not job.progress)
            if not _claim_and_search(shared, i, p, many)]
    if held:
        log.info("%d prompt%s held by other processes writing this folder: waiting until they are done or their "
                 "holder is gone (another host's claim expires %.0f minutes after its last heartbeat)", len(held),
                 "s" if len(held) > 1 else "", rf.CLAIM_STALE_S / 60)
    while held:
        time.sleep(CLAIM_POLL_S)
        shared.index.update()
        searches = rf.read_searches(shared.folder.root)
        held = [(i, p) for i, p in held if not _replayed_to_end(job, i, p, shared.index.by_prompt.get(
            rf.prompt_hash(p.text), {}), searches) and not _claim_and_search(shared, i, p, many)]


def _claim_and_search(shared: _Shared, i: int, prompt: Prompt, many: bool) -> bool:
    """Search one prompt if this process can claim it (False: another live process holds it)."""
    phash, folder = rf.prompt_hash(prompt.text), shared.folder
    if folder.claim(phash) is not None:
        return False
    try:
        shared.index.update()  # what other writers finished since this process last looked
        search_prompt(_PromptRun(shared.job, folder, shared.generator, shared.pool, i, prompt,
                                 shared.index.resume(phash, shared.job.safety.regenerates),
                                 _Progress(prompt.text, not shared.job.progress, not many,
                                           shared.job.per_prompt_total)))
    finally:
        folder.release(phash)
    return True


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
    return [p for i, p in enumerate(job.prompts) if not _replayed_to_end(job, i, p, by_key, searches)]


def _replayed_to_end(job: SearchJob, index: int, prompt: Prompt, by_key: dict,
                     searches: dict[str, SearchRecord]) -> bool:
    phash = rf.prompt_hash(prompt.text)
    held = [r for r in by_key.values() if r.prompt_hash == phash]
    context = SearchContext(prompt.text, phash, Path("."), (), min(r.nfe for r in held)) if held else None
    strategy = job.search_factory(seed_fn=lambda r, i, purpose: derive_seed(job.seed, phash, r, i, purpose),
                                  context=context)
    if getattr(strategy, "in_loop", False):
        return phash in searches
    if hasattr(strategy, "frontend"):
        return True
    number = 0
    while noises := strategy.ask():
        number += 1
        told = []
        for i, noise in enumerate(noises):
            r = by_key.get((phash, number, i))
            if r is None or r.noise != noise:
                return False
            told.append(Candidate(r.round, r.index, r.noise, r.score if r.status == "ok" else None, r,
                                  job.verifier.higher_is_better()))
        strategy.tell(told)
    return True


def search_prompt(run: _PromptRun) -> None:
    """Run one prompt's search to the end, round by round.

    A strategy whose rounds do not depend on scores (``independent_rounds = True``, e.g. random search)
    has its next round generated while the previous round is still being verified; otherwise each
    round is told its scores before the next is asked for.
    """
    job, phash = run.job, run.phash
    strategy = job.search_factory(seed_fn=lambda r, i, purpose: derive_seed(job.seed, phash, r, i, purpose),
                                  context=_context(run))
    if getattr(strategy, "in_loop", False):  # particles inside the denoising loop (tts.run.inloop)
        from .inloop import search_prompt_in_loop

        try:
            return search_prompt_in_loop(run, strategy)
        finally:
            run.progress.close()
    if getattr(strategy, "interactive", False):  # never draw a bar over a question the person is answering
        run.progress.bar.disable = True
    ahead = getattr(strategy, "independent_rounds", False)
    in_flight: list[_Round] = []
    nfe_total, number, exhausted = 0.0, 0, False
    try:
        while not exhausted or in_flight:
            noises = [] if exhausted else strategy.ask()
            exhausted = exhausted or not noises
            if noises:
                number += 1
                in_flight.append(start_round(run, number, noises))
            if in_flight and (exhausted or not ahead or len(in_flight) > 1):
                started = in_flight.pop(0)
                records = finish_round(run, started)
                strategy.tell([Candidate(c.round, c.index, c.noise, c.score if c.status == "ok" else None, c,
                                         job.verifier.higher_is_better())
                               for c in records])
                nfe_total += sum(c.nfe for c in records)
                write_round_best(run, started.number, records, strategy.best, nfe_total)
    finally:
        run.progress.close()


def _context(run: _PromptRun) -> SearchContext:
    """The strategy's context; the NFEs of one candidate are measured only when ``search.nfe_budget`` asks."""
    nfe = None
    if getattr(run.job.search_factory, "keywords", {}).get("nfe_budget") is not None:
        from .inloop import nfe_per_image

        nfe = nfe_per_image(run.generator, run.prompt.text)
    return SearchContext(run.prompt.text, run.phash, run.folder.root, tuple(run.generator.latent_shape), nfe)


def start_round(run: _PromptRun, number: int, noises: list[dict]) -> _Round:
    """Generate one round's missing candidates in batches, each batch handed to a verifier worker at once."""
    job, folder, phash = run.job, run.folder, run.phash
    done: dict[int, CandidateRecord] = {}
    todo: list[_Pending] = []
    regen: list[tuple[int, dict]] = []
    for i, noise in enumerate(noises):
        key = (phash, number, i)
        if key in run.resume.finished and run.resume.finished[key].noise == noise:
            done[i] = run.resume.finished[key]
        elif key in run.resume.failed and run.resume.failed[key].noise == noise:
            old = run.resume.failed[key]
            todo.append(_Pending(run.index, run.prompt, number, i, noise, folder.root / old.image, old.nfe,
                                 old.timings.generate_s, old.safety))
        else:
            regen.append((i, noise))
    run.progress.generated(len(done) + len(todo))
    run.progress.verified_(len(done))
    futures = [run.pool.submit(_verify_counted, run, todo[k:k + job.batch_size])
               for k in range(0, len(todo), job.batch_size)]
    for k in range(0, len(regen), job.batch_size):
        pending = generate_batch(run, number, regen[k:k + job.batch_size])
        run.progress.generated(len(pending))
        futures.append(run.pool.submit(_verify_counted, run, pending))
        folder.heartbeat(phash)
    return _Round(number, len(noises), done, futures)


def finish_round(run: _PromptRun, started: _Round) -> list[CandidateRecord]:
    """Wait for a round's verifications; its records in candidate order."""
    for fut in started.futures:
        for rec in fut.result():
            started.done[rec.index] = rec
    return [started.done[i] for i in range(started.size)]


def _verify_counted(run: _PromptRun, pending: list[_Pending]) -> list[CandidateRecord]:
    records = verify_and_record(run.job, run.folder, pending)
    run.progress.verified_(len(records))
    return records


def generate_batch(run: _PromptRun, number: int, batch: list[tuple[int, dict]]) -> list[_Pending]:
    from ..pipelines.remote import ServerError

    try:
        shots = run.job.safety.generate(run.generator, run.prompt.text, [noise for _, noise in batch],
                                        run.job.pipeline.name)
    except ServerError as e:  # the server is gone: record the batch as failed (a rerun redoes it), then stop
        _record_failed_batch(run, number, batch, f"generation failed: {e}")
        raise
    pending = []
    for (i, noise), shot in zip(batch, shots):
        path = run.folder.root / rf.image_name(run.prompt.text, number, noise["seed"])
        rf.save_image(path, shot.image)
        pending.append(_Pending(run.index, run.prompt, number, i, noise, path, shot.nfe, shot.seconds, shot.safety))
    return pending


def _record_failed_batch(run: _PromptRun, number: int, batch: list[tuple[int, dict]], error: str) -> None:
    for i, noise in batch:
        path = run.folder.root / rf.image_name(run.prompt.text, number, noise["seed"])
        pending = _Pending(run.index, run.prompt, number, i, noise, path, 0.0, 0.0)
        run.folder.append(make_record(run.job, run.folder, pending, Verdict(error=error), 0.0))


def verify_and_record(job: SearchJob, folder: rf.RunFolder, pending: list[_Pending]) -> list[CandidateRecord]:
    """Score a batch (worker thread) and append a record per candidate; a failure is recorded, not raised;
    blocked candidates (tts.run.safety) are recorded as such, never verified."""
    blocked = [make_record(job, folder, p, Verdict(error=p.safety.blocked), 0.0) for p in pending
               if p.safety is not None and p.safety.blocked]
    for rec in blocked:
        folder.append(rec)
    pending = [p for p in pending if p.safety is None or not p.safety.blocked]
    if not pending:
        return blocked
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
    return blocked + records


def make_record(job: SearchJob, folder: rf.RunFolder, p: _Pending, v: Verdict, verify_s: float) -> CandidateRecord:
    metric, name = job.verifier.choice_of_metric, job.verifier.name
    v = finite_verdict(v)
    ok = v.error is None and v.scores is not None and metric in v.scores
    error = None if ok else (v.error or f"no {metric!r} in the verifier's answer")
    blocked = p.safety is not None and p.safety.blocked is not None
    if blocked:
        log.info("candidate %s round %d #%d: blocked (%s), not verified", p.prompt.text[:40], p.round, p.index, error)
    elif not ok:
        log.warning("candidate %s round %d #%d: verification failed: %s", p.prompt.text[:40], p.round, p.index, error)
    return CandidateRecord(
        prompt=p.prompt.text, prompt_index=p.prompt_index, prompt_hash=rf.prompt_hash(p.prompt.text),
        prompt_tags=p.prompt.tags, round=p.round, index=p.index, seed=p.noise["seed"], noise=p.noise,
        nfe=p.nfe, status="blocked" if blocked else "ok" if ok else "failed", error=error, verifier=name, choice_of_metric=metric,
        score=v.scores[metric].score if ok else None,
        scores=({name: v.scores} if v.scores else {}) | v.members, image=p.image_path.name,
        timings=Timings(generate_s=p.generate_s, verify_s=verify_s), worker=folder.worker, usage=v.usage,
        safety=p.safety, path=p.path_record)


def finite_verdict(v: Verdict) -> Verdict:
    """A verdict with a NaN or infinite score (its own or a member's) is a failed verification naming them:
    JSON cannot hold such a value, and no search can rank it."""
    groups = (("", v.scores or {}), *((f"{k}.", d) for k, d in v.members.items()))
    bad = [f"{who}{m}={s.score}" for who, scores in groups for m, s in scores.items() if not math.isfinite(s.score)]
    if not bad or v.error is not None:
        return v
    return Verdict(error=f"the verifier returned a non-finite score ({', '.join(bad[:4])})", usage=v.usage)


def write_round_best(run: _PromptRun, number: int, records, best: Candidate | None, nfe_total: float) -> None:
    """``<stem>_i@<round>_s@<best seed>.json`` (the reference project's name and fields, plus ours); image
    paths are relative to the run folder. A stale JSON of the same round (another best) is removed."""
    job, folder, prompt = run.job, run.folder, run.prompt
    scored = [r for r in records if r.status == "ok"]
    top = best_record(scored, job.verifier.higher_is_better())
    metric = job.verifier.choice_of_metric
    top_metric = top.scores[job.verifier.name][metric] if top else None
    doc = RoundBest(
        prompt=prompt.text, search_round=number, num_noises=len(records),
        best_noise_seed=top.seed if top else None,
        best_score=ScoreSummary(explanation=top_metric.explanation if top_metric else None,
                                score=top.score if top else None),
        choice_of_metric=metric, best_img_path=top.image if top else None,
        best_noise=top.noise if top else None, best_scores=top.scores if top else {},
        global_best_score=best.score if best else None,
        global_best_img_path=best.record.image if best and best.record else None,
        num_failed=len(records) - len(scored), nfe_round=sum(r.nfe for r in records), nfe_total=nfe_total)
    name = rf.round_json_name(prompt.text, number, top.seed if top else None)
    rf.atomic_write_json(folder.root / name, doc.model_dump())
    stem = rf.prompt_stem(prompt.text)
    for old in [*folder.root.glob(f"{stem}_i@{number}_s@*.json"), folder.root / f"{stem}_i@{number}.json"]:
        if old.name != name and old.exists():
            old.unlink(missing_ok=True)


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

    return {
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
