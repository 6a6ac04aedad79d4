"""Files written whole or not at all (a temporary name renamed into place), the temporary files a killed writer
leaves and whether their writer lives, images, and a full disk."""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import time
import uuid
from pathlib import Path

#: A claim on a prompt expires when its heartbeat is older than this (on any host).
CLAIM_STALE_S = 600.0



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
    """A PNG written whole; a video candidate (tts.core.video.Video) is its keyframe strip here and an MP4 beside."""
    import io

    from ..video import is_video, video_path, write_mp4

    if is_video(image):
        write_mp4(video_path(path), image)

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


def disk_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)

