"""Several prompts' in-loop searches driven together: their denoising steps stacked into shared denoiser calls.

An in-loop strategy says what to do and the engine does it: its ``steps(engine)`` generator yields
:class:`~tts.sampling.particles.Advance` and :class:`~tts.sampling.particles.Score` requests
(tts.sampling.particles). One prompt alone is driven by :func:`tts.sampling.particles.drive`; :class:`StepDriver`
drives several prompts' generators in lockstep:

1. every generator runs until it asks for an Advance or finishes; Score requests are answered on the spot, each
   by its own engine (its own preview scorer: one verifier call per prompt);
2. the pending Advances that go from the same step to the same step on compatible samplers (same loaded
   pipeline, same sampler options) are stacked, prompt after prompt, into denoiser calls of at most
   ``batch_size`` rows (one prompt's request is never split: a request larger than that runs whole, as it does
   alone), each row with its own conditioning and its own step seeds (``step_seed(row seed, step)``);
3. the result is split back per prompt; each engine is charged its own rows' NFEs (its budget is checked before,
   as :meth:`Engine.advance` checks it) and its paths are extended; then back to 1.

Each prompt's ids, paths, seeds and NFEs are the ones it gets searched alone. Its latents agree with the
one-prompt run to float rounding only, not bit for bit: CPU convolution and matrix-multiply kernels choose their
blocking (the order in which they sum) by the batch size, so a row computed in a batch of 24 can differ from the
same row in a batch of 8 in the last bits (about 1e-6 on the shapes model); an image can differ by one pixel
level and a score in its last digits, as tts-replay's images do (tests/test_inloop_batching.py holds it to that).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch

from .particles import Advance, Engine, Particles, Steps, respond, step_seed
from .sampler import Trajectories


@dataclasses.dataclass
class _Search:
    """One prompt's search under the driver: its engine, its generator, what it waits for, how it ended."""

    engine: Engine
    steps: Steps
    request: Advance | None = None
    done: bool = False
    result: object = None


class StepDriver:
    """Drives several prompts' step generators together (module docstring); ``batch_size``: rows per denoiser call."""

    def __init__(self, batch_size: int):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        self.batch_size = batch_size
        self.calls = 0  # denoiser-call batches run (each a sampler.run over a step range)

    def run(self, searches: Sequence[tuple[Engine, Steps]],
            on_done: Callable[[int, object], None] | None = None) -> list:
        """What each generator returns (its kept particles), in order; ``on_done(k, result)`` is called as soon as
        search k finishes (e.g. to record its finals while the others go on). An exception in one search (a
        strategy bug, BudgetExceeded, a scorer error) is raised at its yield and, unhandled there, stops the driver
        (wrap a generator to keep the others going, as scripts/benchmark_strategies.py does)."""
        live = [_Search(engine, steps) for engine, steps in searches]
        for k, s in enumerate(live):
            self._resume(k, s, None, on_done)
        while pending := [s for s in live if not s.done]:
            for group in _groups(pending):
                for chunk in _chunks(group, self.batch_size):
                    self._advance(chunk, live, on_done)
        return [s.result for s in live]

    def _resume(self, k: int, s: _Search, answer, on_done, error: BaseException | None = None) -> None:
        """Send ``answer`` (or throw ``error``) into search k and run it until it asks for an Advance or ends;
        Score requests (and Advances that take no step) are answered by its own engine on the way."""
        while True:
            try:
                request = s.steps.throw(error) if error is not None else s.steps.send(answer)
            except StopIteration as finished:
                s.done, s.request, s.result = True, None, finished.value
                if on_done is not None:
                    on_done(k, s.result)
                return
            try:
                if not isinstance(request, Advance):
                    answer, error = respond(s.engine, request), None  # Score: this prompt's own scorer
                    if s.engine.stopped_by is not None:  # search.stop_at reached (tts.sampling.particles)
                        s.steps.close()
                        s.done, s.request, s.result = True, None, s.engine.stop_result()
                        if on_done is not None:
                            on_done(k, s.result)
                        return
                    continue
                until, error = s.engine.check_advance(request.p, request.until), None
            except Exception as e:  # noqa: BLE001 - raised into the strategy at its yield, as drive() raises it
                answer, error = None, e
                continue
            if until == request.p.step:
                answer = request.p
                continue
            s.request = Advance(request.p, until)
            return

    def _advance(self, chunk: list[_Search], live: list[_Search], on_done) -> None:
        """One stacked sampler run of every request in ``chunk`` (same step range, compatible samplers)."""
        engines, parts = [s.engine for s in chunk], [s.request.p for s in chunk]
        until = chunk[0].request.until
        if len(chunk) == 1:
            traj = engines[0].sampler.run(parts[0].traj, until=until, seeds=_seeds([parts[0]], engines[0]))
            outs = [traj]
        else:
            merged = merge([p.traj for p in parts])
            traj = engines[0].sampler.run(merged, until=until, seeds=_seeds(parts, engines[0]))
            outs = split(traj, [p.traj for p in parts])
        self.calls += 1
        for s, p, out in zip(chunk, parts, outs):
            s.request = None
            self._resume(live.index(s), s, s.engine.advanced(p, out), on_done)


def _seeds(parts: list[Particles], engine: Engine):
    """Step i's noise seeds of every row of ``parts`` in order (None on a deterministic sampler)."""
    if engine.eta <= 0:
        return None
    return lambda i: [step_seed(s, i) for p in parts for s in p.seeds]


def _key(s: _Search) -> tuple:
    sampler = s.engine.sampler
    return (id(sampler.gen), sampler.options, s.request.p.step, s.request.until)


def _groups(pending: list[_Search]) -> list[list[_Search]]:
    """The waiting searches by (loaded pipeline, sampler options, from step, to step), in order of first arrival."""
    groups: dict[tuple, list[_Search]] = {}
    for s in pending:
        groups.setdefault(_key(s), []).append(s)
    return list(groups.values())


def _chunks(group: list[_Search], batch_size: int) -> list[list[_Search]]:
    """Consecutive searches of at most ``batch_size`` rows together (one larger request runs alone, whole)."""
    chunks: list[list[_Search]] = [[]]
    rows = 0
    for s in group:
        n = len(s.request.p)
        if chunks[-1] and rows + n > batch_size:
            chunks.append([])
            rows = 0
        chunks[-1].append(s)
        rows += n
    return chunks


def merge(trajs: list[Trajectories]) -> Trajectories:
    """Several prompts' trajectories at one step as one batch: rows stacked, each with its own conditioning."""
    first = trajs[0]
    cond = first.cond
    rows = {key: torch.cat([t.cond.rows[key] for t in trajs], dim=cond.batch_dims.get(key, 0)) for key in cond.rows}
    return dataclasses.replace(first, latents=torch.cat([t.latents for t in trajs]),
                               cond=dataclasses.replace(cond, rows=rows), nfe=torch.cat([t.nfe for t in trajs]),
                               x0=None, spent=0.0, shared=None)


def split(out: Trajectories, trajs: list[Trajectories]) -> list[Trajectories]:
    """The stacked result back per prompt: each part keeps its own conditioning and copy bookkeeping and is
    charged its share of what the stacked run cost (every row costs the same per step)."""
    total = sum(len(t) for t in trajs)
    parts, a = [], 0
    for t in trajs:
        b = a + len(t)
        parts.append(dataclasses.replace(t, latents=out.latents[a:b], x0=None if out.x0 is None else out.x0[a:b],
                                         step=out.step, nfe=out.nfe[a:b], spent=t.spent + out.spent * len(t) / total))
        a = b
    return parts
