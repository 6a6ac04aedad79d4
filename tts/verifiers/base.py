"""The verifier interface: score a batch of (prompt, image) pairs into per-metric scores.

Every verifier subclasses :class:`Verifier` and implements ``score(prompts, images)`` (blocking) or
``ascore(prompts, images)`` (a coroutine; API verifiers), returning, for each pair, a dict
``{metric: MetricScore(score, explanation)}`` holding *all* its metrics. ``choice_of_metric`` names
the metric that search maximises. Construction must be cheap; heavy models load in ``setup()``,
which the loop calls once, after the config has been validated.
"""
from __future__ import annotations

import asyncio
import difflib

from PIL import Image

from ..records import MetricScore

Scores = dict[str, MetricScore]


class VerifierError(ValueError):
    pass


class Verifier:
    #: Short name used in the run folder path and in records.
    name: str = "verifier"
    #: Every metric this verifier returns.
    metrics: tuple[str, ...] = ()
    #: True when ``ascore`` is the native implementation (concurrent requests).
    is_async: bool = False

    def __init__(self, choice_of_metric: str | None = None):
        choice_of_metric = choice_of_metric or (self.metrics[0] if self.metrics else None)
        if choice_of_metric not in self.metrics:
            close = difflib.get_close_matches(str(choice_of_metric), self.metrics, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise VerifierError(f"verifier {self.name!r} has no metric {choice_of_metric!r}{hint} "
                                f"choices: {', '.join(self.metrics)}")
        self.choice_of_metric = choice_of_metric

    def setup(self) -> None:
        """Load models / open clients. Called once before the first batch."""

    def check_prompt(self, prompt: str) -> None:
        """Raise a clear error for a prompt this verifier cannot judge (called before any generation)."""

    def score(self, prompts: list[str], images: list[Image.Image]) -> list[Scores]:
        if self.is_async:
            return asyncio.run(self.ascore(prompts, images))
        raise NotImplementedError(f"{type(self).__name__} implements neither score() nor ascore()")

    async def ascore(self, prompts: list[str], images: list[Image.Image]) -> list[Scores]:
        return await asyncio.to_thread(self.score, prompts, images)
