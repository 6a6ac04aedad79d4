"""``tts-collage PATH [--grid]``: pictures of run folders (PATH is a run folder or any folder holding runs).

Per prompt, ``collages/<prompt stem>_rounds.png`` is a strip of each round's best candidate under the prompt
as title, each labelled ``round <r> · <score>`` and ``so far <global best up to that round>``; the run's best
(the first round to reach the top score) has a coloured frame and a ``best`` badge. With ``--grid``,
``collages/<prompt stem>_i@<round>_grid.png`` shows every candidate of each round ordered by score, at most
``--per-row`` (8) a row, each labelled ``#<rank> · <score>`` and its seed ``s@<seed>``.

A run folder is one with ``manifest.jsonl`` (tts: every candidate and score) or round JSONs named
``prompt@<name>_hash@<hash>_i@<round>[_s@<seed>].json`` (tt-scale-flux, and tts folders without a manifest).
From round JSONs alone only each round's best has a score: grids show it first, then the round's other
images (``<stem>_i@<round>_s@<seed>.png`` in the folder) unscored. An unreadable or missing image is skipped
with one warning line naming it.
"""
from __future__ import annotations

import argparse
import collections
import functools
import sys
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..core import runfolder as rf
from ..search import best_record

#: Round JSONs and candidate images as tts.core.runfolder reads them.
ROUND_JSON, IMAGE = rf.ROUND_JSON_FILE, rf.IMAGE

ACCENT = (213, 94, 0)  # vermillion (Okabe-Ito palette: distinct under colour-blindness)
INK, GREY, PAPER = (20, 20, 20), (110, 110, 110), (255, 255, 255)
MARGIN, GAP, FRAME, PAD = 12, 10, 4, 3
MIN_WIDTH = 360
MAX_TITLE_LINES = 4


#: One image of a run (its file, round, seed, score; index and in-loop lineage): tts.core.runfolder's.
Candidate = rf.Candidate


@dataclass
class PromptRun:
    """One prompt's candidates in one run folder, by round."""

    prompt: str
    stem: str
    metric: str
    rounds: dict[int, list[Candidate]] = field(default_factory=lambda: collections.defaultdict(list))
    sign: float = 1.0  # 1: a higher score is better; -1: the verifier declares the metric lower-is-better

    def bests(self) -> dict[int, Candidate]:
        """Each round's best scored candidate."""
        out = {}
        for k in sorted(self.rounds):
            top = best_record(self.rounds[k], self.sign > 0)
            if top is not None:
                out[k] = top
        return out

    def ranked(self, round_: int) -> list[Candidate]:
        """A round's candidates by score, best first; unscored ones last, by file name."""
        cands = self.rounds[round_]
        scored = sorted((c for c in cands if c.score is not None), key=lambda c: (-self.sign * c.score, c.index))
        return scored + sorted((c for c in cands if c.score is None), key=lambda c: c.image.name)


@dataclass(frozen=True)
class Tile:
    """What one tile shows: an image, a label line, a grey note line, and whether it is marked best."""

    image: Path
    label: str
    note: str = ""
    best: bool = False


@dataclass(frozen=True)
class Placed:
    """Where a tile goes: the image box, its frame, label and note origins, the badge box (best only)."""

    tile: Tile
    box: tuple[int, int, int, int]
    frame: tuple[int, int, int, int]
    label_at: tuple[int, int]
    note_at: tuple[int, int]
    badge: tuple[int, int, int, int] | None


@dataclass(frozen=True)
class Layout:
    """A collage's geometry: canvas size, title and subtitle lines with origins, placed tiles."""

    size: tuple[int, int]
    title: list[tuple[str, tuple[int, int]]]
    subtitle: tuple[str, tuple[int, int]] | None
    tiles: list[Placed]


@dataclass(frozen=True)
class Fonts:
    """The title, label and note fonts."""

    title: ImageFont.ImageFont
    label: ImageFont.ImageFont
    note: ImageFont.ImageFont


def _font(size: int, bold: bool = False):
    """DejaVu Sans where installed (wide coverage), else Pillow's Aileron (Pillow >= 10.1), else its bitmap font."""
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf", size)
    except OSError:
        pass
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


@functools.lru_cache(maxsize=1)
def fonts() -> Fonts:
    return Fonts(title=_font(18, bold=True), label=_font(15), note=_font(13))


