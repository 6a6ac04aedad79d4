"""Building a search from a composed config: every component instantiated from its ``_target_`` and validated
(:func:`build_job`), nothing loaded yet; a setting that cannot work is one line (:class:`tts.app.errors.ConfigError`)."""
from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..core import runfolder as rf
from ..core.validate import is_int
from ..run import shard as sh
from .errors import ConfigError
from .instantiation import importable, instantiate  # noqa: F401 - tts.app.build's names


_ENV_INTERPOLATION = re.compile(r"\$\{\s*oc\.env\s*:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")


def check_secret_interpolation(node, path: str = "") -> None:
    """``${oc.env:SOME_API_KEY}`` in a setting that is not itself a secret (a prompt, a path, a tag) would write the
    secret into records, summaries and file names: refused, naming the setting and the variable (not its value)."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        where = f"{path}.{key}" if path else str(key)
        if isinstance(value, str) and not rf.is_secret_key(where):
            for name in _ENV_INTERPOLATION.findall(value):
                if rf.is_secret_key(name):
                    raise ConfigError(f"{where} reads the secret-looking environment variable {name} through "
                                      f"${{oc.env:{name}}}: its value would be written into the run's records, summary "
                                      "and file names; give the value itself, or keep secrets in the settings that "
                                      "take them (the verifier reads its API key from the environment)")
        else:
            check_secret_interpolation(value, where)


def positive_int(cfg, key: str, allow_auto: bool = False) -> int | None:
    value = cfg.get(key)
    if allow_auto and value in (None, "auto"):
        return None
    if not is_int(value) or value < 1:
        raise ConfigError(f"{key} must be a positive integer{' or auto' if allow_auto else ''}, got {value!r}")
    return value


def build_job(cfg: DictConfig, run_dir: Path):
    """Build and validate every component; nothing expensive happens here."""
    from ..pipelines import PipelineConfigError, PipelineSpec
    from ..prompts import select
    from ..run.job import SearchJob
    from ..search.protocols import driver_problem, traits
    from ..verifiers.base import Verifier

    pipeline = instantiate(cfg.pipeline, "pipeline")
    if not isinstance(pipeline, PipelineSpec):
        raise ConfigError(f"pipeline._target_ must build a tts.pipelines.PipelineSpec, got {type(pipeline).__name__}")
    try:
        pipeline.check()  # the model can be had (local folder, cache, or a reachable hub): one line if not
    except PipelineConfigError as e:
        raise ConfigError(str(e)) from None
    if OmegaConf.is_missing(cfg.verifier, "_target_") or not cfg.verifier.get("_target_"):
        raise ConfigError("verifier=custom needs your class: verifier._target_=my_module.MyVerifier "
                          "(see verifiers/example_custom.py)")
    cls = importable(cfg.verifier.get("_target_"), "verifier")
    if isinstance(cls, type) and not issubclass(cls, Verifier):
        raise ConfigError(f"verifier._target_={cfg.verifier.get('_target_')!r} is a {cls.__name__}, "
                          "not a tts.verifiers.base.Verifier subclass (see verifiers/example_custom.py)")
    verifier = instantiate(cfg.verifier, "verifier")
    if not isinstance(verifier, Verifier):
        raise ConfigError(f"verifier._target_={cfg.verifier.get('_target_')!r} built a {type(verifier).__name__}, "
                          "not a tts.verifiers.base.Verifier subclass (see verifiers/example_custom.py)")
    try:
        verifier.check()
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from None
    from . import over_models  # search.pipelines / search.allocation / router (docs/search-over-models.md)

    search_node, drivers = _driver_settings(cfg.search)  # search.stop_at & co. are the drivers'
    search_node, over = over_models.split_search_node(search_node)
    factory, arms = over_models.build(cfg, instantiate(search_node, "search"), pipeline, over)
    pipeline = arms[0].spec if arms else pipeline
    strategy = instantiate_strategy(factory)
    kind = traits(strategy)  # what the strategy is and its budget, read once
    try:
        budget = kind.budget.with_settings(**drivers)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if pipeline.server and (kind.in_loop or kind.budget.nfe):
        what = "steps the denoiser itself" if kind.in_loop else "counts NFEs per image"
        raise ConfigError(f"search={cfg.search.get('_target_', '').rsplit('.', 1)[-1]} {what}: it needs the pipeline "
                          "in this process; drop pipeline.server (or search.nfe_budget)")
    if kind.gradient:  # search=noise-opt: a differentiable verifier, refused before anything loads
        from ..run.noiseopt import verifier_problem

        if problem := verifier_problem(verifier):
            raise ConfigError(problem)
    _check_budget_pays_for_an_image(kind.budget, pipeline)
    source = instantiate(cfg.prompts, "prompts")
    prompts = select(source, cfg.num_prompts)
    for p in prompts:
        verifier.check_prompt(p.text)
    seed = cfg.get("seed")
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    shard, per_shard = _shard_settings(cfg, kind.asks_a_person)
    problem = driver_problem(kind, budget, shard.count, bool(pipeline.server))
    if problem:
        raise ConfigError(problem)
    return SearchJob(pipeline=pipeline, verifier=verifier, search_factory=factory, prompts=prompts, run_dir=run_dir,
                     seed=seed, batch_size=positive_int(cfg, "batch_size"),
                     verify_concurrency=positive_int(cfg, "verify_concurrency", allow_auto=True),
                     group_by=getattr(source, "group_by", None), shard=shard, per_shard_manifest=per_shard,
                     collages=_collages(cfg, shard), safety=_safety(cfg, pipeline), budget=budget, arms=arms)


MANIFEST_MODES = ("shared", "per-shard")


def _driver_settings(node: DictConfig) -> tuple[DictConfig, dict]:
    """``search.stop_at`` and ``search.study_nfe_budget`` are the drivers' (tts.search.protocols.DRIVER_KEYS), not
    the strategy class's: a copy of the search node without them, and their values."""
    import copy

    from omegaconf import open_dict

    from ..search.protocols import DRIVER_KEYS

    node = copy.deepcopy(node)
    with open_dict(node):
        values = {k: node.pop(k, None) for k in DRIVER_KEYS}
    return node, values


