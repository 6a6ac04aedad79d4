"""Particles for search inside the denoising loop: trajectories with their paths, an NFE budget, preview scores.

An in-loop strategy (tts.search: ``in_loop = True``) gets an :class:`Engine` for one prompt and returns the
finished :class:`Particles` it keeps; the loop decodes, verifies and records them. It says what to do and the
engine does it: its ``requests(engine)`` generator yields :class:`Advance` and :class:`Score` requests
(:func:`drive` answers them one prompt alone; tts.sampling.batching answers several prompts' together, their
steps in shared denoiser calls) and calls the cheap ``start``, ``select`` and ``renoise`` directly. The engine
wraps the step-level sampler (tts.sampling.sampler) and adds what every such strategy needs, so none
re-implements it:

* **Paths.** Each row carries the list of operations that made it, so ``tts-replay`` regenerates any final
  image from its record alone (:func:`replay_path`):

  - ``{"op": "start", "noise": <lineage>}``: the initial noise (tts.core.noise), always first;
  - ``{"op": "run", "to": j, "seed": s}``: denoising steps up to step j; with a stochastic sampler (eta > 0)
    step i's noise is drawn from ``step_seed(s, i)``;
  - ``{"op": "renoise", "to": j, "seed": s}``: the forward process back to the earlier step j, noise from seed s;
  - ``{"op": "from", "event": e, "step": k, "parent": id}``: the row was copied from particle ``id`` at step k
    (e: resample, branch, keep, ...); a marker that replay skips, since the ops before it are the parent's.

* **Budget.** ``nfe_budget`` (denoiser evaluations per prompt, classifier-free guidance counting two) is
  checked before every step: a step that would exceed it raises :class:`BudgetExceeded`, so a strategy
  plans with :attr:`Engine.row_step_cost` and :attr:`Engine.remaining` and can never overspend.

* **Previews.** :meth:`Engine.score` decodes each row's x0 prediction and scores it with the run's preview
  scorer (the verifier; its ``score_preview(prompts, images, noise_level)`` when it has one), oriented so
  that larger is better; the loop writes every preview score to ``previews.jsonl``, apart from final scores.

* **Stopping.** With ``stop`` (a test of an oriented score, from ``search.stop_at``), a :class:`Score` request on
  finished rows whose score reaches it ends the search there: the driver closes the strategy's generator and the
  search's result is every finished row scored so far (:meth:`Engine.stop_result`), so a strategy that scores
  its finals as it makes them (evolution's generations, screen's batches) stops at the first final that is good
  enough, and one that scores finals only at its end spends its budget as before.

* **NFEs per candidate.** A final row's ``nfe_path`` is what its path cost (what a replay costs), ``nfe_shared``
  the part of it shared with the row it was copied from; ``nfe`` (charged) adds its share of what dropped rows
  cost, so the candidates' ``nfe`` sum to what the prompt's search really spent.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Generator, Sequence, Union

from ..core.noise import derive_seed
from .sampler import Sampler, SamplerOptions, Trajectories


class BudgetExceeded(RuntimeError):
    """A strategy asked for more denoiser evaluations than ``search.nfe_budget`` allows (a strategy bug)."""


def step_seed(seed: int, step: int) -> int:
    """The noise seed of step ``step`` of a row whose current segment seed is ``seed`` (stochastic sampling)."""
    return derive_seed(seed, step)


@dataclasses.dataclass(frozen=True)
class PreviewInfo:
    """What is being scored: the step reached, the noise level of the x0 prediction's input (the step's
    timestep over the training timesteps, in [0, 1]; 0 for final images), the rows' particle ids, a label."""

    step: int
    noise_level: float
    ids: tuple[str, ...]
    label: str = ""


#: ``scorer(images, info) -> one score per image (None: failed)``, oriented: larger is better
PreviewScorer = Callable[[list, PreviewInfo], list]


@dataclasses.dataclass
class Particles:
    """Trajectories with, per row, its path (ops), its current segment seed, its particle id and parent."""

    traj: Trajectories
    paths: list[list[dict]]
    seeds: list[int]
    ids: list[str]
    parents: list[str | None]

    def __len__(self) -> int:
        return len(self.traj)

    @property
    def step(self) -> int:
        return self.traj.step


