"""Judges (issue 29 item 5): verifiers that score a run's saved candidates without steering it, after the search
(``judges=[...]``) or later (``tts-judge RUN judges=[...]``): the same verdicts as scoring the images directly,
resumable and incremental, tt-scale-flux folders, API judges' retries and cost, summary means, the report."""
import json
import shutil

import pytest
from PIL import Image
from conftest import headless_chromium, needs_browser, run_tts

from tts.app import judge as judge_app
from tts.app.judge import spelled
from tts.core import runfolder as rf
from tts.run.judge import JudgeError, build_judges
from tts.search import best_record
from tts.verifiers.loopback import LoopbackGrader, score_image
from tts.verifiers.shapes import ShapesVerifier

FAST = ["pipeline.num_inference_steps=2", "search.rounds=2", "batch_size=6"]
STEERED = [*FAST, "verifier=shapes-proxy", "prompts=shapes-bench", "num_prompts=4"]


@pytest.fixture(scope="module")
def steered(tmp_path_factory):
    """A run steered by the imperfect proxy, over four tagged prompts of the shapes bench."""
    run = tmp_path_factory.mktemp("steered") / "run"
    run_tts(STEERED, run)
    return run


def copy(run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(run, out)
    return out


def judge(run, *args) -> int:
    try:
        judge_app.main([str(run), *args])
    except SystemExit as e:
        return int(e.code)
    return 0


def lines(run) -> list[dict]:
    """judges.jsonl's whole records (a torn line left by a kill is not one)."""
    path = run / rf.JUDGES
    out = []
    for x in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(x))
        except ValueError:
            continue
    return out


def direct_correct(run, scope="best") -> dict[str, float]:
    """The exact checker run on the saved images directly, without tts-judge: image -> correct."""
    data = rf.read_run(run)
    if scope == "best":
        picked = [best_record(recs, data.higher_is_better) for recs in data.prompts().values()]
    else:
        picked = [r for r in data.records if r.status == "ok"]
    images = [Image.open(run / r.image).convert("RGB") for r in picked]
    scores = ShapesVerifier().score([r.prompt for r in picked], images)
    return {r.image: s["correct"].score for r, s in zip(picked, scores)}


def test_tts_judge_gives_the_exact_checkers_success_on_a_proxy_steered_run(steered, tmp_path):
    run = copy(steered, tmp_path)
    assert judge(run, "judges=[shapes]") == 0
    expected = direct_correct(run)
    data = rf.read_run(run)
    kept = {r.image: r.judges["shapes"].scores["correct"].score for r in data.records if "shapes" in r.judges}
    assert kept == expected and len(kept) == 4
    means = json.loads((run / rf.SUMMARY).read_text())["judges"]["shapes"]
    assert means["groups"]["all"]["n"] == 4
    assert means["groups"]["all"]["correct"] == pytest.approx(sum(expected.values()) / 4)
    # the steering scores are untouched: the manifest's records still hold only the proxy's
    assert all(set(r.scores) == {"shapes-proxy"} for r in data.records)
    assert json.loads((run / rf.SUMMARY).read_text())["verifier"] == "shapes-proxy"


def test_summary_has_each_judges_means_by_prompt_tag(steered, tmp_path):
    run = copy(steered, tmp_path)
    assert judge(run, "judges=[shapes,compressibility]") == 0
    summary = json.loads((run / rf.SUMMARY).read_text())
    steering_groups = set(summary["groups"])
    assert any(g.startswith("category=") for g in steering_groups)
    data = rf.read_run(run)
    for label, metric in (("shapes", "criteria_met"), ("compressibility", "compressibility")):
        groups = summary["judges"][label]["groups"]
        assert set(groups) <= steering_groups and "all" in groups
        for name, g in groups.items():
            tag, _, value = name.partition("=")
            kept = [best_record(recs, True) for recs in data.prompts().values()]
            members = [b for b in kept if name == "all" or str(b.prompt_tags.get(tag)) == value]
            assert g["n"] == len(members)
            assert g[metric] == pytest.approx(sum(b.judges[label].scores[metric].score for b in members) / len(members))


