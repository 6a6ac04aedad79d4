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
import difflib
import hashlib
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..core import runfolder as rf
from ..run import shard as sh
from . import ttsf
from ..core.configtree import choices, config_dir  # noqa: F401 - tts.app.cli.config_dir: its old import path
from ..core.validate import is_int

log = logging.getLogger("tts")
GROUPS = ("pipeline", "verifier", "search", "prompts")
#: Hydra's own flags that take a value in the next argument.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                     "-cd", "--experimental-rerun"}
#: Libraries whose INFO lines are noise on every run (google_genai logs "AFC is enabled ..." per request):
#: kept at WARNING unless ``hydra.verbose`` names them (or is true).
THIRD_PARTY_LOGGERS = ("google_genai", "httpx", "httpx2", "httpcore", "openai", "urllib3", "transformers", "diffusers",
                       "huggingface_hub", "accelerate", "filelock", "PIL", "matplotlib", "selenium")
#: Where each component's API key is read from (never from configs or the command line).
KEY_VARS = {"gemini": "GEMINI_API_KEY (or GOOGLE_API_KEY)", "openai": "OPENAI_API_KEY"}
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


class ConfigError(ValueError):
    pass


def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def _overrides(argv: list[str]) -> list[str]:
    """The ``key=value`` overrides of a command line (Hydra's own flags and their values left out)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in _FLAGS_WITH_VALUE:
            skip = True
        elif arg.startswith("-") and not arg.startswith("--") and "=" not in arg:
            continue
        elif arg.startswith("--"):
            key = arg[2:].partition("=")[0].replace("-", "_")
            if "=" in arg and (key in ttsf.HABITS or key in _top_keys()):
                hint = ttsf.HABITS.get(key, f"{key}=...")
                raise ConfigError(f"{arg!r}: tts takes Hydra overrides without dashes; use {hint}")
        elif "=" in arg or arg.startswith("~"):
            out.append(arg)
    return out


def _top_keys() -> set[str]:
    cfg = OmegaConf.load(config_dir() / "config.yaml")
    return {k for k in cfg if k not in ("defaults", "hydra")} | set(GROUPS)


def _selected(overrides: list[str], group: str) -> str | None:
    """The option chosen for a group (the command line's, else config.yaml's default); None for a sweep."""
    for arg in overrides:
        key, _, value = arg.lstrip("+~").partition("=")
        if key == group:
            return None if ("," in value or "(" in value) else value
    for entry in OmegaConf.load(config_dir() / "config.yaml").defaults:
        if isinstance(entry, (dict, DictConfig)) and group in entry:
            return entry[group]
    return None


def check_overrides(argv: list[str], sweeps: bool = False) -> list[str]:
    """Fail fast, before Hydra writes anything, on overrides that name no group option or no key, on
    tt-scale-flux habits (pointing to the tts key), and on secrets passed on the command line. Returns the
    command line with settings the component accepts but its YAML does not list (``pipeline.cpu_offload``)
    turned into Hydra's add-or-override form (``++pipeline.cpu_offload=true``). ``sweeps``: the caller takes
    sweeps without ``-m`` (tts-plan sizes a whole sweep)."""
    overrides = _overrides(argv)
    user_tree = any(a.startswith("hydra.searchpath") for a in overrides)
    multirun = sweeps or any(a in ("-m", "--multirun") for a in argv)
    promote = set()
    for arg in overrides:
        key, sep, value = arg.lstrip("+~").partition("=")
        _check_secret(key, value, overrides)
        _check_parses(arg, multirun)
        if "/" in key and sep and not user_tree and (config_dir() / key).is_dir() and "(" not in value:
            _check_subgroup(key, value, overrides)
            continue
        if key.startswith("hydra") or "@" in key or "/" in key:
            continue
        if key in GROUPS and sep and not user_tree and "(" not in value:
            _check_group_value(key, value)
        elif not arg.startswith(("+", "~")) and not user_tree and _check_key(key, value, overrides):
            promote.add(arg)
    return [f"++{a}" if a in promote else a for a in argv]


def _check_parses(arg: str, multirun: bool) -> None:
    """An override Hydra cannot read (an apostrophe, '=' or brackets in a value), or one whose commas make a
    sweep without -m: one line naming the quoting (a value with commas or apostrophes is quoted for Hydra)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        [parsed] = OverridesParser.create().parse_overrides([arg])
    except HydraException:
        raise ConfigError(f"Hydra cannot read {arg!r}: quote the value, as in {quoted(arg)}") from None
    if parsed.is_sweep_override() and not multirun:
        raise ConfigError(f"{arg!r}: commas make a sweep in Hydra; quote the value if they are part of it, as in "
                          f"{quoted(arg)} (or add -m to run each value)")