def _text(font, text: str) -> str:
    """Text a font can draw: Pillow's bitmap font takes Latin-1 only."""
    if isinstance(font, ImageFont.FreeTypeFont):
        return text
    return text.encode("latin-1", "replace").decode("latin-1")


def _width(font, text: str) -> int:
    return int(font.getlength(_text(font, text)))


def _height(font) -> int:
    return font.getbbox("Ag")[3]


def wrap(text: str, font, width: int, max_lines: int = MAX_TITLE_LINES) -> list[str]:
    """``text`` broken at spaces into lines at most ``width`` px wide; a longer word is cut; a cut-off end: ``...``."""
    lines: list[str] = []
    for word in text.split():
        if lines and _width(font, f"{lines[-1]} {word}") <= width:
            lines[-1] = f"{lines[-1]} {word}"
            continue
        while len(word) > 1 and _width(font, word) > width:
            cut = len(word) - 1
            while cut > 1 and _width(font, word[:cut]) > width:
                cut -= 1
            lines.append(word[:cut])
            word = word[cut:]
        lines.append(word)
    if len(lines) > max_lines:
        last = lines[max_lines - 1]
        while last and _width(font, last + " ...") > width:
            last = last[:-1]
        lines = lines[:max_lines - 1] + [last.rstrip() + " ..."]
    return lines or [""]


