"""One prompt's gradient noise optimisation (search=noise-opt, tts.search.noise_opt) in a run folder.

1. the prompt is skipped when ``searches.jsonl`` says its search is complete (an interrupted one is redone: its
   iterates are deterministic, and records an earlier attempt wrote for the same noise are reused);
2. from the strategy's initial noise, each iteration renders the final image with gradients
   (tts.sampling.gradient), scores it with the verifier's differentiable ``score_tensor`` and takes one
   optimiser step on the noise (the strategy's objective: reward plus ReNO's norm regulariser); the last iterate
   is only rendered. With ``search.stop_at`` the iterate whose differentiable score reaches it is the last. Each iterate is a candidate: its noise saved in the run folder (a ``stored`` lineage,
   tts.core.noise; the first is the seeded fresh noise itself) and recorded with its path, so tts-replay
   regenerates it exactly;
3. the candidates are verified (the verifier's ``score``, as every candidate) and recorded (round 1, or a study's pass, index k), each
   charged what its iteration cost (3x a forward pass when differentiated, tts.sampling.gradient.charged), the
   differentiable scores written to ``previews.jsonl`` (label ``score_tensor``);
4. a ``searches.jsonl`` line records what the search spent.
"""
from __future__ import annotations

import dataclasses
import time

import torch

from ..core import runfolder as rf
from ..core.noise import make_noise, store
from ..core.records import PathRecord, SearchRecord
from ..sampling.gradient import Differentiable, charged
from ..sampling.particles import sampler_options
from ..sampling.sampler import Sampler
from ..search import Candidate
from ..search.noise_opt import DIFFERENTIABLE_VERIFIERS
from ..verifiers.base import is_differentiable
from .verify import Pending, verify_and_record, write_round_best



def verifier_problem(verifier) -> str | None:
    """The one-line refusal of a verifier noise-opt cannot differentiate, else None."""
    if is_differentiable(verifier):
        return None
    return (f"search=noise-opt needs a differentiable verifier (score_tensor); {verifier.name} is not: use "
            f"verifier= one of {', '.join(DIFFERENTIABLE_VERIFIERS)}")


@dataclasses.dataclass
class Iterate:
    """One iterate: its lineage, final image, the NFEs charged and of a replay, its differentiable score."""

    noise: dict
    image: object
    nfe: float
    nfe_path: float
    score: float


def search_prompt_noise_opt(run, strategy) -> None:
    """Steps 1-4 of the module docstring for one prompt (``run``: tts.run.job.PromptRun)."""
    if run.searched():
        return
    problem = verifier_problem(run.job.verifier)
    if problem:
        raise rf.RunFolderError(problem)
    if not hasattr(run.generator, "pipe"):
        raise rf.RunFolderError("search=noise-opt differentiates the denoiser: it needs the pipeline in this "
                                "process; drop pipeline.server")
    started = time.perf_counter()
    iterates, fallback = optimise(run, strategy)
    seconds = (time.perf_counter() - started) / len(iterates)
    run.folder.write_previews(run.phash, [
        {"prompt_hash": run.phash, "prompt": run.prompt.text, "step": 0, "noise_level": 0.0, "particle": f"i{k}",
         "metric": run.job.verifier.choice_of_metric, "score": it.score, "label": "score_tensor"}
        for k, it in enumerate(iterates)], run.round)
    records = _record(run, iterates, seconds, fallback)
    up = run.job.verifier.higher_is_better()
    best = None
    for r in records:
        c = Candidate(r.round, r.index, r.noise, r.score if r.status == "ok" else None, r, up)
        best = c if c.beats(best) else best
    spent = sum(it.nfe for it in iterates)
    stopped = records[-1] if run.job.budget.reached(iterates[-1].score, up) else None
    write_round_best(run, run.round, records, best, spent, stopped=stopped,
                     nfe_budget=strategy.nfe_budget if stopped is not None else None)
    run.folder.append_search(SearchRecord(
        prompt=run.prompt.text, prompt_hash=run.phash, strategy=strategy.name, candidates=len(records), round=run.round,
        nfe=spent, nfe_budget=strategy.nfe_budget, preview_scores=len(iterates), worker=run.folder.worker))


def optimise(run, strategy) -> tuple[list[Iterate], str | None]:
    """The iterates of one prompt's optimisation (step 2), within the strategy's steps and budget, and the
    sampler's first-order fallback (None: the pipeline's own scheduler)."""
    generator, verifier, prompt = run.generator, run.job.verifier, run.prompt.text
    generator.noise_root = run.folder.root
    sampler = Sampler(generator, sampler_options(0.0))
    try:
        driver = Differentiable(sampler, prompt)
        origin = strategy.initial()
        noise = make_noise(origin, generator.latent_shape)[None].clone().requires_grad_(True)
        optimizer = strategy.make_optimizer(noise)
        sign = 1.0 if verifier.higher_is_better() else -1.0
        iterates, steps, k = [], None, 0
        while True:
            lineage = origin if k == 0 else store(noise.detach()[0], run.folder.root, origin, k)
            latents, pixels, forwards = driver.images(noise, origin)
            steps = strategy.steps(forwards) if steps is None else steps
            reward = sign * verifier.score_tensor([prompt], pixels)
            score = sign * float(reward.detach()[0])
            last = k >= steps or run.job.budget.reached(score, sign > 0)  # search.stop_at: on score_tensor
            if not last:
                strategy.ascend(optimizer, noise, strategy.objective(reward, noise))
            image = sampler.decode(latents.detach())[0]
            iterates.append(Iterate(lineage, image, charged(forwards, not last), forwards, score))
            run.progress.generated(1)
            if last:
                return iterates, sampler.fallback
            k += 1
    finally:
        sampler.close()


def _record(run, iterates: list[Iterate], seconds: float, fallback: str | None) -> list:
    """Save each iterate's image, verify them in batches, append a record each (with its path)."""
    pending = []
    steps = None
    for k, it in enumerate(iterates):
        path = run.folder.root / rf.candidate_image_name(run.prompt.text, run.round, k)
        rf.save_image(path, it.image)
        safety = run.job.safety.flags(it.image, run.job.pipeline.name, None)
        steps = steps or run.job.pipeline.num_inference_steps
        ops = [{"op": "start", "noise": it.noise}, {"op": "run", "to": int(steps), "seed": 0}]
        pending.append(Pending(run.index, run.prompt, run.round, k, it.noise, path, it.nfe, seconds, safety,
                               path_record=PathRecord(strategy="noise-opt", eta=0.0, fallback=fallback, particle=f"i{k}",
                                                      parent=f"i{k - 1}" if k else None, ops=ops,
                                                      nfe_path=it.nfe_path)))
    records = [r for p in pending if (r := _recorded(run, p)) is not None]
    pending = [p for p in pending if _recorded(run, p) is None]
    for k in range(0, len(pending), run.job.batch_size):
        records += verify_and_record(run.job, run.folder, pending[k:k + run.job.batch_size])
        run.progress.verified_(len(pending[k:k + run.job.batch_size]))
        run.folder.heartbeat(run.phash)
    return sorted(records, key=lambda r: r.index)


def _recorded(run, p: Pending):
    """The record an interrupted attempt already wrote for the same iterate (same noise, same path)."""
    old = run.resume.finished.get((run.phash, p.round, p.index))
    if old is None or old.noise != p.noise or old.path is None or old.path.ops != p.path_record.ops:
        return None
    return old
