"""The feedback log of human-preference search: ``feedback.jsonl`` in the run folder, one line per answer.

Every answer the person gives is appended as one :class:`Answer` (whole lines, under ``flock``, like the
manifest). A rerun of the folder replays the logged answers of each prompt (the last answer of a round
wins); a bare stop is not replayed, so a stopped session continues where it stopped. The scripted
front-end reads another run's log to replay a recorded session.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from pathlib import Path

from . import Choice

FEEDBACK = "feedback.jsonl"
SCHEMA_VERSION = 1


@dataclasses.dataclass
class Answer:
    """One logged answer: what was shown in a round and what the person chose."""

    prompt: str
    prompt_hash: str
    round: int
    interface: str
    action: str
    picks: list[int]
    stop: bool
    step_degrees: float
    labels_before: int
    time: str = dataclasses.field(default_factory=lambda: datetime.datetime.now(datetime.timezone.utc)
                                  .isoformat(timespec="seconds"))
    shown: list[dict] = dataclasses.field(default_factory=list)
    schema_version: int = SCHEMA_VERSION

    def replayable(self) -> Choice | None:
        """The choice a rerun replays; None for a bare stop (the person is asked again)."""
        if self.action == "stop" and not self.picks:
            return None
        return Choice(list(self.picks), self.action, False)  # type: ignore[arg-type]

    @classmethod
    def from_json(cls, data: dict) -> "Answer":
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


class FeedbackLog:
    """A run folder's ``feedback.jsonl`` (or any file in its format)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)

    @classmethod
    def of(cls, run_dir: Path | str) -> "FeedbackLog":
        return cls(Path(run_dir) / FEEDBACK)

    def answers(self) -> list[Answer]:
        """Every readable answer in file order (a torn last line from a killed writer is skipped)."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(Answer.from_json(json.loads(line)))
            except (json.JSONDecodeError, TypeError):
                continue
        return out

    def by_round(self, prompt_hash: str) -> dict[int, Answer]:
        """One prompt's answers by round (the last answer of a round wins)."""
        return {a.round: a for a in self.answers() if a.prompt_hash == prompt_hash}

    def append(self, answer: Answer) -> None:
        from ...core.runfolder import append_line

        line = dataclasses.asdict(answer)
        append_line(self.path, json.dumps({"schema_version": line.pop("schema_version"), **line}))
