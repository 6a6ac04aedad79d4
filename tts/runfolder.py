"""The run folder: file names, atomic writes, the shared manifest, and resume.

Several processes may write one run folder at once (prompts sharded across GPUs): every file is
written to a unique temporary name and renamed into place (atomic on POSIX), and manifest lines are
appended under an exclusive ``flock`` in one ``write`` call, so a reader never sees half a record
and a process killed at any moment loses no finished candidate.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import socket
import uuid
from pathlib import Path

from .records import SCHEMA_VERSION, CandidateRecord

MANIFEST = "manifest.jsonl"
CONFIG = "config.json"
SUMMARY = "summary.json"
_SECRET_KEY = re.compile(r"(api_?key|secret|token|password|authorization)", re.I)
REDACTED = "***redacted***"


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode()).hexdigest()[:8]


def prompt_stem(prompt: str) -> str:
    """``prompt@<sanitised>_hash@<sha256[:8]>``: only [A-Za-z0-9_], so no prompt can leave the folder."""
    safe = re.sub(r"[^A-Za-z0-9]+", "_", prompt).strip("_")[:80] or "empty"
    return f"prompt@{safe}_hash@{prompt_hash(prompt)}"


def image_name(prompt: str, round_: int, seed: int) -> str:
    return f"{prompt_stem(prompt)}_i@{round_}_s@{seed}.png"


def round_json_name(prompt: str, round_: int) -> str:
    return f"{prompt_stem(prompt)}_i@{round_}.json"


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_image(path: Path, image) -> None:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def redact(obj, secrets: tuple[str, ...] = ()):
    """A copy of a JSON-like config with secret-looking keys and known secret values replaced."""
    if isinstance(obj, dict):
        return {k: (REDACTED if _SECRET_KEY.search(str(k)) and v not in (None, "") else redact(v, secrets))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str) and any(s and s in obj for s in secrets):
        return REDACTED
    return obj


def env_secrets() -> tuple[str, ...]:
    """Values of environment variables whose names look secret (never written anywhere)."""
    return tuple(v for k, v in os.environ.items() if _SECRET_KEY.search(k) and len(v) >= 8)


#: Settings that change how a run executes, not what it computes: a resume may change them.
OPERATIONAL_KEYS = frozenset({
    "device", "base_url", "api_version", "max_concurrency", "max_attempts", "timeout_s", "backoff_s", "max_backoff_s",
    "price_per_million_input_tokens", "price_per_million_output_tokens", "cpu_offload", "compile",
    "attention_slicing", "vae_tiling", "vae_slicing", "tf32", "interface", "port", "host", "open_browser", "script",
    "simulate_top_k", "simulate_noise"})


def _identity(node):
    """A config node without its operational keys (what must match for a folder to be resumed)."""
    if isinstance(node, dict):
        return {k: _identity(v) for k, v in node.items() if k not in OPERATIONAL_KEYS}
    return node


def append_line(path: Path, line: str) -> None:
    """Append one line under ``flock`` in a single write, then fsync (safe with several writers)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, (line.rstrip("\n") + "\n").encode())
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


class RunFolderMismatch(RuntimeError):
    """A run folder made by a different search than the one asked to resume it."""


class RunFolder:
    """One run's folder: images, per-round JSONs, ``manifest.jsonl``, ``config.json``, ``summary.json``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    def write_config(self, config: dict, identity_keys: tuple[str, ...]) -> None:
        """Write ``config.json`` (redacted); refuse to resume a folder made with a different search."""
        config = redact(config, env_secrets())
        path = self.root / CONFIG
        if path.exists():
            old = json.loads(path.read_text())
            changed = [k for k in identity_keys if _identity(old.get(k)) != _identity(config.get(k))]
            if changed:
                raise RunFolderMismatch(
                    f"run folder {self.root} was made with a different {', '.join(changed)}; resuming it would "
                    "mix two searches. Use a new folder (drop hydra.run.dir) or the original settings.")
            return
        atomic_write_json(path, config)

    def append(self, record: CandidateRecord) -> None:
        append_line(self.manifest, record.model_dump_json())

    def records(self) -> list[CandidateRecord]:
        """Every record in the manifest (a torn last line from a killed writer is skipped)."""
        return read_manifest(self.root)



def read_manifest(root: Path | str) -> list[CandidateRecord]:
    path = Path(root) / MANIFEST
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            data = json.loads(line)
        except json.JSONDecodeError:
            continue
        if data.get("schema_version", 0) > SCHEMA_VERSION:
            raise RuntimeError(f"{path} has schema_version {data['schema_version']}; upgrade tts to read it")
        out.append(CandidateRecord.model_validate(data))
    return out


def final_records(records: list[CandidateRecord]) -> list[CandidateRecord]:
    """One record per candidate: a rerun may have re-verified a failed one; an ok record wins, else the last."""
    final: dict[tuple, CandidateRecord] = {}
    for r in records:
        if r.status == "ok" or r.key not in final or final[r.key].status != "ok":
            final[r.key] = r
    return list(final.values())
