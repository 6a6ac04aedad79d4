"""The grammar of the shapes world: which prompts belong to it, and what each one asks for.

The world is a miniature compositional text-to-image benchmark in the spirit of GenEval
(Ghosh et al. 2023): coloured circles, squares and triangles on a plain background, described by
prompts such as ``two small red circles and a blue triangle`` or ``a big cyan square left of a
yellow circle``.

Grammar (tokens are lower-case words; ``,`` is its own token)::

    prompt    := phrase                                  # one group
               | phrase " and " phrase                   # two groups
               | phrase ", " phrase " and " phrase       # three groups
               | single RELATION single                  # two single objects in a relation
    phrase    := COUNT [SIZE] [COLOUR] SHAPE             # COUNT a/an/one -> singular shape,
                                                         # two/three/four -> plural (shape + "s")
    single    := ("a" | "an") [SIZE] [COLOUR] SHAPE
    COUNT     := a | an | one | two | three | four
    SIZE      := big | small
    COLOUR    := red | green | blue | yellow | purple | cyan
    SHAPE     := circle | square | triangle
    RELATION  := left of | right of | above | below

At most 4 objects in all. A scene *satisfies* a prompt when, for every phrase, exactly COUNT
objects match its shape (and colour, and size, where given), there are no other objects, and for a
relation prompt the first object's centre lies on the named side of the second's.
"""
from __future__ import annotations

import dataclasses
import re

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 225),
    "yellow": (235, 205, 40),
    "purple": (150, 60, 190),
    "cyan": (40, 200, 210),
}
SHAPES = ("circle", "square", "triangle")
SIZES = ("big", "small")
COUNTS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4}
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four"}
RELATIONS = ("left of", "right of", "above", "below")
MAX_OBJECTS = 4

GRAMMAR = __doc__.split("Grammar", 1)[1].split("At most", 1)[0].strip(" :\n")

#: Colour-shape pairs never drawn in training scenes (generalisation to new combinations).
HELD_OUT_PAIRS = frozenset({("purple", "triangle"), ("cyan", "square"), ("yellow", "circle")})
#: Relation triples (shape, relation, shape) never captioned in training.
HELD_OUT_RELATIONS = frozenset({("triangle", "above", "circle"), ("square", "right of", "triangle")})

VOCAB = sorted(
    {"a", "an", "and", ",", "of", "left", "right", "above", "below"}
    | set(COUNTS) | set(SIZES) | set(COLOURS) | set(SHAPES) | {s + "s" for s in SHAPES}
)


class PromptError(ValueError):
    """A prompt that is not in the shapes world's grammar."""

    def __init__(self, prompt: str, reason: str):
        super().__init__(
            f"prompt {prompt!r} is not in the shapes world: {reason}.\n"
            f"The world's grammar:\n{GRAMMAR}\n"
            "Write the prompt in this grammar, or, for free text, choose a general verifier (verifier=clip, "
            "pickscore, gemini, openai, qwen) and a general pipeline (e.g. pipeline=sd-turbo)"
        )


@dataclasses.dataclass(frozen=True)
class Group:
    """COUNT objects of one kind: a shape, optionally with a colour and a size."""

    count: int
    shape: str
    colour: str | None = None
    size: str | None = None

    def matches(self, obj) -> bool:
        return (
            obj.shape == self.shape
            and (self.colour is None or obj.colour == self.colour)
            and (self.size is None or obj.size == self.size)
        )

    def words(self, article: bool = True) -> str:
        words = [("an" if self.size is None and self.colour is None and self.shape[0] in "aeiou" else "a")
                 if self.count == 1 and article else NUMBER_WORDS[self.count]]
        words += [w for w in (self.size, self.colour) if w]
        words.append(self.shape + ("s" if self.count > 1 else ""))
        return " ".join(words)


@dataclasses.dataclass(frozen=True)
class PromptSpec:
    """What a prompt asks for: its groups and an optional relation between groups 0 and 1."""

    groups: tuple[Group, ...]
    relation: str | None = None

    @property
    def n_objects(self) -> int:
        return sum(g.count for g in self.groups)

    def text(self) -> str:
        if self.relation:
            return f"{self.groups[0].words()} {self.relation} {self.groups[1].words()}"
        phrases = [g.words() for g in self.groups]
        if len(phrases) == 1:
            return phrases[0]
        return ", ".join(phrases[:-1]) + " and " + phrases[-1]


def tokenize(prompt: str) -> list[str]:
    return re.sub(r",", " , ", prompt.lower().strip().rstrip(".")).split()


def _parse_phrase(prompt: str, words: list[str]) -> Group:
    if not words:
        raise PromptError(prompt, "an empty object phrase")
    if words[0] not in COUNTS:
        raise PromptError(prompt, f"a phrase must start with a count ({', '.join(COUNTS)}), got {words[0]!r}")
    count, rest = COUNTS[words[0]], words[1:]
    size = rest.pop(0) if rest and rest[0] in SIZES else None
    colour = rest.pop(0) if rest and rest[0] in COLOURS else None
    if len(rest) != 1:
        raise PromptError(prompt, f"cannot read the object phrase {' '.join(words)!r}")
    noun = rest[0]
    shape = noun[:-1] if count > 1 else noun
    if shape not in SHAPES or (count > 1) != noun.endswith("s"):
        want = shape + "s" if count > 1 else shape
        raise PromptError(prompt, f"expected a shape ({', '.join(SHAPES)}) agreeing with the count, e.g. {want!r}, got {noun!r}")
    return Group(count=count, shape=shape, colour=colour, size=size)


def parse(prompt: str) -> PromptSpec:
    """Parse a prompt of the world's grammar into a :class:`PromptSpec`; raise PromptError if it is not one."""
    words = tokenize(prompt)
    joined = " ".join(words)
    for rel in RELATIONS:
        marker = f" {rel} "
        if marker in f" {joined} ":
            left, right = (f" {joined} ").split(marker, 1)
            a, b = _parse_phrase(prompt, left.split()), _parse_phrase(prompt, right.split())
            if a.count != 1 or b.count != 1:
                raise PromptError(prompt, "a relation links two single objects ('a ... left of a ...')")
            return PromptSpec(groups=(a, b), relation=rel)
    phrases, current = [], []
    for w in words:
        if w in (",", "and"):
            phrases.append(current)
            current = []
        else:
            current.append(w)
    phrases.append(current)
    if len(phrases) > 3:
        raise PromptError(prompt, "at most three object phrases")
    if len(phrases) == 3 and (words.count(",") != 1 or words.count("and") != 1):
        raise PromptError(prompt, "three phrases are written 'X, Y and Z'")
    if len(phrases) == 2 and "and" not in words:
        raise PromptError(prompt, "two phrases are joined with 'and'")
    spec = PromptSpec(groups=tuple(_parse_phrase(prompt, p) for p in phrases))
    if spec.n_objects > MAX_OBJECTS:
        raise PromptError(prompt, f"at most {MAX_OBJECTS} objects in all, asked for {spec.n_objects}")
    return spec


def is_held_out(spec: PromptSpec) -> bool:
    """True if the prompt names a held-out colour-shape pair or relation triple (never seen in training)."""
    if any((g.colour, g.shape) in HELD_OUT_PAIRS for g in spec.groups):
        return True
    return bool(spec.relation) and (spec.groups[0].shape, spec.relation, spec.groups[1].shape) in HELD_OUT_RELATIONS
