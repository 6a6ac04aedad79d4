"""``tts-search``: the Hydra command line.

    tts-search                                        # the embedded shapes world, random search
    tts-search pipeline=flux-dev verifier=gemini search=zero-order prompt="..."
    tts-search -m prompt="a red cube","a blue sphere" search.rounds=3,5
    tts-search ttsf_config=flux.1_dev.json            # a tt-scale-flux JSON config, as is
    tts-search --plan ...                             # print the run's plan (tts.app.plan) and exit
    torchrun --nproc_per_node 8 -m tts ...            # prompts sharded across 8 ranks, one run folder

Steps: (1) expand a tt-scale-flux config into overrides, (2) check every override before Hydra
(group names, key names with "did you mean", tt-scale-flux habits, secrets), (3) compose the config,
(4) build and validate every component (no model loaded yet), (5) write ``config.json`` (secrets
redacted) and ``plan.json``, then run the search (tts.run.loop.run_search) in the Hydra-owned run folder. A
run refused in step 4 leaves no folder behind. Under torchrun / accelerate launch the ranks agree on
the folder first (tts.run.shard).
"""
from __future__ import annotations

import contextlib
import datetime
import hashlib
import logging
import os
import re
import secrets
import shutil
import sys
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..core import runfolder as rf
from ..run import shard as sh
from . import ttsf
from ..core.configtree import config_dir
from .build import build_job, check_secret_interpolation
from .errors import ConfigError, is_user_error
from .messages import first_error, format_summary, next_steps, nothing_verified, shell, verified
from .overrides import check_output_folders, check_overrides

log = logging.getLogger("tts")
#: Libraries whose INFO lines are noise on every run (google_genai logs "AFC is enabled ..." per request):
#: kept at WARNING unless ``hydra.verbose`` names them (or is true).
THIRD_PARTY_LOGGERS = ("google_genai", "httpx", "httpx2", "httpcore", "openai", "urllib3", "transformers", "diffusers",
                       "huggingface_hub", "accelerate", "filelock", "PIL", "matplotlib", "selenium")
_RUN_UID = secrets.token_hex(2)
_START = time.time()  # the run folder's timestamp; under torchrun, rank 0's (tts.run.shard.agree_on_launch)
_EXISTED: set[Path] = set()  # run folders that existed before this process: never removed on a refusal


def _sweep_subdir(num, count, sweep_dir) -> str:
    """A multirun job's folder: its number, except that the shards of one study (``shard.count`` > 1, jobs
    that differ only in ``shard.index``) share one: ``shards``, or, when other keys are swept too, those
    keys' values (``search.rounds=3`` ...), so each combination is its own study."""
    if not isinstance(count, int) or count <= 1:
        return str(num)
    from hydra.core.hydra_config import HydraConfig

    job = [o for o in HydraConfig.get().overrides.task if not o.lstrip("+~").startswith("shard.index=")]
    swept = _swept_keys(Path(str(sweep_dir)))
    if swept is not None:
        job = [o for o in job if o.lstrip("+~").partition("=")[0] in swept]
    name = re.sub(r"[^A-Za-z0-9=,._+-]", "_", ",".join(job)) or "shards"
    if len(name) > 100:
        name = f"{name[:90]}_{hashlib.sha256(name.encode()).hexdigest()[:8]}"
    return name


def _swept_keys(sweep_dir: Path) -> set[str] | None:
    """The keys a multirun sweeps, from the ``multirun.yaml`` Hydra's sweeper writes before any job starts
    (None when it cannot be read: then every override but ``shard.index`` names the study)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        task = OmegaConf.load(sweep_dir / "multirun.yaml").hydra.overrides.task
        parsed = OverridesParser.create().parse_overrides([str(o) for o in task])
    except Exception:  # noqa: BLE001 - any unreadable file: fall back to every override
        return None
    return {o.key_or_group for o in parsed if o.is_sweep_override()}


def _shard_tag(index, count) -> str:
    """The log file's suffix of a shard (``.shard-3-of-8``), '' for a single process or bad settings."""
    try:
        return sh.resolve(index, count).tag
    except sh.ShardError:
        return ""


