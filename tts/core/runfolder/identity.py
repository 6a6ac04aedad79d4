"""A run's identity for resume: which settings may change (operational ones, declared by each component's class)
and which differ between two configs."""
from __future__ import annotations

#: The run's own settings that change how it executes, not what it computes (top-level keys of config.json;
#: a component's are declared by its class, see :func:`operational_paths`).
RUN_OPERATIONAL_KEYS = frozenset({"models", "verify_concurrency", "shard", "plan", "collages", "output_root",
                                  "tts_version"})



def target_class(target):
    """The class (or function) a ``_target_`` string names; None when it cannot be imported."""
    import importlib

    if not isinstance(target, str) or "." not in target:
        return None
    module, _, name = target.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def operational_paths(config, path: str = "") -> frozenset[str]:
    """Dotted paths of the settings a resume may change: for every mapping in ``config`` with a
    ``_target_``, the keys its class declares in ``operational_keys`` (a verifier's ``device``, an API
    grader's ``timeout_s``, a pipeline's ``cpu_offload``, a search's ``frontend``), at any depth and
    inside lists (an ensemble's members). A component with a new operational option declares it in its
    own class; nothing here changes."""
    out: set[str] = set()
    if isinstance(config, dict):
        keys = getattr(target_class(config.get("_target_")), "operational_keys", ())
        out |= {f"{path}.{k}" if path else k for k in keys}
        items = config.items()
    elif isinstance(config, list):
        items = enumerate(config)
    else:
        return frozenset()
    for k, v in items:
        out |= operational_paths(v, f"{path}.{k}" if path else str(k))
    return frozenset(out)


def config_differences(old, new, path: str = "", operational: frozenset[str] | None = None
                       ) -> list[tuple[str, object, object]]:
    """``(dotted key, old, new)`` for every setting that differs, operational ones aside (by default those
    the components of ``old`` and ``new`` declare, see :func:`operational_paths`)."""
    if operational is None:
        operational = operational_paths(old, path) | operational_paths(new, path)
        if not path:
            operational |= RUN_OPERATIONAL_KEYS
    if path in operational:
        return []
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new), key=str)
        return [d for k in keys for d in config_differences(old.get(k), new.get(k), _join(path, k), operational)]
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [d for k, (a, b) in enumerate(zip(old, new)) for d in config_differences(a, b, _join(path, k), operational)]
    return [] if old == new or _both_nan(old, new) else [(path, old, new)]


def _both_nan(a, b) -> bool:
    return isinstance(a, float) and isinstance(b, float) and a != a and b != b


def _join(path: str, key) -> str:
    return f"{path}.{key}" if path else str(key)

