"""``prompts=shapes-bench``: the fixed prompt suite of the shapes world, tagged by category and split.

234 distinct prompts, built deterministically from seed 0: every single-object prompt (9) and 45 of
each other GenEval-style category; in the four categories that can name a held-out combination
(counting, colors, position, color_attr) a third of the prompts are ``held_out`` (a colour-shape
pair or relation never drawn or captioned in training; the colors category has only 9 such prompts),
the rest ``in_dist``.

``num_prompts=N`` takes a stratified subset (``ShapesBench.subset``): the categories take turns in their
fixed order, each giving its next prompt from a seeded shuffle of its own (``prompts.subset_seed``), so
even 5 prompts cover 5 categories and any N is spread as evenly as the categories allow.
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
    """The suite as a prompt source (``load()`` like every other source; ``subset(n)`` for num_prompts=N)."""

    group_by = ("category", "split")

    def __init__(self, seed: int = 0, subset_seed: int = 0):
        self.seed, self.subset_seed = seed, subset_seed

    def load(self) -> list[Prompt]:
        return build(self.seed)

    def subset(self, n: int) -> list[Prompt]:
        """N prompts stratified by category: round-robin over categories, seeded order within each."""
        by_category: dict[str, list[Prompt]] = {}
        for p in self.load():
            by_category.setdefault(p.tags["category"], []).append(p)
        rng = np.random.default_rng(self.subset_seed)
        queues = [[ps[i] for i in rng.permutation(len(ps))] for ps in by_category.values()]
        out: list[Prompt] = []
        while len(out) < n and any(queues):
            for q in queues:
                if q and len(out) < n:
                    out.append(q.pop(0))
        return out
