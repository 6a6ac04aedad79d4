"""One prompt's ask/tell search, round by round: ask the strategy for noises, generate them in batches (through
the safety screen, tts.run.safety), verify each batch in a worker thread while the next batch generates, record
every candidate (tts.run.verify), tell the strategy its candidates with their scores oriented (larger is
better), and write the round's best. Finished candidates found in the run folder are neither regenerated nor
re-scored."""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses

from ..core import runfolder as rf
from ..core.records import CandidateRecord
from ..search import Candidate, SearchContext
from ..search.protocols import traits
from ..verifiers.base import Verdict
from .job import PromptRun
from .safety import shots_of
from .verify import Pending, make_record, verify_and_record, write_round_best


@dataclasses.dataclass
class Round:
    """A round in flight: candidates reused from the folder, verifications under way."""

    number: int
    size: int
    done: dict[int, CandidateRecord]
    futures: list[cf.Future]
    first: int = 0  # the index of the round's first candidate here (search.stop_at starts a round a batch at a time)


def search_rounds(run: PromptRun, strategy) -> None:
    """Run one prompt's ask/tell search to the end, round by round.

    A strategy whose rounds do not depend on scores (``independent_rounds = True``, e.g. random search)
    has its next round generated while the previous round is still being verified; otherwise each
    round is told its scores before the next is asked for.
    """
    job = run.job
    kind = traits(strategy)
    if kind.interactive:  # never draw a bar over a question the person is answering
        run.progress.bar.disable = True
    if job.budget.stop_at is not None:
        return search_until_good_enough(run, strategy, kind.budget.nfe)
    ahead = kind.independent_rounds
    in_flight: list[Round] = []
    nfe_total, number, exhausted = 0.0, 0, False
    while not exhausted or in_flight:
        noises = [] if exhausted else strategy.ask()
        exhausted = exhausted or not noises
        if noises:
            number += 1
            in_flight.append(start_round(run, number, noises))
        if in_flight and (exhausted or not ahead or len(in_flight) > 1):
            started = in_flight.pop(0)
            records = finish_round(run, started)
            up = job.verifier.higher_is_better()
            strategy.tell([Candidate.of(c, up) for c in records])  # scores oriented once, here
            nfe_total += sum(c.nfe for c in records)
            write_round_best(run, started.number, records, strategy.best, nfe_total)


def search_until_good_enough(run: PromptRun, strategy, nfe_budget: float | None) -> None:
    """``search.stop_at``: the ask/tell search, ended by the first candidate (in round, then index order) whose
    score reaches the threshold (:meth:`tts.search.protocols.Budget.reached`).

    The rule: each round is generated and verified one batch (``batch_size`` candidates) at a time, in index
    order, and the search ends after the batch that holds a hit; the rest of that batch is recorded and charged
    (it was paid for), the rest of the round and later rounds are never generated. The strategy is told the
    candidates of the round made so far. Nothing runs ahead (no round generated while another is verified), so
    the candidates a search makes depend only on the seed, the settings and ``batch_size``, and a rerun resumes
    to the same records."""
    job, up = run.job, run.job.verifier.higher_is_better()
    nfe_total, number = 0.0, 0
    while noises := strategy.ask():
        number += 1
        records, hit = batches_until_hit(run, number, noises, up)
        strategy.tell([Candidate.of(c, up) for c in records])
        nfe_total += sum(c.nfe for c in records)
        write_round_best(run, number, records, strategy.best, nfe_total, stopped=hit, nfe_budget=nfe_budget)
        if hit is not None:
            return


def first_hit(records, budget, higher_is_better: bool) -> CandidateRecord | None:
    """The first candidate (in the order given) verified ``ok`` whose score reaches ``search.stop_at``."""
    return next((r for r in records if r.status == "ok" and budget.reached(r.score, higher_is_better)), None)