def quoted(arg: str) -> str:
    """``key=value`` quoted for Hydra (single quotes, or double ones when the value has an apostrophe) and
    then for a POSIX shell: ``"prompt='a red circle, a blue square'"``."""
    key, _, value = arg.partition("=")
    if "'" in value:
        value = '"' + value.replace('"', '\\"') + '"'
    else:
        value = f"'{value}'"
    shell = f"{key}={value}"
    for ch in ("\\", '"', "$", "`"):
        shell = shell.replace(ch, "\\" + ch)
    return f'"{shell}"'


def _check_group_value(group: str, value: str) -> None:
    valid = choices(group)
    for name in value.split(","):
        if name and name not in valid:
            raise ConfigError(f"unknown {group} {name!r}{_suggest(name, valid)} choices: {', '.join(valid)}")


def _check_subgroup(key: str, value: str, overrides: list[str]) -> None:
    """``search/frontend=web``: an option of the sub-group, under a group option that has it."""
    _check_group_value(key, value)
    head, sub = key.split("/", 1)
    option = _selected(overrides, head)
    if option in choices(head) and sub not in _option_node(head, option, []):
        having = [o for o in choices(head) if sub in _option_node(head, o, [])]
        raise ConfigError(f"{key}=... applies to {head}={' or '.join(having)}, not {head}={option}")


def _check_key(key: str, value: str, overrides: list[str]) -> bool:
    """Check ``key`` against the config; True when it is a keyword the component takes but its YAML omits."""
    head, _, rest = key.partition(".")
    top = _top_keys()
    if head not in top:
        if head in ttsf.HABITS:
            raise ConfigError(f"{head!r} is tt-scale-flux's name; in tts use {ttsf.HABITS[head]}")
        raise ConfigError(f"unknown key {key!r}{_suggest(head, top)} (top-level keys: {', '.join(sorted(top))})")
    if head == "num_prompts" and value in ("None", "null"):
        raise ConfigError("num_prompts=None is tt-scale-flux's spelling; in tts use num_prompts=all (every prompt) "
                          "or num_prompts=N")
    if head not in GROUPS and rest:
        _check_settings_key(head, rest)
        return False
    option = _selected(overrides, head) if head in GROUPS and rest else None
    if option is None or option not in choices(head):
        return False
    node = _option_node(head, option, overrides)
    first = rest.split(".")[0]
    if first not in node and first in _keywords(node.get("_target_")):
        return True
    path = head
    for part in rest.split("."):
        if not isinstance(node, dict) or len(node) == 0:
            return False  # a free-form or empty mapping: Hydra judges
        if part not in node:
            valid = sorted({str(k) for k in node if not str(k).startswith("_")} | _keywords(node.get("_target_")))
            moved = getattr(rf.target_class(node.get("_target_")), "renamed_keys", {}).get(part)
            if moved:
                raise ConfigError(f"{path}.{part} has moved: use {moved}")
            habit = ttsf.HABITS.get(part)
            hint = (f"; tt-scale-flux's {part!r} is {habit} in tts" if habit
                    else _suggest(part, valid).replace("mean '", f"mean '{path}."))
            raise ConfigError(f"unknown key {path}.{part} for {head}={option}{hint} (keys: {', '.join(valid)}"
                              f"; a keyword of your own class: +{path}.{part}=...)")
        node, path = node[part], f"{path}.{part}"
    return False


