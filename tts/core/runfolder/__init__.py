"""The run folder: file names, atomic writes, the shared manifest, work claims, and resume.

Several processes may write one run folder at once (prompts sharded across GPUs, or the same command
started twice): every file is written to a temporary name and renamed into place (atomic on POSIX);
manifest lines are appended under an exclusive ``flock`` as whole lines (a short write is finished,
a torn tail left by a crash is closed first); ``config.json`` is created under the folder lock; and a
process claims a prompt before searching it, so a second writer takes what is left. A process killed
at any moment loses no finished candidate; a rerun of the folder resumes.

``flock`` is advisory; across hosts (NFS, Lustre) it is only as good as the file system's lock support
(see docs/run-folder.md). Where that is missing, ``per_shard=True`` writes one manifest per writer
(``manifests/<host>_<pid>.jsonl``), takes no lock at all, and readers merge the files.

The package: ``paths`` (file names), ``files`` (atomic writes, temporary files, writer liveness), ``locks``,
``manifest`` (appending and reading records), ``claims`` (prompts claimed by a writer), ``identity`` (what a
resume may change), ``redaction`` (no secret reaches disk), ``judgements`` (judges.jsonl), ``reader`` (the one reader of run folders:
``read_run``), and here :class:`RunFolder`, the folder a run writes. Every name is also here (``rf.<name>``).
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import socket
import threading
from pathlib import Path

from ..records import CandidateRecord, SearchRecord
from .claims import HEARTBEAT_S, Claims, _claim_holder, _holder_alive
from .errors import RunFolderError, RunFolderMismatch
from .files import (CLAIM_STALE_S, _age, _pid_alive, _proc_stat, _tmp_name, atomic_write_bytes, atomic_write_json,
                    clean_stale_temp_files, disk_full, image_ok, process_start, save_image)
from .identity import RUN_OPERATIONAL_KEYS, config_differences, operational_paths, target_class
from .judgements import append_judgement, attach_judgements, read_judgements
from .locks import _NO_LOCKS, _try_lock, lock
from .manifest import (ManifestTail, _read_shared, _read_text_lines, append_line, final_records, manifest_files,
                       parse_lines, read_manifest, read_searches, read_study, readable_line,
                       search_key)
from .paths import (CLAIMS, CONFIG, JUDGES, LOCK, MANIFEST, MANIFESTS, PLAN, PREVIEWS, ROUND_JSON, SEARCHES, STUDY, SUMMARY,
                    candidate_image_name, image_name, prompt_hash, prompt_stem, round_json_name, run_file)
from .reader import (IMAGE, ROUND_JSON_FILE, Candidate, RoundJsonPrompt, RunData, find_runs, has_manifest, is_run, metric_direction,
                     read_json, read_previews, read_round_jsons, read_run, read_run_config, records_for_image,
                     round_json_records)
from .redaction import REDACTED, env_secrets, is_secret_key, redact, redact_url

log = logging.getLogger(__name__)


#: What only a tts run folder holds (any one of them makes a folder a run).
RUN_MARKERS = (CONFIG, MANIFEST, MANIFESTS)
#: tts's own files that a run folder may hold before it is one (a refused run's log, the lock, temporary files).
_OWN_FILES = re.compile(r"tts-[a-z]+(\.shard-\d+-of-\d+)?\.log|\.tts\.lock|\.claims|\..+\.tmp")



def check_run_folder(root: Path | str) -> None:
    """A run may write ``root`` when it is new, empty, holds only tts's own files, or is a tts run; a folder
    with other things in it (the user's files, ``/etc``) is refused in one line naming a new folder."""
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise RunFolderError(f"{root} is not a folder: use a new folder, hydra.run.dir=<new folder>")
    if not root.is_dir() or any((root / m).exists() for m in RUN_MARKERS):
        return
    try:
        foreign = sorted(p.name for p in root.iterdir() if not _OWN_FILES.fullmatch(p.name))
    except OSError as e:
        raise RunFolderError(f"cannot read {root} ({e.strerror}): use a new folder, "
                             "hydra.run.dir=<new folder>") from None
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise RunFolderError(f"{root} is not empty ({shown}) and is not a tts run (no {CONFIG} or {MANIFEST}): "
                             "tts would write over its files; use a new folder, hydra.run.dir=<new folder>")


class RunFolder(Claims):
    """One run's folder: images, per-round JSONs, ``manifest.jsonl``, ``config.json``, ``summary.json``.

    ``per_shard=True`` is the lock-free mode for file systems without cross-host ``flock``: this process
    appends to its own ``manifests/<host>_<pid>.jsonl`` (an empty ``manifest.jsonl`` marks the folder as a
    run), takes no lock and no prompt claims (shards own disjoint prompts), and readers merge the files."""

    def __init__(self, root: Path | str, per_shard: bool = False):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.per_shard = per_shard
        self._beats: dict[str, threading.Event] = {}  # held claims' heartbeat threads, stopped on release
        if per_shard:
            (self.root / MANIFESTS).mkdir(exist_ok=True)
            (self.root / MANIFEST).touch()

    @property
    def manifest(self) -> Path:
        if self.per_shard:
            return self.root / MANIFESTS / (re.sub(r"[^A-Za-z0-9.-]", "_", self.worker) + ".jsonl")
        return self.root / MANIFEST

    @contextlib.contextmanager
    def locked(self):
        """The folder's exclusive lock (config creation, claims, the summary), held for the ``with`` block;
        none in the lock-free mode."""
        if self.per_shard:
            yield
            return
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            lock(fd, fcntl.LOCK_EX, self.root / LOCK)
            yield
        finally:
            os.close(fd)

    def write_config(self, config: dict, identity_keys: tuple[str, ...], may_change: frozenset[str] = frozenset()) -> None:
        """Create ``config.json`` (redacted) under the folder lock; refuse to resume a folder made with a
        different search, naming each differing key. Keys in ``may_change`` (dotted, e.g. ``search.rounds``
        for a strategy that can be extended) may differ: the folder's config is then updated."""
        config = redact(config, env_secrets())
        path = self.root / CONFIG
        with self.locked():
            if not path.exists():
                atomic_write_json(path, config)
                return
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise RunFolderError(f"{path} is unreadable ({e}); use a new folder, or delete it to adopt "
                                     "this run's settings") from None
            if not isinstance(old, dict):
                raise RunFolderError(f"{path} is not a tts config (a JSON {type(old).__name__}, not an object); use "
                                     "a new folder (hydra.run.dir=<new folder>), or delete it to adopt this run's "
                                     "settings")
            diffs = [d for k in identity_keys for d in config_differences(old.get(k), config.get(k), k)]
            fixed = [d for d in diffs if d[0] not in may_change]
            if fixed:
                shown = "; ".join(f"{k}: {o!r} -> {n!r}" for k, o, n in fixed[:6])
                raise RunFolderMismatch(
                    f"run folder {self.root} was made with a different {', '.join(k for k, _, _ in fixed[:6])} "
                    f"({shown}); resuming it would mix two searches. Use a new folder (drop hydra.run.dir) "
                    "or the original settings.")
            if diffs:
                log.info("resuming %s with %s", self.root, "; ".join(f"{k} {o!r} -> {n!r}" for k, o, n in diffs))
                atomic_write_json(path, config)

    def append(self, record: CandidateRecord) -> None:
        append_line(self.manifest, readable_line(record), locked=not self.per_shard)

    def records(self) -> list[CandidateRecord]:
        return read_manifest(self.root)

    def write_previews(self, prompt_hash_: str, lines: list[dict], number: int = 1) -> None:
        """A prompt's preview scores into ``previews.jsonl``, replacing any an interrupted attempt at the same
        prompt (and study pass ``number``) left, so a rerun leaves the file as an uninterrupted run would. Past
        the first pass each line carries ``round``. The lock-free mode appends."""
        path = self.root / PREVIEWS
        lines = lines if number == 1 else [{**line, "round": number} for line in lines]
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        if self.per_shard:
            for line in text.splitlines():
                append_line(path, line, locked=False)
            return

        def same(line: str) -> bool:  # this prompt's line of this pass (lines of the first pass have no round)
            if f'"prompt_hash":"{prompt_hash_}"' not in line:
                return False
            try:
                return json.loads(line).get("round", 1) == number
            except ValueError:
                return True

        with self.locked():
            kept = [line for line in _read_text_lines(path) if not same(line)]
            atomic_write_bytes(path, ("".join(k + "\n" for k in kept) + text).encode())

    def append_search(self, record: SearchRecord) -> None:
        append_line(self.root / SEARCHES, readable_line(record), locked=not self.per_shard)


    def clean(self) -> None:
        """Remove stale temporary files (called when a run starts or resumes)."""
        with self.locked():
            n = clean_stale_temp_files(self.root)
        if n:
            log.info("removed %d temporary file%s left by an interrupted writer", n, "s" if n > 1 else "")
