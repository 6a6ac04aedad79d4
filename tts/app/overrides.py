"""The command line before Hydra sees it: every ``key=value`` override checked against the config tree (group
options, keys with "did you mean", tt-scale-flux habits, quoting Hydra cannot read, secrets on the command line),
and the output folders checked, each refusal one line (:class:`tts.app.errors.ConfigError`)."""
from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from ..core import runfolder as rf
from ..core.configtree import choices, config_dir
from . import ttsf
from .errors import ConfigError

GROUPS = ("pipeline", "verifier", "search", "prompts", "router")
#: Hydra's own flags that take a value in the next argument.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn", "--config-dir",
                     "-cd", "--experimental-rerun"}
#: Where each component's API key is read from (never from configs or the command line).
KEY_VARS = {"gemini": "GEMINI_API_KEY (or GOOGLE_API_KEY)", "openai": "OPENAI_API_KEY"}


def suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def command_overrides(argv: list[str]) -> list[str]:
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
            if "=" in arg and (key in ttsf.HABITS or key in top_keys()):
                hint = ttsf.HABITS.get(key, f"{key}=...")
                raise ConfigError(f"{arg!r}: tts takes Hydra overrides without dashes; use {hint}")
        elif "=" in arg or arg.startswith("~"):
            out.append(arg)
    return out


def top_keys() -> set[str]:
    cfg = OmegaConf.load(config_dir() / "config.yaml")
    return {k for k in cfg if k not in ("defaults", "hydra")} | set(GROUPS)


def selected(overrides: list[str], group: str) -> str | None:
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
    overrides = command_overrides(argv)
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
            raise ConfigError(f"unknown {group} {name!r}{suggest(name, valid)} choices: {', '.join(valid)}")


def _check_subgroup(key: str, value: str, overrides: list[str]) -> None:
    """``search/frontend=web``: an option of the sub-group, under a group option that has it."""
    _check_group_value(key, value)
    head, sub = key.split("/", 1)
    option = selected(overrides, head)
    if option in choices(head) and sub not in _option_node(head, option, []):
        having = [o for o in choices(head) if sub in _option_node(head, o, [])]
        raise ConfigError(f"{key}=... applies to {head}={' or '.join(having)}, not {head}={option}")


#: ``search.pipelines``, ``search.allocation``, ...: taken by any ask/tell search (tts.app.over_models.KEYS)
_OVER_MODELS = ("pipelines", "allocation", "ucb_c", "router_mode")


def _check_key(key: str, value: str, overrides: list[str]) -> bool:
    """Check ``key`` against the config; True when it is a keyword the component takes but its YAML omits."""
    head, _, rest = key.partition(".")
    top = top_keys()
    if head not in top:
        if head in ttsf.HABITS:
            raise ConfigError(f"{head!r} is tt-scale-flux's name; in tts use {ttsf.HABITS[head]}")
        raise ConfigError(f"unknown key {key!r}{suggest(head, top)} (top-level keys: {', '.join(sorted(top))})")
    if head == "num_prompts" and value in ("None", "null"):
        raise ConfigError("num_prompts=None is tt-scale-flux's spelling; in tts use num_prompts=all (every prompt) "
                          "or num_prompts=N")
    if head not in GROUPS and rest:
        _check_settings_key(head, rest)
        return False
    option = selected(overrides, head) if head in GROUPS and rest else None
    if option is None or option not in choices(head):
        return False
    from ..search.protocols import DRIVER_KEYS  # search.stop_at, search.study_nfe_budget: every strategy's

    node = _option_node(head, option, overrides)
    first = rest.split(".")[0]
    if first not in node and (first in _keywords(node.get("_target_")) or (head == "search" and first in DRIVER_KEYS)):
        return True
    if head == "search" and first not in node and first in _OVER_MODELS:  # search.pipelines & co (over_models)
        return True
    path = head
    for part in rest.split("."):
        if not isinstance(node, dict) or len(node) == 0:
            return False  # a free-form or empty mapping: Hydra judges
        if part not in node:
            valid = sorted({str(k) for k in node if not str(k).startswith("_")} | _keywords(node.get("_target_"))
                           | (set(DRIVER_KEYS) if head == "search" and path == head else set()))
            moved = getattr(rf.target_class(node.get("_target_")), "renamed_keys", {}).get(part)
            if moved:
                raise ConfigError(f"{path}.{part} has moved: use {moved}")
            habit = ttsf.HABITS.get(part)
            hint = (f"; tt-scale-flux's {part!r} is {habit} in tts" if habit
                    else suggest(part, valid).replace("mean '", f"mean '{path}."))
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
            name = selected(overrides, f"{head}/{sub}") or name
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
        hint = suggest(first, valid).replace("mean '", f"mean '{head}.")
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
        where = KEY_VARS.get(selected(overrides, "verifier") or "", "the environment variable the verifier documents")
        raise ConfigError(f"do not pass {key} on the command line (Hydra would write it to its logs and "
                          f"multirun.yaml): set {where} in the environment instead")
    if rf.redact_url(value) != value:
        raise ConfigError(f"{key} carries credentials in its URL (scheme://user:KEY@host): keep the key in the "
                          f"environment ({', '.join(KEY_VARS.values())}) and pass the URL without it")


def check_output_folders(argv: list[str]) -> None:
    """``output_root``, ``hydra.run.dir`` and ``hydra.sweep.dir`` can hold a run: each is a folder, or can be made
    one in its nearest existing parent (a file, ``/dev/null``, ``/proc`` or a read-only place cannot), checked
    before Hydra makes them, so the refusal is one line."""
    for arg in command_overrides(argv):
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
