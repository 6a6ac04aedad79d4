"""The manifest (``manifest.jsonl`` and the per-writer ``manifests/*.jsonl``): whole lines appended under a lock,
records read back (torn lines skipped with one warning, a newer schema refused), read incrementally
(``ManifestTail``), one final record per candidate; and ``searches.jsonl``."""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from pathlib import Path

from pydantic import ValidationError

from ..records import SCHEMA_VERSION, CandidateRecord, SearchRecord, StudyAllocation
from .errors import RunFolderError
from .locks import _try_lock, lock
from .paths import MANIFEST, MANIFESTS, SEARCHES, STUDY

log = logging.getLogger("tts.core.runfolder")


def append_line(path: Path, line: str, locked: bool = True) -> None:
    """Append one whole line under ``flock`` and fsync it (safe with several writers; ``locked=False`` for a
    file only this process writes).

    A torn tail (a writer killed mid-line, a full disk) is closed with a newline first, so this record
    starts on a line of its own; a short write is finished; a write that fails is cut back off, so the
    file never keeps half of this record.
    """
    data = (line.rstrip("\n") + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        if locked:
            lock(fd, fcntl.LOCK_EX, path)
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, size)
            raise
    finally:
        os.close(fd)  # closing releases the lock


def readable_line(record) -> str:
    """The record as one JSON line, refused (ValueError) unless it reads back as the same record: JSON has no NaN
    or infinity (pydantic writes them as null), so such a value would make the line unreadable forever."""
    line = record.model_dump_json()
    try:
        same = type(record).model_validate_json(line) == record
    except ValidationError:
        same = False
    if not same:
        raise ValueError(f"refusing to write a {type(record).__name__} the manifest's reader cannot read back "
                         f"(a NaN or infinite value?): {line[:200]}")
    return line


def manifest_files(root: Path | str) -> list[Path]:
    """The manifest files of a run folder: ``manifest.jsonl``, then the per-writer ones of ``manifests/``."""
    root = Path(root)
    files = [root / MANIFEST] if (root / MANIFEST).is_file() else []
    return files + sorted((root / MANIFESTS).glob("*.jsonl"))


def read_manifest(root: Path | str) -> list[CandidateRecord]:
    """Every readable record of a run folder's manifest (``manifest.jsonl`` and any per-writer files).

    Lines that are not a record (a torn line from a killed writer, invalid UTF-8, a stray value) are
    skipped with one warning naming them; a record from a newer tts is an error that says to upgrade.
    """
    out = []
    for path in manifest_files(root):
        out += parse_lines(path, _read_shared(path))
    return out


def _read_shared(path: Path, offset: int = 0) -> bytes:
    """The file's bytes from ``offset``, read under a shared lock where the file system has locks."""
    with open(path, "rb") as f:
        _try_lock(f.fileno(), fcntl.LOCK_SH)
        f.seek(offset)
        return f.read()


def parse_lines(path: Path, raw: bytes, first_line: int = 1) -> list[CandidateRecord]:
    """The records among ``raw``'s lines; others skipped with one warning naming their line numbers."""
    out, bad = [], []
    for number, line in enumerate(raw.split(b"\n"), start=first_line):
        if not line.strip():
            continue
        try:
            data = json.loads(line.decode("utf-8"), parse_constant=_no_constant, parse_float=_finite_float)
            if not isinstance(data, dict):
                raise ValueError("not an object")
            version = data.get("schema_version", 0)
            if isinstance(version, int) and version > SCHEMA_VERSION:
                raise RunFolderError(f"{path} line {number} has schema_version {version} (this tts reads up to "
                                     f"{SCHEMA_VERSION}): upgrade tts (pip install -U tts-scaling, or git pull in its checkout) to read or resume it")
            out.append(CandidateRecord.model_validate(data))
        except (UnicodeDecodeError, ValueError, ValidationError, RecursionError):
            bad.append(number)
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        log.warning("%s: skipped %d unreadable line%s (%s); their candidates are redone", path, len(bad),
                    "s" if len(bad) > 1 else "", shown)
    return out


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: no record tts writes holds one


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(f"{text} overflows a float")
    return value


class ManifestTail:
    """Reads what was appended to a run folder's manifests since the last call: whole lines only (a line
    still being written, or a torn tail, waits for its newline), so a long study reads each record once."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self._offsets: dict[Path, tuple[int, int]] = {}  # file -> (bytes read, lines read)

    def read(self) -> list[CandidateRecord]:
        out = []
        for path in manifest_files(self.root):
            offset, lines = self._offsets.get(path, (0, 0))
            try:
                if path.stat().st_size < offset:  # rewritten shorter: read it again from the start
                    offset, lines = 0, 0
                raw = _read_shared(path, offset)
            except FileNotFoundError:
                continue
            whole = raw[:raw.rfind(b"\n") + 1]
            if whole:
                out += parse_lines(path, whole[:-1], lines + 1)
                self._offsets[path] = (offset + len(whole), lines + whole.count(b"\n"))
        return out


def final_records(records: list[CandidateRecord]) -> list[CandidateRecord]:
    """One record per candidate: a rerun may have re-verified a failed one; an ok record wins, else the last."""
    final: dict[tuple, CandidateRecord] = {}
    for r in records:
        if r.status == "ok" or r.key not in final or final[r.key].status != "ok":
            final[r.key] = r
    return list(final.values())


def _read_text_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def read_searches(root: Path | str) -> dict[str, SearchRecord]:
    """``searches.jsonl`` by :func:`search_key` (the last line per prompt and study pass); unreadable lines are
    skipped."""
    out: dict[str, SearchRecord] = {}
    for line in _read_text_lines(Path(root) / SEARCHES):
        try:
            rec = SearchRecord.model_validate_json(line)
        except ValueError:
            continue
        out[search_key(rec.prompt_hash, rec.round)] = rec
    return out


def search_key(prompt_hash: str, number: int = 1) -> str:
    """A search's key in :func:`read_searches`: the prompt hash, with ``@<pass>`` for a study's later passes."""
    return prompt_hash if number == 1 else f"{prompt_hash}@{number}"



def read_study(root: Path | str) -> list[StudyAllocation]:
    """``study.jsonl`` (search.study_nfe_budget's passes) in order; unreadable lines (a torn tail) are skipped."""
    out = []
    for line in _read_text_lines(Path(root) / STUDY):
        try:
            out.append(StudyAllocation.model_validate_json(line))
        except ValueError:
            continue
    return out
