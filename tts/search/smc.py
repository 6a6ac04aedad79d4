"""Feynman-Kac steering: sequential Monte Carlo over particles of a stochastic sampler.

FK steering (Singhal et al. 2025, arXiv 2501.06848; code zacharyhorvitz/Fk-Diffusion-Steering) runs k particles
of a *stochastic* sampler (copies of one particle must diverge, so ``eta > 0``), scores each particle's x0
preview with a reward r_t at chosen steps, and resamples the particles by potentials G_t built from those
rewards; it is sequential Monte Carlo for diffusion (twisted SMC: Wu et al. 2023, TDS, arXiv 2306.17775), and on
flow models it needs the stochastic sampler of the ODE's marginals (Kim et al. 2025, arXiv 2503.19385;
tts.sampling.sampler). The potentials, as FK steering defines them (r over the particle's own ancestry):

* ``max``: G_t = exp(lambda max_{s<=t} r_s)   (the running maximum starts at the first reward);
* ``add``: G_t = exp(lambda sum_{s<=t} r_s);
* ``rt``:  G_t = exp(lambda r_t);
* ``diff``: G_t = exp(lambda_t r_t - lambda_{t'} r_{t'}) with t' the previous scoring step (r = 0 before the
  first, FK's ``reward_min_value``): with a constant lambda FK's exp(lambda (r_t - r_{t'})); the product along a
  path telescopes to exp(lambda_t r_t), the intermediate target of twisted / tempered SMC (TDS; DAS, Kim et al.
  2025, arXiv 2501.05803).

**Weights.** Each scoring step multiplies every particle's weight by its G_t (the Feynman-Kac path measure
p(x) prod_t G_t); a particle's weight is the product of its G since the last resampling, so when every scoring
step resamples (``ess_threshold: 1``) the weights are FK's own w = G_t, and for ``diff`` the product telescopes
to the chosen potential. Resampling happens only when the effective sample size ESS = 1 / sum w_i^2 (normalised
weights) falls below ``ess_threshold * k``; it draws k rows with probabilities w (``systematic``: one uniform,
low variance, each row copied floor or ceil of k w_i times; ``multinomial``: k independent draws), resets the
weights to 1, and each copy continues on a new segment seed so copies diverge. Scoring steps are every
``resample_interval`` steps within ``window`` = [first, last] (FK's defaults: every 20 of 100 steps from 20 to
80; its adaptive option resamples below ESS 0.5 k). A preview whose scoring failed counts as the worst score of
its step. The k particles finish and all are kept (FK steering keeps them all; the loop verifies each final image
and keeps the best, where FK's code would resample once more on the last x0 with exp(lambda r_T) / prod G).

**Temperature.** lambda_t = lambda (``constant``, what FK steering uses), lambda t / T (``linear``), or
lambda (2^(t/T) - 1) (``exponential``: an exponentially rising ramp, as DAS tempers, that reaches lambda at the
last step), at step t of T.

**Budget.** With ``nfe_budget``: k = nfe_budget // (NFEs of one image), every particle runs every step once.
Seeds: initial noises ``fresh(seed_fn(0, i, "fresh"))``; the resampling draw ``seed_fn(t, 0, "resample")``;
the copies' new segment seeds ``seed_fn(t, i, "segment")``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

from ..core.noise import fresh
from ..core.validate import check_number, is_int
from . import SearchContext, SeedFn, check_budget, check_positive_int, check_size
from ._steps import Advance, Score, check_image_budget, drive

POTENTIALS = ("max", "diff", "add", "rt")
RESAMPLERS = ("systematic", "multinomial")
TEMPERATURES = ("constant", "linear", "exponential")


# --- the pieces, each a pure function (tests drive them on hand-made numbers) -------------------------------

def temperature(schedule: str, lmbda: float, step: int, steps: int) -> float:
    """lambda at step ``step`` of ``steps`` (module docstring)."""
    if schedule == "constant":
        return lmbda
    frac = step / steps
    return lmbda * frac if schedule == "linear" else lmbda * (2.0 ** frac - 1.0)


def initial_stat(potential: str, k: int) -> np.ndarray:
    """Each particle's running statistic before the first scoring step (``max``: none yet; ``add``: an empty
    sum; ``diff``: the previous tempered reward, 0 as FK's reward_min_value)."""
    return np.full(k, -np.inf if potential == "max" else 0.0)


