"""tts-collage: strips and grids that read at a glance, from tts run folders (manifest, old and new round JSON
names) and from tt-scale-flux output folders; unreadable images skipped with one warning."""
import hashlib
import json
import re
from pathlib import Path

import pytest
from conftest import run_tts
from PIL import Image, ImageFont

from tts.views import collage as tc
from tts.core import runfolder as rf
from tts.core.records import CandidateRecord

PROMPT = "a tiny astronaut hatching from an egg on the moon"
COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 200), (220, 200, 40), (150, 40, 160), (40, 190, 190),
           (120, 80, 30), (90, 90, 90), (250, 140, 0), (0, 0, 0), (255, 120, 200), (60, 120, 60),
           (200, 200, 200), (10, 40, 90), (170, 0, 60), (100, 160, 240)]


def tt_stem(prompt: str) -> str:
    """tt-scale-flux's file stem, built by hand: prompt@<sanitised>_hash@<sha256[:8]>."""
    name = re.sub(r"_+", "_", re.sub(r"[^a-zA-Z0-9]", "_", prompt.strip()))
    return f"prompt@{name}_hash@{hashlib.sha256(prompt.encode()).hexdigest()[:8]}"


def png(path: Path, colour, side: int = 24) -> Path:
    Image.new("RGB", (side, side), colour).save(path)
    return path


def tt_scale_flux_folder(root: Path, scores=(6.0, 8.0, 7.0), side: int = 24) -> tuple[Path, dict[int, tuple]]:
    """A tt-scale-flux output folder: round r has 2**r images, and one JSON named after the round's best image,
    whose best_img_path is relative to the working directory of that run. Returns the folder and each round's
    best colour."""
    folder = root / "output" / "flux" / "gemini" / "overall_score" / "2025-01-20_12-00-00"
    folder.mkdir(parents=True)
    stem, best_colour, seed = tt_stem(PROMPT), {}, 100
    for r, score in enumerate(scores, 1):
        names = []
        for n in range(2 ** r):
            seed += 1
            names.append(png(folder / f"{stem}_i@{r}_s@{seed}.png", COLOURS[(r + n) % len(COLOURS)], side).name)
        best = names[-1]
        best_colour[r] = COLOURS[(r + 2 ** r - 1) % len(COLOURS)]
        best_seed = int(re.search(r"_s@(\d+)\.png", best).group(1))
        doc = {"prompt": PROMPT, "search_round": r, "num_noises": 2 ** r, "best_noise_seed": best_seed,
               "best_score": {"explanation": "fine", "score": score}, "choice_of_metric": "overall_score",
               "best_img_path": f"output/flux/gemini/overall_score/2025-01-20_12-00-00/{best}"}
        (folder / best.replace(".png", ".json")).write_text(json.dumps(doc, indent=4))
    (folder / "config.json").write_text("{}")
    return folder, best_colour


def tts_folder(root: Path, prompt: str = "a red circle", rounds=((0.5, 0.25), (0.75, 0.5, 0.25, 0.0))) -> Path:
    """A tts run folder written as tts writes it: images, manifest records, round JSONs (the new names)."""
    root.mkdir(parents=True, exist_ok=True)
    n = 0
    for r, scores in enumerate(rounds, 1):
        for i, score in enumerate(scores):
            n += 1
            name = rf.image_name(prompt, r, 1000 + n)
            png(root / name, COLOURS[n % len(COLOURS)])
            rf.append_line(root / rf.MANIFEST, CandidateRecord(
                prompt=prompt, prompt_index=0, prompt_hash=rf.prompt_hash(prompt), round=r, index=i, seed=1000 + n,
                noise={"kind": "fresh", "seed": 1000 + n}, nfe=10, status="ok", verifier="shapes",
                choice_of_metric="criteria_met", score=score, image=name).model_dump_json())
        best = rf.image_name(prompt, r, 1000 + n - len(scores) + 1)
        (root / f"{best[:-4]}.json").write_text(json.dumps({
            "prompt": prompt, "search_round": r, "num_noises": len(scores), "best_noise_seed": 0,
            "best_score": {"explanation": None, "score": max(scores)}, "choice_of_metric": "criteria_met",
            "best_img_path": best}))
    return root


