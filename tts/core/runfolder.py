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
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import threading
import time
import uuid
from pathlib import Path

from pydantic import ValidationError

from .records import SCHEMA_VERSION, CandidateRecord, SearchRecord

log = logging.getLogger(__name__)

MANIFEST = "manifest.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
LOCK = ".tts.lock"
CLAIMS = ".claims"
MANIFESTS = "manifests"
PLAN = "plan.json"
PREVIEWS = "previews.jsonl"  # in-loop strategies' preview scores (never final scores)
SEARCHES = "searches.jsonl"  # one line per prompt whose in-loop search is complete (records.SearchRecord)
#: errno values of a file system without (working) flock: Lustre mounted with noflock, NFS without a lock manager.
_NO_LOCKS = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP})
#: Names that hold secrets: ``api_key``, ``hf_token`` (but not ``max_new_tokens``), ``password``, ...
_SECRET_KEY = re.compile(r"(api_?key|secret|password|passwd|authorization|credential|(^|_)token$)", re.I)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/@\s]+)@")
REDACTED = "***redacted***"
#: A claim on a prompt expires when its heartbeat is older than this (on any host).
CLAIM_STALE_S = 600.0
#: Seconds between a held claim's heartbeats (a thread of the holder, so a long step never lets it expire).
HEARTBEAT_S = 30.0


class RunFolderError(RuntimeError):
    """A run folder tts cannot use as it is (the message says what to do)."""


class RunFolderMismatch(RunFolderError):
    """A run folder made by a different search than the one asked to resume it."""


# -- names (the reference project's rule, byte for byte) --------------------------------------------

def prompt_hash(prompt: str) -> str:
    """The first 8 hex digits of SHA-256 of the prompt as given."""
    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


def prompt_stem(prompt: str, max_length: int = 100) -> str:
    """``prompt@<name>_hash@<hash>``, tt-scale-flux's rule: every character of the stripped prompt that is
    not ASCII alphanumeric becomes ``_``, runs of ``_`` collapse, and when the stem is longer than
    ``max_length`` the name is cut to ``max_length - 8 - 7`` characters. Only ``[A-Za-z0-9_@]``, so no
    prompt can name a path outside the folder."""
    name = re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9]", "_", prompt.strip()))
    stem = f"prompt@{name}_hash@{prompt_hash(prompt)}"
    if len(stem) > max_length:
        stem = f"prompt@{name[:max_length - 8 - 7]}_hash@{prompt_hash(prompt)}"
    return stem


def image_name(prompt: str, round_: int, seed: int) -> str:
    return f"{prompt_stem(prompt)}_i@{round_}_s@{seed}.png"


def candidate_image_name(prompt: str, round_: int, index: int) -> str:
    """An in-loop strategy's candidate: no single seed names it (its path branches and re-noises), so its
    index in the round does: ``<stem>_i@<round>_c@<index>.png`` (its record holds the whole path)."""
    return f"{prompt_stem(prompt)}_i@{round_}_c@{index}.png"


def round_json_name(prompt: str, round_: int, seed: int | None) -> str:
    """A round's JSON is named after its best image (``..._i@<round>_s@<seed>.json``), as the reference
    project names it; a round with no scored candidate has no best seed: ``..._i@<round>.json``."""
    tail = f"_s@{seed}" if seed is not None else ""
    return f"{prompt_stem(prompt)}_i@{round_}{tail}.json"


#: Round JSONs, tt-scale-flux's process_results.py pattern (and tts before 0.3: no ``_s@``).
ROUND_JSON = re.compile(r"prompt@(.+?)_hash@([^_]+)_i@(\d+)(?:_s@(\d+))?\.json$")


# -- atomic files ------------------------------------------------------------------------------------

def _tmp_name(path: Path) -> Path:
    """``.<name>.<host>.<pid>.<uuid>.tmp``: the writer is in the name, so a rerun knows which are stale."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]
    return path.with_name(f".{path.name}.{host}.{os.getpid()}.{uuid.uuid4().hex}.tmp")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = _tmp_name(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_image(path: Path, image) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def image_ok(path: Path) -> bool:
    """Cheap integrity check of a written image: it exists and its PNG chunks and CRCs read back."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # noqa: BLE001 - any unreadable file is simply "not there"
        return False


