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


def context(run: PromptRun) -> SearchContext:
    """The strategy's context; the NFEs of one candidate are measured only when ``search.nfe_budget`` asks."""
    nfe = None
    if run.job.budget.limited:
        from .inloop import nfe_per_image

        nfe = nfe_per_image(run.generator, run.prompt.text)
    return SearchContext(run.prompt.text, run.phash, run.folder.root, tuple(run.generator.latent_shape), nfe)


def start_round(run: PromptRun, number: int, noises: list[dict]) -> Round:
    """Generate one round's missing candidates in batches, each batch handed to a verifier worker at once."""
    job, folder, phash = run.job, run.folder, run.phash
    done: dict[int, CandidateRecord] = {}
    todo: list[Pending] = []
    regen: list[tuple[int, dict]] = []
    for i, noise in enumerate(noises):
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
    return Round(number, len(noises), done, futures)


def finish_round(run: PromptRun, started: Round) -> list[CandidateRecord]:
    """Wait for a round's verifications; its records in candidate order."""
    for fut in started.futures:
        for rec in fut.result():
            started.done[rec.index] = rec
    return [started.done[i] for i in range(started.size)]


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