def _option_node(head: str, option: str, overrides: list[str]) -> dict:
    """A group option's YAML as a mapping, with the options of its own sub-groups (``defaults: -
    frontend: terminal``, or ``search/frontend=web`` on the command line) read in under their keys."""
    import yaml

    node = yaml.safe_load((config_dir() / head / f"{option}.yaml").read_text(encoding="utf-8")) or {}
    for entry in node.pop("defaults", None) or []:
        if isinstance(entry, dict) and len(entry) == 1:
            (sub, name), = entry.items()
            name = _selected(overrides, f"{head}/{sub}") or name
            path = config_dir() / head / sub / f"{name}.yaml"
            if path.exists():
                node[sub] = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return node


def _check_settings_key(head: str, rest: str) -> None:
    """A key under one of config.yaml's own mappings (``shard``, ``plan``) must be one of its keys."""
    node = OmegaConf.load(config_dir() / "config.yaml").get(head)
    first = rest.split(".")[0]
    if isinstance(node, DictConfig) and first not in node:
        valid = sorted(str(k) for k in node)
        hint = _suggest(first, valid).replace("mean '", f"mean '{head}.")
        raise ConfigError(f"unknown key {head}.{first}{hint} (keys: {', '.join(valid)})")


def _keywords(target) -> set[str]:
    """The keyword arguments a ``_target_`` class takes (empty when it cannot be imported cheaply)."""
    import inspect

    try:
        params = inspect.signature(rf.target_class(target)).parameters
    except (TypeError, ValueError):
        return set()
    return {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)} - {"seed_fn", "context"}


def _check_secret(key: str, value: str, overrides: list[str]) -> None:
    if rf.is_secret_key(key) and value not in ("", "null"):
        where = KEY_VARS.get(_selected(overrides, "verifier") or "", "the environment variable the verifier documents")
        raise ConfigError(f"do not pass {key} on the command line (Hydra would write it to its logs and "
                          f"multirun.yaml): set {where} in the environment instead")
    if rf.redact_url(value) != value:
        raise ConfigError(f"{key} carries credentials in its URL (scheme://user:KEY@host): keep the key in the "
                          f"environment ({', '.join(KEY_VARS.values())}) and pass the URL without it")


_ENV_INTERPOLATION = re.compile(r"\$\{\s*oc\.env\s*:\s*['\"]?([A-Za-z_][A-Za-z0-9_]*)")


def _check_secret_interpolation(node, path: str = "") -> None:
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
            _check_secret_interpolation(value, where)


def _instantiate(node: DictConfig, what: str, **kwargs):
    import hydra
    from hydra.errors import InstantiationException

    _importable(node.get("_target_"), what)
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from None
        raise ConfigError(f"cannot build {what} from _target_={node.get('_target_')!r}: {cause}") from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _importable(target, what: str):
    """The object a ``_target_`` names, or one line naming the part that does not import, with "did you mean"
    among the names that part's module or package has."""
    import importlib
    import pkgutil

    if not isinstance(target, str) or not target:
        return None
    parts, obj, done = target.split("."), None, 0
    for n in range(len(parts), 0, -1):
        try:
            obj, done = importlib.import_module(".".join(parts[:n])), n
            break
        except ModuleNotFoundError as e:
            if e.name is None or not ".".join(parts[:n]).startswith(e.name):
                raise ConfigError(f"{what}._target_={target!r}: importing it fails: {e}") from None
        except Exception as e:  # noqa: BLE001 - the user's module raised while importing
            raise ConfigError(f"{what}._target_={target!r}: importing {'.'.join(parts[:n])} fails: "
                              f"{type(e).__name__}: {e}") from None
    for part in parts[done:]:
        if obj is None or not hasattr(obj, part):
            names = [k for k in dir(obj) if not k.startswith("_")] if obj is not None else []
            if obj is not None and hasattr(obj, "__path__"):
                names += [m.name for m in pkgutil.iter_modules(obj.__path__)]
            where = (f"{'.'.join(parts[:done])} has no {part!r}" if obj is not None else
                     f"no module named {part!r} (run from the folder that holds it, or add that folder to PYTHONPATH)")
            close = difflib.get_close_matches(part, names, n=1)
            hint = f"; did you mean {'.'.join([*parts[:done], close[0]])!r}?" if close else ""
            raise ConfigError(f"{what}._target_={target!r} cannot be imported: {where}{hint}")
        obj, done = getattr(obj, part), done + 1
    return obj


