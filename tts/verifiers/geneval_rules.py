"""GenEval's rules (Ghosh et al. 2023, "GenEval: An Object-Focused Framework for Evaluating Text-to-Image
Alignment"), independent of any detector: a parser of GenEval's prompt templates into requirements, and the
check of those requirements against detections (each failed requirement named).

Templates: ``a photo of a cat`` (single object), ``a photo of a cat and a dog`` (two objects), ``a photo of
three cats`` (counting: exactly three, i.e. at least three and fewer than four), ``a photo of a red car``
(colour), ``a photo of a red car and a blue bench`` (colour attribution), ``a photo of a dog left of a cat``
(position: left of, right of, above, below; the first object placed relative to the second).

The check follows GenEval's ``evaluate``: each included class must be found ``count`` times (its first
``count`` detections, highest score first, are the ones checked); with a colour, that many of them must be
classified that colour; with a position, every found object must stand in the relation to every object of
its target group (GenEval's ``relative_position``: box centres, offsets shrunk by 0.1 of the two boxes'
sizes, the direction's component beyond 0.5); a counting prompt also excludes ``count + 1`` or more.
"""
from __future__ import annotations

import dataclasses
import math
import re

from ..world import grammar
from ..world.detect import Verdict  # met and failed requirements, as the shapes checker's

COLOURS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
           "ten": 10}
RELATIONS = ("left of", "right of", "above", "below")
POSITION_THRESHOLD = 0.1  # GenEval's: offsets shrink by this fraction of the two boxes' sizes
IRREGULAR = {"people": "person", "mice": "mouse", "knives": "knife", "skis": "skis", "scissors": "scissors",
             "glasses": "glasses", "wine glasses": "wine glass", "buses": "bus", "benches": "bench",
             "sandwiches": "sandwich", "couches": "couch", "boxes": "box", "dishes": "dish", "geese": "goose",
             "teeth": "tooth", "feet": "foot", "children": "child", "men": "man", "women": "woman",
             "leaves": "leaf", "shelves": "shelf", "wolves": "wolf", "sheep": "sheep", "fish": "fish"}


class PromptError(grammar.PromptError):
    """A prompt outside GenEval's templates (a prompt error the front ends report in one line)."""

    def __init__(self, message: str):
        ValueError.__init__(self, message)


@dataclasses.dataclass(frozen=True)
class Requirement:
    """``count`` objects of class ``noun`` (of ``colour``; placed ``relation`` to the group at ``target``)."""

    noun: str
    count: int = 1
    colour: str | None = None
    relation: str | None = None
    target: int | None = None

    def words(self) -> str:
        what = f"{self.colour} {self.noun}" if self.colour else self.noun
        return f"{self.count} {what}"


@dataclasses.dataclass(frozen=True)
class Spec:
    include: tuple[Requirement, ...]
    exclude: tuple[tuple[str, int], ...] = ()  # (noun, n): fewer than n wanted

    @property
    def nouns(self) -> list[str]:
        return list(dict.fromkeys(r.noun for r in self.include))


@dataclasses.dataclass
class Detection:
    """One detected object: its class, detector score, box (x0, y0, x1, y1) and, once classified, colour."""

    noun: str
    score: float
    box: tuple[float, float, float, float]
    colour: str | None = None


def singular(noun: str) -> str:
    if noun in IRREGULAR:
        return IRREGULAR[noun]
    head, _, last = noun.rpartition(" ")
    if last in IRREGULAR:
        return f"{head} {IRREGULAR[last]}".strip()
    for suffix, repl in (("ies", "y"), ("ches", "ch"), ("shes", "sh"), ("sses", "ss"), ("xes", "x"), ("s", "")):
        if noun.endswith(suffix) and not noun.endswith("ss"):
            return noun[: -len(suffix)] + repl
    return noun


def _phrase(text: str) -> Requirement:
    """``a red car`` / ``an apple`` / ``three cats`` -> a requirement."""
    words = text.split()
    if len(words) < 2:
        raise PromptError(f"cannot read {text!r}: want an article or a number, then [a colour] and an object")
    first, rest = words[0], words[1:]
    if first in ("a", "an"):
        count = 1
    elif first in NUMBERS:
        count = NUMBERS[first]
    elif first.isdigit():
        count = int(first)
    else:
        raise PromptError(f"cannot read {text!r}: it starts with {first!r}, not a, an or a number (two, three, ...)")
    colour = rest[0] if rest[0] in COLOURS and len(rest) > 1 else None
    noun = " ".join(rest[1:] if colour else rest)
    return Requirement(noun=singular(noun) if count > 1 else noun, count=count, colour=colour)


