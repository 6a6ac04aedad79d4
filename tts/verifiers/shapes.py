"""The exact checker of the shapes world (GenEval-style, Ghosh et al. 2023): parse the prompt into
requirements, find the objects (colour segmentation, connected components, shape classification,
positions) and check each one. ``correct`` is 1 when every requirement holds; ``criteria_met`` is
the fraction that hold; the explanation names each failed requirement."""
from __future__ import annotations

from ..core.records import MetricScore
from ..world import detect, grammar
from .base import Verifier


class ShapesVerifier(Verifier):
    name = "shapes"
    metrics = ("correct", "criteria_met")

    def __init__(self, choice_of_metric: str | None = "criteria_met"):
        super().__init__(choice_of_metric)

    def check_prompt(self, prompt: str) -> None:
        grammar.parse(prompt)

    def score(self, prompts, images):
        out = []
        for prompt, img in zip(prompts, images):
            verdict = detect.check(grammar.parse(prompt), detect.detect(img))
            why = verdict.explanation()
            out.append({"correct": MetricScore(score=verdict.correct, explanation=why),
                        "criteria_met": MetricScore(score=verdict.criteria_met, explanation=why)})
        return out