def test_judging_after_the_search_with_judges_scope_all(tmp_path):
    """judges=[...] on tts-search's command line: every candidate judged after the search, apart from steering."""
    summary = run_tts(spelled([*FAST, "verifier=shapes-proxy", "prompt=a red circle left of a blue square",
                               "judges=[shapes]", "judges.scope=all"]), tmp_path / "run")
    run = tmp_path / "run"
    assert direct_correct(run, "all") == {j["image"]: j["scores"]["correct"]["score"] for j in lines(run)}
    assert summary["judges"]["shapes"]["candidates"]["n"] == 6 == summary["candidates"]
    assert json.loads((run / rf.SUMMARY).read_text()) == summary
    manifest = (run / rf.MANIFEST).read_text()
    assert "judges" not in manifest  # judge scores never enter the steering records


def test_judges_are_checked_before_anything_runs(tmp_path):
    with pytest.raises(JudgeError, match=r"unknown judge 'clp'; did you mean 'clip'\?"):
        run_tts(spelled([*FAST, "judges=[clp]"]), tmp_path / "run")
    assert not (tmp_path / "run" / rf.MANIFEST).exists()
    with pytest.raises(JudgeError, match=r"unknown option 'devise' for judge 'clip'; did you mean 'device'\?"):
        build_judges([{"name": "clip", "devise": "cpu"}])
    with pytest.raises(JudgeError, match="given twice"):
        build_judges(["shapes", "shapes"])
    with pytest.raises(JudgeError, match=r"judges.scope='bets'; did you mean 'best'\?"):
        run_tts(spelled([*FAST, "judges=[shapes]", "judges.scope=bets"]), tmp_path / "run2")