def _positive_int(cfg, key: str, allow_auto: bool = False) -> int | None:
    value = cfg.get(key)
    if allow_auto and value in (None, "auto"):
        return None
    if not is_int(value) or value < 1:
        raise ConfigError(f"{key} must be a positive integer{' or auto' if allow_auto else ''}, got {value!r}")
    return value


def build_job(cfg: DictConfig, run_dir: Path):
    """Build and validate every component; nothing expensive happens here."""
    from ..run.loop import SearchJob
    from ..pipelines import PipelineConfigError, PipelineSpec
    from ..prompts import select
    from ..verifiers.base import Verifier

    pipeline = _instantiate(cfg.pipeline, "pipeline")
    if not isinstance(pipeline, PipelineSpec):
        raise ConfigError(f"pipeline._target_ must build a tts.pipelines.PipelineSpec, got {type(pipeline).__name__}")
    try:
        pipeline.check()  # the model can be had (local folder, cache, or a reachable hub): one line if not
    except PipelineConfigError as e:
        raise ConfigError(str(e)) from None
    if OmegaConf.is_missing(cfg.verifier, "_target_") or not cfg.verifier.get("_target_"):
        raise ConfigError("verifier=custom needs your class: verifier._target_=my_module.MyVerifier "
                          "(see verifiers/example_custom.py)")
    cls = _importable(cfg.verifier.get("_target_"), "verifier")
    if isinstance(cls, type) and not issubclass(cls, Verifier):
        raise ConfigError(f"verifier._target_={cfg.verifier.get('_target_')!r} is a {cls.__name__}, "
                          "not a tts.verifiers.base.Verifier subclass (see verifiers/example_custom.py)")
    verifier = _instantiate(cfg.verifier, "verifier")
    if not isinstance(verifier, Verifier):
        raise ConfigError(f"verifier._target_={cfg.verifier.get('_target_')!r} built a {type(verifier).__name__}, "
                          "not a tts.verifiers.base.Verifier subclass (see verifiers/example_custom.py)")
    try:
        verifier.check()
    except (ValueError, ImportError) as e:
        raise ConfigError(str(e)) from None
    factory = _instantiate(cfg.search, "search")
    strategy = _instantiate_strategy(factory)
    if pipeline.server and (getattr(strategy, "in_loop", False) or getattr(strategy, "nfe_budget", None)):
        what = "steps the denoiser itself" if getattr(strategy, "in_loop", False) else "counts NFEs per image"
        raise ConfigError(f"search={cfg.search.get('_target_', '').rsplit('.', 1)[-1]} {what}: it needs the pipeline "
                          "in this process; drop pipeline.server (or search.nfe_budget)")
    _check_budget_pays_for_an_image(strategy, pipeline)
    source = _instantiate(cfg.prompts, "prompts")
    prompts = select(source, cfg.num_prompts)
    for p in prompts:
        verifier.check_prompt(p.text)
    seed = cfg.get("seed")
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    shard, per_shard = _shard_settings(cfg, factory)
    return SearchJob(pipeline=pipeline, verifier=verifier, search_factory=factory, prompts=prompts, run_dir=run_dir,
                     seed=seed, batch_size=_positive_int(cfg, "batch_size"),
                     verify_concurrency=_positive_int(cfg, "verify_concurrency", allow_auto=True),
                     group_by=getattr(source, "group_by", None), shard=shard, per_shard_manifest=per_shard,
                     collages=_collages(cfg, shard), safety=_safety(cfg, pipeline))


