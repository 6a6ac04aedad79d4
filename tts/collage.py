"""``tts-collage PATH [--grid]``: pictures of run folders (PATH is a run folder or any folder holding runs).

Per prompt, ``collages/<prompt stem>_rounds.png`` is a strip of each round's best candidate labelled
``i=<round>`` and its score (the reference project's ``process_results.py`` layout); with ``--grid``,
``collages/<prompt stem>_i@<round>_grid.png`` shows all candidates of each round ordered by score.
"""
from __future__ import annotations

import argparse
import collections
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from . import runfolder as rf

LABEL_H = 14


def find_runs(path: Path) -> list[Path]:
    return sorted({p.parent for p in Path(path).rglob(rf.MANIFEST)})


def _tile(image: Image.Image, label: str, size: int) -> Image.Image:
    scale = max(1, size // max(image.size))
    resample = Image.NEAREST if scale > 1 else Image.LANCZOS
    body = image.resize((size, size), resample)
    tile = Image.new("RGB", (size, size + LABEL_H), "white")
    tile.paste(body, (0, LABEL_H))
    ImageDraw.Draw(tile).text((2, 1), label, fill="black", font=ImageFont.load_default())
    return tile


def _row(tiles: list[Image.Image]) -> Image.Image:
    out = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), tiles[0].height), "white")
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + 2
    return out


def collage_run(run: Path, grid: bool = False, size: int = 160) -> list[Path]:
    """Write the collages of one run folder; return their paths."""
    by_prompt = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rf.final_records(rf.read_manifest(run)):
        if r.status == "ok":
            by_prompt[r.prompt][r.round].append(r)
    out_dir = run / "collages"
    out_dir.mkdir(exist_ok=True)
    written = []
    for prompt, rounds in by_prompt.items():
        stem = rf.prompt_stem(prompt)
        best = [max(rounds[k], key=lambda r: r.score) for k in sorted(rounds)]
        strip = _row([_tile(Image.open(run / r.image), f"i={r.round} {r.score:.3g}", size) for r in best])
        path = out_dir / f"{stem}_rounds.png"
        rf.save_image(path, strip)
        written.append(path)
        if grid:
            for k in sorted(rounds):
                ranked = sorted(rounds[k], key=lambda r: -r.score)
                tiles = [_tile(Image.open(run / r.image), f"#{n + 1} {r.score:.3g}", size) for n, r in enumerate(ranked)]
                path = out_dir / f"{stem}_i@{k}_grid.png"
                rf.save_image(path, _row(tiles))
                written.append(path)
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="tts-collage", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="a run folder, or a folder holding run folders")
    p.add_argument("--grid", action="store_true", help="also one image per round with all candidates by score")
    p.add_argument("--size", type=int, default=160, help="tile side in pixels (default 160)")
    args = p.parse_args(argv)
    runs = find_runs(args.path)
    if not runs:
        p.error(f"no run folder (with {rf.MANIFEST}) under {args.path}")
    for run in runs:
        for path in collage_run(run, args.grid, args.size):
            print(path)


if __name__ == "__main__":
    main()
