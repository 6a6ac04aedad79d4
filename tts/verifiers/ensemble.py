"""An ensemble of verifiers (Ma et al. 2025, Sec. 4.2 "Verifier ensemble": candidates are ranked by
each verifier and the ranks averaged, so verifiers on different scales combine without tuning).

``method=mean_rank``: each member's score becomes its rank fraction in [0, 1] among every candidate of
the same prompt scored so far (ties count half; a member whose metric is lower-is-better is ranked
reversed), weighted mean over members. ``method=zscore``:
each member's score is standardised by the running mean and standard deviation of that prompt's
candidates, weighted mean. Both are relative to the candidates seen so far, so an early candidate is
ranked against fewer peers; every member's raw scores are kept in the record (``scores``), so the
final pool can be re-ranked afterwards. A member's failure fails the candidate (with the reason).
"""
from __future__ import annotations

import collections
import statistics
import threading

from ..core.records import MetricScore
from .base import Verdict, Verifier, as_verdict

METHODS = ("mean_rank", "zscore")


class EnsembleVerifier(Verifier):
    name = "ensemble"
    metrics = ("ensemble",)

    def __init__(self, members: list, method: str = "mean_rank", weights: list[float] | None = None,
                 choice_of_metric: str | None = "ensemble"):
        super().__init__(choice_of_metric)
        members = list(members or [])
        if len(members) < 2 or not all(isinstance(m, Verifier) for m in members):
            raise ValueError("verifier=ensemble needs verifier.members: a list of at least two verifier configs "
                             "(each with a _target_), e.g. configs/verifier/ensemble.yaml")
        names = [m.name for m in members]
        if len(set(names)) != len(names):
            raise ValueError(f"ensemble members must have distinct names, got {names}")
        if method not in METHODS:
            raise ValueError(f"verifier.method must be one of {', '.join(METHODS)}, got {method!r}")
        weights = [1.0] * len(members) if weights is None else [float(w) for w in weights]
        if len(weights) != len(members) or any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(f"verifier.weights must be {len(members)} non-negative numbers, not all 0; got {weights}")
        self.members, self.method, self.weights = members, method, weights
        self._history: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
        self._lock = threading.Lock()

    def check(self) -> None:
        for m in self.members:
            m.check()

    def setup(self) -> None:
        for m in self.members:
            m.setup()

    def check_prompt(self, prompt: str) -> None:
        for m in self.members:
            m.check_prompt(prompt)

    def close(self) -> None:
        for m in self.members:
            m.close()

    def score(self, prompts, images):
        return self.score_preview(prompts, images, 0.0)

    def score_preview(self, prompts, images, noise_level: float):
        """Scores of x0 previews (in-loop search): members that read the noise level (``score_preview``) get it,
        the others score the preview as an image."""
        per_member = {m.name: [as_verdict(v) for v in (m.score_preview(prompts, images, noise_level)
                                                        if hasattr(m, "score_preview") and noise_level > 0
                                                        else m.score(prompts, images))] for m in self.members}
        out = []
        with self._lock:
            for i, prompt in enumerate(prompts):
                verdicts = {name: vs[i] for name, vs in per_member.items()}
                out.append(self._combine(prompt, verdicts))
        return out

    def _combine(self, prompt: str, verdicts: dict[str, Verdict]) -> Verdict:
        members = {name: v.scores for name, v in verdicts.items() if v.scores}
        usage = None
        for v in verdicts.values():
            if v.usage is not None:
                usage = v.usage if usage is None else usage.add(v.usage)
        failed = [f"{name}: {v.error or 'no scores'}" for name, v in verdicts.items() if v.error or not v.scores]
        if failed:
            return Verdict(error="ensemble member failed: " + "; ".join(failed), members=members, usage=usage)
        parts, explain = [], []
        for m, w in zip(self.members, self.weights):
            value = members[m.name][m.choice_of_metric].score
            pool = self._history[prompt][m.name]
            pool.append(value if m.higher_is_better() else -value)  # ranked so that better is higher
            parts.append(w * self._normalise(pool[-1], pool))
            explain.append(f"{m.name}.{m.choice_of_metric}={value:.4g}")
        total = sum(parts) / sum(self.weights)
        return Verdict(scores={"ensemble": MetricScore(score=total, explanation=f"{self.method} of " + ", ".join(explain))},
                       members=members, usage=usage)

    def _normalise(self, value: float, pool: list[float]) -> float:
        if self.method == "mean_rank":
            below = sum(v < value for v in pool)
            ties = sum(v == value for v in pool) - 1
            return (below + 0.5 * ties) / max(1, len(pool) - 1) if len(pool) > 1 else 0.5
        if len(pool) < 2:
            return 0.0
        sd = statistics.pstdev(pool)
        return 0.0 if sd == 0 else (value - statistics.fmean(pool)) / sd
