"""One reader of run folders (tts.core.runfolder.read_run) behind tts-report, tts-collage, tts-replay and
tts.load_run: the same records, config, summary and direction whichever front end reads the folder."""
import json
from pathlib import Path

from PIL import Image

import tts
from tts.core import runfolder as rf
from tts.core.records import CandidateRecord, MetricScore
from tts.views import collage, report


def record(prompt: str, n: int, round_: int, index: int, score: float | None, status: str = "ok") -> CandidateRecord:
    seed = 100 * n + 10 * round_ + index
    scores = {} if score is None else {"shapes": {"criteria_met": MetricScore(score=score)}}
    return CandidateRecord(prompt=prompt, prompt_index=n, prompt_hash=rf.prompt_hash(prompt), round=round_,
                           index=index, seed=seed, noise={"kind": "fresh", "seed": seed}, nfe=10.0, status=status,
                           verifier="shapes", choice_of_metric="criteria_met", score=score, scores=scores,
                           image=rf.image_name(prompt, round_, seed))


def write_run(folder: Path, records: list[CandidateRecord], manifest: str = rf.MANIFEST) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / rf.CONFIG).write_text(json.dumps({"verifier": {"_target_": "tts.verifiers.shapes.ShapesVerifier",
                                                             "choice_of_metric": "criteria_met"}, "seed": 0}))
    (folder / manifest).parent.mkdir(parents=True, exist_ok=True)
    (folder / manifest).write_text("".join(r.model_dump_json() + "\n" for r in records))
    (folder / rf.SUMMARY).write_text(json.dumps({"prompts": {"a": {"seed": 1}}}))
    (folder / rf.PREVIEWS).write_text('{"step": 1, "score": 0.5}\nnot json\n')
    for r in records:
        Image.new("RGB", (8, 8), (r.seed % 256, 0, 0)).save(folder / r.image)
    return folder


def test_every_front_end_reads_a_run_folder_through_the_one_reader(tmp_path):
    failed_then_ok = [record("a", 0, 1, 1, None, "failed"), record("a", 0, 1, 1, 0.9)]
    run = write_run(tmp_path / "run", [record("a", 0, 1, 0, 0.2), *failed_then_ok, record("b", 1, 1, 0, 0.4)])
    warnings: list[str] = []
    data = rf.read_run(run, warn=warnings.append)
    assert data.source == "manifest" and len(data.written) == 4 and len(data.records) == 3  # the retry is final
    assert {(r.prompt, r.index, r.status) for r in data.records} == {("a", 0, "ok"), ("a", 1, "ok"), ("b", 0, "ok")}
    assert data.summary == {"prompts": {"a": {"seed": 1}}} and data.previews == [{"step": 1.0, "score": 0.5}]
    assert warnings == [f"{run / rf.PREVIEWS}: skipped 1 line without a numeric step and score"]
    assert data.config["seed"] == 0 and data.higher_is_better and data.nfe_known

    api_run, report_run = tts.load_run(run), report.load_run(run)
    for seen in (api_run, report_run):
        assert isinstance(seen, rf.RunData)
        assert (seen.records, seen.written, seen.config, seen.summary, seen.source) == (
            data.records, data.written, data.config, data.summary, data.source)
        assert seen.prompts() == data.prompts()
    assert api_run.best()["a"].score == 0.9 == report.best(report_run.records).score
    drawn = {pr.prompt: sorted((c.round, c.index, c.score) for cs in pr.rounds.values() for c in cs)
             for pr in collage.read_run(run)}
    assert drawn == {"a": [(1, 0, 0.2), (1, 1, 0.9)], "b": [(1, 0, 0.4)]}
    assert rf.records_for_image(run, failed_then_ok[0].image) == failed_then_ok  # what tts-replay regenerates from


def test_a_folder_with_per_writer_manifests_only_is_read_by_every_front_end(tmp_path):
    """The lock-free mode's manifests/<writer>.jsonl: report and collage read them as tts.load_run does."""
    run = write_run(tmp_path / "run", [record("a", 0, 1, 0, 0.3)], manifest=f"{rf.MANIFESTS}/host_1.jsonl")
    assert not (run / rf.MANIFEST).exists() and rf.is_run(run)
    assert [r.score for r in report.load_run(run).records] == [r.score for r in tts.load_run(run).records] == [0.3]
    assert [c.score for pr in collage.read_run(run) for cs in pr.rounds.values() for c in cs] == [0.3]


def test_round_jsons_are_read_once_for_report_collage_and_the_api(tmp_path):
    """A tt-scale-flux folder: each round's best scored, the round's other images unscored."""
    run = tmp_path / "ttsf"
    run.mkdir()
    stem = rf.prompt_stem("a red circle")
    for seed in (1, 2):
        Image.new("RGB", (8, 8)).save(run / f"{stem}_i@1_s@{seed}.png")
    (run / f"{stem}_i@1_s@2.json").write_text(json.dumps({
        "prompt": "a red circle", "search_round": 1, "best_noise_seed": 2, "choice_of_metric": "overall_score",
        "best_score": {"score": 7.0, "explanation": "fine"}, "best_img_path": f"output/x/{stem}_i@1_s@2.png"}))
    data = rf.read_run(run)
    assert data.source == "round JSONs" and not data.nfe_known
    assert [(r.seed, r.score, r.image) for r in data.records] == [
        (2, 7.0, f"{stem}_i@1_s@2.png"), (1, None, f"{stem}_i@1_s@1.png")]
    assert tts.load_run(run).records == report.load_run(run).records == data.records
    [pr] = collage.read_run(run)
    assert (pr.stem, [(c.seed, c.score) for c in pr.rounds[1]]) == (stem, [(2, 7.0), (1, None)])
