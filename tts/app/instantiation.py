"""A config node built into its object (Hydra's ``instantiate``) with one-line errors: a ``_target_`` that does
not import names the part that fails, with "did you mean"."""
from __future__ import annotations

import difflib
from omegaconf import DictConfig

from .errors import ConfigError


def instantiate(node: DictConfig, what: str, **kwargs):
    import hydra
    from hydra.errors import InstantiationException

    importable(node.get("_target_"), what)
    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__ or e
        if isinstance(cause, ValueError):
            raise ConfigError(str(cause)) from None
        raise ConfigError(f"cannot build {what} from _target_={node.get('_target_')!r}: {cause}") from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def importable(target, what: str):
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
