"""Verifiers defined outside the tts package (as a user's own module would be), for the tests."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from tts.core.records import MetricScore
from tts.verifiers.base import Verifier


class Brightness(Verifier):
    """Mean pixel value in [0, 1] (a user's custom verifier: one class, nothing in tts edited)."""

    name = "brightness"
    metrics = ("brightness", "contrast")
    calls: list[int] = []

    def score(self, prompts, images):
        Brightness.calls.append(len(images))
        out = []
        for img in images:
            a = np.asarray(img.convert("L"), dtype=np.float32) / 255
            out.append({"brightness": MetricScore(score=float(a.mean()), explanation="mean luminance"),
                        "contrast": MetricScore(score=float(a.std()))})
        return out


class SlowAsyncVerifier(Verifier):
    """An API-like verifier: each batch takes ``latency`` seconds of waiting (asyncio.sleep)."""

    name = "slow"
    metrics = ("brightness",)
    is_async = True
    intervals: list[tuple[float, float]] = []

    def __init__(self, latency: float = 0.5, choice_of_metric=None):
        super().__init__(choice_of_metric)
        self.latency = latency

    async def ascore(self, prompts, images):
        start = time.perf_counter()
        await asyncio.sleep(self.latency)
        SlowAsyncVerifier.intervals.append((start, time.perf_counter()))
        return [{"brightness": MetricScore(score=float(np.asarray(i).mean()))} for i in images]


class FlakyVerifier(Verifier):
    """Fails every batch while ``FlakyVerifier.failing`` is set (a down API), else scores brightness."""

    name = "flaky"
    metrics = ("brightness",)
    failing = threading.Event()
    scored: list[int] = []

    def score(self, prompts, images):
        if FlakyVerifier.failing.is_set():
            raise ConnectionError("service unavailable (503)")
        FlakyVerifier.scored.append(len(images))
        return [{"brightness": MetricScore(score=float(np.asarray(i).mean()))} for i in images]


class SleepyVerifier(Verifier):
    """Slow, blocking verifier for kill-and-resume tests."""

    name = "sleepy"
    metrics = ("brightness",)

    def score(self, prompts, images):
        time.sleep(0.3)
        return [{"brightness": MetricScore(score=float(np.asarray(i).mean()))} for i in images]


class TinyInLoop:
    """A small in-loop strategy for the loop's tests: 3 particles to step 2, the best two previews kept (the
    best twice, with new seeds), a re-noise one step back, then the end. Uses every path operation."""

    in_loop = True

    def __init__(self, seed_fn, context=None, nfe_budget=None, eta: float = 0.5, **random_search_keys):
        self.seed_fn, self.nfe_budget, self.eta = seed_fn, nfe_budget, eta

    def search(self, engine):
        from tts.core.noise import fresh

        p = engine.advance(engine.start([fresh(self.seed_fn(0, i, "fresh")) for i in range(3)]), 2)
        scores = [s if s is not None else float("-inf") for s in engine.score(p, "prune")]
        order = sorted(range(3), key=lambda i: -scores[i])
        p = engine.select(p, [order[0], order[0], order[1]], "keep", [self.seed_fn(1, i, "keep") for i in range(3)])
        p = engine.renoise(engine.advance(p, 3), 2, [self.seed_fn(2, i, "renoise") for i in range(3)])
        return engine.advance(p)