def pixel(image: Image.Image, box) -> tuple:
    return image.getpixel(((box[0] + box[2]) // 2, (box[1] + box[3]) // 2))


def test_tt_scale_flux_folder_one_tile_per_round_best_marked(tmp_path, capsys):
    folder, colours = tt_scale_flux_folder(tmp_path)
    tc.main([str(tmp_path / "output"), "--size", "48"])
    out, err = capsys.readouterr()
    strip = folder / "collages" / f"{tt_stem(PROMPT)}_rounds.png"
    assert out.split() == [str(strip)] and err == ""
    (run,) = tc.read_run(folder)
    assert run.prompt == PROMPT and run.metric == "overall_score"
    tiles, subtitle = tc.strip_tiles(run)
    assert [t.label for t in tiles] == ["round 1 · 6.00", "round 2 · 8.00", "round 3 · 7.00"]
    assert [t.note for t in tiles] == ["so far 6.00", "so far 8.00", "so far 8.00"]  # round 3 is no regression
    assert [t.best for t in tiles] == [False, True, False]
    assert subtitle == "overall_score · best 8.00 in round 2 of 3"
    lay = tc.layout(PROMPT, subtitle, tiles, 48)
    image = Image.open(strip).convert("RGB")
    assert image.size == lay.size
    for r, placed in enumerate(lay.tiles, 1):
        assert pixel(image, placed.box) == colours[r]  # each round's best image, resolved by file name
        corner = image.getpixel((placed.frame[0] + 1, placed.frame[3] - 2))  # the frame, below the badge
        assert corner == (tc.ACCENT if r == 2 else tc.PAPER)
    badge = image.crop(lay.tiles[1].badge).getdata()
    assert sum(p == tc.ACCENT for p in badge) > len(badge) / 2  # the "best" badge on round 2's image
    assert ink(image, (0, 0, image.width, lay.tiles[0].frame[1])) > 200  # a title was drawn above the tiles


def ink(image: Image.Image, box) -> int:
    """Dark pixels in a box."""
    return sum(1 for p in image.crop(box).getdata() if sum(p) < 300)


def test_tt_scale_flux_grid_shows_the_round_best_first_then_the_other_images_unscored(tmp_path, capsys):
    folder, colours = tt_scale_flux_folder(tmp_path)
    tc.main([str(folder), "--grid", "--size", "32"])
    grids = sorted(p for p in capsys.readouterr().out.split() if p.endswith("_grid.png"))
    assert [re.search(r"_i@(\d)_grid", g).group(1) for g in grids] == ["1", "2", "3"]
    (run,) = tc.read_run(folder)
    tiles, subtitle = tc.grid_tiles(run, 3)
    assert len(tiles) == 8 and tiles[0].label == "#1 · 7.00" and not tiles[0].best
    assert all(t.label == "not scored" and t.note.startswith("s@") for t in tiles[1:])
    assert "7 not scored (no manifest)" in subtitle
    image = Image.open(grids[2]).convert("RGB")
    lay = tc.layout(PROMPT, subtitle, tiles, 32)
    assert image.size == lay.size and pixel(image, lay.tiles[0].box) == colours[3]


def test_old_and_new_tts_round_json_names_are_read(tmp_path):
    stem = rf.prompt_stem(PROMPT)
    png(tmp_path / f"{stem}_i@1_s@5.png", COLOURS[0])
    png(tmp_path / f"{stem}_i@2_s@7.png", COLOURS[1])
    png(tmp_path / f"{stem}_i@2_s@8.png", COLOURS[2])
    doc = {"prompt": PROMPT, "num_noises": 1, "best_score": {"explanation": None, "score": 0.5},
           "choice_of_metric": "criteria_met"}
    old = dict(doc, search_round=1, best_noise_seed=5, best_img_path=f"/elsewhere/run/{stem}_i@1_s@5.png")
    new = dict(doc, search_round=2, best_noise_seed=7, best_img_path=f"{stem}_i@2_s@7.png")
    (tmp_path / f"{stem}_i@1.json").write_text(json.dumps(old))  # tts before the rename: absolute path
    (tmp_path / f"{stem}_i@2_s@7.json").write_text(json.dumps(new))  # tts now: the image's name
    assert tc.find_runs(tmp_path) == [tmp_path]
    (run,) = tc.read_run(tmp_path)
    assert {k: c.image.name for k, c in run.bests().items()} == {1: f"{stem}_i@1_s@5.png", 2: f"{stem}_i@2_s@7.png"}
    assert [t.best for t in tc.strip_tiles(run)[0]] == [True, False]  # a tie: the first round to reach it
    assert len(tc.collage_run(tmp_path, grid=True, size=16)) == 3


def test_a_corrupt_or_missing_png_is_skipped_with_one_warning(tmp_path, capsys):
    run = tts_folder(tmp_path / "run")
    records = rf.read_manifest(run)
    corrupt = run / records[2].image  # round 2's best
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n this is not a png")
    missing = run / records[5].image
    missing.unlink()
    tc.main([str(run), "--grid", "--size", "32"])
    out, err = capsys.readouterr()
    assert len(out.split()) == 3  # the strip (round 1 only) and both grids
    lines = err.splitlines()
    assert len(lines) == 2 and str(corrupt) in lines[0] and "not a readable image" in lines[0]
    assert str(missing) in lines[1] and "missing" in lines[1]
    (pr,) = tc.read_run(run)
    assert len(pr.rounds[2]) == 4 and all(c.score is not None for c in pr.rounds[2])  # the manifest wins
    grid = Image.open(run / "collages" / f"{rf.prompt_stem('a red circle')}_i@2_grid.png")
    tiles = [t for t in tc.grid_tiles(pr, 2)[0] if t.image not in (corrupt, missing)]
    assert grid.size == tc.layout("a red circle", "x", tiles, 32).size


def test_labels_never_run_together_even_on_small_tiles(tmp_path):
    tiles = [tc.Tile(tmp_path / f"{n}.png", f"round {n} · 0.50", "so far 0.50") for n in range(1, 12)]
    lay = tc.layout("p", "", tiles, side=16, per_row=8)
    f = tc.fonts()
    assert f.label.size >= 14  # readable (a FreeType font, not the 11 px bitmap one)
    row = [p for p in lay.tiles if p.label_at[1] == lay.tiles[0].label_at[1]]
    assert len(row) == 8
    for a, b in zip(row, row[1:]):
        assert a.label_at[0] + f.label.getlength(a.tile.label) < b.label_at[0]


def test_grid_wraps_into_rows_and_the_title_wraps(tmp_path):
    tiles = [tc.Tile(tmp_path / f"{n}.png", f"#{n} · 0.25", "s@123") for n in range(20)]
    title = "a photograph of a very long prompt " * 12
    lay = tc.layout(title, "sub", tiles, side=64, per_row=8)
    assert len({p.box[1] for p in lay.tiles}) == 3 and len({p.box[0] for p in lay.tiles}) == 8
    assert lay.tiles[8].box[0] == lay.tiles[0].box[0]
    assert lay.size[0] < 10 * (64 + 2 * tc.FRAME + tc.GAP)  # not 20 tiles in one row
    assert 1 < len(lay.title) <= tc.MAX_TITLE_LINES and lay.title[-1][0].endswith("...")
    f = tc.fonts()
    assert all(f.title.getlength(line) <= lay.size[0] - 2 * tc.MARGIN for line, _ in lay.title)


def test_without_freetype_fonts_it_falls_back_to_the_bitmap_font(tmp_path, monkeypatch):
    def truetype(*a, **k):
        raise OSError("no such font")

    def pillow_10_0_load_default(*args, **kwargs):
        if args or kwargs:
            raise TypeError("load_default() got an unexpected keyword argument 'size'")
        return ImageFont.load_default_imagefont()

    monkeypatch.setattr(ImageFont, "truetype", truetype)
    monkeypatch.setattr(ImageFont, "load_default", pillow_10_0_load_default)
    tc.fonts.cache_clear()
    try:
        assert not isinstance(tc.fonts().label, ImageFont.FreeTypeFont)
        run = tts_folder(tmp_path / "run", prompt="un café près de 火山")
        assert len(tc.collage_run(run, grid=True)) == 3
    finally:
        tc.fonts.cache_clear()


def test_bad_input_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        tc.main([str(tmp_path)])
    assert e.value.code == 2 and "no run folder" in capsys.readouterr().err.strip().splitlines()[-1]
    folder, _ = tt_scale_flux_folder(tmp_path / "a")
    bad = folder / f"{tt_stem(PROMPT)}_i@4_s@1.json"
    bad.write_text("{not json")
    tc.main([str(folder)])
    out, err = capsys.readouterr()
    assert len(out.split()) == 1 and len(err.splitlines()) == 1 and str(bad) in err
    newer = tmp_path / "b"
    newer.mkdir()
    (newer / rf.MANIFEST).write_text(json.dumps({"schema_version": 99}) + "\n")
    tc.main([str(newer)])
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "upgrade tts" in err


@pytest.mark.slow
def test_collages_of_a_folder_of_real_runs(tmp_path, capsys):
    run_tts(["pipeline.num_inference_steps=2", "search.rounds=3"], tmp_path / "runs" / "one")
    run_tts(["pipeline.num_inference_steps=2", "search.rounds=2", "prompt=two green squares"],
            tmp_path / "runs" / "two")
    capsys.readouterr()  # the searches' progress bars
    tc.main([str(tmp_path / "runs"), "--grid", "--size", "64", "--per-row", "4"])
    out, err = capsys.readouterr()
    printed = [Path(p) for p in out.split()]
    assert err == ""
    assert sum(p.name.endswith("_rounds.png") for p in printed) == 2
    assert sum(p.name.endswith("_grid.png") for p in printed) == 3 + 2
    (one,) = tc.read_run(tmp_path / "runs" / "one")
    tiles, subtitle = tc.grid_tiles(one, 3)
    assert len(tiles) == 8 and sum(t.best for t in tc.strip_tiles(one)[0]) == 1
    grid = Image.open(tmp_path / "runs" / "one" / "collages" / f"{one.stem}_i@3_grid.png")
    lay = tc.layout(one.prompt, subtitle, tiles, 64, per_row=4)
    assert grid.size == lay.size and len({p.box[1] for p in lay.tiles}) == 2  # two rows of 4


def test_a_lower_is_better_metric_marks_the_lowest_score_best(tmp_path, monkeypatch):
    """The collage follows the direction the run's verifier declares (config.json's verifier._target_)."""
    monkeypatch.syspath_prepend(str(Path(__file__).parent / "plugins"))
    (tmp_path / rf.CONFIG).write_text(json.dumps({"verifier": {"_target_": "tts_test_components.Darkness"}}))
    assert tc.direction(tmp_path, "luminance") == -1.0 and tc.direction(tmp_path, "other") == 1.0
    assert tc.direction(tmp_path / "nowhere", "luminance") == 1.0
    run = tc.PromptRun("p", "stem", "luminance", sign=tc.direction(tmp_path, "luminance"))
    for r, scores in {1: [0.5, 0.2, 0.9], 2: [0.4, 0.3]}.items():
        run.rounds[r] = [tc.Candidate(tmp_path / f"{r}_{i}.png", r, i, s, i) for i, s in enumerate(scores)]
    assert {k: c.score for k, c in run.bests().items()} == {1: 0.2, 2: 0.3}
    assert [c.score for c in run.ranked(1)] == [0.2, 0.5, 0.9]
    tiles, subtitle = tc.strip_tiles(run)
    assert [t.best for t in tiles] == [True, False] and "so far 0.20" in tiles[1].note


def test_smc_grid_labels_resampled_particles_by_particle_and_parent(tmp_path):
    """SMC's resampled copies share their ancestor's seed: the grid labels them by particle and parent instead,
    so no two tiles of a round read alike."""
    import tts
    from tts.views.collage import grid_tiles, read_manifest_run

    tts.search("shapes", "a red circle left of a blue square", verifier="shapes", strategy="smc", nfe_budget=80,
               seed=0, run_dir=str(tmp_path / "run"))
    (run,) = read_manifest_run(tmp_path / "run")
    for round_ in run.rounds:
        tiles, _ = grid_tiles(run, round_)
        labels = [t.note for t in tiles]
        assert len(set(labels)) == len(labels) and all(label.startswith("p") for label in labels), labels
    seeds = [c.seed for cands in run.rounds.values() for c in cands]
    assert len(set(seeds)) < len(seeds)  # the labels matter: some particles were resampled copies