def parse(prompt: str) -> Spec:
    """A GenEval template prompt -> its requirements (PromptError naming what could not be read)."""
    text = re.sub(r"\s+", " ", prompt.strip().lower()).rstrip(".")
    m = re.fullmatch(r"a photo of (.+)", text)
    if not m:
        raise PromptError(f"not a GenEval prompt: {prompt!r} (want 'a photo of ...', e.g. 'a photo of two cats')")
    body = m.group(1)
    for rel in RELATIONS:
        parts = body.split(f" {rel} ")
        if len(parts) == 2:
            target, placed = _phrase(parts[1]), _phrase(parts[0])
            return Spec(include=(target, dataclasses.replace(placed, relation=rel, target=0)))
    parts = body.split(" and ")
    if len(parts) > 2:
        raise PromptError(f"not a GenEval prompt: {prompt!r} (at most two objects)")
    reqs = tuple(_phrase(p) for p in parts)
    exclude = tuple((r.noun, r.count + 1) for r in reqs if len(reqs) == 1 and r.count > 1)
    return Spec(include=reqs, exclude=exclude)


def relative_position(a: Detection, b: Detection) -> set[str]:
    """The relations of ``a`` to ``b`` (GenEval's rule; image y grows downwards)."""
    ca = ((a.box[0] + a.box[2]) / 2, (a.box[1] + a.box[3]) / 2)
    cb = ((b.box[0] + b.box[2]) / 2, (b.box[1] + b.box[3]) / 2)
    dims = [abs(a.box[2] - a.box[0]) + abs(b.box[2] - b.box[0]), abs(a.box[3] - a.box[1]) + abs(b.box[3] - b.box[1])]
    offset = [ca[0] - cb[0], ca[1] - cb[1]]
    revised = [max(abs(o) - POSITION_THRESHOLD * d, 0.0) * math.copysign(1.0, o) for o, d in zip(offset, dims)]
    if all(abs(r) < 1e-3 for r in revised):
        return set()
    norm = math.hypot(*offset)
    dx, dy = revised[0] / norm, revised[1] / norm
    return {rel for rel, hit in (("left of", dx < -0.5), ("right of", dx > 0.5), ("above", dy < -0.5),
                                 ("below", dy > 0.5)) if hit}


def check(spec: Spec, detections: list[Detection]) -> Verdict:
    """Every requirement of ``spec`` against the detections (colours already classified where asked)."""
    by_noun: dict[str, list[Detection]] = {}
    for d in sorted(detections, key=lambda d: -d.score):
        by_noun.setdefault(d.noun, []).append(d)
    met, failed, groups = [], [], []
    for req in spec.include:
        found = by_noun.get(req.noun, [])[: req.count]
        ok = len(found) >= req.count
        (met if ok else failed).append(f"{req.noun}: want {req.count}, found {len(by_noun.get(req.noun, []))}")
        if ok and req.colour:
            colours = [d.colour for d in found]
            ok = colours.count(req.colour) >= req.count
            seen = ", ".join(f"{colours.count(c)} {c}" for c in COLOURS if c in colours) or "none classified"
            (met if ok else failed).append(f"{req.words()}: colours found {seen}")
        if ok and req.relation:
            targets = groups[req.target]
            name = f"{req.noun} {req.relation} {spec.include[req.target].noun}"
            if targets is None:
                ok = False
                failed.append(f"{name}: no {spec.include[req.target].noun} to place it by")
            else:
                rels = [relative_position(d, t) for d in found for t in targets]
                ok = all(req.relation in r for r in rels)
                seen = " / ".join(" and ".join(sorted(r)) or "overlapping" for r in rels)
                (met if ok else failed).append(name + ("" if ok else f": found {seen}"))
        groups.append(found if ok else None)
    for noun, n in spec.exclude:
        have = len(by_noun.get(noun, []))
        (met if have < n else failed).append(f"{noun}: want fewer than {n}, found {have}")
    return Verdict(met, failed)
