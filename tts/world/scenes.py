"""Procedural scenes of the shapes world: sample prompts by category and render scenes that satisfy them."""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image, ImageDraw

from .grammar import (
    COLOURS, HELD_OUT_PAIRS, RELATIONS, SHAPES, SIZES, Group, PromptSpec, is_held_out,
)

RESOLUTION = 32
SIZE_RANGE = {"small": (7, 9), "big": (12, 15)}
RELATION_MARGIN = 4  # rendered scenes put centres at least this many pixels apart along the relation's axis
CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")


@dataclasses.dataclass(frozen=True)
class Obj:
    """One drawn (or detected) object: its attributes and bounding box."""

    shape: str
    colour: str
    size: str
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def cx(self) -> float:
        return (self.x0 + self.x1) / 2

    @property
    def cy(self) -> float:
        return (self.y0 + self.y1) / 2


def _maybe(rng: np.random.Generator, p: float, choices):
    return choices[rng.integers(len(choices))] if rng.random() < p else None


def sample_spec(rng: np.random.Generator, category: str) -> PromptSpec:
    """Draw a random prompt of one GenEval-style category (held-out combinations included)."""
    shapes = list(rng.permutation(SHAPES))
    colours = list(COLOURS)
    if category == "single_object":
        return PromptSpec((Group(1, shapes[0], size=_maybe(rng, 0.5, SIZES)),))
    if category == "two_object":
        n = 2 + int(rng.random() < 0.4)
        return PromptSpec(tuple(Group(1, shapes[i], size=_maybe(rng, 0.3, SIZES)) for i in range(n)))
    if category == "counting":
        return PromptSpec((Group(int(rng.integers(2, 5)), shapes[0], colour=_maybe(rng, 0.5, colours),
                                 size=_maybe(rng, 0.3, SIZES)),))
    if category == "colors":
        return PromptSpec((Group(1, shapes[0], colour=colours[rng.integers(len(colours))],
                                 size=_maybe(rng, 0.4, SIZES)),))
    if category == "position":
        a, b = (Group(1, shapes[i], colour=_maybe(rng, 0.6, colours)) for i in range(2))
        return PromptSpec((a, b), relation=RELATIONS[rng.integers(len(RELATIONS))])
    if category == "color_attr":
        n = 2 + int(rng.random() < 0.35)
        cols = rng.choice(len(colours), size=n, replace=False)
        return PromptSpec(tuple(Group(1, shapes[i], colour=colours[cols[i]], size=_maybe(rng, 0.3, SIZES))
                                for i in range(n)))
    raise ValueError(f"unknown category {category!r}; choices: {', '.join(CATEGORIES)}")


def sample_training_spec(rng: np.random.Generator) -> PromptSpec:
    """A random in-distribution prompt (uniform over categories, held-out combinations rejected)."""
    while True:
        spec = sample_spec(rng, CATEGORIES[rng.integers(len(CATEGORIES))])
        if not is_held_out(spec):
            return spec


def _place(rng, sizes, relation, tries: int = 400):
    """Top-left corners for square boxes of the given sides, not overlapping (1 px gap), relation honoured.

    Draws ``tries`` candidate layouts at once and keeps the first valid one (None if none is)."""
    sides = np.asarray(sizes)
    xy = rng.integers(1, RESOLUTION - sides, size=(tries, 2, len(sides)))  # (try, x/y, box)
    x, y = xy[:, 0], xy[:, 1]
    ok = np.ones(tries, dtype=bool)
    for i in range(len(sides)):
        for j in range(i + 1, len(sides)):
            apart = ((x[:, i] + sides[i] + 1 <= x[:, j]) | (x[:, j] + sides[j] + 1 <= x[:, i])
                     | (y[:, i] + sides[i] + 1 <= y[:, j]) | (y[:, j] + sides[j] + 1 <= y[:, i]))
            ok &= apart
    if relation:
        ca = (x[:, 0] + sides[0] / 2, y[:, 0] + sides[0] / 2)
        cb = (x[:, 1] + sides[1] / 2, y[:, 1] + sides[1] / 2)
        gap = {"left of": cb[0] - ca[0], "right of": ca[0] - cb[0], "above": cb[1] - ca[1], "below": ca[1] - cb[1]}
        ok &= gap[relation] >= RELATION_MARGIN
    hits = np.flatnonzero(ok)
    if not len(hits):
        return None
    k = hits[0]
    return [(int(x[k, i]), int(y[k, i]), int(s)) for i, s in enumerate(sides)]


def side(a: Obj, b: Obj, relation: str) -> float:
    """How far a's centre lies on the named side of b's (positive when the relation holds)."""
    return {"left of": b.cx - a.cx, "right of": a.cx - b.cx, "above": b.cy - a.cy, "below": a.cy - b.cy}[relation]


def scene_objects(spec: PromptSpec, rng: np.random.Generator, allow_held_out: bool = True) -> list[Obj]:
    """Choose attributes and positions for every object the prompt asks for (nothing else)."""
    while True:
        attrs = []
        for g in spec.groups:
            for _ in range(g.count):
                colours = [c for c in COLOURS if allow_held_out or (c, g.shape) not in HELD_OUT_PAIRS]
                colour = g.colour or colours[rng.integers(len(colours))]
                size = g.size or SIZES[rng.integers(2)]
                attrs.append((g.shape, colour, size, int(rng.integers(*SIZE_RANGE[size], endpoint=True))))
        boxes = _place(rng, [a[3] for a in attrs], spec.relation)
        if boxes is not None:
            return [Obj(shape, colour, size, x, y, x + s, y + s)
                    for (shape, colour, size, _), (x, y, s) in zip(attrs, boxes)]


def draw(objects: list[Obj], rng: np.random.Generator) -> Image.Image:
    """Render objects on a plain light background (its grey level jitters per image)."""
    grey = int(rng.integers(225, 251))
    img = Image.new("RGB", (RESOLUTION, RESOLUTION), (grey, grey, grey))
    d = ImageDraw.Draw(img)
    for o in objects:
        box = (o.x0, o.y0, o.x1 - 1, o.y1 - 1)
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            d.ellipse(box, fill=fill)
        elif o.shape == "square":
            d.rectangle(box, fill=fill)
        else:
            d.polygon([((o.x0 + o.x1 - 1) / 2, o.y0), (o.x0, o.y1 - 1), (o.x1 - 1, o.y1 - 1)], fill=fill)
    return img


def render(spec: PromptSpec, rng: np.random.Generator, allow_held_out: bool = True):
    """A scene that satisfies ``spec``: (image, objects)."""
    objects = scene_objects(spec, rng, allow_held_out)
    return draw(objects, rng), objects
