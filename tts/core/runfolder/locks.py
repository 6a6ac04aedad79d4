"""``flock`` for writers (a file system without locks is a one-line error naming the lock-free mode) and for
readers (who read without it there)."""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from .errors import RunFolderError

#: errno values of a file system without (working) flock: Lustre mounted with noflock, NFS without a lock manager.
_NO_LOCKS = frozenset({errno.ENOSYS, errno.ENOLCK, errno.EOPNOTSUPP})



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