def layout(title: str, subtitle: str, tiles: list[Tile], side: int, per_row: int = 8,
           fonts_: Fonts | None = None) -> Layout:
    """Place a wrapped title, a subtitle, and ``tiles`` (images ``side`` px square) in rows of ``per_row``."""
    f = fonts_ or fonts()
    label_h, note_h, title_h = _height(f.label) + PAD, _height(f.note) + PAD, _height(f.title) + PAD
    text_w = max(max(_width(f.label, t.label), _width(f.note, t.note)) for t in tiles) + GAP  # labels apart
    col_w = max(side + 2 * FRAME, text_w)
    cols = max(1, min(per_row, len(tiles)))
    width = max(MIN_WIDTH, 2 * MARGIN + cols * col_w + (cols - 1) * GAP)
    lines = wrap(title, f.title, width - 2 * MARGIN)
    y = MARGIN
    placed_title = []
    for line in lines:
        placed_title.append((line, (MARGIN, y)))
        y += title_h
    placed_sub = None
    if subtitle:
        placed_sub = (subtitle, (MARGIN, y))
        y += note_h
    y += GAP
    row_h = side + 2 * FRAME + PAD + label_h + (note_h if any(t.note for t in tiles) else 0)
    placed = []
    for n, t in enumerate(tiles):
        r, c = divmod(n, cols)
        x0, y0 = MARGIN + c * (col_w + GAP), y + r * (row_h + GAP)
        frame = (x0, y0, x0 + side + 2 * FRAME, y0 + side + 2 * FRAME)
        box = (x0 + FRAME, y0 + FRAME, x0 + FRAME + side, y0 + FRAME + side)
        label_at = (x0 + FRAME, frame[3] + PAD)
        note_at = (x0 + FRAME, label_at[1] + label_h)
        badge = None
        if t.best:
            bw, bh = _width(f.note, "best") + 2 * PAD + 4, _height(f.note) + 2 * PAD
            badge = (box[0], box[1], box[0] + bw, box[1] + bh)
        placed.append(Placed(t, box, frame, label_at, note_at, badge))
    rows = -(-len(tiles) // cols)
    height = y + rows * row_h + max(0, rows - 1) * GAP + MARGIN
    return Layout((width, height), placed_title, placed_sub, placed)


def render(lay: Layout, thumbs: dict[Path, Image.Image], fonts_: Fonts | None = None) -> Image.Image:
    """Draw a layout with its tiles' images, already scaled to the tile side."""
    f = fonts_ or fonts()
    out = Image.new("RGB", lay.size, PAPER)
    draw = ImageDraw.Draw(out)
    for line, at in lay.title:
        draw.text(at, _text(f.title, line), font=f.title, fill=INK)
    if lay.subtitle:
        draw.text(lay.subtitle[1], _text(f.note, lay.subtitle[0]), font=f.note, fill=GREY)
    for p in lay.tiles:
        if p.tile.best:
            draw.rectangle(p.frame, fill=ACCENT)
        out.paste(thumbs[p.tile.image], p.box[:2])
        draw.text(p.label_at, _text(f.label, p.tile.label), font=f.label, fill=ACCENT if p.tile.best else INK)
        if p.tile.note:
            draw.text(p.note_at, _text(f.note, p.tile.note), font=f.note, fill=GREY)
        if p.badge:
            draw.rectangle(p.badge, fill=ACCENT)
            draw.text((p.badge[0] + PAD + 2, p.badge[1] + PAD), _text(f.note, "best"), font=f.note, fill=PAPER)
    return out


def _fit(image: Image.Image, side: int) -> Image.Image:
    """The image scaled to ``side`` px square: pixel-exact when enlarging by a whole factor, else Lanczos; an image
    that is not square (a video's keyframe strip) keeps its aspect, centred on white."""
    big = max(image.size)
    resample = Image.NEAREST if side > big and side % big == 0 else Image.LANCZOS
    w, h = image.size
    if w == h:
        return image.resize((side, side), resample)
    fitted = image.resize((max(1, round(w * side / big)), max(1, round(h * side / big))), Image.LANCZOS)
    tile = Image.new("RGB", (side, side), "white")
    tile.paste(fitted, ((side - fitted.width) // 2, (side - fitted.height) // 2))
    return tile


def load_image(path: Path) -> Image.Image | None:
    """The image as RGB, or None after one warning line on stderr naming the file."""
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        detail = str(e).replace(f"'{path}'", "").replace(str(path), "").strip(" :")
        reason = "missing" if isinstance(e, FileNotFoundError) else f"not a readable image: {detail}"
        print(f"tts-collage: warning: skipped {path} ({reason})", file=sys.stderr)
        return None


class Thumbnails:
    """Images scaled to one tile side, each file read (and, if unreadable, warned about) once."""

    def __init__(self, side: int):
        self.side = side
        self._cache: dict[Path, Image.Image | None] = {}

    def get(self, path: Path) -> Image.Image | None:
        if path not in self._cache:
            image = load_image(path)
            self._cache[path] = None if image is None else _fit(image, self.side)
        return self._cache[path]


def collage(title: str, subtitle: str, tiles: list[Tile], thumbs: Thumbnails, per_row: int = 8) -> Image.Image | None:
    """A collage of the tiles whose image reads; None when none does."""
    tiles = [t for t in tiles if thumbs.get(t.image) is not None]
    if not tiles:
        return None
    return render(layout(title, subtitle, tiles, thumbs.side, per_row), {t.image: thumbs.get(t.image) for t in tiles})


def fmt(score: float) -> str:
    """A score in a few characters: two decimals in the usual ranges, else three significant digits."""
    return f"{score:.2f}" if score == 0 or 0.01 <= abs(score) < 1e4 else f"{score:.3g}"


def strip_tiles(run: PromptRun) -> tuple[list[Tile], str]:
    """Each round's best with the best so far; the run's best (first to reach the top score) marked; a subtitle."""
    bests = run.bests()
    if not bests:
        return [], ""
    top = best_record(bests.values(), run.sign > 0)
    top_round = top.round
    tiles, so_far = [], None
    for k, c in bests.items():
        so_far = c.score if so_far is None else max(so_far, c.score, key=lambda s: run.sign * s)
        tiles.append(Tile(c.image, f"round {k} · {fmt(c.score)}", f"so far {fmt(so_far)}", best=k == top_round))
    return tiles, f"{run.metric} · best {fmt(top.score)} in round {top_round} of {len(bests)}"


def grid_tiles(run: PromptRun, round_: int) -> tuple[list[Tile], str]:
    """A round's candidates by score with rank and seed; the run's best marked if it is in this round."""
    bests = run.bests()
    top = top_round = None
    if bests:
        top_score = max(c.score for c in bests.values())
        top_round = min(k for k, c in bests.items() if c.score == top_score)
        top = bests[top_round]
    tiles = []
    for n, c in enumerate(run.ranked(round_), 1):
        label = f"#{n} · {fmt(c.score)}" if c.score is not None else "not scored"
        tiles.append(Tile(c.image, label, c.lineage or f"s@{c.seed}", best=c == top))
    cands = run.rounds[round_]
    unscored = sum(c.score is None for c in cands)
    sub = f"round {round_} of {len(run.rounds)} · {len(cands)} candidates by {run.metric}"
    if top is not None:
        sub += f" · run best {fmt(top.score)} in round {top_round}"
    if unscored:
        sub += f" · {unscored} not scored (no manifest)"
    return tiles, sub


def find_runs(path: Path) -> list[Path]:
    """Folders under ``path`` (itself included) with a manifest or round JSONs (tts.core.runfolder.find_runs)."""
    return rf.find_runs(path)


def read_manifest_run(run: Path, data: rf.RunData | None = None) -> list[PromptRun]:
    """Every verified candidate of a tts run folder, per prompt."""
    by_prompt: dict[str, PromptRun] = {}
    for r in (data or rf.read_run(run, warn=warn)).records:
        image = rf.run_file(run, r.image)
        if r.status != "ok" or image is None:  # a record naming a file outside the run folder is not drawn
            continue
        pr = by_prompt.setdefault(r.prompt, PromptRun(r.prompt, rf.prompt_stem(r.prompt), r.choice_of_metric,
                                                      sign=direction(run, r.choice_of_metric)))
        pr.rounds[r.round].append(Candidate(image, r.round, r.seed, r.score, r.index, _lineage(r.path)))
    return list(by_prompt.values())


def _lineage(path) -> str | None:
    """An in-loop candidate's label: its particle, and the particle it was copied from when it was resampled."""
    if path is None:
        return None
    return f"p{path.particle}" + (f" from p{path.parent}" if path.parent not in (None, path.particle) else "")


def read_round_jsons(run: Path) -> list[PromptRun]:
    """A folder's round JSONs (each round's best, scored) plus its other candidate images (unscored), per prompt."""
    return [PromptRun(p.prompt, p.stem, p.metric, p.rounds) for p in rf.read_round_jsons(run, warn)]


def direction(run: Path, metric: str) -> float:
    """-1 when the run's verifier (config.json's ``verifier._target_``) declares ``metric`` lower-is-better, else 1."""
    return rf.metric_direction(run, metric)


def read_run(run: Path) -> list[PromptRun]:
    """A run folder's prompts: from its manifest when there is one (every candidate), else its round JSONs."""
    return read_manifest_run(run) if rf.has_manifest(run) else read_round_jsons(run)


def warn(message: str) -> None:
    print(f"tts-collage: warning: {message}", file=sys.stderr)


def collage_run(run: Path, grid: bool = False, size: int = 160, per_row: int = 8) -> list[Path]:
    """Write the collages of one run folder; return their paths."""
    run = Path(run)
    thumbs = Thumbnails(size)
    written = []
    for pr in read_run(run):
        jobs = [(f"{pr.stem}_rounds.png", strip_tiles(pr))]
        if grid:
            jobs += [(f"{pr.stem}_i@{k}_grid.png", grid_tiles(pr, k)) for k in sorted(pr.rounds)]
        for name, (tiles, subtitle) in jobs:
            image = collage(pr.prompt, subtitle, tiles, thumbs, per_row) if tiles else None
            if image is None:
                continue
            (run / "collages").mkdir(exist_ok=True)
            rf.save_image(run / "collages" / name, image)
            written.append(run / "collages" / name)
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="tts-collage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="a run folder, or a folder holding run folders")
    p.add_argument("--grid", action="store_true", help="also one image per round with all candidates by score")
    p.add_argument("--size", type=int, default=160, help="tile side in pixels (default 160)")
    p.add_argument("--per-row", type=int, default=8, help="tiles per row at most (default 8)")
    args = p.parse_args(argv)
    if args.size < 8 or args.per_row < 1:
        p.error("--size must be at least 8 and --per-row at least 1")
    runs = find_runs(args.path)
    if not runs:
        p.error(f"no run folder (with {rf.MANIFEST} or round JSONs prompt@..._i@<round>_s@<seed>.json) "
                f"under {args.path}")
    for run in runs:
        try:
            paths = collage_run(run, args.grid, args.size, args.per_row)
        except (RuntimeError, ValueError) as e:  # a manifest from a newer tts, or not a manifest
            print(f"tts-collage: warning: skipped {run}: {str(e).splitlines()[0]}", file=sys.stderr)
            continue
        if not paths:
            print(f"tts-collage: warning: {run}: nothing to draw (no scored candidate with a readable image)",
                  file=sys.stderr)
        for path in paths:
            print(path)


if __name__ == "__main__":
    main()
