"""Checks of configuration values, one home for each: YAML and the command line give ``true`` where a
number was meant, and ``bool`` is a subclass of ``int`` in Python, so every integer check excludes it.
Each check raises ``ValueError`` naming the setting (dotted, as the user writes it) and the value."""
from __future__ import annotations

import math


def is_int(value) -> bool:
    """An integer, not a bool."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or float, not a bool."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The most candidates (or particles, or rounds) one setting of a search may ask for: a size beyond it is a typo
#: (``per_round=1000000000``), refused before anything is allocated in proportion to it.
MAX_SIZE = 100_000
#: The most candidates one prompt's search may ask for in all (rounds x candidates a round).
MAX_CANDIDATES = 1_000_000


def check_positive_int(name: str, value, minimum: int = 1, maximum: int | None = None) -> int:
    """``value`` if it is an integer >= ``minimum`` (1 by default) and <= ``maximum`` (when given), else
    ValueError naming ``name``."""
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name}={value:,} is more than tts allows ({maximum:,}); lower it")
    return value


def check_size(name: str, value) -> int:
    """A search's size setting (candidates a round, rounds, particles): a positive integer up to :data:`MAX_SIZE`."""
    return check_positive_int(name, value, maximum=MAX_SIZE)


def check_total(total: int, settings: str) -> int:
    """The candidates a prompt's search asks for in all, at most :data:`MAX_CANDIDATES`."""
    if total > MAX_CANDIDATES:
        raise ValueError(f"{settings} ask for {total:,} candidates a prompt, more than tts allows "
                         f"({MAX_CANDIDATES:,}); lower them, or bound the search with search.nfe_budget")
    return total


def check_number(name: str, value, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False,
                 hi_open: bool = False) -> float:
    """``value`` if it is a number in the interval (closed unless ``lo_open`` / ``hi_open``), else ValueError."""
    ok = is_number(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                         f"got {value!r}")
    return value


DISTRIBUTION = "tts-scaling"  # the name on the package index; "tts" there is an unrelated text-to-speech project


def install_hint(extra: str) -> str:
    """The install command that adds an extra: from the checkout this package runs from (an editable install)
    when there is one, else the distribution by its own name (never ``tts[...]``, which is another project)."""
    from pathlib import Path

    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file():
        return f"pip install -e '{checkout}[{extra}]'"
    return f"pip install '{DISTRIBUTION}[{extra}]'"
