"""In-loop strategies search=prune (successive halving), search=paths (Ma et al.'s search over paths) and
search=beam: the pieces on hand-made numbers, budgets on a counting stand-in for the sampler under the real
Engine, and whole searches on the shapes model (defining behaviour, determinism, every final replays)."""
import dataclasses
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import compose

from tts.core.noise import derive_seed
from tts.sampling.particles import Engine, replay_path, sampler_options
from tts.sampling.sampler import SamplerOptions, Trajectories
from tts.search.beam import BeamSearch
from tts.search.paths import PathsSearch
from tts.search._steps import largest_fitting, ranked
from tts.search.prune import PruneSearch, kept_rows

PROMPT = "two red circles"
STRATEGIES = {"prune": PruneSearch, "paths": PathsSearch, "beam": BeamSearch}


def seed_fn(r, i, p):
    return derive_seed(5, r, i, p)


# --- pieces ---------------------------------------------------------------------------------------------------

def test_ranked_puts_failed_scores_last_and_keeps_row_order_on_ties():
    assert ranked([0.2, None, 0.9, 0.2, float("nan"), -1.0]) == [2, 0, 3, 5, 1, 4]


def test_kept_rows_rounds_up_and_keeps_at_least_one():
    assert [kept_rows(n, 0.5) for n in (1, 2, 3, 16, 17)] == [1, 1, 2, 8, 9]
    assert kept_rows(10, 0.3) == 3 and kept_rows(5, 0.01) == 1 and kept_rows(5, 1.0) == 5


