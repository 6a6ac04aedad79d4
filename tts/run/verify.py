"""Verifying and recording candidates: a generated candidate waits as a :class:`Pending` until a verifier worker
scores its batch; :func:`verify_and_record` appends one :class:`tts.core.records.CandidateRecord` per candidate
(built only by :func:`make_record`) to the run folder's manifest, the moment it is scored; blocked candidates
(tts.run.safety) are recorded, never verified. :func:`write_round_best` writes a round's JSON. Shared by the
ask/tell loop (tts.run.rounds) and the in-loop driver (tts.run.inloop).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time
import traceback
from pathlib import Path

from ..core import runfolder as rf
from ..core.video import Video, load_candidate, probe, video_path
from ..core.records import CandidateRecord, PathRecord, RoundBest, SafetyRecord, ScoreSummary, Timings
from ..prompts import Prompt
from ..search import Candidate, best_record
from ..verifiers.base import Verdict, as_verdict
from .job import PromptRun, SearchJob

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Pending:
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
    media: dict | None = None  # a video candidate's record fields (video, frames, fps), read where it is loaded


def media_of(item) -> dict | None:
    return {"frames": len(item), "fps": item.fps} if isinstance(item, Video) else None


def video_fields(p: Pending) -> dict:
    """A video candidate's MP4 (beside its PNG), frame count and frame rate for its record; {} for an image."""
    mp4 = video_path(p.image_path)
    if not mp4.exists():
        return {}
    media = p.media or probe(mp4)
    return {"video": mp4.name, "frames": media["frames"], "fps": media["fps"]}


def verify_and_record(job: SearchJob, folder: rf.RunFolder, pending: list[Pending]) -> list[CandidateRecord]:
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
        images = [load_candidate(p.image_path) for p in pending]  # a video candidate: its MP4's frames
        for p, item in zip(pending, images):
            p.media = media_of(item)
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


def make_record(job: SearchJob, folder: rf.RunFolder, p: Pending, v: Verdict, verify_s: float) -> CandidateRecord:
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
        safety=p.safety, path=p.path_record, pipeline=p.noise.get("pipeline"), **video_fields(p))


def finite_verdict(v: Verdict) -> Verdict:
    """A verdict with a NaN or infinite score (its own or a member's) is a failed verification naming them:
    JSON cannot hold such a value, and no search can rank it."""
    groups = (("", v.scores or {}), *((f"{k}.", d) for k, d in v.members.items()))
    bad = [f"{who}{m}={s.score}" for who, scores in groups for m, s in scores.items() if not math.isfinite(s.score)]
    if not bad or v.error is not None:
        return v
    return Verdict(error=f"the verifier returned a non-finite score ({', '.join(bad[:4])})", usage=v.usage)


def write_round_best(run: PromptRun, number: int, records, best: Candidate | None, nfe_total: float,
                     stopped: CandidateRecord | None = None, nfe_budget: float | None = None) -> None:
    """``<stem>_i@<round>_s@<best seed>.json`` (the reference project's name and fields, plus ours); image
    paths are relative to the run folder. A stale JSON of the same round (another best) is removed.
    ``stopped``: the candidate that reached ``search.stop_at`` and ended the search in this round;
    ``nfe_budget``: what the prompt's search could spend (its unspent part is recorded when it stopped)."""
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
        global_best_score=best.metric_score if best else None,
        global_best_img_path=best.record.image if best and best.record else None,
        num_failed=len(records) - len(scored), nfe_round=sum(r.nfe for r in records), nfe_total=nfe_total,
        stop_at=job.budget.stop_at, stopped_at_score=stopped.score if stopped else None, nfe_budget=nfe_budget,
        nfe_unspent=max(0.0, nfe_budget - nfe_total) if stopped and nfe_budget is not None else None)
    name = rf.round_json_name(prompt.text, number, top.seed if top else None)
    rf.atomic_write_json(folder.root / name, doc.model_dump())
    stem = rf.prompt_stem(prompt.text)
    for old in [*folder.root.glob(f"{stem}_i@{number}_s@*.json"), folder.root / f"{stem}_i@{number}.json"]:
        if old.name != name and old.exists():
            old.unlink(missing_ok=True)
