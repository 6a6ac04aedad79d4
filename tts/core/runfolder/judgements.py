"""``judges.jsonl``: judges' scores of a run's saved candidates (records.JudgeRecord), apart from the steering
scores of the manifest. Appended one whole line at a time under ``flock`` (several ``tts-judge`` processes may
judge one folder); read back as the final record per (image, judge): the last ``ok`` one, else the last one."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable

from pydantic import ValidationError

from ..records import SCHEMA_VERSION, CandidateRecord, JudgeRecord
from .manifest import append_line
from .paths import JUDGES

log = logging.getLogger("tts.core.runfolder")

JudgeKey = tuple[str, str]  # (image, judge label)


def append_judgement(root: Path, record: JudgeRecord) -> None:
    append_line(Path(root) / JUDGES, record.model_dump_json())


def read_judgements(root: Path, warn=log.warning) -> dict[JudgeKey, JudgeRecord]:
    """The final record of each (image, judge): its last ``ok`` record, else its last one. A line that is not a
    record (a torn tail, a newer schema) is skipped with one warning."""
    path = Path(root) / JUDGES
    if not path.is_file():
        return {}
    out: dict[JudgeKey, JudgeRecord] = {}
    bad = 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            doc = json.loads(line.decode("utf-8"))
            if not isinstance(doc, dict) or int(doc.get("schema_version", 0)) > SCHEMA_VERSION:
                raise ValueError
            rec = JudgeRecord.model_validate(doc)
        except (UnicodeDecodeError, ValueError, TypeError, ValidationError):
            bad += 1
            continue
        key = (rec.image, rec.judge)
        if rec.status == "ok" or key not in out or out[key].status != "ok":
            out[key] = rec
    if bad:
        warn(f"{path}: skipped {bad} line{'s' if bad > 1 else ''} that are not judge records (torn, or from a newer tts)")
    return out


def attach_judgements(records: Iterable[CandidateRecord], judged: dict[JudgeKey, JudgeRecord]) -> None:
    """Each record's ``judges``: its judges' final records, by judge label."""
    by_image: dict[str, dict[str, JudgeRecord]] = {}
    for (image, judge), rec in judged.items():
        by_image.setdefault(image, {})[judge] = rec
    for r in records:
        r.judges = dict(by_image.get(r.image, {}))
