"""In-loop strategies search=smc (Feynman-Kac steering) and search=evolution (EvoSearch on previews): the pieces on
hand-made numbers, the control logic on a counting stand-in for the Engine, and whole searches on the shapes model
(budget, defining behaviour, determinism, every final's path replays to its image)."""
import dataclasses
import math

import numpy as np
import pytest

from tts.core.noise import derive_seed
from tts.sampling.particles import BudgetExceeded
from tts.search import smc
from tts.search.evolution import EvolutionSearch, Generation, Plan, plan_for_budget, preview_at, ranked
from tts.search.smc import SMCSearch

PROMPT = "two red circles"


def seed_fn(r, i, p):
    return derive_seed(11, r, i, p)


# --- SMC pieces on hand-made numbers ------------------------------------------------------------------------

def test_systematic_resampling_copies_each_row_floor_or_ceil_of_k_w_times():
    rng = np.random.default_rng(0)
    for k in (3, 4, 7, 16):
        for _ in range(50):
            w = rng.dirichlet(np.ones(k) * 0.5)
            u = float(rng.random())
            counts = np.bincount(smc.systematic(w, u), minlength=k)
            assert counts.sum() == k
            assert np.all(counts >= np.floor(k * w - 1e-9)) and np.all(counts <= np.ceil(k * w + 1e-9))
    w = np.array([0.5, 0.25, 0.125, 0.125])  # unbiased: averaged over u, each row is drawn k w_i times
    mean = np.mean([np.bincount(smc.systematic(w, u), minlength=4) for u in np.linspace(0, 1, 400, endpoint=False)], 0)
    assert np.allclose(mean, 4 * w, atol=0.01)


def test_multinomial_resampling_follows_the_weights_on_average():
    w = np.array([0.6, 0.3, 0.1, 0.0])
    rng = np.random.default_rng(1)
    draws = np.array([np.bincount(smc.multinomial(w, rng), minlength=4) for _ in range(3000)])
    assert np.allclose(draws.mean(0), 4 * w, atol=0.05)
    assert draws[:, 3].max() == 0  # a zero weight is never drawn
    assert draws[:, 0].max() > np.ceil(4 * 0.6)  # unlike systematic, counts vary beyond floor / ceil


def test_potentials_on_hand_made_reward_sequences():
    lam, r = 2.0, np.array([[0.1, 0.5], [0.4, 0.2], [0.3, 0.9]])  # three scoring steps, two particles
    expected = {"max": lam * np.array([[0.1, 0.5], [0.4, 0.5], [0.4, 0.9]]),
                "add": lam * np.array([[0.1, 0.5], [0.5, 0.7], [0.8, 1.6]]),
                "rt": lam * r,
                "diff": lam * np.array([[0.1, 0.5], [0.3, -0.3], [-0.1, 0.7]])}
    for kind, want in expected.items():
        stat, total = smc.initial_stat(kind, 2), np.zeros(2)
        for t in range(3):
            log_g, stat = smc.log_potential(kind, stat, r[t], lam)
            assert np.allclose(log_g, want[t]), (kind, t)
            total += log_g
        if kind == "diff":  # the product of diff potentials telescopes to exp(lambda r_t)
            assert np.allclose(total, lam * r[-1])


def test_tempered_diff_telescopes_to_the_current_temperature():
    steps, lam, r = 10, 5.0, [0.2, 0.7, 0.4]
    for schedule in smc.TEMPERATURES:
        stat, total = smc.initial_stat("diff", 1), 0.0
        for t, reward in zip((2, 5, 8), r):
            log_g, stat = smc.log_potential("diff", stat, np.array([reward]), smc.temperature(schedule, lam, t, steps))
            total += float(log_g[0])
        assert math.isclose(total, smc.temperature(schedule, lam, 8, steps) * r[-1])
    assert smc.temperature("constant", 5.0, 3, 10) == 5.0
    assert smc.temperature("linear", 5.0, 10, 10) == smc.temperature("exponential", 5.0, 10, 10) == 5.0
    assert smc.temperature("exponential", 5.0, 5, 10) < smc.temperature("linear", 5.0, 5, 10)


def test_ess_and_failed_scores():
    assert math.isclose(smc.ess(np.zeros(5)), 5.0)
    assert math.isclose(smc.ess(np.array([0.0, -np.inf, -np.inf])), 1.0)
    assert math.isclose(smc.ess(np.log(np.array([1.0, 1.0, 2.0]))), 1 / (0.25 ** 2 * 2 + 0.5 ** 2))
    assert smc.worst_filled([0.3, None, 0.7]).tolist() == [0.3, 0.3, 0.7]
    assert smc.worst_filled([None, None]) is None