def test_largest_fitting_is_the_largest_n_within_the_budget():
    for budget in (7, 8, 100, 1001):
        n = largest_fitting(lambda k: 7 * k + k // 3, budget, 7, "x")
        assert 7 * n + n // 3 <= budget < 7 * (n + 1) + (n + 1) // 3
    with pytest.raises(ValueError, match="less than the smallest x search"):
        largest_fitting(lambda k: 12 * k, 11, 10, "x")


def test_schedules_cost_what_they_run():
    assert PruneSearch(seed_fn, prune_at=[3, 6], keep=0.5).cost(16, 10) == 16 * 3 + 8 * 3 + 4 * 4
    assert PruneSearch(seed_fn, keep=1.0).cost(5, 10) == 50  # keep 1: plain best-of-N
    paths = PathsSearch(seed_fn, num_branches=4, start_step=4, forward=1, backward=3)
    assert paths.iterations(10) == [(3, 6), (5, 8), (7, 10)]  # back 1, forward 3: 2 steps a round, the last clipped
    assert PathsSearch(seed_fn, start_step=5, forward=2, backward=4).iterations(10) == [(3, 7), (5, 9), (7, 10)]
    assert paths.cost(2, 10) == 2 * 4 + 2 * 4 * 9


@pytest.mark.parametrize("cls,kwargs,match", [
    (PruneSearch, {"keep": 0}, "search.keep must lie in"),
    (PruneSearch, {"prune_at": [6, 3]}, "search.prune_at must be a non-empty, strictly increasing"),
    (PruneSearch, {"prune_at": []}, "search.prune_at must be"),
    (PruneSearch, {"prune_at": [0.5, 1.0]}, "search.prune_at must be"),
    (PruneSearch, {"num_particles": True}, "search.num_particles must be a positive integer"),
    (PruneSearch, {"nfe_budget": -3}, "search.nfe_budget must be a positive number"),
    (PathsSearch, {"forward": 3, "backward": 3}, "search.backward must exceed search.forward"),
    (PathsSearch, {"forward": 5, "backward": 6, "start_step": 4}, "search.forward must be at most search.start_step"),
    (PathsSearch, {"start_step": 1.5}, "search.start_step must be a denoising step >= 1 or a fraction in"),
    (BeamSearch, {"eta": 0.0}, r"search.eta must lie in \(0.0, 1.0\]"),
    (BeamSearch, {"branch_at": [0, 4]}, "search.branch_at must be"),
    (BeamSearch, {"nfe_budget": 50, "context": SimpleNamespace(nfe_per_image=60)},
     r"search.nfe_budget=50 pays for less than one image \(60 NFEs per image on this pipeline\); raise it"),
])
def test_bad_options_fail_up_front_naming_the_setting(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(seed_fn, **kwargs)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_shipped_yaml_builds_the_strategy_with_its_defaults(name):
    import hydra

    strategy = hydra.utils.instantiate(compose([f"search={name}", "search.nfe_budget=160"]).search)(seed_fn=seed_fn)
    assert isinstance(strategy, STRATEGIES[name]) and strategy.in_loop and strategy.nfe_budget == 160
    assert (strategy.eta > 0) == (name == "beam")  # only beam search needs stochastic steps


# --- budgets on a counting stand-in for the sampler (the real Engine enforces the budget) -----------------------

@dataclasses.dataclass
class _Cond:
    cfg: bool

    def select(self, index):
        return self


class CountingSampler:
    """Steps nothing but counts: latents are one number per row that each step adds 1 to."""

    def __init__(self, steps: int, cfg: bool, eta: float):
        self.num_steps, self.cfg, self.options = steps, cfg, SamplerOptions(eta=eta, batch_changes=True)
        self.scheduler = SimpleNamespace(config={"num_train_timesteps": 1000},
                                         timesteps=torch.linspace(999, 0, steps))

    def start(self, prompt, lineages):
        latents = torch.tensor([[float(n["seed"] % 997)] for n in lineages], dtype=torch.float64)
        return Trajectories(latents, _Cond(self.cfg), 0, torch.zeros(len(lineages), dtype=torch.float64))

    def run(self, traj, until=None, seeds=None):
        while traj.step < (self.num_steps if until is None else until):
            rows = len(traj) * (2 if self.cfg else 1)
            traj = dataclasses.replace(traj, latents=traj.latents + 1, x0=traj.latents, step=traj.step + 1,
                                       nfe=traj.nfe + rows / len(traj), spent=traj.spent + rows)
        return traj

    def renoise(self, traj, to_step, seeds):
        bump = torch.tensor([[float(s % 13)] for s in seeds], dtype=torch.float64)
        return dataclasses.replace(traj, latents=traj.latents + bump, x0=None, step=to_step)

    def decode(self, latents):
        return [float(v) for v in latents[:, 0]]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@pytest.mark.parametrize("steps,cfg", [(10, False), (10, True), (7, False)])
def test_a_budget_is_never_exceeded_and_nearly_spent(name, steps, cfg):
    image_cost = steps * (2 if cfg else 1)
    for budget in range(image_cost, 12 * image_cost, max(1, image_cost // 3)):
        options = {"prune_at": [2, 4]} if name == "prune" else {"branch_at": [2, 5]} if name == "beam" else {}
        strategy = STRATEGIES[name](seed_fn, nfe_budget=budget, **options)
        engine = Engine(CountingSampler(steps, cfg, strategy.eta), PROMPT, lambda ims, info: list(ims), budget)
        try:
            size = strategy.size(engine)  # what search() will run, planned before it spends anything
            finals = engine.finish(strategy.search(engine))
        except ValueError as e:  # paths: a single branch's plan costs more than one image
            assert name == "paths" and "less than the smallest paths search" in str(e)
            assert strategy.cost(1, steps, 1) * image_cost / steps > budget
            continue
        if name == "prune":
            one_more = strategy.cost(size + 1, steps) * image_cost / steps
        elif name == "paths":
            (n, m), step_cost = size, image_cost / steps
            one_more = min(strategy.cost(n + 1, steps, m), strategy.cost(n, steps, m + 1) if n == 1 and
                           m < strategy.num_branches else math.inf) * step_cost
        else:
            (w, b) = size
            one_more = (w + 1) * b * image_cost if b == strategy.branching else (b + 1) * image_cost
        assert engine.spent <= budget < one_more, (budget, engine.spent)  # the largest search that fits
        assert math.isclose(sum(f.nfe for f in finals), engine.spent)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_a_budget_below_one_image_is_refused(name):
    strategy = STRATEGIES[name](seed_fn, nfe_budget=19)
    engine = Engine(CountingSampler(10, True, strategy.eta), PROMPT, lambda ims, info: list(ims), 19)
    with pytest.raises(ValueError, match=r"search.nfe_budget=19 pays for less than one image \(20 NFEs"):
        strategy.search(engine)


def test_steps_past_the_pipelines_end_are_refused():
    engine = Engine(CountingSampler(5, False, 0.0), PROMPT, lambda ims, info: list(ims))
    with pytest.raises(ValueError, match=r"search.prune_at must be a step in \[1, 4\] on this pipeline's 5"):
        PruneSearch(seed_fn, prune_at=[2, 5]).search(engine)
    with pytest.raises(ValueError, match=r"search.start_step must be a step in \[1, 4\] on this pipeline's 5"):
        PathsSearch(seed_fn, start_step=5, forward=1, backward=2).search(engine)


def test_fractions_of_the_steps_fit_any_pipeline():
    assert PruneSearch(seed_fn).points(10) == (2, 5) and PruneSearch(seed_fn).points(28) == (6, 14)
    assert PruneSearch(seed_fn).points(4) == (1, 2) and PruneSearch(seed_fn, prune_at=[0.1, 0.2]).points(4) == (1,)
    assert PathsSearch(seed_fn).steps(10) == (6, 2, 4) and PathsSearch(seed_fn).steps(4) == (2, 1, 2)
    assert PathsSearch(seed_fn, start_step=0.1, forward=0.1, backward=0.2).steps(5) == (1, 1, 2)  # one step apart
    for steps in (2, 3, 4, 28):  # the shipped defaults run on short and long schedules alike
        for name, cls in STRATEGIES.items():
            strategy = cls(seed_fn, nfe_budget=12 * steps)
            engine = Engine(CountingSampler(steps, False, strategy.eta), PROMPT, lambda ims, info: list(ims),
                            12 * steps)
            finals = engine.finish(strategy.search(engine))
            assert finals and engine.spent <= 12 * steps, (name, steps)


# --- whole searches on the shapes model ---------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model runs fastest on one thread; several fight over the shared cores (seconds become minutes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gen():
    from tts.sampling.generate import Generator
    from tts.pipelines import PipelineSpec

    spec = PipelineSpec(name="shapes", model_id="tts://shapes-model", device="cpu", height=32, width=32,
                        num_inference_steps=10, guidance_scale=1.0)
    return Generator(spec.load(), spec)


class Recorder(Engine):
    """The real Engine, recording every preview scoring and every selection."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def score(self, p, label=""):
        scores = super().score(p, label)
        self.log.append(("score", p.step, list(p.ids), scores))
        return scores

    def select(self, p, rows, event, seeds=None):
        self.log.append(("select", p.step, [p.ids[r] for r in rows], event))
        return super().select(p, rows, event, seeds)


def red(images, info):
    """A cheap preview score: the mean red channel (larger is better)."""
    return [float(np.asarray(im, dtype=float)[..., 0].mean()) for im in images]


def run(gen, strategy, budget=None):
    from tts.sampling.sampler import Sampler

    engine = Recorder(Sampler(gen, sampler_options(strategy.eta)), PROMPT, red, budget)
    return engine, engine.finish(strategy.search(engine))


def assert_replays(gen, strategy, finals):
    from tts.sampling.sampler import Sampler

    sampler = Sampler(gen, sampler_options(strategy.eta))
    for f in finals:
        again = np.asarray(replay_path(sampler, PROMPT, f.path), dtype=int)
        assert np.abs(again - np.asarray(f.image, dtype=int)).max() <= 1, f.path


def kept_are_the_top_previews(log, keep_events):
    """Every selection after a scoring keeps the best-previewed rows (each once, in order of score)."""
    checked = 0
    for before, after in zip(log, log[1:]):
        if before[0] == "score" and after[0] == "select" and after[3] in keep_events:
            _, step, ids, scores = before
            best = [ids[r] for r in ranked(scores)]
            kept = list(dict.fromkeys(after[2]))
            assert after[1] == step and kept == best[:len(kept)], (step, scores, kept)
            checked += 1
    return checked


PRUNE = {"prune_at": [3, 6], "keep": 0.5}
PATHS = {"num_branches": 4, "start_step": 4, "forward": 1, "backward": 3}
BEAM = {"branching": 4, "branch_at": [3, 6], "eta": 0.7}


@pytest.mark.slow
def test_prune_keeps_the_top_previews_and_finishes_only_them(gen):
    strategy = PruneSearch(seed_fn, nfe_budget=80, **PRUNE)
    engine, finals = run(gen, strategy, 80)
    first = [e for e in engine.log if e[0] == "score"][0]
    assert len(first[2]) == 14 and engine.spent == strategy.cost(14, 10) == 79  # 14 -> 7 -> 4 rows; 15: 85
    assert [(e[1], len(e[2])) for e in engine.log if e[0] == "score"] == [(3, 14), (6, 7)]
    assert kept_are_the_top_previews(engine.log, {"prune"}) == 2
    assert len(finals) == 4 and all(f.path[-1] == {"op": "run", "to": 10, "seed": f.path[0]["noise"]["seed"]}
                                    for f in finals)
    again = run(gen, PruneSearch(seed_fn, nfe_budget=80, **PRUNE), 80)[1]
    assert [f.path for f in again] == [f.path for f in finals]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(again, finals))
    assert_replays(gen, strategy, finals)


@pytest.mark.slow
def test_paths_branches_renoises_and_keeps_the_top_n(gen):
    strategy = PathsSearch(seed_fn, nfe_budget=80, **PATHS)
    engine, finals = run(gen, strategy, 80)
    assert engine.spent == 80  # 2 x 4 + 2 x 4 branches x (3 + 3 + 3) steps
    assert [(e[1], len(e[2])) for e in engine.log if e[0] == "score"] == [(6, 8), (8, 8)]
    assert kept_are_the_top_previews(engine.log, {"keep"}) == 2
    assert len(finals) == 8 and len({f.id for f in finals}) == 8
    for f in finals:  # each final: 4 steps, then three rounds of (branch, back one step, forward three)
        renoise = [op["to"] for op in f.path if op["op"] == "renoise"]
        assert renoise == [3, 5, 7] and f.path[1] == {"op": "run", "to": 4, "seed": f.path[0]["noise"]["seed"]}
    last = [next(op["seed"] for op in reversed(f.path) if op["op"] == "renoise") for f in finals]
    assert len(set(last)) == 8  # every branch re-noised with its own seed
    images = {np.asarray(f.image).tobytes() for f in finals}
    assert len(images) > 4  # re-noised branches of one path end in different images
    again = run(gen, PathsSearch(seed_fn, nfe_budget=80, **PATHS), 80)[1]
    assert [f.path for f in again] == [f.path for f in finals]
    assert_replays(gen, strategy, finals)


@pytest.mark.slow
def test_beam_keeps_the_top_w_and_their_children_diverge(gen):
    strategy = BeamSearch(seed_fn, nfe_budget=90, **BEAM)
    engine, finals = run(gen, strategy, 90)
    assert engine.spent == 80  # W x b = 8 rows at every step; W = 3: 120
    assert [(e[1], len(e[2])) for e in engine.log if e[0] == "score"] == [(3, 8), (6, 8)]
    assert kept_are_the_top_previews(engine.log, {"branch"}) == 2
    for event in (e for e in engine.log if e[0] == "select"):
        assert len(set(event[2])) == 2 and all(event[2].count(i) == 4 for i in set(event[2]))  # W beams x b
    assert len(finals) == 8
    siblings = {}
    for f in finals:
        siblings.setdefault(f.parent, []).append(np.asarray(f.image).tobytes())
    assert len(siblings) == 2 and all(len(set(v)) == 4 for v in siblings.values())  # children diverge (eta > 0)
    again = run(gen, BeamSearch(seed_fn, nfe_budget=90, **BEAM), 90)[1]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(again, finals))
    assert_replays(gen, strategy, finals)
