"""tts-report: one static HTML page of a run or a sweep, checked in a real headless Chromium (no console errors,
plots drawn, one image per run and round, a screenshot with content), small and paged on a 1,000-prompt sweep,
failed and blocked candidates listed with their reasons, bad input in one line."""
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path

import pytest
from conftest import headless_chromium, needs_browser, run_tts
from PIL import Image

from tts.views import report as tr
from tts.core import runfolder as rf
from tts.core.records import CandidateRecord, MetricScore, Usage

COLOURS = [(200, 30, 30), (30, 160, 60), (40, 60, 200), (220, 200, 40), (150, 40, 160), (40, 190, 190)]
#: The 1,000-prompt sweep's page (2 runs x 1,000 prompts x 3 rounds, images linked) stays under this size.
THOUSAND_PROMPTS_MAX_BYTES = 1_000_000
SEARCH = {"random": {"_target_": "tts.search.random.RandomSearch", "_partial_": True, "rounds": 3},
          "zero-order": {"_target_": "tts.search.zero_order.ZeroOrderSearch", "_partial_": True, "rounds": 3,
                         "num_neighbors": 1, "threshold": 0.95}}


# -- synthetic run folders, made of real records ------------------------------------------------------------------

def record(prompt: str, n: int, round_: int, index: int, score: float | None, status: str = "ok", **kw):
    seed = 1000 * n + 10 * round_ + index
    why = f"failed: one red circle: want 1, found {index}"
    scores = {} if score is None else {"shapes": {"criteria_met": MetricScore(score=score, explanation=why),
                                                  "correct": MetricScore(score=float(score == 1.0), explanation=why)}}
    fields = dict(prompt=prompt, prompt_index=n, prompt_hash=rf.prompt_hash(prompt), round=round_, index=index,
                  seed=seed, noise={"kind": "fresh", "seed": seed}, nfe=10.0, status=status, verifier="shapes",
                  choice_of_metric="criteria_met", score=score, scores=scores,
                  image=rf.image_name(prompt, round_, seed)) | kw
    return CandidateRecord(**fields)


def write_run(folder: Path, records: list[CandidateRecord], search: str = "random", images: bool = True,
              tags: list[str] | None = None) -> Path:
    """A run folder as tts writes it: config.json, manifest.jsonl and the candidates' PNGs (hard links to a few
    small PNGs, so a 1,000-prompt sweep costs no disk)."""
    folder.mkdir(parents=True, exist_ok=True)
    prompts = {"_target_": "tts.prompts.FilePrompts", "path": "p.tsv"} | ({"tags": tags} if tags else {})
    config = {"pipeline": {"name": "shapes", "num_inference_steps": 10},
              "verifier": {"choice_of_metric": "criteria_met"}, "search": SEARCH[search], "prompts": prompts,
              "seed": 0, "tts_version": "0.1.0"}
    (folder / rf.CONFIG).write_text(json.dumps(config))
    (folder / rf.MANIFEST).write_text("".join(r.model_dump_json() + "\n" for r in records))
    if images:
        palette = folder.parent / ".palette"
        palette.mkdir(exist_ok=True)
        for n, c in enumerate(COLOURS):
            if not (palette / f"{n}.png").exists():
                Image.new("RGB", (16, 16), c).save(palette / f"{n}.png")
        for r in records:
            if not (folder / r.image).exists():
                os.link(palette / f"{r.seed % len(COLOURS)}.png", folder / r.image)
    return folder


def sweep(root: Path, prompts: int, rounds: int = 3, per_round: int = 2) -> Path:
    """Two runs (random, zero-order) over the same tagged prompts."""
    for n_run, search in enumerate(SEARCH):
        records = []
        for n in range(prompts):
            prompt = f"prompt number {n}: {n % 4 + 1} red circles"
            tags = {"category": ("colors", "counting", "position")[n % 3], "split": ("in_dist", "held_out")[n % 2],
                    "Note": f"free text {n}"}
            for k in range(1, rounds + 1):
                for i in range(per_round):
                    score = ((n * 7 + k * 3 + i * 5 + n_run) % 5) / 4
                    records.append(record(prompt, n, k, i, score, prompt_tags=tags))
        write_run(root / str(n_run), records, search, tags=["category", "split"])
    return root


# -- the browser ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():

    driver = headless_chromium(1300, 1000, console_log=True)
    yield driver
    driver.quit()


def open_page(driver, page: Path) -> float:
    """Load the page; no console error or warning; returns the time to its load event in ms."""
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get_log("browser")  # drop earlier pages' messages
    driver.get(page.resolve().as_uri())
    WebDriverWait(driver, 30).until(lambda d: d.execute_script("return document.readyState === 'complete'"))
    assert_quiet_console(driver)
    return driver.execute_script("const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd")


