"""Updating ``summary.json`` after the search: sections added by later steps (the judges' means) are set in place,
under the folder's lock and written atomically, so a reader never sees half a summary and the search's own
sections are kept."""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from ..core import runfolder as rf


def update_summary(run_dir: Path, **sections: Any) -> dict:
    """Set ``sections`` (``judges={...}``) in ``run_dir/summary.json`` (made when absent, as in a tt-scale-flux
    folder); the whole summary as written."""
    run_dir = Path(run_dir)
    fd = os.open(run_dir / rf.LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        rf.lock(fd, fcntl.LOCK_EX, run_dir / rf.LOCK)
        summary = rf.read_json(run_dir / rf.SUMMARY)
        summary.update(sections)
        rf.atomic_write_json(run_dir / rf.SUMMARY, summary)
    finally:
        os.close(fd)
    return summary

