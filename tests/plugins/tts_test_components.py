"""Components defined outside the tts package (as a user's own module would be): a front-end and a
verifier with an operational option and a lower-is-better metric."""
from __future__ import annotations

from tts.core.records import MetricScore
from tts.search.frontends import Choice
from tts.verifiers.base import Verifier


class PickFirst:
    """Always picks the first candidate shown: a whole front-end is one class with ``present``."""

    name = "pick-first"

    def present(self, round_, prompt, items, run_dir) -> Choice:
        return Choice([items[0].number], "pick")


class Darkness(Verifier):
    """Mean luminance in [0, 1], lower is better; ``poll_s`` is a made-up operational option (how it runs)."""

    name = "darkness"
    metrics = ("luminance",)
    lower_is_better = frozenset({"luminance"})
    operational_keys = ("device", "poll_s")

    def __init__(self, poll_s: float = 0.0, gamma: float = 1.0, choice_of_metric: str | None = None):
        super().__init__(choice_of_metric)
        self.poll_s, self.gamma = poll_s, gamma

    def score(self, prompts, images):
        import numpy as np

        out = []
        for img in images:
            a = (np.asarray(img.convert("L"), dtype=np.float32) / 255) ** self.gamma
            out.append({"luminance": MetricScore(score=float(a.mean()), explanation="mean luminance")})
        return out


class NonFinite(Verifier):
    """Scores every image ``value`` (``nan``, ``inf``, ``-inf`` or a number): a broken verifier's answer."""

    name = "non-finite"
    metrics = ("score",)

    def __init__(self, value: str = "nan", choice_of_metric: str | None = None):
        super().__init__(choice_of_metric)
        self.value = float(value)

    def score(self, prompts, images):
        return [{"score": MetricScore(score=self.value, explanation="broken")} for _ in images]