def assert_quiet_console(driver) -> None:
    problems = [e for e in driver.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert not problems, problems


def plots(driver) -> list[dict]:
    """Each plot's drawn size and its number of drawn lines."""
    return driver.execute_script(
        "return [...document.querySelectorAll('figure.plot svg')].map(s => {const r = s.getBoundingClientRect();"
        " return {w: r.width, h: r.height, lines: s.querySelectorAll('path').length}})")


def texts(driver, selector: str) -> list[str]:
    return driver.execute_script(f"return [...document.querySelectorAll('{selector}')].map(e => e.textContent)")


def tiles(driver) -> list[dict]:
    """Every image tile on the page: its caption, whether it is framed best, its image's decoded width."""
    return driver.execute_script(
        "return [...document.querySelectorAll('.tile')].map(t => ({caption: t.querySelector('figcaption').textContent,"
        " best: t.classList.contains('best'), title: t.title, src: t.querySelector('img').getAttribute('src'),"
        " width: t.querySelector('img').naturalWidth}))")


def scroll_through(driver) -> None:
    """Scroll to the end and back, so lazily loaded images load."""
    from selenium.webdriver.support.ui import WebDriverWait

    height = driver.execute_script("return document.body.scrollHeight")
    for y in range(0, height + 1000, 600):
        driver.execute_script(f"window.scrollTo(0, {y})")
    WebDriverWait(driver, 30).until(lambda d: d.execute_script(
        "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"))
    driver.execute_script("window.scrollTo(0, 0)")
    assert_quiet_console(driver)


def coloured_pixels(driver, path: Path, at: str = "prompts") -> int:
    """Strongly coloured pixels in a screenshot of the page scrolled to the element ``at``."""
    import numpy as np

    driver.execute_script(f"document.getElementById('{at}').scrollIntoView()")
    driver.save_screenshot(str(path))
    hsv = np.asarray(Image.open(path).convert("HSV"))
    return int(((hsv[..., 1] > 90) & (hsv[..., 2] > 60)).sum())


# -- tests ------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def real_sweep(tmp_path_factory):
    """A real strategy sweep as a multirun folder: random and zero-order search, 2 prompts, 2 and 3 rounds."""
    root = tmp_path_factory.mktemp("sweep")
    base = ["pipeline.num_inference_steps=2", "prompts=shapes-bench", "num_prompts=2"]
    run_tts([*base, "search.rounds=3"], root / "0")
    run_tts([*base, "search=zero-order", "search.rounds=2"], root / "1")
    return root


@pytest.mark.slow
@needs_browser
def test_report_of_a_real_run_in_chromium(real_sweep, browser, tmp_path, capsys):
    run = real_sweep / "0"
    tr.main([str(run)])
    page = Path(capsys.readouterr().out.strip())
    assert page == run / "report.html"
    text = page.read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//|/)|url\((https?:|//)""", text)  # nothing from a network
    load_ms = open_page(browser, page)
    print(f"single run: {page.stat().st_size} bytes, loaded in {load_ms:.0f} ms")
    records = rf.final_records(rf.read_manifest(run))
    row = browser.execute_script("return [...document.querySelectorAll('table.runs tbody td')].map(c => c.innerText)")
    assert row[1:5] == ["shapes", "shapes\ncriteria_met", "random", "rounds=3 schedule=exponential base=2 per_round=4"]
    assert row[5:11] == ["2", "28", "0", "0", f"{sum(r.nfe for r in records):,.0f}", "28"]  # 2 + 4 + 8 a prompt
    assert [p for p in plots(browser) if p["w"] > 300 and p["h"] > 150 and p["lines"] > 10]
    scroll_through(browser)
    shown = tiles(browser)
    assert len(shown) == 2 * (1 + 3)  # per prompt: the best, then each round's best
    assert all(t["width"] == 32 for t in shown)
    best = min((r for r in records if r.prompt_index == 0), key=lambda r: (-r.score, r.round, r.index))
    assert shown[0]["caption"] == f"best · {best.score:.2f}" and best.image in shown[0]["src"]
    assert "criteria_met (searched): " in shown[0]["title"] and best.scores["shapes"]["criteria_met"].explanation in \
        shown[0]["title"]
    assert sum(t["best"] for t in shown[:4]) == 2  # the best, and its round framed
    assert coloured_pixels(browser, tmp_path / "scores.png", "scores") > 1000  # the plot's lines
    assert coloured_pixels(browser, tmp_path / "prompts.png") > 4 * 100  # the images' coloured shapes


@pytest.mark.slow
@needs_browser
def test_report_of_a_strategy_sweep_overlays_the_runs(real_sweep, browser, tmp_path):
    page = tr.write_report(real_sweep)
    open_page(browser, page)
    labels = browser.execute_script("return [...document.querySelectorAll('table.runs tbody tr td:first-child')]"
                                    ".map(c => c.innerText)")
    assert labels == ["search=random\n0", "search=zero-order\n1"]  # the setting that differs, and the folder
    legend = texts(browser, "figure.plot svg text")
    assert "search=random" in legend and "search=zero-order" in legend
    assert {"criteria_met", "correct"} <= set(legend)  # every metric of the verifier, not only the searched one
    scroll_through(browser)
    shown = tiles(browser)
    rounds = {n: {(r.prompt, r.round) for r in rf.read_manifest(real_sweep / str(n))} for n in (0, 1)}
    assert len(shown) == sum(len(rounds[n]) for n in rounds) + 2 * 2  # every round's best, plus each run's best
    assert all(t["width"] == 32 for t in shown)
    groups = texts(browser, "table.groups tbody th")
    assert groups[0] == "all" and any(g.startswith("category=") for g in groups) and "split=in_dist" in groups
    assert coloured_pixels(browser, tmp_path / "sweep.png") > 8 * 100


@needs_browser
def test_a_thousand_prompt_sweep_is_small_paged_and_lazy(tmp_path, browser):
    root = sweep(tmp_path / "big", prompts=1000)
    started = time.perf_counter()
    page = tr.write_report(root, per_page=20)
    written_s = time.perf_counter() - started
    size = page.stat().st_size
    text = page.read_text()
    assert size < THOUSAND_PROMPTS_MAX_BYTES, size
    assert "data:image" not in text
    load_ms = open_page(browser, page)
    print(f"1,000 prompts x 2 runs: {size} bytes, written in {written_s:.1f} s, loaded in {load_ms:.0f} ms")
    shown = tiles(browser)
    assert len(shown) == 20 * 2 * (1 + 3)  # one page: 20 prompts, 2 runs, the best and 3 round bests
    for t in shown:  # linked relatively, and the file is there
        assert not t["src"].startswith(("/", "file:", "http")) and (root / urllib.parse.unquote(t["src"])).is_file()
    assert browser.execute_script("return [...document.images].every(i => i.loading === 'lazy')")
    assert browser.execute_script("return document.getElementById('page-info').textContent") == \
        "prompts 1–20 of 1000 · page 1 of 50"
    first = browser.execute_script("return document.querySelector('article.prompt h3').textContent")
    browser.find_element("id", "next").click()
    assert browser.execute_script("return document.querySelector('article.prompt h3').textContent") != first
    assert browser.execute_script("return document.querySelector('article.prompt h3').textContent").startswith("#21 ")
    browser.find_element("id", "filter").send_keys("prompt number 999:")
    assert len(browser.find_elements("css selector", "article.prompt")) == 1
    assert [p for p in plots(browser) if p["w"] > 300 and p["h"] > 150]
    groups = texts(browser, "table.groups tbody th")
    assert groups == ["all", "category=colors", "category=counting", "category=position", "split=held_out",
                      "split=in_dist"]  # declared tags only: not the free-text Note
    assert not [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]


def test_failed_and_blocked_candidates_are_listed_with_their_reasons(tmp_path):
    records = [record("a red circle", 0, 1, 0, 0.5), record("a red circle", 0, 1, 1, 0.75),
               record("a red circle", 0, 2, 0, None, status="failed", error="429 Too Many Requests after 5 attempts",
                      usage=Usage(requests=5, input_tokens=900, cost_usd=0.002)),
               record("a red circle", 0, 2, 1, 0.25, usage=Usage(requests=1, input_tokens=300, cost_usd=0.001))]
    records.append(record("a red circle", 0, 2, 2, None, status="failed").model_copy(  # not in the schema yet
        update={"status": "blocked", "error": "pruned by the in-loop strategy at step 4"}))
    run = tr.load_run(write_run(tmp_path / "run", records[:-1]), written=records)
    tr.label_runs([run], tmp_path)
    row = tr.overview(run, tmp_path)
    assert (row["candidates"], row["failed"], row["blocked"]) == (5, 1, 1)
    assert (row["calls"], row["calls_are_requests"], round(row["cost"], 4)) == (6, True, 0.003)
    html = tr.problems_table([run], tr.Images(tmp_path, embed=False))
    assert "429 Too Many Requests after 5 attempts" in html and "pruned by the in-loop strategy at step 4" in html
    assert html.count("<tr class='failed'>") == 1 and html.count("<tr class='blocked'>") == 1
    assert f"href='run/{records[2].image}'" in html  # the failed candidate's image, linked


def test_verifier_calls_count_verified_candidates_without_usage(tmp_path):
    records = [record("a red circle", 0, 1, i, 0.25 * i) for i in range(3)]
    records.append(record("a red circle", 0, 1, 3, None, status="failed", error="timeout"))
    records.append(record("a red circle", 0, 1, 3, 1.0))  # re-verified by a rerun
    run = tr.load_run(write_run(tmp_path / "run", records))
    row = tr.overview(run, tmp_path)
    assert (row["candidates"], row["failed"], row["calls"], row["calls_are_requests"]) == (4, 0, 5, False)
    assert row["mean_best"] == 1.0 and row["nfe"] == 40.0


@needs_browser
def test_previews_are_plotted_when_recorded_and_embed_makes_one_file(tmp_path, browser):
    run = write_run(tmp_path / "run", [record("a red circle", 0, k, i, 0.25 * (k + i) % 1.25)
                                       for k in (1, 2) for i in (0, 1)])
    lines = [json.dumps({"prompt": "a red circle", "round": 1, "index": i, "step": s, "score": s / 10 + i})
             for i in (0, 1) for s in range(1, 6)]
    (run / tr.PREVIEWS).write_text("\n".join(lines + ["not json", '{"step": 1}']) + "\n")
    moved = tmp_path / "elsewhere" / "shared.html"
    assert tr.write_report(run, output=moved, embed=True, title="a <study>") == moved
    text = moved.read_text()
    assert "<title>a &lt;study&gt;</title>" in text
    assert text.count("data:image/png;base64,") == 2 and "<th>previews</th>" in text  # each round's best
    open_page(browser, moved)  # away from the run folder: the images are in the page
    assert len(plots(browser)) == 2 and all(p["w"] > 300 and p["h"] > 150 for p in plots(browser))
    assert [t["width"] for t in tiles(browser)] == [16, 16, 16]


def test_runs_are_named_by_the_settings_that_differ(tmp_path):
    runs = []
    for n, (search, rounds, steps) in enumerate([("random", 2, 10), ("random", 3, 10), ("zero-order", 2, 10)]):
        folder = write_run(tmp_path / str(n), [record("a red circle", 0, 1, 0, 0.5)], search, images=False)
        config = json.loads((folder / rf.CONFIG).read_text())
        config["search"] = config["search"] | {"rounds": rounds}
        config["pipeline"]["num_inference_steps"] = steps
        config["verifier"] |= {"_target_": "tts.verifiers.gemini.GeminiVerifier", "max_concurrency": n}  # operational
        (folder / rf.CONFIG).write_text(json.dumps(config))
        runs.append(tr.load_run(folder))
    tr.label_runs(runs, tmp_path)
    assert [r.label for r in runs] == ["search=random search.rounds=2", "search=random search.rounds=3",
                                       "search=zero-order search.rounds=2"]
    assert len({r.colour for r in runs}) == 3


def test_a_tt_scale_flux_folder_is_reported_from_its_round_jsons(tmp_path):
    from test_collage import tt_scale_flux_folder

    folder, _ = tt_scale_flux_folder(tmp_path)
    page = tr.write_report(folder)
    data = json.loads(re.search(r"id='report-data'>(.*?)</script>", page.read_text()).group(1))
    (prompt,) = data["prompts"]
    (row,) = prompt["runs"]
    assert [t[0] for t in row["tiles"]] == [1, 2, 3] and row["best"] == 1
    assert [(folder / (row["pre"] + t[1])).is_file() for t in row["tiles"]] == [True] * 3
    assert "Not plotted (no NFEs recorded)" not in page.read_text()  # no NFE plot at all: nothing to plot
    assert "<section id='scores'>" not in page.read_text()


def test_bad_input_is_one_line(tmp_path, capsys):
    for argv, says in [([str(tmp_path / "nope")], "is not a folder"), ([str(tmp_path)], "no run with candidates"),
                       ([str(tmp_path), "--per-page", "0"], "--per-page must be at least 1")]:
        with pytest.raises(SystemExit) as e:
            tr.main(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.splitlines()) == 1 and says in err, err
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / rf.MANIFEST).write_text(json.dumps({"schema_version": 99}) + "\n")
    write_run(tmp_path / "ok", [record("a red circle", 0, 1, 0, 0.5)])
    tr.main([str(tmp_path)])
    out, err = capsys.readouterr()
    assert out.strip() == str(tmp_path / "report.html") and len(err.splitlines()) == 1 and "upgrade tts" in err


def test_without_matplotlib_it_says_what_to_install(tmp_path):
    write_run(tmp_path / "run", [record("a red circle", 0, 1, 0, 0.5)])
    code = ("import sys; sys.modules['matplotlib'] = None; from tts.views.report import main; "
            f"main([{str(tmp_path / 'run')!r}])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [f"tts-report: error: {tr.INSTALL_HINT}"]
    assert "pip install -e '" in done.stderr and "[report]'" in done.stderr and "'tts[" not in done.stderr and not (tmp_path / "run" / "report.html").exists()
