"""The search of a run folder: open it, load the pipeline (behind the safety screen) and the verifier, and search
this shard's prompts one by one, each ask/tell (tts.run.rounds) or in the denoising loop (tts.run.inloop).
Finished candidates found in the run folder's manifest (with a readable image) are neither regenerated nor
re-scored (tts.run.resume), so a rerun of the same folder resumes; a prompt another live process has claimed
is left to it.

Several processes may share one study (tts.run.shard): each searches the prompts of its shard, and the one
that finds the study complete when it finishes (every prompt's search replayed to its end from the
manifest) writes ``summary.json`` and, if asked, the collages (tts.run.summary): once, after every shard has finished.
"""
from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import time

from tqdm.auto import tqdm

from ..core import runfolder as rf
from ..prompts import Prompt
from ..search.protocols import is_in_loop
from .job import Progress, PromptRun, SearchJob
from .resume import ManifestIndex
from .rounds import context, search_rounds
from .summary import finish, replayed_to_end, summarise, unfinished  # noqa: F401 - tts.run.loop's names
from .verify import Pending, verify_and_record, write_round_best  # noqa: F401 - tts.run.loop's names

log = logging.getLogger(__name__)

__all__ = ["SearchJob", "PromptRun", "run_search", "search_prompt", "finish", "summarise", "unfinished",
           "verify_and_record", "write_round_best"]


@dataclasses.dataclass
class Shared:
    """What every prompt of this process's search shares: the job, the folder, the generator, the verifier pool."""

    job: SearchJob
    folder: rf.RunFolder
    generator: object
    screened: object  # the generator behind the safety screen (tts.run.safety)
    pool: cf.ThreadPoolExecutor
    index: ManifestIndex


def run_search(job: SearchJob) -> dict | None:
    """1. open the run folder, 2. load pipeline and verifier, 3. search this shard's prompts, 4. if the study
    is complete, summarise it (None when other shards are still at work)."""
    from ..sampling.generate import make_generator

    folder = rf.RunFolder(job.run_dir, per_shard=job.per_shard_manifest)
    folder.clean()
    index = ManifestIndex(folder)
    held = sum(len(v) for v in index.by_prompt.values())
    if held:
        log.info("resuming %s: %d candidates recorded", folder.root, held)
    mine = [(i, p) for i, p in enumerate(job.prompts) if job.shard.owns(i)]
    if job.shard.count > 1:
        log.info("%s: %d of %d prompts", job.shard.label, len(mine), len(job.prompts))
    if mine:
        generator = make_generator(job.pipeline) if not job.arms else _multi(job)  # search.pipelines: several
        screened = job.safety.wrap(generator, job.pipeline.name)
        try:
            job.verifier.setup()
            with cf.ThreadPoolExecutor(job.verify_workers, thread_name_prefix="verify") as pool:
                shared = Shared(job, folder, generator, screened, pool, index)
                if job.budget.study is not None:  # one budget over the study's prompts, in passes (tts.run.study)
                    from .study import search_study

                    search_study(shared, mine, _claim_and_search)
                else:
                    _search_all(shared, mine)
        finally:
            generator.close()
            job.verifier.close()
            screened.close()
    return finish(job, folder)


def _multi(job: SearchJob):
    from ..sampling.multi import MultiGenerator

    return MultiGenerator(job.arms)


#: Seconds between looks at this shard's prompts that another process holds.
CLAIM_POLL_S = 2.0


def _search_all(shared: Shared, mine: list[tuple[int, Prompt]]) -> None:
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
        held = [(i, p) for i, p in held if not replayed_to_end(job, i, p, shared.index.by_prompt.get(
            rf.prompt_hash(p.text), {}), searches) and not _claim_and_search(shared, i, p, many)]


def _claim_and_search(shared: Shared, i: int, prompt: Prompt, many: bool, grant: float | None = None,
                      number: int = 1) -> bool:
    """Search one prompt if this process can claim it (False: another live process holds it); ``grant``: its
    NFE budget under search.study_nfe_budget, ``number``: the study's pass of an in-loop search (tts.run.study)."""
    phash, folder = rf.prompt_hash(prompt.text), shared.folder
    if folder.claim(phash) is not None:
        return False
    try:
        shared.index.update()  # what other writers finished since this process last looked
        search_prompt(PromptRun(shared.job, folder, shared.generator, shared.screened, shared.pool, i, prompt,
                                 shared.index.resume(phash, shared.job.safety.regenerates),
                                 Progress(prompt.text, not shared.job.progress, not many,
                                           shared.job.per_prompt_total), grant, number))
    finally:
        folder.release(phash)
    return True


def search_prompt(run: PromptRun) -> None:
    """One prompt's search to its end: in the denoising loop (tts.run.inloop) or ask/tell (tts.run.rounds)."""
    strategy = run.strategy(context(run))
    try:
        if getattr(strategy, "gradient", False):  # GRADIENT DISPATCH: noise optimisation (tts.run.noiseopt)
            from .noiseopt import search_prompt_noise_opt

            return search_prompt_noise_opt(run, strategy)
        if is_in_loop(strategy):  # IN-LOOP DISPATCH: particles inside the denoising loop (tts.run.inloop)
            from .inloop import search_prompt_in_loop

            return search_prompt_in_loop(run, strategy)
        return search_rounds(run, strategy)
    finally:
        run.progress.close()
