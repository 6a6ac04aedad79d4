"""One built search job to its end in its run folder: what ``tts-search`` (tts.app.cli) and ``tts.search`` (tts.api)
both call once they have validated every component.

1. ``config.json``: the run's settings (secrets redacted, tts's version and the shard layout added); a rerun of
   the folder with other identity settings (:data:`IDENTITY_KEYS`) is refused, except the keys the strategy
   declares extendable (``resume_keys``);
2. ``plan.json``: the run's size (made by the caller with tts.app.plan);
3. the search (tts.run.loop.run_search), which resumes whatever the folder already holds;
4. the judges (``judges.use``; tts.run.judge, built and checked before anything else), once the summary is written.
"""
from __future__ import annotations

import logging

from ..core import runfolder as rf
from . import judge

log = logging.getLogger("tts")
#: Settings a rerun of a run folder must repeat (the rest may change: how the run executes).
IDENTITY_KEYS = ("pipeline", "verifier", "search", "seed")


def run_job(job, config: dict, plan: dict) -> dict | None:
    """Record the config and the plan, then search; the summary (None: a shard that finished before others)."""
    from .loop import run_search

    judges = judge.settings_from_config(config.get("judges"))  # checked before anything is written or loaded
    config = dict(config)
    config["tts_version"] = version()
    config["shard"] = {"count": job.shard.count, "manifest": "per-shard" if job.per_shard_manifest else "shared"}
    folder = rf.RunFolder(job.run_dir, per_shard=job.per_shard_manifest)
    folder.write_config(config, IDENTITY_KEYS, resumable_keys(job))
    log.info("run folder: %s (%d prompts)", job.run_dir, len(job.prompts))
    rf.atomic_write_json(job.run_dir / rf.PLAN, plan)
    each = plan.get("candidates_per_prompt") or {}
    if plan.get("exact") and each.get("max"):
        job.per_prompt_total = int(each["max"])  # the per-prompt bar's total (and so its ETA)
    summary = run_search(job)
    verified = summary is not None and summary["candidates"] - summary["failed"] - summary.get("blocked", 0) > 0
    if verified and (judges or (job.run_dir / rf.JUDGES).exists()):
        summary = judge.judge_run(job.run_dir, judges).summary if judges else judge.refresh_summary(job.run_dir)
        for line in judge.summary_lines(summary):
            log.info("%s", line)
    return summary


def resumable_keys(job) -> frozenset[str]:
    """Keys a rerun of a folder may change: those the strategy declares (``resume_keys``, e.g. ``rounds``
    for strategies that can be extended)."""
    from ..search.protocols import resume_keys

    return frozenset(f"search.{k}" for k in resume_keys(job.search_factory))


def version() -> str:
    """The installed distribution's version (``0+checkout`` when tts runs from a source tree)."""
    from importlib.metadata import PackageNotFoundError, version as installed

    for name in ("tts-scaling", "tts"):
        try:
            return installed(name)
        except PackageNotFoundError:
            continue
    return "0+checkout"