def _safety(cfg, pipeline):
    """``safety``: blocked-candidate detection, rewriting and fallback (tts.run.safety), validated up front."""
    from ..run.safety import from_config

    return from_config(cfg.get("safety"), pipeline)


def _shard_settings(cfg, asks_a_person: bool) -> tuple[sh.Shard, bool]:
    """This process's shard (config and launcher rank) and whether it writes a manifest of its own."""
    try:
        shard = sh.from_config(cfg)
    except sh.ShardError as e:
        raise ConfigError(str(e)) from None
    mode = (cfg.get("shard") or {}).get("manifest", "shared")
    if mode not in MANIFEST_MODES:
        raise ConfigError(f"shard.manifest must be one of {', '.join(MANIFEST_MODES)}, got {mode!r}")
    if shard.count > 1 and asks_a_person:
        raise ConfigError(f"this search asks a person (search=human-preference): run it in one process "
                          f"(shard.count=1, no torchrun), not as {shard.label}")
    return shard, mode == "per-shard"


def _collages(cfg, shard: sh.Shard) -> bool:
    value = cfg.get("collages", "auto")
    if value == "auto":
        return shard.count > 1
    if not isinstance(value, bool):
        raise ConfigError(f"collages must be true, false or auto, got {value!r}")
    return value


def _check_budget_pays_for_an_image(budget, pipeline) -> None:
    """``search.nfe_budget`` below one image's NFEs (steps x passes, as tts-plan estimates them) would search
    nothing: refused before the model loads."""
    from ..pipelines.nfe import nfe_per_image

    if budget.limited:
        problem = budget.shortfall(*nfe_per_image(pipeline), pipeline.name)
        if problem:
            raise ConfigError(problem)


def instantiate_strategy(factory):
    """One strategy from the factory, only validated (no prompt, no run folder): one line if it cannot be built."""
    from ..search.protocols import kind_problem, make_strategy

    try:
        strategy = make_strategy(factory)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    problem = kind_problem(strategy)
    if problem:
        raise ConfigError(f"search._target_ built {problem}")
    return strategy
