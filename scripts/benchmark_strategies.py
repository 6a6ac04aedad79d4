r"""Search strategies at equal NFEs on the shapes world (issue 15 section 4; the verifier-hacking study of issue 16).

    python scripts/benchmark_strategies.py --prompts 5 --budgets 40,80 --steers criteria_met   # a quick look

    # the README's run: two one-thread processes side by side on 2 cores, then their tables merged
    python scripts/benchmark_strategies.py --threads 1 --steers criteria_met --out outputs/bench-strategies/exact &
    python scripts/benchmark_strategies.py --threads 1 --steers proxy,reward --out outputs/bench-strategies/learned &
    wait; python scripts/benchmark_strategies.py --merge outputs/bench-strategies/{exact,learned}/results.json \
        --out outputs/bench-strategies --plot docs/strategies.png

A run cut short resumes where it stopped when given the same command (``--out DIR/outcomes.jsonl``), and
``--merge`` also reads that file. ``--suite-seed 1`` runs on a suite drawn apart from the bench, for tuning;
``--variant NAME=BASE;key=value`` adds an in-loop strategy with some options changed.

Every strategy gets the same total budget of denoiser evaluations (NFEs) per prompt: 40, 80, 160, 320, 640
(the shapes preset: 10 DDIM steps, guidance 1, so 10 NFEs per image):

* ``random``: best-of-k, k = budget / 10, from one nested pool of fresh noises per prompt, seeded exactly as
  tts-search seeds them (tts.run.lockstep, as scripts/benchmark_scaling.py does);
* ``zero-order``: the ask/tell search (3 neighbours at cosine 0.95, as in the scaling benchmark), its first
  budget / 10 candidates;
* every in-loop strategy (``in_loop = True``) found in configs/search/*.yaml, built from its YAML with
  ``search.nfe_budget`` set (its other options at their defaults) and run on a tts.sampling.particles.Engine for one
  prompt at a time, exactly as the loop runs it (tts.run.inloop: the same sampler options, preview scorer and seeds).

The search is steered by the exact checker (``criteria_met``), ``shapes-proxy``, the learned ``shapes-reward``
(its ``score_preview`` reads the noise level of x0 previews) or ``shapes-ensemble`` (reward + proxy, mean
rank); each prompt's finals are scored by the steering verifier and the best kept, as the loop keeps it. The
kept candidate is always judged by the exact checker: success is its ``correct``, beside its ``criteria_met``.
Verifier calls count preview scores and final scores. Since a prompt's search costs in proportion to its
budget, ``--prompts`` takes a number of prompts per budget (an even spread over the category-ordered suite;
a smaller set is a subset of a larger one) and the tables say how many each column used. Prints Markdown
tables and the command; ``--out DIR`` also writes results.json (every prompt's outcome), tables.md and
the plot (success vs NFEs, one panel per steering signal). Every cell's success also comes with its 95%
percentile bootstrap interval over prompts and its paired difference against random search at the same budget
(tts.core.stats).
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import sys
import time
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

from benchmark_scaling import EXACT, PRESET, PROXY, REWARD, pools_for, steering, subset  # noqa: E402
from tts.app.cli import config_dir  # noqa: E402
from tts.sampling.generate import make_generator  # noqa: E402
from tts.run.inloop import PreviewLog  # noqa: E402
from tts.core.noise import derive_seed  # noqa: E402
from tts.sampling.batching import StepDriver  # noqa: E402
from tts.sampling.particles import Engine, drive, sampler_options  # noqa: E402
from tts.pipelines import PipelineSpec  # noqa: E402
from tts.core.runfolder import prompt_hash  # noqa: E402
from tts.sampling.sampler import Sampler  # noqa: E402
from tts.search import oriented  # noqa: E402
from tts.search.random import RandomSearch  # noqa: E402
from tts.search.zero_order import ZeroOrderSearch  # noqa: E402
from tts.verifiers.base import as_verdict  # noqa: E402
from tts.verifiers.ensemble import EnsembleVerifier  # noqa: E402
from tts.world.bench import build  # noqa: E402

STEERS = {"criteria_met": "the exact checker (criteria_met)", "proxy": "shapes-proxy", "reward": "shapes-reward",
          "ensemble": "shapes-ensemble (reward + proxy, mean rank)"}
GROUPS = ["all", "in_dist", "held_out", "single_object", "two_object", "counting", "colors", "position", "color_attr"]
#: the README's plan: prompts per budget for the exact checker, and for the other steering signals
BASELINE_STYLE = {"random": {"color": "k", "ls": "--"}, "zero-order": {"color": "0.55", "ls": ":"}}
DEFAULT_PROMPTS = "40:24,80:24,160:36,320:12,640:6"
DEFAULT_OTHER_PROMPTS = "40:12,80:12,160:18,320:6,640:3"
#: in-loop cells run in this order of budgets (the bar's first)
PRIORITY = [160, 320, 40, 80, 640]


@dataclasses.dataclass(frozen=True)
class Outcome:
    """One prompt's search under one strategy, steering signal and budget, its kept candidate judged."""

    strategy: str
    steer: str
    budget: int
    prompt: int  # index into the benchmark's prompt list
    correct: float | None = None
    criteria_met: float | None = None
    steer_score: float | None = None  # the kept candidate's final score by the steering signal
    nfe: float = 0.0  # denoiser evaluations the search spent
    preview_scores: int = 0
    final_scores: int = 0
    seconds: float = 0.0
    error: str | None = None  # the strategy refused the budget (or broke it)


