"""Gradient noise optimisation (ReNO: Eyring et al. 2024, "ReNO: Enhancing One-step Text-to-Image Models through
Reward-based Noise Optimization", arXiv 2406.04312): the initial noise optimised by gradient ascent on a
differentiable verifier's score of the final image, through every denoising step (tts.sampling.gradient).

The objective at noise z (d numbers) is ``reward(image(z)) + reg * log p_chi(|z|)``: ReNO's norm regulariser,
the log-likelihood of the noise's norm under the chi distribution with d degrees of freedom (the norm of a
d-dimensional standard Gaussian), log p(r) = (d - 1) log r - r^2 / 2 + const, which keeps |z| near sqrt(d - 1)
so the iterates stay where the model was trained. It is maximised by SGD (Nesterov momentum, ReNO's choice) or
Adam, the gradient's norm clipped to ``grad_clip`` (ReNO clips too).

Every iterate is a candidate (round 1, index k: the k-th iterate, 0 being the seeded initial noise), recorded
with a ``stored`` lineage (tts.core.noise): the iterate itself saved in the run folder (``noises/``), so tts-replay
regenerates it exactly without the verifier (a deterministic re-run of the optimisation would need the verifier
and bit-identical gradients on the replaying machine).

NFEs (the ledger of tts.sampling.gradient): a differentiated pass costs 3x a forward-only one (a backward is
charged as two forwards), so with c NFEs per image, k gradient steps and the last iterate's forward pass cost
(3k + 1) c; ``nfe_budget`` caps k at (budget - c) // 3c (verifier passes, forward or backward, are not NFEs).

The strategy decides (the initial noise, how many steps, the objective, the optimiser); the run layer
(tts.run.noiseopt) drives it on the loaded pipeline and records the candidates.
"""
from __future__ import annotations

import math

import torch

from ..core.noise import fresh
from ..sampling.gradient import BACKWARD
from . import SearchContext, SeedFn, check_budget, check_size

OPTIMIZERS = ("sgd", "adam")
#: the shipped verifiers with a differentiable score (tts.verifiers.base.DifferentiableVerifier)
DIFFERENTIABLE_VERIFIERS = ("shapes-reward", "clip", "pickscore", "aesthetic")


def chi_log_likelihood(noise: torch.Tensor) -> torch.Tensor:
    """log p(|z|) under the chi distribution with d = z.numel() degrees of freedom (constants dropped)."""
    d = noise.numel()
    r = noise.double().flatten().norm()
    return ((d - 1) * torch.log(r) - r * r / 2).to(noise.dtype)


class NoiseOptSearch:
    #: the run layer's gradient driver searches with it (tts.run.noiseopt), not ask/tell nor the particle engine
    gradient = True
    name = "noise-opt"

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, iterations: int = 10, lr: float = 5.0,
                 reg: float = 0.01, optimizer: str = "sgd", momentum: float = 0.9, grad_clip: float | None = 0.1,
                 nfe_budget: float | None = None):
        self.iterations = check_size("search.iterations", iterations)
        self.lr = _positive("search.lr", lr)
        self.reg = _non_negative("search.reg", reg)
        if optimizer not in OPTIMIZERS:
            raise ValueError(f"search.optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
        self.optimizer, self.momentum = optimizer, _non_negative("search.momentum", momentum)
        self.grad_clip = None if grad_clip is None else _positive("search.grad_clip", grad_clip)
        self.nfe_budget = check_budget(nfe_budget)
        self.seed_fn, self.context = seed_fn, context

    def initial(self) -> dict:
        """The lineage of the first iterate."""
        return fresh(self.seed_fn(1, 0, "fresh"))

    def steps(self, image_nfe: float) -> int:
        """Gradient steps within ``iterations`` and the budget: k with (3k + 1) c <= budget."""
        if self.nfe_budget is None:
            return self.iterations
        return max(0, min(self.iterations, int((self.nfe_budget - image_nfe) // ((1 + BACKWARD) * image_nfe) + 1e-9)))

    def objective(self, reward: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What gradient ascent maximises: the reward (oriented: larger is better) plus the norm regulariser."""
        return reward.sum() + self.reg * chi_log_likelihood(noise)

    def make_optimizer(self, noise: torch.Tensor) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam([noise], lr=self.lr)
        return torch.optim.SGD([noise], lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0)

    def ascend(self, optimizer: torch.optim.Optimizer, noise: torch.Tensor, objective: torch.Tensor) -> None:
        """One step up ``objective`` (its graph reaches ``noise``)."""
        optimizer.zero_grad()
        (-objective).backward()
        if self.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([noise], self.grad_clip)
        optimizer.step()


def _positive(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{key} must be a positive number, got {value!r}")
    return float(value)


def _non_negative(key: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise ValueError(f"{key} must be a number >= 0, got {value!r}")
    return float(value)
