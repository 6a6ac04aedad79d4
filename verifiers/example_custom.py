"""A worked custom verifier: copy this file into your own package and edit it.

Run it (from the repository root, or with your package importable):

    tts-search verifier=custom verifier._target_=verifiers.example_custom.Sharpness
    tts-search verifier=custom verifier._target_=verifiers.example_custom.Sharpness verifier.choice_of_metric=colourfulness

Nothing in tts is edited: a verifier is any subclass of tts.verifiers.base.Verifier that sets
``name`` and ``metrics`` and implements ``score(prompts, images)`` (or ``async ascore`` for API
calls), returning one ``{metric: MetricScore}`` dict per image with every metric it knows.
"""
from __future__ import annotations

import numpy as np
from PIL import ImageFilter

from tts.core.records import MetricScore
from tts.verifiers.base import Verifier


class Sharpness(Verifier):
    """Edge energy (mean absolute Laplacian) and Hasler-Suesstrunk colourfulness, both prompt-agnostic."""

    name = "sharpness"
    metrics = ("sharpness", "colourfulness")

    def __init__(self, choice_of_metric: str | None = None, scale: float = 1.0):
        super().__init__(choice_of_metric)
        self.scale = scale

    def score(self, prompts, images):
        out = []
        for image in images:
            grey = np.asarray(image.convert("L").filter(ImageFilter.FIND_EDGES), dtype=np.float32)
            rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
            rg, yb = rgb[..., 0] - rgb[..., 1], 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
            colourful = float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
            out.append({
                "sharpness": MetricScore(score=self.scale * float(grey.mean()), explanation="mean edge magnitude"),
                "colourfulness": MetricScore(score=colourful, explanation="Hasler & Suesstrunk 2003"),
            })
        return out
