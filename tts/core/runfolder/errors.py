"""What a run folder raises when tts cannot use it."""
from __future__ import annotations


class RunFolderError(RuntimeError):
    """A run folder tts cannot use as it is (the message says what to do)."""


class RunFolderMismatch(RunFolderError):
    """A run folder made by a different search than the one asked to resume it."""

