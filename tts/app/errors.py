"""The app layer's one-line errors: a setting tts cannot use (:class:`ConfigError`, :class:`PlanError`), and
which exceptions are the user's to fix (:func:`is_user_error`: printed as ``error: ...``, never a traceback)."""
from __future__ import annotations

from ..core import runfolder as rf


class ConfigError(ValueError):
    """A setting or override that cannot work (the message names the fix)."""


class PlanError(ValueError):
    """Plan settings tts cannot use (the message names the fix)."""


def is_user_error(e: Exception) -> bool:
    from ..pipelines import PipelineConfigError
    from ..run.shard import ShardError
    from ..prompts import PromptSourceError
    from ..world.grammar import PromptError
    from ..run.judge import JudgeError

    return isinstance(e, (ConfigError, PipelineConfigError, PromptSourceError, PromptError, rf.RunFolderError,
                          ShardError, PlanError, JudgeError))