@dataclasses.dataclass(frozen=True)
class Plan:
    """What to run: budgets, prompts per (steer, budget) as indices into ``prompts``, strategies, steers."""

    prompts: list  # tts.prompts.Prompt, the largest set; cells use nested subsets of it
    cells: dict  # (steer, budget) -> list of prompt indices
    strategies: list[str]
    in_loop: dict  # name -> its YAML config (in-loop strategies)
    nfe_per_image: float


def steer_verifier(steer: str):
    """The verifier the loop would steer with (``verifier=...``); a fresh ensemble per prompt's search, since
    an ensemble ranks each score against what it has scored for that prompt before (tts.verifiers.ensemble)."""
    if steer == "criteria_met":
        return EXACT
    if steer == "proxy":
        return PROXY
    if steer == "reward":
        return REWARD
    return EnsembleVerifier([REWARD, PROXY], method="mean_rank")


def find_in_loop(dirs: list[Path]) -> dict:
    """Every configs/search/*.yaml whose class has ``in_loop = True``, by name (later dirs override)."""
    import hydra.utils
    from omegaconf import OmegaConf

    found = {}
    for d in dirs:
        for path in sorted(Path(d).glob("*.yaml")):
            cfg = OmegaConf.load(path)
            target = cfg.get("_target_") if isinstance(cfg, dict) or hasattr(cfg, "get") else None
            if not target:
                continue
            try:
                cls = hydra.utils.get_class(target)
            except Exception as e:  # noqa: BLE001 - a strategy being written elsewhere may not import yet
                print(f"# skipping search={path.stem}: {type(e).__name__}: {e}", file=sys.stderr)
                continue
            if getattr(cls, "in_loop", False):
                if "defaults" in cfg:
                    cfg = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "defaults"])
                found[path.stem] = cfg
    return found


def variants(specs: list[str], in_loop: dict) -> dict:
    """``--variant NAME=BASE;key=value;...``: an in-loop strategy's config with some options changed (values
    read as YAML), for tuning on a suite drawn apart from the bench."""
    import yaml
    from omegaconf import OmegaConf

    out = {}
    for spec in specs:
        name, _, rest = spec.partition("=")
        base, *sets = rest.split(";")
        if base not in in_loop:
            raise SystemExit(f"--variant {spec!r}: no in-loop strategy {base!r} (known: {', '.join(in_loop)})")
        cfg = OmegaConf.to_container(in_loop[base])
        for item in sets:
            key, _, value = item.partition("=")
            if key not in cfg:
                raise SystemExit(f"--variant {spec!r}: search={base} has no option {key!r}")
            cfg[key] = yaml.safe_load(value)
        out[name] = OmegaConf.create(cfg)
    return out


def in_loop_factory(cfg, budget: int):
    import hydra.utils

    return hydra.utils.instantiate(cfg, nfe_budget=budget)


@dataclasses.dataclass
class InLoopJob:
    """One prompt's in-loop search, built and ready to be driven: its engine, strategy, steering verifier."""

    base: Outcome
    text: str
    strategy: object
    verifier: object
    gen: object
    engine: Engine | None = None
    start: float = 0.0

    def ready(self) -> InLoopJob:
        """The job with its engine (a sampler on the pipeline, its previews scored by the steering verifier)."""
        text, phash = self.text, prompt_hash(self.text)
        engine = Engine(Sampler(self.gen, sampler_options(self.strategy.eta)), text,
                        PreviewLog(self.verifier, text, phash), self.base.budget)
        return dataclasses.replace(self, engine=engine, start=time.perf_counter())


@dataclasses.dataclass(frozen=True)
class Failed:
    """What a search that raised returns under :func:`guarded` (the error becomes its outcome)."""

    error: str


def guarded(steps):
    """A search's step requests, its exception (a strategy bug, e.g. BudgetExceeded) returned as :class:`Failed`
    so the other prompts driven with it go on."""
    try:
        return (yield from steps)
    except Exception as e:  # noqa: BLE001 - reported as the prompt's outcome, not fatal
        return Failed(f"{type(e).__name__}: {e}")