MANIFEST_MODES = ("shared", "per-shard")


def _safety(cfg, pipeline):
    """``safety``: blocked-candidate detection, rewriting and fallback (tts.run.safety), validated up front."""
    from ..run.safety import from_config

    return from_config(cfg.get("safety"), pipeline)


def _shard_settings(cfg, factory) -> tuple[sh.Shard, bool]:
    """This process's shard (config and launcher rank) and whether it writes a manifest of its own."""
    try:
        shard = sh.from_config(cfg)
    except sh.ShardError as e:
        raise ConfigError(str(e)) from None
    mode = (cfg.get("shard") or {}).get("manifest", "shared")
    if mode not in MANIFEST_MODES:
        raise ConfigError(f"shard.manifest must be one of {', '.join(MANIFEST_MODES)}, got {mode!r}")
    if shard.count > 1 and hasattr(_instantiate_strategy(factory), "frontend"):
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


def _check_budget_pays_for_an_image(strategy, pipeline) -> None:
    """``search.nfe_budget`` below one image's NFEs (steps x passes, as tts-plan estimates them) would search
    nothing: refused before the model loads."""
    from .plan import nfe_per_candidate

    budget = getattr(strategy, "nfe_budget", None)
    if budget is None:
        return
    nfe, how = nfe_per_candidate(pipeline)
    if budget < nfe:
        raise ConfigError(f"search.nfe_budget={budget:g} pays for less than one image ({nfe:g} NFEs per image on "
                          f"{pipeline.name}: {how.removeprefix('estimated: ')}); raise it to {nfe:g} or more")


def _instantiate_strategy(factory):
    try:
        strategy = factory(seed_fn=lambda r, i, purpose: 0)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from None
    if not (hasattr(strategy, "ask") and hasattr(strategy, "tell")) and not (
            getattr(strategy, "in_loop", False) and hasattr(strategy, "search")):
        raise ConfigError(f"search._target_ built a {type(strategy).__name__} without ask()/tell() (or in_loop and "
                          "search(engine)); see tts/search")
    return strategy


def run(cfg: DictConfig, run_dir: Path) -> dict | None:
    """Validate, then record the config and the plan and search (tts.run.runjob.run_job, as tts.search does); print
    the summary table (None: a shard that finished before others; the last one writes and prints the summary)."""
    from . import plan as planning
    from ..pipelines.models import configure as configure_models
    from ..run.runjob import run_job

    from ..core import threads as th

    _device_for_rank(cfg)
    _check_secret_interpolation(OmegaConf.to_container(cfg, resolve=False))
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
        print(f"{summary['failed']} of {summary['candidates']} candidates failed ({_first_error(run_dir)}); rerun the "
              f"same command with hydra.run.dir={_shell(run_dir)} to retry only those")
    return summary


def verified(summary: dict) -> int:
    """Candidates the verifier scored (neither failed nor blocked)."""
    return summary["candidates"] - summary["failed"] - summary.get("blocked", 0)


def next_steps(run_dir: Path) -> str:
    return (f"next: tts-collage {_shell(run_dir)}   (each prompt's candidates round by round)\n"
            f"      tts-report {_shell(run_dir)}    (an HTML report: scores, best images, costs)")