@pytest.mark.parametrize("kwargs,match", [
    ({"potential": "sum"}, "search.potential must be one of max, diff, add, rt"),
    ({"resampler": "stratified"}, "search.resampler must be one of"),
    ({"eta": 0.0}, "search.eta must lie in"),
    ({"ess_threshold": 1.5}, "search.ess_threshold must lie in"),
    ({"window": [5, 2]}, "search.window must be"),
    ({"resample_interval": 0}, "search.resample_interval must be a positive integer"),
    ({"nfe_budget": -1}, "search.nfe_budget must be a positive number"),
])
def test_smc_options_are_validated_up_front(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SMCSearch(seed_fn, **kwargs)


# --- control logic on a counting stand-in for tts.sampling.particles.Engine ------------------------------------------

@dataclasses.dataclass
class FakeParticles:
    step: int
    noises: list
    ids: list

    def __len__(self):
        return len(self.noises)


class FakeEngine:
    """The Engine's protocol on bookkeeping alone: NFEs counted and checked like the real one, scores from
    ``reward(step, row, noise)``."""

    def __init__(self, reward, steps=10, row_step_cost=1, budget=None):
        self.reward, self.steps, self.row_step_cost = reward, steps, row_step_cost
        self.budget, self.spent, self.selects, self._n = budget, 0.0, [], 0
        self.stopped_by = None  # no search.stop_at here (tts.sampling.particles: Stopping)

    image_cost = property(lambda self: self.steps * self.row_step_cost)
    remaining = property(lambda self: math.inf if self.budget is None else self.budget - self.spent)

    def start(self, lineages, seeds=None):
        return FakeParticles(0, list(lineages), self._ids(len(lineages)))

    def advance(self, p, until=None):
        until = self.steps if until is None else until
        cost = len(p) * (until - p.step) * self.row_step_cost
        if cost > self.remaining + 1e-9:
            raise BudgetExceeded(f"{cost} > {self.remaining}")
        self.spent += cost
        return dataclasses.replace(p, step=until)

    def select(self, p, rows, event, seeds=None):
        assert seeds is None or len(seeds) == len(rows)
        self.selects.append((p.step, list(rows), event))
        return FakeParticles(p.step, [p.noises[r] for r in rows], self._ids(len(rows)))

    def score(self, p, label=""):
        return [self.reward(p.step, row, noise) for row, noise in enumerate(p.noises)]

    def _ids(self, n):
        self._n += n
        return [f"p{self._n - n + k}" for k in range(n)]


def test_smc_resamples_exactly_when_the_ess_falls_below_the_threshold():
    rewards = {2: [0.0, 0.0, 0.0, 0.0], 4: [0.0, 0.1, 0.0, 0.0], 6: [0.0, 0.0, 0.0, 3.0], 8: [1.0, 0.0, 0.0, 0.0]}
    engine = FakeEngine(lambda step, row, noise: rewards[step][row])
    s = SMCSearch(seed_fn, num_particles=4, potential="rt", lmbda=1.0, ess_threshold=0.6, resample_interval=2,
                  window=[2, 8])
    out = s.search(engine)
    assert out.step == 10 and len(out) == 4 and engine.spent == 40
    assert [e.step for e in s.log] == [2, 4, 6, 8]
    for e in s.log:
        assert math.isclose(e.ess, smc.ess(np.array(e.log_weights)))
        assert (e.rows is not None) == (e.ess < 0.6 * 4)
    assert [e.rows is not None for e in s.log] == [False, False, True, False]
    # weights accumulate while no resampling happens (rt: the product of exp(r) over steps 2, 4, 6) ...
    assert np.allclose(s.log[2].log_weights, [0.0, 0.1, 0.0, 3.0])
    # ... and restart at 1 after it: at step 8 only that step's potential counts
    assert np.allclose(s.log[3].log_weights, [1.0, 0.0, 0.0, 0.0])
    assert [(step, event) for step, _, event in engine.selects] == [(6, "resample")]


def test_smc_without_resampling_keeps_the_diff_product_telescoped():
    engine = FakeEngine(lambda step, row, noise: 0.1 * row + 0.05 * step)
    s = SMCSearch(seed_fn, num_particles=3, potential="diff", lmbda=4.0, ess_threshold=0.0, resample_interval=1)
    s.search(engine)
    assert engine.selects == [] and [e.step for e in s.log] == list(range(1, 10))
    assert np.allclose(s.log[-1].log_weights, [4.0 * (0.1 * row + 0.05 * 9) for row in range(3)])


@pytest.mark.parametrize("cost", [1, 2])
def test_smc_spends_what_the_budget_pays_for_and_no_more(cost):
    for budget in (10 * cost, 25 * cost, 40 * cost, 160 * cost, 333):
        engine = FakeEngine(lambda step, row, noise: float(row % 3), row_step_cost=cost, budget=budget)
        out = SMCSearch(seed_fn, nfe_budget=budget, ess_threshold=1.0).search(engine)
        assert engine.spent <= budget and budget - engine.spent < engine.image_cost
        assert len(out) == budget // (10 * cost)
    with pytest.raises(ValueError, match=r"search.nfe_budget=9 pays for less than one image \(10 NFEs per image"):
        SMCSearch(seed_fn, nfe_budget=9).search(FakeEngine(lambda step, row, noise: 0.0, budget=9))


def test_smc_window_must_fit_the_pipeline():
    with pytest.raises(ValueError, match=r"search.window must be \[first, last\] with 1 <= first <= last <= 9"):
        SMCSearch(seed_fn, window=[2, 10]).search(FakeEngine(lambda step, row, noise: 0.0))
    assert SMCSearch(seed_fn, window=[3, None], resample_interval=3).scoring_steps(10) == [3, 6, 9]


# --- evolution: pieces and control logic --------------------------------------------------------------------

def test_evolution_budget_rule_never_overspends_and_leaves_little():
    for cost in (1, 2):
        for s in (1, 3, 5, 9):
            for budget in range(10 * cost, 400, 7):
                plan = plan_for_budget(budget, 10, s, cost, 3, 4)
                spent = plan.nfe(10, s, cost)
                assert spent <= budget and 1 <= plan.finals <= plan.population * plan.generations
                assert budget - spent < 10 * cost  # less than one image left unspent
    assert plan_for_budget(160, 10, 3, 1, 3, 4) == Plan(14, 3, 4)  # 14 x 3 x 3 + 4 x 7 = 154
    assert plan_for_budget(160, 10, 6, 1, 3, 8) == Plan(7, 3, 8)  # the defaults: 7 x 3 x 6 + 8 x 4 = 158
    assert plan_for_budget(80, 10, 6, 1, 3, 8) == Plan(4, 2, 8)  # 3 generations would leave 20 NFEs unspent
    assert plan_for_budget(10, 10, 3, 1, 3, 4) == Plan(1, 1, 1)
    with pytest.raises(ValueError, match=r"search.nfe_budget=15 pays for less than one image \(20 NFEs"):
        plan_for_budget(15, 10, 3, 2, 3, 4)


def test_preview_step_is_a_step_or_a_fraction_of_the_pipelines_steps():
    assert [preview_at(0.6, 10), preview_at(0.6, 4), preview_at(0.99, 10), preview_at(0.01, 10)] == [6, 2, 9, 1]
    assert preview_at(3, 10) == 3
    with pytest.raises(ValueError, match=r"search.preview_step must be a step in \[1, 3\] on this pipeline's 4 denoising steps"):
        preview_at(5, 4)
    for bad in (0, 1.0, 1.5, True, "3"):
        with pytest.raises(ValueError, match="search.preview_step must be a denoising step >= 1 or a fraction"):
            EvolutionSearch(seed_fn, preview_step=bad)


def test_ranked_puts_failed_scores_last_and_breaks_ties_by_age():
    gens = [Generation(0, None, [{}] * 3, [0.5, None, 0.9]), Generation(1, None, [{}] * 2, [0.9, 0.1])]
    assert ranked(gens) == [(0, 2), (1, 0), (0, 0), (1, 1), (0, 1)]


def test_evolution_breeds_from_the_elites_and_finishes_the_best_previews():
    # a noise's preview score: a fixed function of its lineage, so which candidates are elites is known
    engine = FakeEngine(lambda step, row, noise: derive_seed(repr(noise)) / 2 ** 32)
    s = EvolutionSearch(seed_fn, population=4, generations=3, preview_step=2, finals=3, elite_fraction=0.5,
                        fresh_fraction=0.25, threshold=0.8)
    out = s.search(engine)
    assert engine.spent == 4 * 3 * 2 + 3 * 8
    for g in s.history[1:]:
        before = [n for h in s.history[:g.index] for n in h.noises]
        scores = [x for h in s.history[:g.index] for x in h.scores]
        elites = [before[i] for i in np.argsort(scores)[::-1][:2]]
        children, fresh = g.noises[:3], g.noises[3:]
        assert [c["pivot"] for c in children] == [elites[0], elites[1], elites[0]]  # round-robin, best first
        assert all(c["kind"] == "neighbor" and c["threshold"] == 0.8 for c in children)
        assert [n["kind"] for n in fresh] == ["fresh"]
    everyone = [(x, n) for g in s.history for x, n in zip(g.scores, g.noises)]
    best = [n for _, n in sorted(everyone, key=lambda t: -t[0])[:3]]
    kept = [n for p in out for n in p.noises]
    assert sorted(map(repr, kept)) == sorted(map(repr, best)) and all(p.step == 10 for p in out)
    assert [event for _, _, event in engine.selects] == ["keep"] * len(out)


# --- whole searches on the shapes model ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def shapes():
    from tts.sampling.generate import Generator
    from tts.pipelines import PipelineSpec

    spec = PipelineSpec(name="shapes", model_id="tts://shapes-model", device="cpu", height=32, width=32,
                        num_inference_steps=10, guidance_scale=1.0)
    return Generator(spec.load(), spec)


def redness(images, info):
    out = []
    for im in images:
        a = np.asarray(im, dtype=float) / 255
        out.append(float(a[..., 0].mean() - a[..., 1:].mean()))
    return out


def run(gen, strategy, budget):
    from tts.sampling.particles import Engine, sampler_options
    from tts.sampling.sampler import Sampler

    engine = Engine(Sampler(gen, sampler_options(strategy.eta)), PROMPT, redness, nfe_budget=budget)
    return engine, engine.finish(strategy.search(engine))


def assert_replays(gen, strategy, finals):
    from tts.sampling.particles import replay_path, sampler_options
    from tts.sampling.sampler import Sampler

    sampler = Sampler(gen, sampler_options(strategy.eta))
    for f in finals:
        image = replay_path(sampler, PROMPT, f.path)
        assert np.abs(np.asarray(image, int) - np.asarray(f.image, int)).max() <= 1


@pytest.mark.slow
def test_smc_on_the_shapes_model(shapes):
    make = lambda: SMCSearch(seed_fn, nfe_budget=30, potential="rt", lmbda=1000.0, ess_threshold=1.0,  # noqa: E731
                             resample_interval=2, window=[2, 6])
    s = make()
    engine, finals = run(shapes, s, 30)
    assert engine.spent == 30 and len(finals) == 3 and math.isclose(sum(f.nfe for f in finals), 30)
    assert [e.step for e in s.log] == [2, 4, 6]
    for e in s.log:  # ESS < k unless the weights are uniform: every step resamples, systematically
        w = smc.normalised(np.array(e.log_weights))
        counts = np.bincount(e.rows, minlength=3)
        assert np.all(counts >= np.floor(3 * w - 1e-9)) and np.all(counts <= np.ceil(3 * w + 1e-9))
    assert s.log[0].rows == (int(np.argmax(s.log[0].rewards)),) * 3  # lambda = 1000: all copies of the best
    assert all(any(op["op"] == "from" and op["event"] == "resample" for op in f.path) for f in finals)
    images = [np.asarray(f.image, int) for f in finals]
    assert all(np.abs(a - b).max() > 0 for i, a in enumerate(images) for b in images[i + 1:])  # copies diverged
    assert_replays(shapes, s, finals)
    _, again = run(shapes, make(), 30)
    assert [f.path for f in again] == [f.path for f in finals]
    assert all(np.array_equal(np.asarray(a.image), np.asarray(b.image)) for a, b in zip(again, finals))


@pytest.mark.slow
def test_evolution_on_the_shapes_model(shapes):
    make = lambda: EvolutionSearch(seed_fn, nfe_budget=40, preview_step=2, finals=2)  # noqa: E731
    s = make()
    engine, finals = run(shapes, s, 40)
    assert s.plan == Plan(4, 3, 2) and engine.spent == 40  # 4 x 3 x 2 + 2 x 8
    everyone = [(x, repr(n)) for g in s.history for x, n in zip(g.scores, g.noises)]
    best = [n for _, n in sorted(everyone, key=lambda t: -t[0])[:2]]
    assert sorted(repr(f.noise) for f in finals) == sorted(best)
    assert any(n["kind"] == "neighbor" for g in s.history[1:] for n in g.noises)
    assert_replays(shapes, s, finals)
    _, again = run(shapes, make(), 40)
    assert [f.path for f in again] == [f.path for f in finals]
