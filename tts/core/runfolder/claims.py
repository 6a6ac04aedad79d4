"""Work claims: a process claims a prompt before searching it (a file under ``.claims/`` naming the holder and
when its process started), keeps the claim fresh with a heartbeat thread, and releases it; a claim whose holder
is dead (or silent for :data:`CLAIM_STALE_S`) is taken over."""
from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

from .files import CLAIM_STALE_S, _age, _pid_alive, atomic_write_bytes, process_start
from .paths import CLAIMS

#: Seconds between a held claim's heartbeats (a thread of the holder, so a long step never lets it expire).
HEARTBEAT_S = 30.0



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


class Claims:
    """A run folder's claims on prompts (mixed into :class:`RunFolder`, which provides ``root``, ``worker``,
    ``per_shard``, ``locked()`` and ``_beats``): one process searches a prompt at a time; a second writer takes
    the prompts left."""

    root: Path
    worker: str
    per_shard: bool
    _beats: dict[str, threading.Event]

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

