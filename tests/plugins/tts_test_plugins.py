"""Verifiers defined outside the tts package (as a user's own module would be), for the tests."""
from __future__ import annotations

import asyncio
import threading
import time

import numpy as np

from tts.records import MetricScore
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
