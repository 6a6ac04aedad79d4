"""What a verifier returns for one candidate: its scores, or why it failed (shared by every verifier and
by ``frames``, which reduces a video's frames to one verdict)."""
from __future__ import annotations

import dataclasses

from ..core.records import MetricScore, Usage

Scores = dict[str, MetricScore]


@dataclasses.dataclass
class Verdict:
    """One candidate's verification: ``scores`` (all metrics) or ``error`` (why it failed, for the record)."""

    scores: Scores | None = None
    error: str | None = None
    usage: Usage | None = None
    members: dict[str, Scores] = dataclasses.field(default_factory=dict)


def as_verdict(result) -> Verdict:
    return result if isinstance(result, Verdict) else Verdict(scores=result)