def _shell(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def _first_error(run_dir: Path) -> str:
    """The first failed candidate's error, shortened (the run folder's log has every one)."""
    error = next((r.error for r in rf.final_records(rf.read_manifest(run_dir)) if r.status == "failed" and r.error),
                 None)
    if not error:
        return f"see {run_dir / 'tts-search.log'}"
    error = error.strip().splitlines()[-1] if error.strip() else error
    return f"first: {error[:160]}{'...' if len(error) > 160 else ''}"


def nothing_verified(summary: dict, run_dir: Path) -> str:
    """The one line of a run none of whose candidates was verified: why, and how to rerun."""
    n, failed, blocked = summary["candidates"], summary["failed"], summary.get("blocked", 0)
    if n == 0:
        return "no candidate was generated; nothing to summarise"
    rerun = f"rerun the same command with hydra.run.dir={_shell(run_dir)}"
    if failed:
        return (f"no candidate was verified: {failed} of {n} failed ({_first_error(run_dir)}); fix the cause, then "
                f"{rerun} to verify them again (images are kept)")
    return (f"no candidate was verified: all {blocked} were blocked (safety checker or black images); change the "
            f"prompt or set safety.rewrite=true or safety.fallback_pipeline=..., then {rerun}")


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


def format_summary(summary: dict, run_dir: Path) -> str:
    metrics = sorted({m for g in summary["groups"].values() for m in g if m != "n"})
    usage = summary.get("usage")
    cost = (f"; verifier: {usage['requests']} requests, {usage['input_tokens']} input + {usage['output_tokens']} "
            f"output tokens, about ${usage['cost_usd']:.4f}" if usage else "")
    blocked = f"{summary['blocked']} blocked (safety checker or black image), " if summary.get("blocked") else ""
    lines = [f"run folder: {run_dir}", f"{summary['candidates']} candidates, {summary['failed']} failed, {blocked}"
             f"{summary['nfe_total']:.0f} NFEs{cost}" + ("; mean of each prompt's best:" if summary["groups"] else "")]
    if not summary["groups"]:
        return "\n".join(lines)
    lines += ["| group | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, g in summary["groups"].items():
        lines.append(f"| {name} | {g['n']} | " + " | ".join(f"{g.get(m, float('nan')):.3f}" for m in metrics) + " |")
    return "\n".join(lines)


def _is_user_error(e: Exception) -> bool:
    from ..pipelines import PipelineConfigError
    from .plan import PlanError
    from ..prompts import PromptSourceError
    from ..world.grammar import PromptError
    from ..run.judge import JudgeError  # judges (tts.run.judge)

    return isinstance(e, (ConfigError, PipelineConfigError, PromptSourceError, PromptError, rf.RunFolderError,
                          sh.ShardError, PlanError, JudgeError))


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
        if not _is_user_error(e):
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


def check_output_folders(argv: list[str]) -> None:
    """``output_root``, ``hydra.run.dir`` and ``hydra.sweep.dir`` can hold a run: each is a folder, or can be made
    one in its nearest existing parent (a file, ``/dev/null``, ``/proc`` or a read-only place cannot), checked
    before Hydra makes them, so the refusal is one line."""
    for arg in _overrides(argv):
        key, _, value = arg.lstrip("+~").partition("=")
        if key not in ("output_root", "hydra.run.dir", "hydra.sweep.dir") or not value or "${" in value:
            continue
        path = Path(value.strip("'\"")).expanduser()
        parent = path
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if parent.exists() and not parent.is_dir():
            what = "is not a folder" if parent == path else f"cannot hold folders: {parent} is not a folder"
            raise ConfigError(f"{key}={value} {what}; use a folder, e.g. {key}=outputs")
        if parent == path and path.is_dir() and os.access(path, os.W_OK | os.X_OK):
            continue
        try:  # can a folder be made there? (nothing is left behind)
            os.rmdir(tempfile.mkdtemp(prefix=".tts-probe-", dir=parent))
        except OSError as e:
            raise ConfigError(f"{key}={value}: cannot make folders in {parent} ({e.strerror}); use a folder you can "
                              f"write, e.g. {key}=outputs") from None


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
