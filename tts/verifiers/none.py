"""No verifier: every candidate scores 0. For human-preference search without a verifier alongside."""
from __future__ import annotations

from ..core.records import MetricScore
from .base import Verifier


class NoVerifier(Verifier):
    name = "none"
    metrics = ("none",)

    def score(self, prompts, images):
        return [{"none": MetricScore(score=0.0, explanation="no verifier")} for _ in images]
