"""In-loop strategies in a run folder (tts.run.inloop): records with paths, previews, budgets, replay, resume."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TESTS, run_tts

from tts.core import runfolder as rf
from tts.core.configtree import config_dir
from tts.app.replay import replay
from tts.core.runfolder import read_manifest

PLUGIN = ["search._target_=tts_test_plugins.TinyInLoop", "+search.eta=0.5"]
FAST = ["pipeline.num_inference_steps=4", "prompts=shapes-bench", "num_prompts=2", "batch_size=4"]


def in_loop_configs() -> list[str]:
    """Every shipped search config whose strategy acts inside the denoising loop."""
    import importlib

    import yaml

    out = []
    for path in sorted((config_dir() / "search").glob("*.yaml")):
        target = yaml.safe_load(path.read_text()).get("_target_")
        if target is None:  # a config built on another (defaults: [random]), e.g. models-shapes
            continue
        module, _, cls = target.rpartition(".")
        if getattr(getattr(importlib.import_module(module), cls), "in_loop", False):
            out.append(path.stem)
    return out


@pytest.fixture(autouse=True)
def plugins_on_path(monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS / "plugins"))


def check_folder(run: Path, budget: float | None) -> list:
    records = read_manifest(run)
    searches = rf.read_searches(run)
    assert len(searches) == 2 and records
    for r in records:
        assert r.path is not None and r.path.ops[0] == {"op": "start", "noise": r.noise}
        assert r.image == rf.candidate_image_name(r.prompt, 1, r.index) and (run / r.image).is_file()
        assert r.path.nfe_shared <= r.path.nfe_path
    for phash, s in searches.items():
        mine = [r for r in records if r.prompt_hash == phash]
        assert s.candidates == len(mine)
        assert sum(r.nfe for r in mine) == pytest.approx(s.nfe)  # charged NFEs sum to what the search spent
        if budget is not None:
            assert s.nfe <= budget
    previews = [json.loads(line) for line in (run / rf.PREVIEWS).read_text().splitlines()]
    assert previews and all({"prompt_hash", "step", "score", "particle", "noise_level"} <= set(p) for p in previews)
    assert len(previews) == sum(s.preview_scores for s in searches.values())
    summary = json.loads((run / rf.SUMMARY).read_text())
    assert summary["nfe_total"] == pytest.approx(sum(s.nfe for s in searches.values()))
    assert summary["verifier_calls"] == len(records) + len(previews)
    assert len(list(run.glob("*_i@1_s@*.json"))) == 2  # a round JSON per prompt
    return records


def test_plugin_in_loop_strategy_records_paths_previews_and_replays(tmp_path):
    run_tts(FAST + PLUGIN, tmp_path)
    records = check_folder(tmp_path, None)
    assert len(records) == 6
    events = [op for r in records for op in r.path.ops if op["op"] == "from"]
    assert events and all(e["event"] == "keep" and e["step"] == 2 for e in events)
    assert any(op["op"] == "renoise" for op in records[0].path.ops)
    twins = [r for r in records if r.path.nfe_shared > 0]
    assert twins  # the best particle was kept twice: its copy shares the first two steps
    for r in records[:3]:
        _, diff = replay(tmp_path, r.image)
        assert diff <= 1


@pytest.mark.slow
@pytest.mark.parametrize("name", in_loop_configs())
def test_every_in_loop_strategy_keeps_its_budget_and_replays(name, tmp_path):
    run_tts(FAST + [f"search={name}", "search.nfe_budget=40"], tmp_path)
    records = check_folder(tmp_path, 40)
    for r in records[:2]:
        _, diff = replay(tmp_path, r.image)
        assert diff <= 1, (name, r.image)
    out = subprocess.run([sys.executable, "-c", "from tts.views.collage import main; main()", str(tmp_path), "--grid"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr


def folder_state(run: Path) -> dict:
    """What an uninterrupted run and a killed-and-rerun one must agree on (not timings or writers)."""
    final = sorted(rf.final_records(read_manifest(run)), key=lambda r: r.key)
    images = {p.name: p.read_bytes() for p in run.glob("*.png")}
    previews = sorted((run / rf.PREVIEWS).read_text().splitlines())
    summary = json.loads((run / rf.SUMMARY).read_text())
    rounds = {p.name: json.loads(p.read_text()) for p in run.glob("*_i@*.json")}
    return {"records": [(r.key, r.score, r.nfe, r.path.model_dump(), r.image) for r in final], "images": images,
            "previews": previews, "summary": summary, "rounds": rounds,
            "searches": {k: (s.candidates, s.nfe, s.preview_scores) for k, s in rf.read_searches(run).items()}}


@pytest.mark.slow
def test_kill_9_mid_search_then_rerun_gives_the_uninterrupted_folder(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{TESTS / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    base = [sys.executable, "-c", "from tts.app.cli import main; main()", *FAST, "num_prompts=3", *PLUGIN,
            "verifier._target_=tts_test_plugins.SleepyVerifier", "~verifier.choice_of_metric"]
    subprocess.run([*base, f"hydra.run.dir={tmp_path / 'whole'}"], env=env, check=True, capture_output=True,
                   timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen([*base, f"hydra.run.dir={run}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # killed while the second prompt is searched (its previews and finals are
        if len(rf.read_searches(run)) == 1:  # scored by a verifier that sleeps 0.3 s a batch: 0.6 s at least)
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(rf.read_searches(run)) == 1  # one prompt finished, the second one in progress
    subprocess.run([*base, f"hydra.run.dir={run}"], env=env, check=True, capture_output=True, timeout=600)
    assert folder_state(run) == folder_state(tmp_path / "whole")


def test_a_budget_below_one_image_is_refused_before_loading(tmp_path):
    from conftest import compose

    from tts.app.build import build_job
    from tts.app.errors import ConfigError

    with pytest.raises(ConfigError, match=r"search.nfe_budget=5 pays for less than one image \(10 NFEs per image"):
        build_job(compose(["search=smc", "search.nfe_budget=5"]), tmp_path)