# Cached, so a job a launcher (submitit, Ray) runs in another process resolves the same folder as the sweep.
OmegaConf.register_new_resolver("tts_uid", lambda: _RUN_UID, replace=True, use_cache=True)
OmegaConf.register_new_resolver("tts_now", lambda fmt: datetime.datetime.fromtimestamp(_START).strftime(fmt),
                                replace=True, use_cache=True)
OmegaConf.register_new_resolver("tts_subdir", _sweep_subdir, replace=True)
OmegaConf.register_new_resolver("tts_shard_tag", _shard_tag, replace=True)


def run(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Validate, then record the config and the plan and search (tts.run.runjob.run_job, as tts.search does); print
    the summary table (None: a shard that finished before others; the last one writes and prints the summary)."""
    from . import plan as planning
    from ..pipelines.models import configure as configure_models
    from ..run.runjob import run_job

    from ..core import threads as th

    _device_for_rank(cfg)
    check_secret_interpolation(OmegaConf.to_container(cfg, resolve=False))
    rf.check_run_folder(run_dir)
    try:
        threads = th.resolve(cfg.get("threads", "auto"))
    except th.ThreadsError as e:
        raise ConfigError(str(e)) from None
    job = build_job(cfg, run_dir)
    th.apply(threads)
    start, before = time.time(), th.schedstat()
    configure_models(OmegaConf.to_container(cfg.models, resolve=True) if cfg.get("models") else None)
    plan = planning.make_plan(cfg, job)
    if job.shard.index == 0:
        log.info("%s", planning.plan_line(plan))
    summary = run_job(job, OmegaConf.to_container(cfg, resolve=True), plan)
    hint = th.wait_hint(before, th.schedstat(), threads, time.time() - start)
    if summary is None:
        print(f"{job.shard.label if job.shard.count > 1 else 'this process'} finished; the summary is written once, "
              f"by the process that completes the study: {run_dir / rf.SUMMARY}")
    else:
        print(format_summary(summary, run_dir))
        if verified(summary):
            print(next_steps(run_dir))
    if hint:
        print(hint)
    if summary is not None and summary["failed"] and verified(summary):
        print(f"{summary['failed']} of {summary['candidates']} candidates failed ({first_error(run_dir)}); rerun the "
              f"same command with hydra.run.dir={shell(run_dir)} to retry only those")
    return summary


def _device_for_rank(cfg: DictConfig) -> None:
    """Under torchrun / accelerate launch, ``device: auto`` of the pipeline and verifier is this rank's GPU."""
    rank = sh.launcher_rank()
    if rank is None or rank[2] is None:
        return
    from omegaconf import open_dict

    with open_dict(cfg):
        for node in (cfg.pipeline, cfg.verifier):
            if isinstance(node.get("device"), str):
                node.device = sh.device_for_rank(node.device, rank[2])


def _remove_if_empty(run_dir: Path, output_root: Path) -> None:
    """A refused run leaves nothing: drop the folder Hydra made if it holds only this run's log, and the
    folders above it that are left empty, up to ``output_root``."""
    if (not run_dir.is_dir() or run_dir.resolve() in _EXISTED or run_dir.resolve() in (Path.cwd(), *Path.cwd().parents)
            or any(not re.fullmatch(r"tts-search(\.shard-\d+-of-\d+)?\.log", p.name) for p in run_dir.iterdir())):
        return
    for handler in logging.getLogger().handlers[:]:
        if Path(getattr(handler, "baseFilename", "/")).parent == run_dir.resolve():
            handler.close()
            logging.getLogger().removeHandler(handler)
    shutil.rmtree(run_dir, ignore_errors=True)
    root, parent = output_root.resolve(), run_dir.resolve().parent
    while (root in parent.parents or (parent == root and root not in _EXISTED)) and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def _job(cfg: DictConfig) -> None:
    """The Hydra job: run, and turn every expected failure into one line (exit 2; Ctrl-C 130)."""
    from hydra.core.hydra_config import HydraConfig

    run_dir = Path(HydraConfig.get().runtime.output_dir)
    quiet_third_party_loggers(HydraConfig.get().verbose)
    _drop_failing_log_files()
    try:
        summary = run(cfg, run_dir)
        if summary is not None and not verified(summary):
            fail(nothing_verified(summary, run_dir), 1)
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished candidates are saved in {run_dir}; rerun the same command with "
              f"hydra.run.dir={run_dir} to resume", file=sys.stderr)
        sys.exit(130)
    except OSError as e:
        if not rf.disk_full(e) and not isinstance(e, PermissionError):
            raise
        what = "the disk is full" if rf.disk_full(e) else f"permission denied ({e.filename})"
        fail(f"cannot write {run_dir}: {what}; free space or fix it, then rerun the same command with "
             f"hydra.run.dir={run_dir} to resume (nothing finished is lost)", 2)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if not is_user_error(e):
            raise
        _remove_if_empty(run_dir, Path(str(cfg.get("output_root", "outputs"))))
        fail(str(e), 2)