def in_loop_job(gen, cfg, name: str, steer: str, budget: int, index: int, text: str, seed: int) -> InLoopJob | Outcome:
    """1. build the strategy (refusing the budget is an outcome); 2. :meth:`InLoopJob.ready` adds its engine."""
    phash = prompt_hash(text)
    base = Outcome(name, steer, budget, index)
    try:
        strategy = in_loop_factory(cfg, budget)(
            seed_fn=lambda r, i, purpose: derive_seed(seed, phash, r, i, purpose), context=None)
    except ValueError as e:
        return dataclasses.replace(base, error=str(e))
    return InLoopJob(base, text, strategy, steer_verifier(steer), gen)


def in_loop_outcome(job: InLoopJob, result) -> Outcome:
    """3. score the finals, keep the best (first wins ties), 4. judge it exactly."""
    engine = job.engine
    engine.sampler.close()
    if isinstance(result, Failed):
        return dataclasses.replace(job.base, error=result.error, nfe=engine.spent)
    images = [f.image for f in engine.finish(result)]
    scores = final_scores(job.verifier, job.text, images)
    best = keep_best(scores)
    judged = EXACT.score([job.text], [images[best]])[0]
    return dataclasses.replace(job.base, correct=judged["correct"].score, criteria_met=judged["criteria_met"].score,
                               steer_score=scores[best], nfe=engine.spent, preview_scores=engine.preview_scores,
                               final_scores=len(images), seconds=time.perf_counter() - job.start)


def run_in_loop_jobs(jobs: list, step_rows: int | None) -> list[Outcome]:
    """Every job's search: driven together (tts.sampling.batching, ``step_rows`` rows per denoiser call), or one
    prompt at a time (``step_rows`` None), exactly as tts-search runs them."""
    if step_rows is None:  # one engine at a time: each engine's sampler hooks the denoiser while it lives
        done = iter([in_loop_outcome(j, drive(guarded(j.strategy.requests(j.engine)), j.engine))
                     for j in (j.ready() for j in jobs if isinstance(j, InLoopJob))])
    else:
        live = [j.ready() for j in jobs if isinstance(j, InLoopJob)]
        results = StepDriver(step_rows).run([(j.engine, guarded(j.strategy.requests(j.engine))) for j in live])
        done = iter([in_loop_outcome(j, r) for j, r in zip(live, results)])
    return [next(done) if isinstance(j, InLoopJob) else j for j in jobs]


def final_scores(verifier, text: str, images: list) -> list:
    """The steering verifier's score of each final image, oriented so larger is better (None: failed)."""
    metric, up = verifier.choice_of_metric, verifier.higher_is_better()
    out = []
    for v in (as_verdict(r) for r in verifier.score([text] * len(images), images)):
        s = v.scores.get(metric) if v.scores else None
        out.append(None if s is None else oriented(s.score, up))
    return out


def keep_best(scores: list) -> int:
    """The index the loop keeps: the first of the highest scores (a failed score never wins)."""
    best = None
    for i, s in enumerate(scores):
        if s is not None and (best is None or s > scores[best]):
            best = i
    return 0 if best is None else best


