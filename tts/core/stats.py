"""Intervals over prompts: a 95% percentile bootstrap for a success rate (or any per-prompt mean) and for the paired
difference of two strategies on the same prompts.

The method (Efron's percentile bootstrap): draw ``n`` prompts with replacement from the ``n`` measured ones,
``resamples`` times (10,000 by default) from ``numpy.random.default_rng(seed)``, take the statistic (the mean) of
each draw, and report the ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles of those means (linear
interpolation). A paired difference resamples prompts, keeping each prompt's two values together, so what two
strategies share (a prompt that is hard for both) cancels. Seeded: the same values and seed give the same
interval. Where every value is the same (all prompts solved, or none), every draw is too and the interval is that
single point; an interval says nothing about prompts the study did not draw.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

RESAMPLES = 10_000
LEVEL = 0.95


@dataclasses.dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval ``[low, high]`` at ``level``, over ``n`` prompts."""

    estimate: float
    low: float
    high: float
    n: int
    level: float = LEVEL

    def excludes_zero(self) -> bool:
        """The interval lies wholly above or below zero (a paired difference shown at this level)."""
        return self.low > 0 or self.high < 0

    def text(self, scale: float = 100.0, digits: int = 1) -> str:
        """``83.3 [72.2, 94.4]`` (percent points by default)."""
        f = f"{{:.{digits}f}}"
        return f"{f.format(self.estimate * scale)} [{f.format(self.low * scale)}, {f.format(self.high * scale)}]"


def bootstrap_mean(values: Sequence[float], seed: int = 0, resamples: int = RESAMPLES, level: float = LEVEL) -> Interval:
    """The mean of per-prompt values (1/0 per prompt: the success rate) with its percentile bootstrap interval."""
    x = _values(values, "values")
    _check(resamples, level)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(resamples, len(x)))].mean(axis=1)
    low, high = np.quantile(means, [(1 - level) / 2, (1 + level) / 2])
    return Interval(float(x.mean()), float(low), float(high), len(x), level)


def bootstrap_rate(successes: Sequence[bool | float], seed: int = 0, resamples: int = RESAMPLES,
                   level: float = LEVEL) -> Interval:
    """The share of prompts solved (one 1/0 or True/False per prompt) with its interval."""
    x = _values(successes, "successes")
    if not np.isin(x, (0.0, 1.0)).all():
        raise ValueError("successes must be 0/1 (or True/False) per prompt; for scores use bootstrap_mean")
    return bootstrap_mean(x, seed, resamples, level)


def bootstrap_paired(a: Sequence[float], b: Sequence[float], seed: int = 0, resamples: int = RESAMPLES,
                     level: float = LEVEL) -> Interval:
    """mean(a - b) over the same prompts (``a[i]`` and ``b[i]`` measured on prompt i) with its interval."""
    x, y = _values(a, "a"), _values(b, "b")
    if len(x) != len(y):
        raise ValueError(f"a paired difference needs one value of each per prompt: {len(x)} and {len(y)} values")
    return bootstrap_mean(x - y, seed, resamples, level)


def _values(values, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=float).ravel()
    if x.size == 0:
        raise ValueError(f"{name}: no prompts to draw from")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: every value must be a finite number")
    return x


def _check(resamples: int, level: float) -> None:
    if not isinstance(resamples, int) or resamples < 100:
        raise ValueError(f"resamples must be an integer >= 100, got {resamples!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