def fail(message: str, code: int) -> None:
    """``error: ...`` on stderr (no log prefix), the same line in the run's log file when it has one; exit."""
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s", (message,), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def _drop_failing_log_files() -> None:
    """A log file that cannot be written (a full disk) is closed and dropped, silently: the console still gets
    every line, and the run's one-line error is not buried under logging's tracebacks."""
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, logging.FileHandler):
            def drop(record, handler=handler):
                handler.emit = lambda record: None  # not removed: the root logger may be iterating its handlers
                with contextlib.suppress(Exception):
                    handler.close()
            handler.handleError = drop


def quiet_third_party_loggers(verbose=False) -> None:
    """Third-party loggers at WARNING, except those ``hydra.verbose`` asks for (all when it is true)."""
    if verbose is True:
        return
    asked = {verbose} if isinstance(verbose, str) else set(verbose or ())
    for name in THIRD_PARTY_LOGGERS:
        if not any(name == a or name.startswith(f"{a}.") for a in asked):
            logging.getLogger(name).setLevel(logging.WARNING)


def _folder_given(argv: list[str]) -> bool:
    """The command line names the run folder (or the sweep's), so ranks need not agree on one."""
    multirun = any(a in ("-m", "--multirun") for a in argv)
    return any(a.startswith("hydra.sweep.dir=" if multirun else "hydra.run.dir=") for a in argv)


def _output_roots(argv: list[str]) -> list[Path]:
    """The run folders' root this command line names (``output_root=``), else config.yaml's."""
    given = [a.partition("=")[2] for a in argv if a.lstrip("+").startswith("output_root=")]
    return [Path(given[-1] if given else str(OmegaConf.load(config_dir() / "config.yaml").output_root)).expanduser()]


def main() -> None:
    global _RUN_UID, _START
    # Like `python -m`, let `_target_` name modules in the working directory (a user's own verifiers).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    if "--plan" in sys.argv[1:]:
        from .plan import main as plan_main

        plan_main([a for a in sys.argv[1:] if a != "--plan"])
        return
    try:
        from .judge import spelled  # judges=[...] is judges.use=[...] (tts.run.judge)
        argv = check_overrides(spelled(ttsf.expand_config_args(sys.argv[1:])))
        check_output_folders(argv)
        if not _folder_given(argv):
            _RUN_UID, _START = sh.agree_on_launch(_RUN_UID, _START)
    except (ConfigError, ttsf.TtsfConfigError, sh.ShardError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = argv
    _EXISTED.update(p.resolve() for p in _output_roots(argv) if p.exists())
    _EXISTED.update(Path(a.partition("=")[2]).expanduser().resolve() for a in argv if a.startswith("hydra.run.dir=")
                    and Path(a.partition("=")[2]).expanduser().exists())
    import hydra

    hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")(_job)()


if __name__ == "__main__":
    main()