@dataclasses.dataclass
class Final:
    """A finished particle: its image, path and NFEs (see the module docstring)."""

    image: object
    noise: dict
    path: list[dict]
    id: str
    parent: str | None
    nfe_path: float
    nfe_shared: float
    nfe: float


@dataclasses.dataclass(frozen=True)
class Advance:
    """A strategy's request: step every row of ``p`` to step ``until`` (None: the end); answered with the
    advanced :class:`Particles`."""

    p: Particles
    until: int | None = None


@dataclasses.dataclass(frozen=True)
class Score:
    """A strategy's request: score the rows' previews (labelled ``label``); answered with one score per row
    (larger is better, None: failed)."""

    p: Particles
    label: str = ""


#: what an in-loop strategy's ``steps(engine)`` generator yields; it returns the particles it keeps
StepRequest = Union[Advance, Score]
Steps = Generator[StepRequest, object, object]


def drive(steps: Steps, engine: Engine):
    """Run one prompt's step requests on its engine, one at a time; returns what the generator returns (the
    kept particles). A request that fails (BudgetExceeded, a scorer error) raises at the strategy's yield, where
    a strategy may catch it. tts.sampling.batching drives several prompts' generators together instead."""
    answer, error = None, None
    while True:
        try:
            request = steps.throw(error) if error is not None else steps.send(answer)
        except StopIteration as done:
            return done.value
        try:
            answer, error = respond(engine, request), None
        except Exception as e:  # noqa: BLE001 - raised into the strategy at its yield
            answer, error = None, e
        if engine.stopped_by is not None:  # search.stop_at reached by a final it scored
            steps.close()
            return engine.stop_result()


def respond(engine: Engine, request: StepRequest):
    """What one step request asks for, done by ``engine`` alone (its ``advance`` or ``score``)."""
    if isinstance(request, Advance):
        return engine.advance(request.p, request.until)
    if isinstance(request, Score):
        return engine.score(request.p, request.label)
    raise TypeError(f"an in-loop strategy yields Advance or Score requests, got {type(request).__name__}")


