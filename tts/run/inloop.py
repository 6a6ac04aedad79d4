"""In-loop searches in a run folder: the strategy says what to do with particles (tts.sampling.particles), the
engine does it, the loop keeps what it returns. With ``batch_size`` > 1 the pending prompts of a study are
searched together (:func:`search_prompts_in_loop`: their steps stacked into shared denoiser calls by
tts.sampling.batching, each prompt's finals recorded as soon as its search ends); otherwise one at a time.
Per prompt:

1. the prompt is skipped when ``searches.jsonl`` says its search is complete (a prompt interrupted before that
   line is redone from the start: every seed derives from the run seed, so it gives the same candidates);
2. the strategy searches on a step-level sampler, its previews scored by the run's verifier;
3. the preview scores go to ``previews.jsonl`` (replacing an interrupted attempt's);
4. the finished particles are saved as images (``<stem>_i@1_c@<index>.png``), verified on their final images and
   recorded with their paths (round 1; under search.study_nfe_budget the pass's number, tts.run.study),
   the round JSON written;
5. a ``searches.jsonl`` line records what the search spent (NFEs, preview decodes and scores).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import time

from ..core import runfolder as rf
from ..sampling.batching import StepDriver
from ..sampling.particles import Engine, Final, PreviewInfo, sampler_options
from ..core.records import PathRecord, SearchRecord, Usage
from ..sampling.sampler import Sampler
from ..search import Candidate, oriented
from ..search.protocols import make_strategy
from ..verifiers.base import as_verdict
from .verify import write_round_best

log = logging.getLogger(__name__)


class PreviewLog:
    """The engine's preview scorer: the run's verifier on x0 previews (``score_preview`` with the noise level
    when the verifier has one), oriented so larger is better, every score kept for ``previews.jsonl``."""

    def __init__(self, verifier, prompt: str, prompt_hash: str):
        self.verifier, self.prompt, self.phash = verifier, prompt, prompt_hash
        self.metric = verifier.choice_of_metric
        self.lines: list[dict] = []
        self.usage: Usage | None = None  # API verifiers: what the previews cost

    def __call__(self, images: list, info: PreviewInfo) -> list:
        prompts = [self.prompt] * len(images)
        try:
            if hasattr(self.verifier, "score_preview"):
                raw = self.verifier.score_preview(prompts, images, info.noise_level)
            else:
                raw = self.verifier.score(prompts, images)
            verdicts = [as_verdict(r) for r in raw]
        except Exception as e:  # noqa: BLE001 - a failed preview scores worst; the search goes on
            log.warning("preview scoring failed at step %d (%s: %s): those particles score worst", info.step,
                        type(e).__name__, e)
            verdicts = [None] * len(images)
        for v in verdicts:
            if v is not None and v.usage is not None:
                self.usage = v.usage if self.usage is None else self.usage.add(v.usage)
        scores = [v.scores[self.metric].score if v is not None and v.scores and self.metric in v.scores else None
                  for v in verdicts]
        scores = [s if s is None or math.isfinite(s) else None for s in scores]  # NaN / inf: scores worst
        for pid, s in zip(info.ids, scores):
            self.lines.append({"prompt_hash": self.phash, "prompt": self.prompt, "step": info.step,
                               "noise_level": round(info.noise_level, 6), "particle": pid, "metric": self.metric,
                               "score": s, **({"label": info.label} if info.label else {})})
        up = self.verifier.higher_is_better()
        return [None if s is None else oriented(s, up) for s in scores]


def search_prompt_in_loop(run, strategy) -> None:
    """Steps 1-5 of the module docstring for one prompt (``run``: tts.run.loop's _PromptRun)."""
    if run.searched():
        return
    search = _start(run, strategy)
    try:
        result = strategy.search(search.engine)
    finally:
        search.engine.sampler.close()
    _record(search, result, time.perf_counter() - search.started)


def search_prompts_in_loop(shared, mine: list, grants: dict[str, float] | None = None, number: int = 1) -> None:
    """Every pending prompt of ``mine`` ((index, Prompt) pairs of tts.run.loop) that this process can claim,
    searched together when the strategy is in-loop: their steps stacked into denoiser calls of ``batch_size``
    rows (tts.sampling.batching), each prompt's finals recorded as soon as its search ends. Prompts already
    searched, and ones another process holds, are left to the one-prompt-at-a-time loop (which skips the first
    and waits for the second). ``grants``, ``number``: a study pass's NFE budgets by prompt hash, and the pass
    (tts.run.study)."""
    from .job import Progress, PromptRun

    job, folder = shared.job, shared.folder
    if not _in_loop(job):
        return
    runs = []
    try:
        shared.index.update()  # what other writers finished since this process last looked
        for i, prompt in mine:
            phash = rf.prompt_hash(prompt.text)
            if folder.claim(phash) is not None:
                continue
            run = PromptRun(job, folder, shared.generator, shared.screened, shared.pool, i, prompt,
                            shared.index.resume(phash, job.safety.regenerates),
                            Progress(prompt.text, not job.progress, False, job.per_prompt_total),
                            None if grants is None else grants[phash], number)
            if run.searched():
                run.progress.close()
                folder.release(phash)
                continue
            runs.append(run)
        if runs:
            _search_together(runs, job.batch_size)
    finally:
        for run in runs:
            run.progress.close()
            folder.release(run.phash)


def _search_together(runs: list, batch_size: int) -> None:
    searches = [_start(run, _strategy(run)) for run in runs if not run.searched()]
    started = time.perf_counter()

    def done(k: int, result) -> None:  # the wall time is shared equally among the prompts searched together
        searches[k].engine.sampler.close()
        _record(searches[k], result, (time.perf_counter() - started) / len(searches))

    try:
        StepDriver(batch_size).run([(s.engine, s.strategy.requests(s.engine)) for s in searches], done)
    finally:
        for s in searches:
            s.engine.sampler.close()


@dataclasses.dataclass
class _InLoop:
    """One prompt's in-loop search in progress: its run, strategy, engine, preview log, start time."""

    run: object
    strategy: object
    engine: Engine
    previews: PreviewLog
    started: float


def _in_loop(job) -> bool:
    """Whether the job's strategy yields step requests (tts.search._steps.InLoopStrategy), so prompts can share
    denoiser calls; other in-loop strategies (a plugin with only ``search(engine)``) run one prompt at a time."""
    from ..search._steps import InLoopStrategy

    return isinstance(make_strategy(job.search_factory), InLoopStrategy)


def _strategy(run):
    """The prompt's strategy, built as tts.run.loop.search_prompt builds it (same seeds, same context)."""
    from .rounds import context

    return run.strategy(context(run))


def _start(run, strategy) -> _InLoop:
    previews = PreviewLog(run.job.verifier, run.prompt.text, run.phash)
    return _InLoop(run, strategy, _engine(run, strategy, previews), previews, time.perf_counter())


def _record(search: _InLoop, result, seconds: float) -> None:
    """Steps 3-5 of the module docstring: previews, finals (images, verification, records), round JSON, search line."""
    run, strategy, engine, previews = search.run, search.strategy, search.engine, search.previews
    finals = engine.finish(result)
    run.folder.write_previews(run.phash, previews.lines, run.round)
    records = _record_finals(run, strategy, engine, finals, seconds / len(finals))
    best = None
    for r in records:
        c = Candidate.of(r, run.job.verifier.higher_is_better())
        best = c if c.beats(best) else best
    stopped = _stopper(records, engine.stopped_by)
    write_round_best(run, run.round, records, best, sum(r.nfe for r in records), stopped=stopped,
                     nfe_budget=engine.budget if stopped is not None else None)
    run.folder.append_search(SearchRecord(
        prompt=run.prompt.text, prompt_hash=run.phash, strategy=_name(strategy), candidates=len(records), round=run.round,
        nfe=engine.spent, nfe_budget=engine.budget, preview_decodes=engine.preview_decodes,
        preview_scores=engine.preview_scores, usage=previews.usage, worker=run.folder.worker))


def _engine(run, strategy, previews: PreviewLog) -> Engine:
    generator = run.generator
    if not hasattr(generator, "pipe"):
        raise rf.RunFolderError(f"search={_name(strategy)} steps the denoiser itself: it needs the pipeline in this "
                                "process; drop pipeline.server")
    sampler = Sampler(generator, sampler_options(strategy.eta))
    budget, up = run.job.budget, run.job.verifier.higher_is_better()
    stop = None if budget.stop_at is None else (lambda s: budget.reached(oriented(s, up), up))  # s is oriented
    return Engine(sampler, run.prompt.text, previews, run.nfe_budget, stop)


def _record_finals(run, strategy, engine: Engine, finals: list[Final], seconds: float) -> list:
    """Save each final image, verify them in batches, append a record each (with its path)."""
    from .verify import Pending, verify_and_record

    pending = []
    for index, f in enumerate(finals):
        path = run.folder.root / rf.candidate_image_name(run.prompt.text, run.round, index)
        rf.save_image(path, f.image)
        safety = run.job.safety.flags(f.image, run.job.pipeline.name, None)  # blocked: recorded, never verified
        pending.append(Pending(run.index, run.prompt, run.round, index, f.noise, path, f.nfe, seconds, safety,
                                path_record=PathRecord(strategy=_name(strategy), eta=engine.eta,
                                                       fallback=engine.sampler.fallback, particle=f.id,
                                                       parent=f.parent, ops=f.path, nfe_path=f.nfe_path,
                                                       nfe_shared=f.nfe_shared)))
    run.progress.generated(len(pending))
    records = [r for p in pending if (r := _recorded(run, p)) is not None]
    pending = [p for p in pending if _recorded(run, p) is None]
    size = run.job.batch_size
    for k in range(0, len(pending), size):
        records += verify_and_record(run.job, run.folder, pending[k:k + size])
        run.progress.verified_(len(pending[k:k + size]))
        run.folder.heartbeat(run.phash)
    return sorted(records, key=lambda r: r.index)


def _stopper(records, particle: str | None):
    """The record of the final whose preview score reached ``search.stop_at`` and ended the search (None: it ran
    to its end)."""
    if particle is None:
        return None
    return next((r for r in records if r.path is not None and r.path.particle == particle), None)


def _recorded(run, p):
    """The record a killed attempt at this prompt already wrote for the same candidate (same noise, same path),
    so a redone prompt replaces its records instead of appending a second one beside each."""
    old = run.resume.finished.get((run.phash, p.round, p.index))
    if old is None or old.noise != p.noise or old.path is None or old.path.ops != p.path_record.ops:
        return None
    return old


def _name(strategy) -> str:
    return getattr(strategy, "name", None) or type(strategy).__module__.rsplit(".", 1)[-1].replace("_", "-")
