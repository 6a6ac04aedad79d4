"""``tts-search``: the Hydra command line.

    tts-search                                        # the embedded shapes world, random search
    tts-search pipeline=flux-dev verifier=gemini search=zero-order prompt="..."
    tts-search -m prompt="a red cube","a blue sphere" search.rounds=3,5

Steps: check group names (before Hydra, to suggest close matches), compose the config, build and
validate every component (no model loaded yet), write ``config.json`` (secrets redacted), then run
the search (tts.loop.run_search) in the Hydra-owned run folder.
"""
from __future__ import annotations

import difflib
import logging
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from . import runfolder as rf
from .loop import SearchJob, run_search
from .pipelines import PipelineSpec
from .prompts import take
from .verifiers.base import Verifier

log = logging.getLogger("tts")
GROUPS = ("pipeline", "verifier", "search", "prompts")
IDENTITY_KEYS = ("pipeline", "verifier", "search", "seed")


class ConfigError(ValueError):
    pass


def config_dir() -> Path:
    """The config tree: inside the package in an installed wheel, else the checkout's top-level configs/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "configs", here.parent / "configs"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise FileNotFoundError("tts config tree not found (expected tts/configs or ./configs)")


def choices(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def check_group_overrides(argv: list[str]) -> None:
    """Fail fast on ``group=name`` overrides naming no shipped config, with a close match if any."""
    if any(a.startswith("hydra.searchpath") for a in argv):
        return  # user config trees may add options; let Hydra judge
    for arg in argv:
        key, sep, value = arg.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or "(" in value:  # sweep functions like choice(...) are Hydra's to read
            continue
        valid = choices(key)
        for name in value.split(","):
            if name and name not in valid:
                close = difflib.get_close_matches(name, valid, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown {key} {name!r}{hint} choices: {', '.join(valid)}")


def _instantiate(node: DictConfig, what: str, **kwargs):
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from None
        raise ConfigError(f"cannot build {what} from _target_={node.get('_target_')!r}: {cause}") from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _positive_int(cfg, key: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def build_job(cfg: DictConfig, run_dir: Path) -> SearchJob:
    """Build and validate every component; nothing expensive happens here."""
    pipeline = _instantiate(cfg.pipeline, "pipeline")
    if not isinstance(pipeline, PipelineSpec):
        raise ConfigError(f"pipeline._target_ must build a tts.pipelines.PipelineSpec, got {type(pipeline).__name__}")
    verifier = _instantiate(cfg.verifier, "verifier")
    if not isinstance(verifier, Verifier):
        raise ConfigError(f"verifier._target_={cfg.verifier.get('_target_')!r} built a {type(verifier).__name__}, "
                          "not a tts.verifiers.base.Verifier subclass (see verifiers/example_custom.py)")
    try:
        verifier.check()
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from None
    factory = _instantiate(cfg.search, "search")
    _instantiate_strategy(factory)
    source = _instantiate(cfg.prompts, "prompts")
    prompts = take(source.load(), cfg.num_prompts)
    for p in prompts:
        verifier.check_prompt(p.text)
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    return SearchJob(pipeline=pipeline, verifier=verifier, search_factory=factory, prompts=prompts, run_dir=run_dir,
                     seed=seed, batch_size=_positive_int(cfg, "batch_size"),
                     verify_concurrency=_positive_int(cfg, "verify_concurrency"))


def _instantiate_strategy(factory) -> None:
    try:
        strategy = factory(seed_fn=lambda r, i, purpose: 0)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if not (hasattr(strategy, "ask") and hasattr(strategy, "tell")):
        raise ConfigError(f"search._target_ built a {type(strategy).__name__} without ask()/tell() (see tts/search)")


def run(cfg: DictConfig, run_dir: Path) -> dict:
    """Validate, record the config, search, print the summary table."""
    job = build_job(cfg, run_dir)
    folder = rf.RunFolder(run_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    config["tts_version"] = _version()
    folder.write_config(config, IDENTITY_KEYS)
    log.info("run folder: %s (%d prompts)", run_dir, len(job.prompts))
    summary = run_search(job)
    print(format_summary(summary, run_dir))
    return summary


def format_summary(summary: dict, run_dir: Path) -> str:
    metrics = sorted({m for g in summary["groups"].values() for m in g if m != "n"})
    usage = summary.get("usage")
    cost = (f"; verifier: {usage['requests']} requests, {usage['input_tokens']} input + {usage['output_tokens']} "
            f"output tokens, about ${usage['cost_usd']:.4f}" if usage else "")
    lines = [f"run folder: {run_dir}", f"{summary['candidates']} candidates, {summary['failed']} failed, "
             f"{summary['nfe_total']:.0f} NFEs{cost}; mean of each prompt's best:",
             "| group | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, g in summary["groups"].items():
        lines.append(f"| {name} | {g['n']} | " + " | ".join(f"{g.get(m, float('nan')):.3f}" for m in metrics) + " |")
    return "\n".join(lines)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tts")
    except PackageNotFoundError:
        return "0+checkout"


@hydra.main(version_base=None, config_path=str(config_dir()), config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        run(cfg, Path(HydraConfig.get().runtime.output_dir))
    except (ConfigError, ValueError, FileNotFoundError, RuntimeError) as e:
        if not isinstance(e, ConfigError) and not _is_user_error(e):
            raise
        log.error("%s", e)
        sys.exit(2)


def _is_user_error(e: Exception) -> bool:
    from .pipelines import PipelineConfigError
    from .prompts import PromptSourceError
    from .world.grammar import PromptError

    return isinstance(e, (PipelineConfigError, PromptSourceError, PromptError, rf.RunFolderMismatch))


def main() -> None:
    # Like `python -m`, let `_target_` name modules in the working directory (a user's own verifiers).
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        check_group_overrides(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    _hydra_main()


if __name__ == "__main__":
    main()