class Engine:
    """One prompt's in-loop search: the sampler, the budget, the preview scorer, what was spent."""

    def __init__(self, sampler: Sampler, prompt, scorer: PreviewScorer, nfe_budget: float | None = None,
                 stop: Callable[[float], bool] | None = None):
        self.sampler, self.prompt, self.scorer = sampler, prompt, scorer
        self.budget = None if nfe_budget is None else float(nfe_budget)
        self.stop = stop
        self.stopped_by: str | None = None  # the id of the final that reached ``stop``
        self._scored_finals: list[Particles] = []
        self.spent = 0.0
        self.preview_decodes = 0
        self.preview_scores = 0
        self._count = 0
        probe = sampler.start(prompt, [{"kind": "fresh", "seed": 0}])  # encodes and prepares; no denoiser call
        #: denoiser evaluations per row per step (2 under classifier-free guidance)
        self.row_step_cost = 2 if probe.cond.cfg else 1

    @property
    def steps(self) -> int:
        return self.sampler.num_steps

    @property
    def eta(self) -> float:
        return self.sampler.options.eta

    @property
    def image_cost(self) -> int:
        """NFEs of one whole trajectory (every step)."""
        return self.steps * self.row_step_cost

    @property
    def remaining(self) -> float:
        return float("inf") if self.budget is None else self.budget - self.spent

    def affordable(self, rows: int, steps: int) -> bool:
        """Whether ``rows`` rows can take ``steps`` more steps within the budget."""
        return rows * steps * self.row_step_cost <= self.remaining + 1e-9

    def start(self, lineages: list[dict], seeds: Sequence[int] | None = None, ids: Sequence[str] | None = None
              ) -> Particles:
        """Particles at step 0 from initial-noise lineages; ``seeds``: each row's segment seed for stochastic
        steps (default: its lineage's seed); ``ids`` default to p0, p1, ... numbered across the search."""
        traj = self.sampler.start(self.prompt, list(lineages))
        seeds = [int(n["seed"]) for n in lineages] if seeds is None else [int(s) for s in seeds]
        return Particles(traj, [[{"op": "start", "noise": n}] for n in lineages], seeds,
                         list(ids) if ids is not None else self._new_ids(len(lineages)), [None] * len(lineages))

    def advance(self, p: Particles, until: int | None = None) -> Particles:
        """Every row stepped to step ``until`` (default: the end); raises BudgetExceeded before overspending."""
        until = self.check_advance(p, until)
        if until == p.step:
            return p
        seeds = (lambda i: [step_seed(s, i) for s in p.seeds]) if self.eta > 0 else None
        return self.advanced(p, self.sampler.run(p.traj, until=until, seeds=seeds))

    def check_advance(self, p: Particles, until: int | None) -> int:
        """The step an advance of ``p`` goes to (``until``, default the end), checked against the budget."""
        until = self.steps if until is None else int(until)
        if not p.step <= until <= self.steps:
            raise ValueError(f"advance goes forward to a step in [{p.step}, {self.steps}], got {until}")
        if until > p.step and not self.affordable(len(p), until - p.step):
            raise BudgetExceeded(f"{len(p)} rows x {until - p.step} steps x {self.row_step_cost} NFEs exceed what is "
                                 f"left of search.nfe_budget={self.budget:g} ({self.remaining:g})")
        return until

    def advanced(self, p: Particles, traj: Trajectories) -> Particles:
        """``p`` with its rows' trajectories stepped on to ``traj`` (by :meth:`advance`, or by a driver that
        stepped them batched with other prompts' rows): what it cost charged, the paths extended."""
        self.spent += traj.spent - p.traj.spent
        paths = [_extend_run(path, traj.step, seed) for path, seed in zip(p.paths, p.seeds)]
        return dataclasses.replace(p, traj=traj, paths=paths)

    def select(self, p: Particles, rows: Sequence[int], event: str, seeds: Sequence[int] | None = None,
               copies: bool = False) -> Particles:
        """Keep, duplicate and re-order rows (resampling, pruning, branching); each kept row becomes a new
        particle whose parent is the row it came from. ``seeds``: new segment seeds for the kept rows (needed
        with a stochastic sampler, so copies of one row diverge); None keeps each parent's seed. ``copies``:
        ``p`` stays too (its rows are candidates themselves), so every new row shares its parent's whole path
        and is charged only what it adds."""
        rows = [int(r) for r in rows]
        if seeds is not None and len(seeds) != len(rows):
            raise ValueError(f"select got {len(seeds)} seeds for {len(rows)} rows")
        traj = p.traj.select(rows, copies)
        ids = self._new_ids(len(rows))
        paths = [[*p.paths[r], {"op": "from", "event": event, "step": p.step, "parent": p.ids[r]}] for r in rows]
        new_seeds = [p.seeds[r] for r in rows] if seeds is None else [int(s) for s in seeds]
        return Particles(traj, paths, new_seeds, ids, [p.ids[r] for r in rows])

    def renoise(self, p: Particles, to_step: int, seeds: Sequence[int]) -> Particles:
        """Every row taken back to the earlier step ``to_step`` by the forward process, noise from ``seeds``."""
        seeds = [int(s) for s in seeds]
        traj = self.sampler.renoise(p.traj, to_step, seeds)
        paths = [[*path, {"op": "renoise", "to": int(to_step), "seed": s}] for path, s in zip(p.paths, seeds)]
        return dataclasses.replace(p, traj=traj, paths=paths)

    def previews(self, p: Particles) -> list:
        """PIL images of each row's x0 prediction (the final images once every step is done)."""
        if p.step == self.steps:
            return self.sampler.decode(p.traj.latents)
        if p.traj.x0 is None:
            raise ValueError("no x0 prediction to preview: advance the particles at least one step first")
        self.preview_decodes += len(p)
        return self.sampler.decode(p.traj.x0)

    def score(self, p: Particles, label: str = "") -> list:
        """Each row's preview scored by the run's scorer (larger is better; None where scoring failed)."""
        images = self.previews(p)
        scores = list(self.scorer(images, PreviewInfo(p.step, self.noise_level(p.step), tuple(p.ids), label)))
        if len(scores) != len(images):
            raise RuntimeError(f"the preview scorer returned {len(scores)} scores for {len(images)} images")
        self.preview_scores += len(images)
        if p.step == self.steps:
            self._note_finals(p, scores)
        return scores

    def _note_finals(self, p: Particles, scores: list) -> None:
        if not any(p is q for q in self._scored_finals):
            self._scored_finals.append(p)
        if self.stop is not None and self.stopped_by is None:
            self.stopped_by = next((i for i, s in zip(p.ids, scores) if s is not None and self.stop(s)), None)

    def stop_result(self) -> list[Particles]:
        """What a search stopped by ``stop`` keeps: every set of finished rows it scored, in order."""
        return list(self._scored_finals)

    def noise_level(self, step: int) -> float:
        """The noise level of the x0 prediction made at ``step`` (from the previous step's input): the
        timestep over the training timesteps, 0 after the last step."""
        if step >= self.steps or step <= 0:
            return 0.0 if step >= self.steps else 1.0
        sched = self.sampler.scheduler
        total = float(sched.config.get("num_train_timesteps", 1000) or 1000)
        return min(1.0, max(0.0, float(sched.timesteps[step - 1]) / total))

    def finish(self, kept: Particles | list[Particles]) -> list[Final]:
        """The finished particles (one set, or several, e.g. from different generations) as candidates:
        images, paths, NFEs (own, shared, charged)."""
        sets = [kept] if isinstance(kept, Particles) else list(kept)
        if not sets or any(p.step != self.steps for p in sets):
            raise ValueError(f"the search must return finished particles (at step {self.steps}), got steps "
                             f"{[p.step for p in sets]}")
        finals = []
        for p in sets:
            images = self.sampler.decode(p.traj.latents)
            for k, (im, path) in enumerate(zip(images, p.paths)):
                n, s = float(p.traj.nfe[k]), float(p.traj.own_shared()[k])
                finals.append(Final(im, path[0]["noise"], path, p.ids[k], p.parents[k], n, s, n - s))
        dropped = max(0.0, self.spent - sum(f.nfe for f in finals)) / len(finals)
        return [dataclasses.replace(f, nfe=f.nfe + dropped) for f in finals]

    def _new_ids(self, n: int) -> list[str]:
        ids = [f"p{self._count + k}" for k in range(n)]
        self._count += n
        return ids


