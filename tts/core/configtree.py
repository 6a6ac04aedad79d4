"""The shipped config tree (configs/: config.yaml and one YAML per option of each group): where it is, what each
group offers, and an option's YAML as a plain mapping, read without Hydra (no global state), so the Python API
(tts.api) composes the same settings the command line (tts.app.cli, Hydra) does."""
from __future__ import annotations

import difflib
from pathlib import Path

#: The config groups of config.yaml's defaults list.
GROUPS = ("pipeline", "verifier", "search", "prompts")


#: the ``tts`` package folder (this module is ``tts/core/configtree.py``)
PACKAGE = Path(__file__).resolve().parents[1]


def config_dir() -> Path:
    """The config tree: inside the package in an installed wheel, else the checkout's top-level configs/."""
    for candidate in (PACKAGE / "configs", PACKAGE.parent / "configs"):
        if (candidate / "config.yaml").exists():
            return candidate
    raise FileNotFoundError("tts config tree not found (expected tts/configs or ./configs)")


def templates_dir(name: str) -> Path:
    """Where the shipped prompt template ``name`` is: ``tts/verifiers_templates`` in a wheel, the checkout's
    ``verifiers/`` (the grading and rewrite templates)."""
    for candidate in (PACKAGE / "verifiers_templates", PACKAGE.parent / "verifiers"):
        if (candidate / name).exists():
            return candidate
    raise FileNotFoundError(f"template {name} not found (expected verifiers/{name} in the checkout)")


def choices(group: str) -> list[str]:
    """The options of a config group (``search``: beam, evolution, ..., zero-order)."""
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def suggest(name: str, valid) -> str:
    """``; did you mean 'x'?`` for the closest of ``valid``, or ''."""
    close = difflib.get_close_matches(str(name), [str(v) for v in valid], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_choice(group: str, name: str) -> None:
    """ValueError naming the closest option and every choice when ``name`` is no option of ``group``."""
    valid = choices(group)
    if name not in valid:
        raise ValueError(f"unknown {group} {name!r}{suggest(name, valid)} choices: {', '.join(valid)}")


def option(group: str, name: str, sub_choices: dict[str, str] | None = None) -> dict:
    """An option's YAML as a mapping, its own sub-groups (``defaults: - frontend: terminal``; ``sub_choices``
    picks another) read in under their keys, as Hydra composes them."""
    import yaml

    check_choice(group, name)
    node = yaml.safe_load((config_dir() / group / f"{name}.yaml").read_text(encoding="utf-8")) or {}
    for entry in node.pop("defaults", None) or []:
        if isinstance(entry, dict) and len(entry) == 1:
            (sub, default), = entry.items()
            chosen = (sub_choices or {}).get(sub, default)
            check_choice(f"{group}/{sub}", chosen)
            node[sub] = yaml.safe_load((config_dir() / group / sub / f"{chosen}.yaml").read_text(encoding="utf-8")) or {}
    return node


def root() -> dict:
    """config.yaml's own settings (its defaults list and Hydra's section left out) and the default options."""
    import yaml

    node = yaml.safe_load((config_dir() / "config.yaml").read_text(encoding="utf-8"))
    defaults = {k: v for entry in node.pop("defaults", []) if isinstance(entry, dict) for k, v in entry.items()}
    node.pop("hydra", None)
    return {"defaults": defaults, "settings": node}
