"""``prompts=shapes-bench``: the fixed prompt suite of the shapes world, tagged by category and split.

234 distinct prompts, built deterministically from seed 0: every single-object prompt (9) and 45 of
each other GenEval-style category; in the four categories that can name a held-out combination
(counting, colors, position, color_attr) a third of the prompts are ``held_out`` (a colour-shape
pair or relation never drawn or captioned in training; the colors category has only 9 such prompts),
the rest ``in_dist``.
"""
from __future__ import annotations

import numpy as np

from ..prompts import Prompt
from .grammar import SHAPES, SIZES, Group, PromptSpec, is_held_out
from .scenes import CATEGORIES, sample_spec

PER_CATEGORY = 45
HELD_OUT_SHARE = 1 / 3


def build(seed: int = 0) -> list[Prompt]:
    rng = np.random.default_rng(seed)
    out: list[Prompt] = []
    for category in CATEGORIES:
        if category == "single_object":
            specs = [PromptSpec((Group(1, s, size=z),)) for s in SHAPES for z in (None, *SIZES)]
            out += [Prompt(s.text(), {"category": category, "split": "in_dist"}) for s in specs]
            continue
        want_held = round(PER_CATEGORY * HELD_OUT_SHARE) if category in ("counting", "colors", "position", "color_attr") else 0
        pools: dict[bool, list[str]] = {True: [], False: []}
        seen = set()
        for _ in range(5_000):  # draw until both pools are deep enough (the order is fixed by the seed)
            spec = sample_spec(rng, category)
            if spec.text() not in seen:
                seen.add(spec.text())
                pools[is_held_out(spec)].append(spec.text())
        n_held = min(want_held, len(pools[True]))
        tag = lambda split: {"category": category, "split": split}  # noqa: E731
        held = [Prompt(t, tag("held_out")) for t in pools[True][:n_held]]
        inside = [Prompt(t, tag("in_dist")) for t in pools[False][:PER_CATEGORY - n_held]]
        out += inside + held
    return out


class ShapesBench:
    """The suite as a prompt source (``load()`` like every other source)."""

    def __init__(self, seed: int = 0):
        self.seed = seed

    def load(self) -> list[Prompt]:
        return build(self.seed)
