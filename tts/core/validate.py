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


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """``value`` if it is an integer >= ``minimum`` (1 by default), else ValueError naming ``name``."""
    if not is_int(value) or value < minimum:
        what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return value


def check_number(name: str, value, lo: float = -math.inf, hi: float = math.inf, lo_open: bool = False,
                 hi_open: bool = False) -> float:
    """``value`` if it is a number in the interval (closed unless ``lo_open`` / ``hi_open``), else ValueError."""
    ok = is_number(value) and (value > lo if lo_open else value >= lo) and (value < hi if hi_open else value <= hi)
    if not ok:
        raise ValueError(f"{name} must lie in {'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}, "
                         f"got {value!r}")
    return value