def log_potential(potential: str, stat: np.ndarray, rewards: np.ndarray, lam: float
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(log G_t of each particle, its new running statistic) from this step's rewards."""
    if potential == "max":
        new = np.maximum(stat, rewards)
        return lam * new, new
    if potential == "add":
        new = stat + rewards
        return lam * new, new
    if potential == "diff":
        new = lam * rewards
        return new - stat, new
    return lam * rewards, stat  # rt


def normalised(log_weights: np.ndarray) -> np.ndarray:
    w = np.exp(log_weights - np.max(log_weights))
    return w / w.sum()


def ess(log_weights: np.ndarray) -> float:
    """Effective sample size 1 / sum w_i^2 of the normalised weights (k when uniform, 1 when one row has all)."""
    return float(1.0 / np.sum(normalised(log_weights) ** 2))


def systematic(weights: np.ndarray, u: float) -> np.ndarray:
    """Systematic (low-variance) resampling: k rows at the points (u + j) / k of the weights' CDF, u in [0, 1);
    row i is drawn floor(k w_i) or ceil(k w_i) times."""
    k = len(weights)
    cdf = np.cumsum(weights)
    cdf[-1] = 1.0
    return np.searchsorted(cdf, (u + np.arange(k)) / k, side="right").clip(0, k - 1)


def multinomial(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Multinomial resampling: k independent draws with probabilities ``weights``."""
    return np.sort(rng.choice(len(weights), size=len(weights), p=weights))


def resample(kind: str, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return systematic(weights, float(rng.random())) if kind == "systematic" else multinomial(weights, rng)


def worst_filled(scores: Sequence) -> np.ndarray | None:
    """The step's scores as numbers, a failed one (None) taking the worst score of the step; None if all failed."""
    valid = [float(s) for s in scores if s is not None and math.isfinite(float(s))]
    if not valid:
        return None
    worst = min(valid)
    return np.array([worst if s is None or not math.isfinite(float(s)) else float(s) for s in scores])


@dataclasses.dataclass(frozen=True)
class ScoringStep:
    """What happened at one scoring step (kept on the strategy as ``log``, for tests and inspection)."""

    step: int
    rewards: tuple[float | None, ...]
    log_weights: tuple[float, ...]  # after this step's potential, before resampling
    ess: float
    rows: tuple[int, ...] | None  # the rows drawn, None when the ESS was high enough to skip resampling


@dataclasses.dataclass
class Population:
    """The SMC state besides the trajectories: log weights and the potential's running statistic per particle."""

    log_weights: np.ndarray
    stat: np.ndarray


class SMCSearch:
    """Feynman-Kac steering / SMC with k particles (module docstring)."""

    in_loop = True

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, nfe_budget: float | None = None,
                 num_particles: int = 4, potential: str = "max", lmbda: float = 10.0, temperature: str = "constant",
                 resampler: str = "systematic", ess_threshold: float = 0.5, resample_interval: int = 2,
                 window: Sequence[int | None] | None = None, eta: float = 1.0):
        self.seed_fn, self.context = seed_fn, context
        self.nfe_budget = check_budget(nfe_budget)
        self.num_particles = check_size("search.num_particles", num_particles)
        self.potential = _choice("search.potential", potential, POTENTIALS)
        self.lmbda = check_number("search.lmbda", lmbda, 0.0)
        self.temperature = _choice("search.temperature", temperature, TEMPERATURES)
        self.resampler = _choice("search.resampler", resampler, RESAMPLERS)
        self.ess_threshold = check_number("search.ess_threshold", ess_threshold, 0.0, 1.0)
        self.resample_interval = check_positive_int("search.resample_interval", resample_interval)
        self.window = _window(window)
        if not (isinstance(eta, (int, float)) and not isinstance(eta, bool) and 0.0 < eta <= 1.0):
            raise ValueError(f"search.eta must lie in (0, 1] (SMC needs stochastic steps so resampled copies "
                             f"diverge), got {eta!r}")
        self.eta = float(eta)
        self.log: list[ScoringStep] = []

    def search(self, engine):
        """1. size k from the budget; 2. start k fresh particles; 3. at each scoring step: advance, weigh,
        maybe resample; 4. finish every particle."""
        return drive(self.requests(engine), engine)

    def requests(self, engine):
        """:meth:`search` as step requests."""
        k = self.size(engine)
        p = engine.start([fresh(self.seed_fn(0, i, "fresh")) for i in range(k)])
        pop = Population(np.zeros(k), initial_stat(self.potential, k))
        self.log = []
        for step in self.scoring_steps(engine.steps):
            p = yield Advance(p, step)
            p, pop = self._weigh_and_resample(engine, p, pop, (yield Score(p, f"smc step {step}")))
        return (yield Advance(p))

    def size(self, engine) -> int:
        """k: ``num_particles``, or as many whole trajectories as the budget pays for."""
        if self.nfe_budget is None:
            return self.num_particles
        budget = min(self.nfe_budget, engine.remaining)
        check_image_budget(budget, engine.image_cost)
        return int((budget + 1e-9) // engine.image_cost)

    def scoring_steps(self, steps: int) -> list[int]:
        """Steps (1..steps-1) where previews are scored and the particles may be resampled."""
        first, last = self.window
        first = 1 if first is None else first
        last = steps - 1 if last is None else last
        if not 1 <= first <= last <= steps - 1:
            raise ValueError(f"search.window must be [first, last] with 1 <= first <= last <= {steps - 1} (this "
                             f"pipeline runs {steps} steps), got {list(self.window)}; use null for either end")
        return list(range(first, last + 1, self.resample_interval))

    def _weigh_and_resample(self, engine, p, pop: Population, scores: list):
        """Multiply the previews' potential in, resample when the ESS is low."""
        step = p.step
        rewards = worst_filled(scores)
        if rewards is not None:  # every preview failed: no information, weights unchanged
            lam = temperature(self.temperature, self.lmbda, step, engine.steps)
            log_g, stat = log_potential(self.potential, pop.stat, rewards, lam)
            pop = Population(pop.log_weights + log_g, stat)
        size, rows = ess(pop.log_weights), None
        if size < self.ess_threshold * len(p) - 1e-9:
            rng = np.random.default_rng(self.seed_fn(step, 0, "resample"))
            rows = resample(self.resampler, normalised(pop.log_weights), rng)
        self.log.append(ScoringStep(step, tuple(scores), tuple(float(x) for x in pop.log_weights), size,
                                    None if rows is None else tuple(int(r) for r in rows)))
        if rows is None:
            return p, pop
        seeds = [self.seed_fn(step, i, "segment") for i in range(len(rows))]
        p = engine.select(p, rows.tolist(), "resample", seeds=seeds)
        return p, Population(np.zeros(len(rows)), pop.stat[rows])


def _choice(name: str, value, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
    return value


def _window(window) -> tuple[int | None, int | None]:
    if window is None:
        return (None, None)
    items = list(window) if isinstance(window, (list, tuple)) or hasattr(window, "__iter__") else None
    if (items is None or len(items) != 2 or any(v is not None and (not is_int(v) or v < 1) for v in items)
            or (None not in items and items[0] > items[1])):
        raise ValueError(f"search.window must be [first, last]: steps >= 1 with first <= last (null for either "
                         f"end: the first / last step that can be scored), got {window!r}")
    return (items[0], items[1])