def clean_stale_temp_files(root: Path) -> int:
    """Remove temporary files left by killed writers: this host's whose process is gone, legacy ones
    without a writer in the name, and another host's older than :data:`CLAIM_STALE_S`."""
    host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:40]
    removed = 0
    for tmp in root.glob(".*.tmp"):
        parts = tmp.name.split(".")
        owner_host, pid = (parts[-4], parts[-3]) if len(parts) >= 6 and parts[-3].isdigit() else (None, None)
        if owner_host == host and pid is not None:
            stale = not _pid_alive(int(pid))
        elif owner_host is None:
            stale = True
        else:
            stale = _age(tmp) > CLAIM_STALE_S
        if stale:
            with contextlib.suppress(OSError):
                tmp.unlink()
                removed += 1
    return removed


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """``(state, start time in clock ticks since boot)`` of a process from /proc; None where there is no /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return fields[0], fields[19]
    except (OSError, IndexError):
        return None


def process_start(pid: int | None = None) -> str | None:
    """When a process started (clock ticks since boot): with its PID, it names one process, never a reused PID."""
    stat = _proc_stat(os.getpid() if pid is None else pid)
    return stat[1] if stat else None


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    stat = _proc_stat(pid)
    if stat is not None and stat[0] in ("Z", "X"):  # a zombie (killed, not yet waited on) or dead
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_file(root: Path | str, name) -> Path | None:
    """``root / name`` when it names a file inside the run folder (a record's ``image``); None for anything else
    (absolute, ``..``, a link out of the folder): a tampered manifest never makes a reader open another file."""
    if not isinstance(name, str) or not name or "\x00" in name or "\\" in name:
        return None
    if Path(name).is_absolute() or ".." in Path(name).parts:
        return None
    try:
        base = Path(root).resolve()
        full = (base / name).resolve()
    except (OSError, RuntimeError):
        return None
    return Path(root) / name if base in full.parents else None


# -- secrets ------------------------------------------------------------------------------------------

def redact_url(text: str) -> str:
    """``scheme://user:KEY@host`` -> ``scheme://***redacted***@host``."""
    return _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def redact(obj, secrets: tuple[str, ...] = ()):
    """A copy of a JSON-like config with secret-looking keys, URL credentials and known secret values replaced."""
    if isinstance(obj, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, secrets))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        return REDACTED if any(s and s in obj for s in secrets) else redact_url(obj)
    return obj


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key.rsplit(".", 1)[-1]))


def env_secrets() -> tuple[str, ...]:
    """Values of environment variables whose names look secret (never written anywhere)."""
    return tuple(v for k, v in os.environ.items() if _SECRET_KEY.search(k) and len(v) >= 8)


# -- resume identity ------------------------------------------------------------------------------------

#: The run's own settings that change how it executes, not what it computes (top-level keys of config.json;
#: a component's are declared by its class, see :func:`operational_paths`).
RUN_OPERATIONAL_KEYS = frozenset({"models", "verify_concurrency", "shard", "plan", "collages", "output_root",
                                  "tts_version"})


def target_class(target):
    """The class (or function) a ``_target_`` string names; None when it cannot be imported."""
    import importlib

    if not isinstance(target, str) or "." not in target:
        return None
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def operational_paths(config, path: str = "") -> frozenset[str]:
    """Dotted paths of the settings a resume may change: for every mapping in ``config`` with a
    ``_target_``, the keys its class declares in ``operational_keys`` (a verifier's ``device``, an API
    grader's ``timeout_s``, a pipeline's ``cpu_offload``, a search's ``frontend``), at any depth and
    inside lists (an ensemble's members). A component with a new operational option declares it in its
    own class; nothing here changes."""
    out: set[str] = set()
    if isinstance(config, dict):
        keys = getattr(target_class(config.get("_target_")), "operational_keys", ())
        out |= {f"{path}.{k}" if path else k for k in keys}
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return frozenset()
    for k, v in items:
        out |= operational_paths(v, f"{path}.{k}" if path else str(k))
    return frozenset(out)


def config_differences(old, new, path: str = "", operational: frozenset[str] | None = None
                       ) -> list[tuple[str, object, object]]:
    """``(dotted key, old, new)`` for every setting that differs, operational ones aside (by default those
    the components of ``old`` and ``new`` declare, see :func:`operational_paths`)."""
    if operational is None:
        operational = operational_paths(old, path) | operational_paths(new, path)
        if not path:
            operational |= RUN_OPERATIONAL_KEYS
    if path in operational:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), _join(path, k), operational)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for k, (a, b) in enumerate(zip(old, new)) for d in config_differences(a, b, _join(path, k), operational)]
    return [] if old == new or _both_nan(old, new) else [(path, old, new)]


def _both_nan(a, b) -> bool:
    return isinstance(a, float) and isinstance(b, float) and a != a and b != b


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)


# -- locks ---------------------------------------------------------------------------------------------------

def lock(fd: int, operation: int, path: Path) -> None:
    """``flock`` for a writer; a file system without locks is a one-line error naming the lock-free mode."""
    try:
        fcntl.flock(fd, operation)
    except OSError as e:
        if e.errno not in _NO_LOCKS:
            raise
        raise RunFolderError(f"cannot lock {path}: the file system does not support flock ({os.strerror(e.errno)}; "
                             "e.g. Lustre mounted without -o flock, NFS without a lock manager): rerun with "
                             "shard.manifest=per-shard (no locks; one manifest per writer), or mount it with "
                             "locks") from None


