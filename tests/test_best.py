"""One definition of "the best candidate" (tts.search.best_record): for a lower-is-better metric the strategy's
result, the round JSONs, summary.json, the collages, tts-report and tts.search all name the same candidate."""
from __future__ import annotations

import json

from tts.views import collage, report
from tts.core import runfolder as rf
from tts.search import best_record

PROMPTS = ["a red circle left of a blue square", "a green triangle above a yellow square"]


class _Rec:
    def __init__(self, round_, index, score, status="ok"):
        self.round, self.index, self.score, self.status = round_, index, score, status


def test_best_record_follows_the_direction_and_breaks_ties_early():
    recs = [_Rec(2, 0, 0.1), _Rec(1, 1, 0.1), _Rec(1, 0, 0.5), _Rec(1, 2, None, "failed"), _Rec(3, 0, 0.05, "failed")]
    assert (best_record(recs, True).round, best_record(recs, True).index) == (1, 0)
    assert (best_record(recs, False).round, best_record(recs, False).index) == (1, 1)  # tie at 0.1: earliest round
    assert best_record([_Rec(1, 0, None, "failed")]) is None


def test_a_lower_is_better_metric_has_one_best_in_report_summary_rounds_and_collages(tmp_path):
    import tts
    from tts_test_components import Darkness

    results = tts.search("shapes", PROMPTS, verifier=Darkness(), strategy="random", rounds=3, run_dir=tmp_path)
    summary = json.loads((tmp_path / rf.SUMMARY).read_text())
    (run,) = report.load_runs(tmp_path)
    assert run.higher_is_better is False
    strips = {pr.prompt: collage.strip_tiles(pr) for pr in collage.read_run(tmp_path)}
    for result, (prompt, recs) in zip(results, run.prompts().items()):
        scores = [r.score for r in recs if r.status == "ok"]
        assert min(scores) < max(scores)  # the old rule (highest) would name another candidate
        named = summary["prompts"][prompt]
        assert named["best_score"] == min(scores) == result.best.score
        assert report.best(recs, run.higher_is_better).image == named["best_image"] == result.best.record.image
        assert report.round_bests(recs, run.higher_is_better)[named["round"]].image == named["best_image"]
        tiles, subtitle = strips[prompt]
        assert f"best {collage.fmt(min(scores))} in round {named['round']}" in subtitle
        assert [t.best for t in tiles].index(True) == named["round"] - 1
        for k in {r.round for r in recs}:  # each round JSON names the round's lowest
            (doc,) = [json.loads(p.read_text()) for p in tmp_path.glob(f"{rf.prompt_stem(prompt)}_i@{k}_s@*.json")]
            assert doc["best_score"]["score"] == min(r.score for r in recs if r.round == k and r.status == "ok")
    page = report.page_data([run], report.Images(tmp_path, embed=False))
    for entry in page["prompts"]:
        row = entry["runs"][0]
        best_tile = row["tiles"][row["best"]]
        assert best_tile[2] == summary["prompts"][entry["text"]]["best_score"]
    assert report.overview(run, tmp_path)["mean_best"] == summary["groups"]["all"]["luminance"]