def run_pool_strategies(gen, plan: Plan, args) -> list[Outcome]:
    """Random and zero-order: one nested pool per prompt, as long as the largest budget that prompt is run at
    needs; budget B keeps the best of its first B / (NFEs per image) candidates. Random's one pool serves every
    steering signal; zero-order's path depends on the signal, so it runs once per signal (not the ensemble)."""
    out = []
    runs = ([("random", "criteria_met", args.steers)] if "random" in plan.strategies else []) + (
        [("zero-order", s, [s]) for s in args.steers if s != "ensemble"] if "zero-order" in plan.strategies else [])
    for name, pool_steer, steers in runs:
        cells = {key: idx for key, idx in pool_cells(plan, name).items() if key[0] in steers}
        need = collections.Counter()
        for (_, budget), idx in cells.items():
            for i in idx:
                need[i] = max(need[i], int(budget // plan.nfe_per_image))
        print(f"# {name} steered by {pool_steer}: {sum(need.values())} candidates", file=sys.stderr, flush=True)
        pools, seconds = pools_by_need(gen, plan, name, pool_steer, need, args)
        for (steer, budget), idx in sorted(cells.items()):
            k = int(budget // plan.nfe_per_image)
            out += [pool_outcome(name, steer, budget, i, pools[i][:k], plan.nfe_per_image,
                                 seconds[i] * k / len(pools[i])) for i in idx]
    return out


def pool_cells(plan: Plan, name: str) -> dict:
    """The cells a pool strategy runs: the plan's, and for random also 320 NFEs on the 160-NFE prompts (the bar)."""
    cells = dict(plan.cells)
    if name == "random" and ("criteria_met", 160) in cells:
        cells["criteria_met", 320] = sorted(set(cells.get(("criteria_met", 320), [])) | set(cells["criteria_met", 160]))
    return cells


def pools_by_need(gen, plan: Plan, name: str, steer: str, need: dict, args):
    """Each prompt's pool of ``need[i]`` candidates (prompts needing as many are searched together)."""
    pools, seconds = {}, {}
    for k in sorted(set(need.values())):
        idx = sorted(i for i in need if need[i] == k)
        factory = (partial(RandomSearch, rounds=1, schedule="constant", per_round=k) if name == "random"
                   else partial(ZeroOrderSearch, rounds=10_000, num_neighbors=3, threshold=0.95))
        start = time.perf_counter()
        got, _ = pools_for(gen, [plan.prompts[i].text for i in idx], factory,
                           argparse.Namespace(max_k=k, batch=args.batch, seed=args.seed), steer)
        per = (time.perf_counter() - start) / len(idx)
        for i, pool in zip(idx, got):
            pools[i], seconds[i] = pool, per
    return pools, seconds


def pool_outcome(name, steer, budget, index, head, nfe_per_image, seconds) -> Outcome:
    best = head[int(np.argmax(steering(head, steer)))]
    score = None if steer == "ensemble" else best[steer]
    return Outcome(name, steer, budget, index, best["correct"], best["criteria_met"], score,
                   len(head) * nfe_per_image, 0, len(head), seconds)


def run_in_loop_strategies(gen, plan: Plan, args, saved: "Saved", progress: Callable[[str], None]) -> list[Outcome]:
    """Each (strategy, steer, budget) cell not saved yet: its prompts' searches in lockstep (tts.sampling.batching),
    wall time shared equally among them; the bar's budgets first, so a cut-short run still answers it."""
    out = []
    order = lambda b: (PRIORITY.index(b) if b in PRIORITY else len(PRIORITY), b)  # noqa: E731
    for (steer, budget), idx in sorted(plan.cells.items(), key=lambda kv: (order(kv[0][1]), kv[0][0])):
        for name, cfg in plan.in_loop.items():
            if saved.has(name, steer, budget):
                continue
            start = time.perf_counter()
            jobs = [in_loop_job(gen, cfg, name, steer, budget, i, plan.prompts[i].text, args.seed) for i in idx]
            got = run_in_loop_jobs(jobs, args.step_rows if args.lockstep else None)
            per = (time.perf_counter() - start) / len(idx)
            out += saved.add([dataclasses.replace(o, seconds=per) for o in got])
            progress(f"{name} steered by {steer} at {budget} NFEs: {len(idx)} prompts, {per * len(idx):.0f} s")
    return out


class Saved:
    """``--out DIR/outcomes.jsonl``: outcomes appended cell by cell, so rerunning the same command resumes a
    run that was cut short (its first line is the plan; a different plan is refused)."""

    def __init__(self, out: Path | None, plan: Plan, head: list[str]):
        self.path, self.outcomes = (None if out is None else out / "outcomes.jsonl"), []
        if self.path is None:
            return
        key = plan_json(plan, head)
        if self.path.exists():
            lines = self.path.read_text().splitlines()
            first = json.loads(lines[0])
            if [first.get(k) for k in ("prompts", "cells")] != [key[k] for k in ("prompts", "cells")]:
                raise SystemExit(f"{self.path} holds a run of another plan: use another --out, or delete it")
            self.outcomes = [Outcome(**json.loads(line)) for line in lines[1:] if line.strip()]
        else:
            out.mkdir(parents=True, exist_ok=True)
            self.path.write_text(json.dumps(key) + "\n")

    def has(self, strategy: str, steer: str | None = None, budget: int | None = None) -> bool:
        return any(o.strategy == strategy and steer in (None, o.steer) and budget in (None, o.budget)
                   for o in self.outcomes)

    def add(self, outcomes: list[Outcome]) -> list[Outcome]:
        self.outcomes += outcomes
        if self.path is not None:
            with self.path.open("a") as f:
                f.writelines(json.dumps(dataclasses.asdict(o)) + "\n" for o in outcomes)
        return outcomes


@dataclasses.dataclass(frozen=True)
class Cell:
    """The mean over a cell's prompts (those whose search ran; ``errors`` counts the others)."""

    n: int
    success: float
    criteria_met: float
    steer_score: float | None
    nfe: float
    nfe_max: float
    calls: float
    seconds: float
    errors: int
    error: str | None

    @staticmethod
    def of(outs: list[Outcome]) -> "Cell | None":
        if not outs:
            return None
        ok = [o for o in outs if o.error is None]
        bad = [o.error for o in outs if o.error is not None]
        mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
        steer = [o.steer_score for o in ok if o.steer_score is not None]
        return Cell(len(outs), 100 * mean([o.correct for o in ok]), mean([o.criteria_met for o in ok]),
                    mean(steer) if steer else None, mean([o.nfe for o in ok]), max([o.nfe for o in ok], default=0.0),
                    mean([o.preview_scores + o.final_scores for o in ok]), mean([o.seconds for o in ok]), len(bad),
                    bad[0] if bad else None)

    def quality(self) -> str:
        if self.errors == self.n:
            return "n/a"
        flag = f" ({self.errors} failed)" if self.errors else ""
        return f"{self.success:.0f}% / {self.criteria_met:.2f}{flag}"


def select(outcomes: list[Outcome], strategy=None, steer=None, budget=None, prompts=None) -> list[Outcome]:
    keep = None if prompts is None else set(prompts)
    return [o for o in outcomes if (strategy is None or o.strategy == strategy) and (steer is None or o.steer == steer)
            and (budget is None or o.budget == budget) and (keep is None or o.prompt in keep)]


def groups_of(prompts: list, idx: list[int]) -> dict[str, list[int]]:
    out = collections.defaultdict(list)
    for i in idx:
        for g in ("all", prompts[i].tags["split"], prompts[i].tags["category"]):
            out[g].append(i)
    return {g: out[g] for g in GROUPS if g in out}


def budgets_of(plan: Plan, steer: str) -> list[int]:
    return sorted(b for s, b in plan.cells if s == steer)


def success_table(outcomes, plan: Plan, steer: str) -> list[str]:
    budgets = budgets_of(plan, steer)
    head = " | ".join(f"{b} NFEs (n={len(plan.cells[steer, b])})" for b in budgets)
    text = [f"#### Steered by {STEERS[steer]}: success / mean criteria_met of the kept candidate", "",
            f"| strategy | {head} |", "|---|" + "---|" * len(budgets)]
    for name in plan.strategies:
        cells = [Cell.of(select(outcomes, name, steer, b, plan.cells[steer, b])) for b in budgets]
        if any(cells):
            text.append(f"| {name} | " + " | ".join(c.quality() if c else "-" for c in cells) + " |")
    return text + [""]


def interval_table(outcomes, plan: Plan, steer: str) -> list[str]:
    """Per cell: success with its 95% percentile bootstrap interval over prompts, and the paired difference
    against random search at the same budget on the same prompts (tts.core.stats; seeded, 10,000 resamples).
    A difference whose interval excludes zero is marked *."""
    from tts.core.stats import bootstrap_paired, bootstrap_rate

    budgets = budgets_of(plan, steer)
    text = [f"#### Steered by {STEERS[steer]}: success [95% CI] and paired difference vs random [95% CI], points",
            "", "| strategy | " + " | ".join(f"{b} NFEs" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name in plan.strategies:
        row = []
        for b in budgets:
            mine = {o.prompt: o.correct for o in select(outcomes, name, steer, b, plan.cells[steer, b])
                    if o.error is None}
            base = {o.prompt: o.correct for o in select(outcomes, "random", steer, b, plan.cells[steer, b])
                    if o.error is None}
            if not mine:
                row.append("-")
                continue
            cell = bootstrap_rate([mine[i] for i in sorted(mine)]).text()
            both = sorted(set(mine) & set(base))
            if name != "random" and both:
                d = bootstrap_paired([mine[i] for i in both], [base[i] for i in both])
                cell += f"; {d.text()}{'*' if d.excludes_zero() else ''}"
            row.append(f"{cell} (n={len(mine)})")
        if any(c != "-" for c in row):
            text.append(f"| {name} | " + " | ".join(row) + " |")
    return text + [""]


def group_table(outcomes, plan: Plan, steer: str, budget: int) -> list[str]:
    idx = plan.cells.get((steer, budget))
    if not idx:
        return []
    names = [n for n in plan.strategies if select(outcomes, n, steer, budget, idx)]
    text = [f"#### Steered by {STEERS[steer]}, {budget} NFEs per prompt, by group ({len(idx)} prompts)", "",
            "| group | n | " + " | ".join(names) + " |", "|---|---|" + "---|" * len(names)]
    for g, members in groups_of(plan.prompts, idx).items():
        cells = [Cell.of(select(outcomes, n, steer, budget, members)) for n in names]
        text.append(f"| {g} | {len(members)} | " + " | ".join(c.quality() if c else "-" for c in cells) + " |")
    return text + [""]


def cost_table(outcomes, plan: Plan, steer: str) -> list[str]:
    budgets = budgets_of(plan, steer)
    text = [f"#### Cost per prompt, steered by {STEERS[steer]}: NFEs spent mean (max) / verifier calls "
            "(preview + final scores) / wall s", "",
            "| strategy | " + " | ".join(f"{b} NFEs" for b in budgets) + " |", "|---|" + "---|" * len(budgets)]
    for name in plan.strategies:
        cells = [Cell.of(select(outcomes, name, steer, b, plan.cells[steer, b])) for b in budgets]
        if any(cells):
            text.append(f"| {name} | " + " | ".join(
                "-" if c is None else "n/a" if c.errors == c.n else
                f"{c.nfe:.0f} ({c.nfe_max:.0f}) / {c.calls:.0f} / {c.seconds:.2f}" for c in cells) + " |")
    return text + [""]


def hacking_table(outcomes, plan: Plan, steer: str) -> list[str]:
    """The verifier-hacking gap (Ma et al. 2025, Sec. 4.2): the kept candidate's steering score against its
    judged criteria_met, as the budget grows."""
    budgets = budgets_of(plan, steer)
    text = [f"#### Verifier hacking, steered by {STEERS[steer]}: steering score / true criteria_met / gap of the "
            "kept candidate", "", "| strategy | " + " | ".join(f"{b} NFEs" for b in budgets) + " |",
            "|---|" + "---|" * len(budgets)]
    for name in plan.strategies:
        cells = [Cell.of(select(outcomes, name, steer, b, plan.cells[steer, b])) for b in budgets]
        if any(cells):
            text.append(f"| {name} | " + " | ".join(
                "-" if c is None or c.steer_score is None else
                f"{c.steer_score:.2f} / {c.criteria_met:.2f} / {c.steer_score - c.criteria_met:+.2f}"
                for c in cells) + " |")
    return text + [""]


def bar_lines(outcomes, plan: Plan) -> list[str]:
    """Issue 15's bar: the best strategy at 160 NFEs reaches random's success at 320 NFEs (best-of-32), both
    steered by the exact checker, on the same prompts."""
    idx = plan.cells.get(("criteria_met", 160))
    if not idx or not select(outcomes, "random", "criteria_met", 320, idx):
        return ["Bar: not measured (needs the exact checker at 160 and 320 NFEs, random among the strategies).", ""]
    target = Cell.of(select(outcomes, "random", "criteria_met", 320, idx))
    if target is None or target.errors:
        return ["Bar: not measured (random at 320 NFEs did not run on the 160-NFE prompts)", ""]
    best = max(((n, c) for n in plan.strategies if (c := Cell.of(select(outcomes, n, "criteria_met", 160, idx)))
                and c.errors < c.n), key=lambda nc: nc[1].success)
    verdict = "reaches" if best[1].success >= target.success else "does NOT reach"
    return [f"**Bar** (exact checker, {len(idx)} prompts): the best strategy at 160 NFEs, {best[0]}, "
            f"{best[1].success:.0f}% {verdict} random search's success at 320 NFEs (best-of-32), "
            f"{target.success:.0f}%.",
            ""]


def plot(outcomes, plan: Plan, steers: list[str], path: Path) -> None:
    """Success vs NFEs per strategy, one panel per steering signal (small PNG for the README)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(steers), figsize=(3.2 * len(steers) + 1.6, 3.0), dpi=72, sharey=True,
                             squeeze=False)
    for ax, steer in zip(axes[0], steers):
        for k, name in enumerate(plan.strategies):
            pts = [(b, c.success) for b in budgets_of(plan, steer)
                   if (c := Cell.of(select(outcomes, name, steer, b, plan.cells[steer, b]))) and c.errors < c.n]
            style = BASELINE_STYLE.get(name, {"color": f"C{k}", "ls": "-"})
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(budgets_of(plan, steer), [str(b) for b in budgets_of(plan, steer)])
        ax.minorticks_off()
        ax.set_title(f"steered by {steer}", fontsize=9)
        ax.set_xlabel("NFEs per prompt", fontsize=8)
        ax.grid(alpha=0.3)
        ax.tick_params(labelsize=7)
    axes[0][0].set_ylabel("success (exact checker), %", fontsize=8)
    axes[0][-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    fig.savefig(path, optimize=True) if path.suffix == ".jpg" else fig.savefig(path)
    plt.close(fig)


def per_budget(spec: str, budgets: list[int]) -> dict[int, int]:
    """``--prompts``: N (every budget) or ``B:N,B:N,...`` (one count per budget)."""
    if ":" not in spec:
        return {b: int(spec) for b in budgets}
    counts = {int(b): int(n) for b, n in (part.split(":") for part in spec.split(","))}
    missing = [b for b in budgets if b not in counts]
    if missing:
        raise SystemExit(f"--prompts names no count for budget(s) {missing}: add B:N for each, or give one N")
    return {b: counts[b] for b in budgets}


def make_plan(args, nfe_per_image: float) -> Plan:
    """The prompts of every (steer, budget) cell, nested subsets of one even spread over the suite, and the
    strategies: random, zero-order, then every in-loop strategy of the config dirs."""
    budgets = [int(b) for b in args.budgets.split(",")]
    counts = {s: per_budget(args.prompts if s == "criteria_met" else (args.other_prompts or args.prompts), budgets)
              for s in args.steers}
    most = max(n for spec in (args.prompts, args.other_prompts or args.prompts)
               for n in per_budget(spec, budgets).values())
    largest = subset(build(args.suite_seed), most)  # the same list whatever --steers (runs split by steer merge)
    index = {p.text: i for i, p in enumerate(largest)}
    cells = {(s, b): sorted(index[p.text] for p in subset(largest, n)) for s, c in counts.items() for b, n in c.items()}
    in_loop = find_in_loop([config_dir() / "search", *args.configs])
    in_loop.update(variants(args.variant, in_loop))
    wanted = args.strategies.split(",") if args.strategies else ["random", "zero-order", *in_loop]
    wanted += [v.partition("=")[0] for v in args.variant if v.partition("=")[0] not in wanted]
    unknown = [w for w in wanted if w not in ("random", "zero-order", *in_loop)]
    if unknown:
        raise SystemExit(f"--strategies: unknown {unknown}; known: random, zero-order, {', '.join(in_loop)}")
    return Plan(largest, cells, wanted, {n: c for n, c in in_loop.items() if n in wanted}, nfe_per_image)


def header(args, argv, plan: Plan, minutes: float) -> list[str]:
    suite = "the bench, prompts=shapes-bench" if args.suite_seed == 0 else "a tuning suite drawn apart from the bench"
    return [f"command: python scripts/benchmark_strategies.py {' '.join(argv)}",
            f"suite seed {args.suite_seed} ({suite}), {args.steps} DDIM steps, guidance {args.guidance}, "
            f"{plan.nfe_per_image:.0f} NFEs per image, run seed {args.seed}; {minutes:.1f} min on "
            f"{torch.get_num_threads()} CPU threads"]


def report(outcomes, plan: Plan, args, head: list[str]) -> list[str]:
    counts = {s: {b: len(plan.cells[s, b]) for b in budgets_of(plan, s)} for s in args.steers}
    text = [*head,
            "prompts per budget (an even spread over the categories; a smaller set is a subset of a larger one): "
            + "; ".join(f"{s}: " + ", ".join(f"{b}:{n}" for b, n in c.items()) for s, c in counts.items()), ""]
    text += bar_lines(outcomes, plan)
    for steer in args.steers:
        text += success_table(outcomes, plan, steer)
    for steer in args.steers:
        text += interval_table(outcomes, plan, steer)
    for steer in args.steers:
        for budget in args.group_budgets:
            text += group_table(outcomes, plan, steer, budget)
    for steer in args.steers:
        text += cost_table(outcomes, plan, steer)
    for steer in [s for s in args.steers if s in ("reward", "proxy")]:
        text += hacking_table(outcomes, plan, steer)
    errors = sorted({(o.strategy, o.budget, o.error) for o in outcomes if o.error})
    text += [f"- {n} at {b} NFEs: {e}" for n, b, e in errors[:20]]
    return text


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budgets", default="40,80,160,320,640", help="total NFEs per prompt")
    p.add_argument("--prompts", default=DEFAULT_PROMPTS, help="prompts per budget, steered by the exact checker: "
                   "N, or B:N,B:N,... (default %(default)s)")
    p.add_argument("--other-prompts", default=None, help=f"the same for the other steering signals (default "
                   f"{DEFAULT_OTHER_PROMPTS} when --prompts is the default, else as --prompts)")
    p.add_argument("--steers", default="criteria_met,proxy,reward", help=f"of {', '.join(STEERS)}")
    p.add_argument("--strategies", default=None, help="comma list (default: random, zero-order and every in-loop "
                   "strategy in configs/search)")
    p.add_argument("--configs", type=Path, nargs="*", default=[], help="more search config dirs (in-loop YAMLs)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=BASE;KEY=VALUE;...",
                   help="also run an in-loop strategy with options changed (repeatable), "
                        "e.g. 'smc-diff=smc;potential=diff'")
    p.add_argument("--group-budgets", default="160,320", help="budgets tabled per category and split")
    p.add_argument("--seed", type=int, default=0, help="run seed (noises derive from it as in tts-search)")
    p.add_argument("--suite-seed", type=int, default=0,
                   help="0: the bench; another seed: a suite of the same make-up drawn apart, for tuning")
    p.add_argument("--batch", type=int, default=32, help="random / zero-order: candidates per pipeline call")
    p.add_argument("--step-rows", type=int, default=32, help="in-loop searches in lockstep: rows per denoiser call "
                   "at most (on the CPU a few dozen are fastest per row)")
    p.add_argument("--steps", type=int, default=PRESET["num_inference_steps"])
    p.add_argument("--guidance", type=float, default=PRESET["guidance_scale"])
    p.add_argument("--no-lockstep", dest="lockstep", action="store_false",
                   help="run in-loop searches one prompt at a time (default: a cell's prompts in lockstep, their "
                        "denoiser steps batched together)")
    p.add_argument("--merge", type=Path, nargs="+", default=None, metavar="RESULTS_JSON",
                   help="no run: the tables and plot of these runs' results.json together (with --out / --plot)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's; use 1 on a busy "
                   "machine, where 2 threads contending with other jobs run many times slower)")
    p.add_argument("--out", type=Path, default=None, help="write results.json, tables.md and strategies.png here")
    p.add_argument("--plot", type=Path, default=None, help="write the plot here too (e.g. docs/strategies.png)")
    args = p.parse_args(argv)
    args.steers = args.steers.split(",")
    if unknown := [s for s in args.steers if s not in STEERS]:
        raise SystemExit(f"--steers: unknown {unknown}; known: {', '.join(STEERS)}")
    if args.other_prompts is None and args.prompts == DEFAULT_PROMPTS:
        args.other_prompts = DEFAULT_OTHER_PROMPTS
    args.group_budgets = [int(b) for b in args.group_budgets.split(",") if b]
    return merge(args) if args.merge else run(args, argv)


def run(args, argv) -> list[Outcome]:
    """1. load the model and plan, 2. random and zero-order pools, 3. in-loop strategies, 4. tables, files."""
    torch.manual_seed(0)
    if args.threads:
        torch.set_num_threads(args.threads)
    spec = PipelineSpec(name="shapes", model_id="tts://shapes-model", height=32, width=32,
                        num_inference_steps=args.steps, guidance_scale=args.guidance, device="cpu")
    gen = make_generator(spec)
    plan = make_plan(args, float(Engine(Sampler(gen), "a red circle", lambda ims, info: []).image_cost))
    start = time.time()
    log = lambda msg: print(f"# {time.time() - start:.0f} s: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    planned = len(plan.in_loop) * sum(b * len(idx) for (_, b), idx in plan.cells.items())
    log(f"strategies: {', '.join(plan.strategies)}; steers: {', '.join(args.steers)}; in-loop searches: "
        f"{planned:.0f} NFEs in all")
    saved = Saved(args.out, plan, header(args, argv, plan, 0.0)[:1])
    if not any(saved.has(s) for s in ("random", "zero-order")):
        saved.add(run_pool_strategies(gen, plan, args))
        log("random and zero-order done")
    run_in_loop_strategies(gen, plan, args, saved, log)
    outcomes = saved.outcomes
    head = header(args, argv, plan, (time.time() - start) / 60)
    text = report(outcomes, plan, args, head)
    print("\n".join(text))
    write_outputs(outcomes, plan, args, text, head)
    return outcomes


def merge(args) -> list[Outcome]:
    """``--merge``: the tables and plot of several runs' results.json (e.g. one process per steering signal,
    run side by side), as one run; their prompt lists must agree (same --prompts / --other-prompts)."""
    from tts.prompts import Prompt

    parts = [read_results(Path(p)) for p in args.merge]
    if any(p["prompts"] != parts[0]["prompts"] for p in parts):
        raise SystemExit("--merge: the runs used different prompt lists (give them the same --prompts and "
                         "--other-prompts)")
    prompts = [Prompt(d["text"], {k: v for k, v in d.items() if k != "text"}) for d in parts[0]["prompts"]]
    cells, strategies, outcomes = {}, [], []
    for p in parts:
        cells.update({(k.split("@")[0], int(k.split("@")[1])): v for k, v in p["cells"].items()})
        strategies += [s for s in p["strategies"] if s not in strategies]
        outcomes += [Outcome(**o) for o in p["outcomes"]]
    args.steers = [s for s in STEERS if any(s == c[0] for c in cells)]
    plan = Plan(prompts, cells, strategies, {}, parts[0]["nfe_per_image"])
    head = [line for p in parts for line in p["header"]] + [f"merged: {', '.join(map(str, args.merge))}"]
    text = report(outcomes, plan, args, head)
    print("\n".join(text))
    write_outputs(outcomes, plan, args, text, head)
    return outcomes


def plan_json(plan: Plan, head: list[str]) -> dict:
    return {"header": head, "strategies": plan.strategies, "nfe_per_image": plan.nfe_per_image,
            "prompts": [{"text": p.text, **p.tags} for p in plan.prompts],
            "cells": {f"{s}@{b}": idx for (s, b), idx in sorted(plan.cells.items())}}


def read_results(path: Path) -> dict:
    """A run's results.json, or the outcomes.jsonl of one cut short (its plan, then an outcome a line)."""
    if path.suffix != ".jsonl":
        return json.loads(path.read_text())
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {**lines[0], "header": [*lines[0]["header"], f"(cut short: the outcomes saved in {path})"],
            "outcomes": lines[1:]}


def write_outputs(outcomes, plan: Plan, args, text: list[str], head: list[str]) -> None:
    paths = ([args.out / "strategies.png"] if args.out else []) + ([args.plot] if args.plot else [])
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "tables.md").write_text("\n".join(text) + "\n")
        (args.out / "results.json").write_text(json.dumps(
            {**plan_json(plan, head), "outcomes": [dataclasses.asdict(o) for o in outcomes]}, indent=0))
    for path in paths:
        path.parent.mkdir(parents=True, exist_ok=True)
        plot(outcomes, plan, args.steers, path)


if __name__ == "__main__":
    main()