def test_bad_input_is_one_line_and_exit_2(steered, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert judge(empty, "judges=[shapes]") == 2
    assert judge(steered, "judges=[shapse]") == 2
    assert judge(steered, "judge=[shapes]") == 2
    assert judge(steered) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 4 and all(line.startswith("error: ") for line in err)
    assert "not a run folder" in err[0] and "did you mean 'shapes'" in err[1] and "did you mean 'judges'" in err[2]


def test_resume_and_incremental(steered, tmp_path):
    run = copy(steered, tmp_path)
    assert judge(run, "judges=[shapes]", "judges.scope=all") == 0
    first, n = lines(run), len(rf.read_run(run).records)
    assert n == 24 and len(first) == n and all(j["status"] == "ok" for j in first)
    # killed mid-run: the last records lost and a torn line left behind; the rerun scores only what is missing
    text = (run / rf.JUDGES).read_text().splitlines(keepends=True)
    (run / rf.JUDGES).write_text("".join(text[:7]) + text[7][:40])
    assert judge(run, "judges=[shapes]", "judges.scope=all") == 0
    again = lines_ok(run)
    assert sorted(j["image"] for j in again if j["judge"] == "shapes") == sorted(j["image"] for j in first)
    assert len((run / rf.JUDGES).read_text().splitlines()) == 7 + 1 + (n - 7)  # kept, the closed torn line, the rest
    # a judge added later scores only its own; a judge already complete scores nothing
    before = len((run / rf.JUDGES).read_text().splitlines())
    assert judge(run, "judges=[shapes,{name:shapes,label:exact,choice_of_metric:correct}]", "judges.scope=all") == 0
    added = (run / rf.JUDGES).read_text().splitlines()[before:]
    assert len(added) == n and {json.loads(x)["judge"] for x in added} == {"exact"}
    assert judge(run, "judges=[shapes,{name:shapes,label:exact,choice_of_metric:correct}]", "judges.scope=all") == 0
    assert len((run / rf.JUDGES).read_text().splitlines()) == before + n
    # the same label with other settings is refused, naming the fix
    assert judge(run, "judges=[{name:shapes,label:exact,choice_of_metric:criteria_met}]") == 2


def lines_ok(run) -> list[dict]:
    return [j for j in lines(run) if j.get("status") == "ok"]


def test_a_tt_scale_flux_folder_is_judged_from_its_round_jsons(steered, tmp_path):
    """tt-scale-flux's folder shape (round JSONs and images, its own config.json, no manifest)."""
    run = copy(steered, tmp_path)
    for name in (rf.MANIFEST, rf.SUMMARY, rf.PLAN):
        (run / name).unlink()
    (run / rf.CONFIG).write_text(json.dumps({"verifier_args": {"name": "gemini", "choice_of_metric": "overall_score"}}))
    assert rf.read_run(run).source == "round JSONs"
    assert judge(run, "judges=[shapes]") == 0
    data = rf.read_run(run)
    assert direct_correct(run) == {r.image: r.judges["shapes"].scores["correct"].score
                                  for r in data.records if r.judges}
    summary = json.loads((run / rf.SUMMARY).read_text())
    assert set(summary) == {"judges"} and summary["judges"]["shapes"]["groups"]["all"]["n"] == 4


def test_an_api_judge_retries_and_accounts_its_cost(steered, tmp_path, monkeypatch):
    """gemini as a judge against the loopback server: transient faults retried, requests and cost recorded."""
    monkeypatch.setenv("GEMINI_API_KEY", "sk-test-Zq8xVt3LmN0pRs7Ku2Wy")
    run = copy(steered, tmp_path)
    faults = lambda key, attempt: "503" if attempt == 1 else None  # noqa: E731 - every image fails once
    with LoopbackGrader(faults=faults) as server:
        spec = (f"judges=[{{name:gemini,base_url:'{server.url}',backoff_s:0.01,max_backoff_s:0.05,timeout_s:10,"
                "max_concurrency:3}]")
        assert judge(run, spec, "judges.scope=all") == 0
        assert server.max_inflight <= 3
    records = lines(run)
    assert len(records) == 24 and all(j["status"] == "ok" for j in records)
    assert all(j["usage"]["requests"] == 2 for j in records)  # the 503 and the answer
    for j in records:
        assert j["scores"]["overall_score"]["score"] == score_image(Image.open(run / j["image"]))
    usage = json.loads((run / rf.SUMMARY).read_text())["judges"]["gemini"]["usage"]
    assert usage["requests"] == 48 and usage["cost_usd"] == pytest.approx(sum(j["usage"]["cost_usd"] for j in records))
    assert usage["cost_usd"] > 0
    assert "sk-test" not in (run / rf.JUDGES).read_text()


def test_judgements_that_fail_exit_1_and_are_retried(steered, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GEMINI_API_KEY", "sk-test-Zq8xVt3LmN0pRs7Ku2Wy")
    run = copy(steered, tmp_path)
    with LoopbackGrader(faults=lambda key, attempt: "malformed") as server:
        spec = f"judges=[{{name:gemini,base_url:'{server.url}',backoff_s:0.01,max_backoff_s:0.05,max_attempts:2}}]"
        assert judge(run, spec) == 1
    assert "error: 4 judgements failed" in capsys.readouterr().err
    with LoopbackGrader() as server:
        spec = f"judges=[{{name:gemini,base_url:'{server.url}'}}]"
        assert judge(run, spec) == 0
        assert server.stats["requests"] == 4  # only the failed ones, once each
    assert json.loads((run / rf.SUMMARY).read_text())["judges"]["gemini"]["failed"] == 0


def test_the_report_shows_judges_beside_steering(steered, tmp_path):
    from tts.views.report import write_report

    run = copy(steered, tmp_path)
    assert judge(run, "judges=[shapes]", "judges.scope=all") == 0
    page = write_report(run).read_text()
    assert "id='judges'" in page and "judge shapes" in page
    assert "criteria_met" in page.split("id='judges'")[1]


@needs_browser
def test_the_judges_view_in_headless_chromium(steered, tmp_path):
    """The page as a person sees it: the judges table, and each judge's panel beside the steering metric's."""
    from test_report import coloured_pixels, open_page, texts

    from tts.views.report import write_report

    run = copy(steered, tmp_path)
    assert judge(run, "judges=[shapes]", "judges.scope=all") == 0
    driver = headless_chromium(1300, 1000, console_log=True)
    try:
        open_page(driver, write_report(run))
        cells = driver.execute_script(
            "return [...document.querySelectorAll('table.judges tbody td')].map(c => c.innerText)")
        expected = json.loads((run / rf.SUMMARY).read_text())["judges"]["shapes"]
        assert cells[1] == "judge shapes\nshapes" and cells[2] == "criteria_met ↑"
        assert cells[3] == f"{expected['groups']['all']['criteria_met']:.2f} n=4"
        assert cells[6] == "24" and cells[7] == "0"
        titles = texts(driver, "#scores svg text")
        assert "proxy_score" in titles and "judge shapes / criteria_met" in titles
        shot = tmp_path / "judges.png"
        assert coloured_pixels(driver, shot, "scores") > 1000  # the lines are drawn
        coloured_pixels(driver, tmp_path / "table.png", "judges")
        print(f"screenshots: {shot}, {tmp_path / 'table.png'}")
    finally:
        driver.quit()