def batches_until_hit(run: PromptRun, number: int, noises: list[dict], up: bool
                      ) -> tuple[list[CandidateRecord], CandidateRecord | None]:
    """One round, a batch at a time, until a batch holds a hit: its records so far and the hit (or None)."""
    size, records = run.job.batch_size, []
    for k in range(0, len(noises), size):
        batch = finish_round(run, start_round(run, number, noises[k:k + size], first=k))
        records += batch
        hit = first_hit(batch, run.job.budget, up)
        if hit is not None:
            return records, hit
    return records, None


def context(run: PromptRun) -> SearchContext:
    """The strategy's context; the NFEs of one candidate are measured only when ``search.nfe_budget`` (or
    ``search.study_nfe_budget``) asks."""
    nfe = None
    if run.job.budget.limited or run.job.budget.study is not None:
        from ..sampling.particles import nfe_per_image

        nfe = nfe_per_image(run.generator, run.prompt.text)
    return SearchContext(run.prompt.text, run.phash, run.folder.root, tuple(run.generator.latent_shape), nfe)


def start_round(run: PromptRun, number: int, noises: list[dict], first: int = 0) -> Round:
    """Generate one round's missing candidates in batches, each batch handed to a verifier worker at once
    (``noises``: the round's candidates from index ``first`` on)."""
    job, folder, phash = run.job, run.folder, run.phash
    done: dict[int, CandidateRecord] = {}
    todo: list[Pending] = []
    regen: list[tuple[int, dict]] = []
    for i, noise in enumerate(noises, start=first):
        key = (phash, number, i)
        if key in run.resume.finished and run.resume.finished[key].noise == noise:
            done[i] = run.resume.finished[key]
        elif key in run.resume.failed and run.resume.failed[key].noise == noise:
            old = run.resume.failed[key]
            todo.append(Pending(run.index, run.prompt, number, i, noise, folder.root / old.image, old.nfe,
                                 old.timings.generate_s, old.safety))
        else:
            regen.append((i, noise))
    run.progress.generated(len(done) + len(todo))
    run.progress.verified_(len(done))
    futures = [run.pool.submit(verify_counted, run, todo[k:k + job.batch_size])
               for k in range(0, len(todo), job.batch_size)]
    for k in range(0, len(regen), job.batch_size):
        pending = generate_batch(run, number, regen[k:k + job.batch_size])
        run.progress.generated(len(pending))
        futures.append(run.pool.submit(verify_counted, run, pending))
        folder.heartbeat(phash)
    return Round(number, len(noises), done, futures, first)


def finish_round(run: PromptRun, started: Round) -> list[CandidateRecord]:
    """Wait for a round's verifications; its records in candidate order."""
    for fut in started.futures:
        for rec in fut.result():
            started.done[rec.index] = rec
    return [started.done[i] for i in range(started.first, started.first + started.size)]


def verify_counted(run: PromptRun, pending: list[Pending]) -> list[CandidateRecord]:
    records = verify_and_record(run.job, run.folder, pending)
    run.progress.verified_(len(records))
    return records


def generate_batch(run: PromptRun, number: int, batch: list[tuple[int, dict]]) -> list[Pending]:
    from ..pipelines.remote import ServerError

    try:
        images, nfe, seconds = run.screened.generate(run.prompt.text, [noise for _, noise in batch])
    except ServerError as e:  # the server is gone: record the batch as failed (a rerun redoes it), then stop
        record_failed_batch(run, number, batch, f"generation failed: {e}")
        raise
    pending = []
    for (i, noise), shot in zip(batch, shots_of(images, nfe, seconds)):
        path = run.folder.root / rf.image_name(run.prompt.text, number, noise["seed"])
        rf.save_image(path, shot.image)
        pending.append(Pending(run.index, run.prompt, number, i, noise, path, shot.nfe, shot.seconds, shot.safety))
    return pending


def record_failed_batch(run: PromptRun, number: int, batch: list[tuple[int, dict]], error: str) -> None:
    for i, noise in batch:
        path = run.folder.root / rf.image_name(run.prompt.text, number, noise["seed"])
        pending = Pending(run.index, run.prompt, number, i, noise, path, 0.0, 0.0)
        run.folder.append(make_record(run.job, run.folder, pending, Verdict(error=error), 0.0))