def _try_lock(fd: int, operation: int) -> bool:
    """``flock`` for a reader: False (read without it) where the file system has no locks."""
    try:
        fcntl.flock(fd, operation)
        return True
    except OSError as e:
        if e.errno not in _NO_LOCKS:
            raise
        return False


# -- the manifest -----------------------------------------------------------------------------------------

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


# -- the folder ---------------------------------------------------------------------------------------------

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

class RunFolder:
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

    def write_previews(self, prompt_hash_: str, lines: list[dict]) -> None:
        """A prompt's preview scores into ``previews.jsonl``, replacing any an interrupted attempt at the same
        prompt left (so a rerun leaves the file as an uninterrupted run would). The lock-free mode appends."""
        path = self.root / PREVIEWS
        text = "".join(json.dumps(line, separators=(",", ":")) + "\n" for line in lines)
        if self.per_shard:
            for line in text.splitlines():
                append_line(path, line, locked=False)
            return
        with self.locked():
            kept = [line for line in _read_text_lines(path) if f'"prompt_hash":"{prompt_hash_}"' not in line]
            atomic_write_bytes(path, ("".join(k + "\n" for k in kept) + text).encode())

    def append_search(self, record: SearchRecord) -> None:
        append_line(self.root / SEARCHES, readable_line(record), locked=not self.per_shard)


    def clean(self) -> None:
        """Remove stale temporary files (called when a run starts or resumes)."""
        with self.locked():
            n = clean_stale_temp_files(self.root)
        if n:
            log.info("removed %d temporary file%s left by an interrupted writer", n, "s" if n > 1 else "")

    # Claims: one process searches a prompt at a time; a second writer takes the prompts left.
    def claim(self, prompt_hash_: str) -> str | None:
        """Claim a prompt for this process: None when claimed (or already ours), else the live holder. The
        lock-free mode claims nothing (its shards own disjoint prompts)."""
        if self.per_shard:
            return None
        claims = self.root / CLAIMS
        path = claims / prompt_hash_
        with self.locked():
            claims.mkdir(exist_ok=True)
            holder, start = _claim_holder(path)
            if holder and holder != self.worker and _holder_alive(holder, start, path):
                return holder
            start = process_start()
            atomic_write_bytes(path, (self.worker + (f" start={start}" if start else "")).encode())
        self._beat(prompt_hash_)
        return None

    def _beat(self, prompt_hash_: str) -> None:
        """Keep a held claim's heartbeat fresh from a thread until it is released (or this process dies)."""
        stop = self._beats.pop(prompt_hash_, None)
        if stop is not None:
            stop.set()
        stop = self._beats[prompt_hash_] = threading.Event()

        def beat():
            while not stop.wait(HEARTBEAT_S):
                self.heartbeat(prompt_hash_)

        threading.Thread(target=beat, name=f"claim-{prompt_hash_}", daemon=True).start()

    def heartbeat(self, prompt_hash_: str) -> None:
        with contextlib.suppress(OSError):
            os.utime(self.root / CLAIMS / prompt_hash_)

    def release(self, prompt_hash_: str) -> None:
        if self.per_shard:
            return
        stop = self._beats.pop(prompt_hash_, None)
        if stop is not None:
            stop.set()
        path = self.root / CLAIMS / prompt_hash_
        with self.locked():
            if _claim_holder(path)[0] == self.worker:
                with contextlib.suppress(OSError):
                    path.unlink()


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _claim_holder(path: Path) -> tuple[str | None, str | None]:
    """A claim file's ``(holder, process start time)``: ``host:pid start=<ticks>`` (``host:pid`` before 0.9)."""
    text = _read_text(path)
    if not text:
        return None, None
    holder, _, rest = text.partition(" ")
    return holder, rest.removeprefix("start=").strip() or None


def _holder_alive(holder: str, start: str | None, path: Path) -> bool:
    """A claim's holder is alive while its heartbeat is recent and, on this host, its process is the one that
    claimed: it exists, is no zombie, and started when the claim says (a reused PID is another process)."""
    if _age(path) >= CLAIM_STALE_S:
        return False
    host, _, pid = holder.rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        if start is not None and process_start(int(pid)) not in (None, start):
            return False
        return _pid_alive(int(pid))
    return True


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)


def _read_text_lines(path: Path) -> list[str]:
    try:
        return [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    except FileNotFoundError:
        return []


def read_searches(root: Path | str) -> dict[str, SearchRecord]:
    """``searches.jsonl`` by prompt hash (the last line per prompt); unreadable lines are skipped."""
    out: dict[str, SearchRecord] = {}
    for line in _read_text_lines(Path(root) / SEARCHES):
        try:
            rec = SearchRecord.model_validate_json(line)
        except ValueError:
            continue
        out[rec.prompt_hash] = rec
    return out
