"""Front-ends of human-preference search: they show a round's candidates and return the person's choice.

A front-end is a class with one method, ``present(round_, prompt, items, run_dir) -> Choice``, and
optionally ``start()`` (called before the first round: a page goes up) and ``finish(best_image=...,
run_dir=..., label=...)``; its class attributes ``name`` (written to the feedback log) and
``interactive`` (True when it asks on the console, so the loop draws no progress bar), and ``settings``
(optional, hashable: a front-end with the same class and settings already made in this process is
used instead, so a web page stays up across the jobs of a multirun). The strategy
(tts/search/human_preference.py) does everything else, so ``terminal``, ``web`` and ``scripted``
sessions behave identically. Each is a nested ``_target_`` config, ``search.frontend``, chosen with
``search/frontend=<name>`` (configs/search/frontend/<name>.yaml); a new front-end is one module here
plus one YAML there. Answers in text form (terminal input, script lines) share one grammar:

    3 5      pick candidates 3 and 5 (the order is a ranking: 3 preferred to 5)
    r        reject all of this round's candidates
    q        stop the session (everything so far is kept; a rerun of the folder resumes here)
    3 5 q    pick 3 and 5, then stop
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

ANSWER_HELP = "type numbers of the ones you like (best first), e.g. '3 5'; 'r' rejects all; 'q' stops"


@dataclasses.dataclass
class ShownItem:
    """One candidate as shown: its 1-based number, image, and the verifier's score (if any)."""

    number: int
    image: Path
    seed: int
    score: float | None
    metric: str | None
    explore: bool = False
    higher_is_better: bool = True  # the metric's direction


@dataclasses.dataclass
class Choice:
    """The person's answer: ``picks`` are 1-based numbers, best first."""

    picks: list[int]
    action: Literal["pick", "reject", "stop"]
    stop: bool = False


class AnswerError(ValueError):
    pass


def parse_answer(text: str, n: int) -> Choice:
    """Parse a typed answer for a round of ``n`` candidates; AnswerError with a hint if it is not one."""
    words = text.replace(",", " ").lower().split()
    if not words:
        raise AnswerError(f"empty answer: {ANSWER_HELP}")
    stop = words[-1] in ("q", "quit", "stop")
    if stop:
        words = words[:-1]
    if not words:
        return Choice([], "stop", True)
    if words == ["r"] or words == ["reject"]:
        return Choice([], "reject", stop)
    picks = []
    for w in words:
        if not w.isdigit():
            raise AnswerError(f"{w!r} is not a candidate number: {ANSWER_HELP}")
        k = int(w)
        if not 1 <= k <= n:
            raise AnswerError(f"{k} is out of range: candidates are numbered 1 to {n}; {ANSWER_HELP}")
        if k in picks:
            raise AnswerError(f"{k} is listed twice: {ANSWER_HELP}")
        picks.append(k)
    return Choice(picks, "pick", stop)


_LIVE: dict[tuple, object] = {}


def one_per_process(frontend):
    """The front-end of this class and ``settings`` made first in this process (``frontend`` itself if none)."""
    settings = getattr(frontend, "settings", None)
    if settings is None:
        return frontend
    return _LIVE.setdefault((type(frontend), settings), frontend)


def contact_sheet(items: list[ShownItem], tile: int = 160):
    """A numbered grid of the round's candidates (score under each; exploration ones marked), as a PIL image."""
    import math

    from PIL import Image, ImageDraw

    cols = min(4, len(items))
    rows = math.ceil(len(items) / cols)
    label_h = 18
    sheet = Image.new("RGB", (cols * tile, rows * (tile + label_h)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, item in enumerate(items):
        img = Image.open(item.image).convert("RGB")
        scale = tile / max(img.size)
        img = img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                         Image.Resampling.NEAREST if max(img.size) < tile else Image.Resampling.LANCZOS)
        x, y = (k % cols) * tile, (k // cols) * (tile + label_h)
        sheet.paste(img, (x, y))
        score = "" if item.score is None else f"  {item.score:.3g}"
        draw.rectangle((x, y, x + 26, y + 16), fill="black")
        draw.text((x + 4, y + 2), str(item.number), fill="white")
        draw.text((x + 4, y + tile + 3), f"#{item.number}{score}{'  (explore)' if item.explore else ''}", fill="black")
    return sheet
