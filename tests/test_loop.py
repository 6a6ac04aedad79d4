"""The search loop on the embedded model: determinism, replay, resume, overlap, failures, records."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TESTS, compose, needs_shared, run_tts
from PIL import Image
from tts_test_plugins import Brightness, FlakyVerifier, SlowAsyncVerifier
from twins import save_twin

from tts.pipelines import PipelineSpec
from tts.app.replay import replay
from tts.core.runfolder import read_manifest, redact

FAST = ["pipeline.num_inference_steps=4", "search.rounds=2", "batch_size=4"]


def fingerprint(run):
    return [(r.round, r.index, r.seed, r.score, (run / r.image).read_bytes()) for r in read_manifest(run)]


@pytest.mark.slow
def test_same_seed_same_candidates_and_scores(tmp_path):
    run_tts(FAST + ["batch_size=4"], tmp_path / "a")
    run_tts(FAST + ["batch_size=3"], tmp_path / "b")  # batch size does not change candidates
    run_tts(FAST + ["seed=1"], tmp_path / "c")
    a, b, c = (fingerprint(tmp_path / x) for x in "abc")
    assert len(a) == 6
    assert [x[:3] for x in a] == [x[:3] for x in b]
    assert [x[3] for x in a] == pytest.approx([x[3] for x in b], abs=0.0)
    assert {x[2] for x in a}.isdisjoint({x[2] for x in c})


@pytest.mark.slow
def test_replay_regenerates_the_image_from_its_record(tmp_path):
    run_tts(FAST, tmp_path)
    record = read_manifest(tmp_path)[3]
    out, diff = replay(tmp_path, record.image)
    assert out.exists() and diff <= 1


def test_replay_takes_the_image_path_alone(tmp_path, capsys):
    """``tts-replay RUN/IMAGE.png`` (one path) replays as ``tts-replay RUN IMAGE.png`` does."""
    from tts.app.replay import main as replay_main

    run_tts(FAST, tmp_path)
    record = read_manifest(tmp_path)[1]
    replay_main([str(tmp_path / record.image), "--out", str(tmp_path / "again.png")])
    assert (tmp_path / "again.png").exists() and "max pixel difference" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        replay_main([str(tmp_path)])
    assert e.value.code == 2 and "tts-replay RUN/IMAGE.png" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_after_kill_loses_nothing_and_redoes_nothing(tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=f"{TESTS / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    args = [sys.executable, "-c", "from tts.app.cli import main; main()", "verifier._target_=tts_test_plugins.SleepyVerifier",
            "~verifier.choice_of_metric", "pipeline.num_inference_steps=2", "search.rounds=3", "batch_size=2",
            f"hydra.run.dir={run}"]
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run / "manifest.jsonl").exists() and len((run / "manifest.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r.key: r for r in read_manifest(run)}
    assert 5 <= len(before) < 14
    mtimes = {k: (run / r.image).stat().st_mtime_ns for k, r in before.items()}
    subprocess.run(args, env=env, check=True, capture_output=True, timeout=300)
    after = read_manifest(run)
    assert len({r.key for r in after}) == 2 + 4 + 8
    assert len(after) == 14  # finished candidates were not re-scored (one record each)
    for k, r in before.items():
        assert (run / r.image).stat().st_mtime_ns == mtimes[k]  # nor regenerated


def test_text_encoder_runs_once_per_prompt(twins_root, tmp_path):
    path = save_twin("sd15", twins_root)
    spec = PipelineSpec(name="sd15", model_id=str(path), height=32, width=32, num_inference_steps=2,
                        guidance_scale=5.0, device="cpu")
    encoder = spec.load().pipe.text_encoder
    calls = []
    hook = encoder.register_forward_pre_hook(lambda m, a: calls.append(1))
    try:
        base = ["pipeline=sd15", f"pipeline.model_id={path}", "pipeline.device=cpu", "pipeline.dtype=fp32",
                "pipeline.height=32", "pipeline.width=32", "pipeline.num_inference_steps=2",
                "pipeline.guidance_scale=5.0", "verifier=compressibility", "search.rounds=3"]
        (tmp_path / "p.txt").write_text("a red cube\na blue sphere\n")
        run_tts(base + ["batch_size=1", "prompts=file", f"prompts.path={tmp_path / 'p.txt'}"], tmp_path / "a")
        per_prompt_batch1 = len(calls) / 2
        calls.clear()
        run_tts(base + ["batch_size=4", "prompt=a green cone"], tmp_path / "b")
    finally:
        hook.remove()
    # SD encodes the prompt and the negative prompt: 2 calls per prompt, however many batches (14 vs 4)
    assert per_prompt_batch1 == 2 and len(calls) == 2


@pytest.mark.slow
def test_generation_overlaps_a_slow_async_verifier(tmp_path, monkeypatch):
    from tts.sampling import generate

    gen_intervals = []
    original = generate.Generator.generate

    def timed(self, prompt, lineages):
        start = time.perf_counter()
        out = original(self, prompt, lineages)
        gen_intervals.append((start, time.perf_counter()))
        return out

    monkeypatch.setattr(generate.Generator, "generate", timed)
    SlowAsyncVerifier.intervals.clear()
    run_tts(["verifier._target_=tts_test_plugins.SlowAsyncVerifier", "+verifier.latency=0.6",
             "~verifier.choice_of_metric", "pipeline.num_inference_steps=4", "search=random",
             "search.schedule=constant", "search.per_round=8", "search.rounds=1", "batch_size=2"], tmp_path)
    verify = SlowAsyncVerifier.intervals
    assert len(verify) == 4 and len(gen_intervals) == 4
    overlapping = [g for g in gen_intervals[1:] if any(v0 < g[1] and g[0] < v1 for v0, v1 in verify)]
    assert overlapping, f"no batch was generated while an earlier batch was being verified: {gen_intervals} {verify}"
    assert all(r.status == "ok" for r in read_manifest(tmp_path))


@pytest.mark.slow
def test_failed_verification_is_recorded_and_a_rerun_only_reverifies(tmp_path):
    over = ["verifier._target_=tts_test_plugins.FlakyVerifier", "~verifier.choice_of_metric",
            "pipeline.num_inference_steps=2", "search.rounds=2", "batch_size=3"]
    FlakyVerifier.failing.set()
    summary = run_tts(over, tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 6 and all(r.status == "failed" for r in records)
    assert all("ConnectionError: service unavailable" in r.error for r in records)
    assert summary["failed"] == 6
    mtimes = {r.image: (tmp_path / r.image).stat().st_mtime_ns for r in records}
    FlakyVerifier.failing.clear()
    FlakyVerifier.scored.clear()
    summary = run_tts(over, tmp_path)
    assert sum(FlakyVerifier.scored) == 6 and summary["failed"] == 0
    assert {r.image: (tmp_path / r.image).stat().st_mtime_ns for r in records} == mtimes  # not regenerated
    FlakyVerifier.scored.clear()
    run_tts(over, tmp_path)
    assert FlakyVerifier.scored == []  # all done: nothing re-scored


def test_custom_verifier_outside_the_package_and_all_metrics_recorded(tmp_path):
    Brightness.calls.clear()
    run_tts(["verifier._target_=tts_test_plugins.Brightness", "verifier.choice_of_metric=contrast",
             "pipeline.num_inference_steps=2", "search.rounds=1"], tmp_path)
    records = read_manifest(tmp_path)
    assert Brightness.calls == [2]
    for r in records:
        assert set(r.scores["brightness"]) == {"brightness", "contrast"}
        assert r.score == r.scores["brightness"]["contrast"].score and r.choice_of_metric == "contrast"


def test_prompts_cannot_escape_the_run_folder(tmp_path, monkeypatch):
    from tts.core import runfolder

    name = runfolder.image_name("../../etc/passwd\\..\x00 /x", 1, 5)
    assert "/" not in name and "\\" not in name and ".." not in name
    assert name.startswith("prompt@_etc_passwd_x_hash@")


def test_config_json_redacts_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("MY_SERVICE_API_KEY", "sk-live-0123456789abcdef")
    run_tts(["pipeline.num_inference_steps=2", "search.rounds=1", "+verifier_extra.api_key=sk-live-0123456789abcdef",
             "+verifier_extra.note=token is sk-live-0123456789abcdef"], tmp_path)
    text = (tmp_path / "config.json").read_text()
    assert "sk-live" not in text and "***redacted***" in text
    assert redact({"openai": {"API_KEY": "x"}, "n": 1}) == {"openai": {"API_KEY": "***redacted***"}, "n": 1}


def test_rerun_with_a_different_search_is_refused(tmp_path):
    run_tts(["pipeline.num_inference_steps=2", "search.rounds=1"], tmp_path)
    with pytest.raises(RuntimeError, match="different search"):
        run_tts(["pipeline.num_inference_steps=2", "search=zero-order"], tmp_path)


@pytest.mark.slow
def test_multirun_sweep_from_the_shell(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from tts.app.cli import main; main()", "-m",
                          "prompt=a red circle,a blue square", "search.rounds=1,2", "pipeline.num_inference_steps=2",
                          f"hydra.sweep.dir={tmp_path}"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.parent for p in tmp_path.rglob("manifest.jsonl"))
    assert len(runs) == 4
    sizes = sorted(len(read_manifest(r)) for r in runs)
    assert sizes == [2, 2, 6, 6]
    prompts = {json.loads((r / "config.json").read_text())["prompt"] for r in runs}
    assert prompts == {"a red circle", "a blue square"}


@needs_shared
def test_partiprompts_file(tmp_path):
    from conftest import PARTI

    from tts.app.build import build_job

    job = build_job(compose(["verifier=compressibility", "prompts=file", f"prompts.path={PARTI}",
                             "prompts.column=Prompt", "num_prompts=5"]), tmp_path)
    assert len(job.prompts) == 5 and set(job.prompts[0].tags) >= {"Category", "Challenge"}


def test_prompt_sources(tmp_path):
    from tts.app.build import build_job

    (tmp_path / "p.jsonl").write_text('{"prompt": "a", "k": 1}\n{"prompt": "b"}\n')
    (tmp_path / "p.csv").write_text("id,text\n1,hello\n2,world\n")
    assert [p.text for p in build_job(compose(["verifier=compressibility", "prompts=file",
                                               f"prompts.path={tmp_path / 'p.jsonl'}"]), tmp_path).prompts] == ["a", "b"]
    job = build_job(compose(["verifier=compressibility", "prompts=file", f"prompts.path={tmp_path / 'p.csv'}",
                             "prompts.column=text"]), tmp_path)
    assert [p.text for p in job.prompts] == ["hello", "world"] and job.prompts[0].tags == {"id": "1"}
    with pytest.raises(Exception, match=r"p.csv:1: the header has no column 'prompt'; columns: id, text"):
        build_job(compose(["verifier=compressibility", "prompts=file", f"prompts.path={tmp_path / 'p.csv'}"]), tmp_path)
    (tmp_path / "p.tsv").write_text("Promt\tCategory\na red circle\tx\n")  # a header typo: line 1, with the fix
    with pytest.raises(Exception, match=r"p.tsv:1: the header has no column 'Prompt'; did you mean prompts.column=Promt"):
        build_job(compose(["verifier=compressibility", "prompts=file", f"prompts.path={tmp_path / 'p.tsv'}",
                           "prompts.column=Prompt"]), tmp_path)
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"caption": ["x y", "z"], "n": [1, 2]}).save_to_disk(str(tmp_path / "ds"))
    job = build_job(compose(["verifier=compressibility", "prompts=dataset", f"prompts.name={tmp_path / 'ds'}",
                             "prompts.column=caption"]), tmp_path)
    assert [p.text for p in job.prompts] == ["x y", "z"] and job.prompts[1].tags == {"n": 2}


def test_random_search_generates_the_next_round_while_the_last_is_verified(tmp_path, monkeypatch):
    from tts.sampling import generate

    starts = []
    original = generate.Generator.generate

    def timed(self, prompt, lineages):
        starts.append(time.perf_counter())
        return original(self, prompt, lineages)

    monkeypatch.setattr(generate.Generator, "generate", timed)
    over = ["verifier._target_=tts_test_plugins.SlowAsyncVerifier", "+verifier.latency=1.0", "~verifier.choice_of_metric",
            "pipeline.num_inference_steps=2", "batch_size=4"]
    SlowAsyncVerifier.intervals.clear()
    run_tts([*over, "search=random", "search.schedule=constant", "search.per_round=4", "search.rounds=3"],
            tmp_path / "random")
    first_verified = SlowAsyncVerifier.intervals[0][1]
    assert starts[1] < first_verified  # round 2 was generated before round 1's scores came back
    records = read_manifest(tmp_path / "random")
    assert [r.round for r in sorted(records, key=lambda r: (r.round, r.index))] == [1] * 4 + [2] * 4 + [3] * 4
    starts.clear()
    SlowAsyncVerifier.intervals.clear()
    run_tts([*over, "search=zero-order", "search.rounds=2", "search.num_neighbors=3"], tmp_path / "zo")  # round 1: one batch
    assert starts[1] >= SlowAsyncVerifier.intervals[0][1]  # zero-order needs round 1's scores first


def test_the_per_prompt_bar_has_the_plans_total(tmp_path, capsys):
    """The per-prompt progress bar counts toward the plan's candidates (so tqdm shows a total and an ETA)."""
    run_tts(["search.rounds=2", "prompt=a red circle"], tmp_path / "run")
    err = capsys.readouterr().err
    assert "6/6" in err, err[-500:]
    assert json.loads((tmp_path / "run" / "plan.json").read_text())["candidates_per_prompt"]["max"] == 6