def _extend_run(path: list[dict], until: int, seed: int) -> list[dict]:
    """The path with its steps up to ``until`` (the last run op is extended while the seed is the same)."""
    last = path[-1]
    if last["op"] == "run" and last["seed"] == seed:
        return [*path[:-1], {**last, "to": until}]
    return [*path, {"op": "run", "to": until, "seed": seed}]


def replay_path(sampler: Sampler, prompt, path: list[dict]):
    """The final image of one recorded path (a list of ops, see the module docstring) on this sampler, which
    must have the search's options (eta; batch changes on)."""
    if not path or path[0].get("op") != "start":
        raise ValueError("a path starts with {'op': 'start', 'noise': ...}")
    traj = sampler.start(prompt, [path[0]["noise"]])
    for op in path[1:]:
        kind = op.get("op")
        if kind == "run":
            seed = int(op["seed"])
            seeds = (lambda i: [step_seed(seed, i)]) if sampler.options.eta > 0 else None
            traj = sampler.run(traj, until=int(op["to"]), seeds=seeds)
        elif kind == "renoise":
            traj = sampler.renoise(traj, int(op["to"]), [int(op["seed"])])
        elif kind != "from":
            raise ValueError(f"unknown path op {kind!r} (known: start, run, renoise, from)")
    if traj.step != sampler.num_steps:
        raise ValueError(f"the path ends at step {traj.step} of {sampler.num_steps}: not a finished candidate")
    return sampler.decode(traj.latents)[0]


def sampler_options(eta: float) -> SamplerOptions:
    """The sampler an in-loop search (and its replay) runs on: rows change between steps."""
    return SamplerOptions(eta=float(eta), batch_changes=True)


def nfe_per_image(generator, prompt: str) -> float | None:
    """Denoiser evaluations one whole candidate costs on this generator (steps x passes per step, as the sampler
    counts them), for an ask/tell strategy's ``nfe_budget`` and a study's budget; None when the pipeline runs
    elsewhere (pipeline.server). tts.pipelines.nfe.nfe_per_image estimates the same before anything loads."""
    if not hasattr(generator, "pipe"):
        return None
    sampler = Sampler(generator)
    try:
        return float(Engine(sampler, prompt, lambda images, info: [None] * len(images)).image_cost)
    finally:
        sampler.close()
