"""Drop-in for tt-scale-flux users: file names byte for byte, round JSONs its process_results.py pattern
groups, its JSON configs run as is, and the same run folder shape."""
import collections
import csv
import hashlib
import json
import re
import subprocess
import sys

import pytest
from conftest import PARTI, needs_shared, run_tts

from tts.core import runfolder as rf
from tts.core.configtree import config_dir
from tts.app.ttsf import TtsfConfigError, to_overrides

#: tt-scale-flux's process_results.py pattern for round JSONs.
PATTERN = re.compile(r"prompt@(.+?)_hash@([^_]+)_i@(\d+)_s@(\d+)\.json")


def reference_stem(prompt: str) -> str:
    """The rule as tt-scale-flux documents it, written from its description (not from tts)."""
    name = prompt.strip()
    name = "".join(c if (c.isascii() and c.isalnum()) else "_" for c in name)
    while "__" in name:
        name = name.replace("__", "_")
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    stem = "prompt@" + name + "_hash@" + digest
    return stem if len(stem) <= 100 else "prompt@" + name[:85] + "_hash@" + digest


@pytest.mark.parametrize("prompt,expected_name", [
    ("a red circle", "a_red_circle"),
    ("  leading and trailing spaces  ", "leading_and_trailing_spaces"),
    ("café ☕ naïve", "caf_na_ve"),
    ("!!!", "_"),
    ("a, b. c!", "a_b_c_"),
    ("x" * 120, "x" * 85),
    ("a " * 40 + "end!", ("a_" * 40 + "end_")[:85]),
])
def test_names_follow_the_reference_rule_on_edge_cases(prompt, expected_name):
    digest = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    assert rf.prompt_stem(prompt) == f"prompt@{expected_name}_hash@{digest}" == reference_stem(prompt)


@needs_shared
def test_names_are_byte_identical_on_every_partiprompt():
    with open(PARTI, newline="", encoding="utf-8") as f:
        prompts = [row["Prompt"] for row in csv.DictReader(f, delimiter="\t")]
    assert len(prompts) > 1000
    assert [rf.prompt_stem(p) for p in prompts] == [reference_stem(p) for p in prompts]
    assert all(rf.image_name(p, 2, 7) == reference_stem(p) + "_i@2_s@7.png" for p in prompts[:50])


@pytest.mark.slow
def test_process_results_pattern_groups_a_tts_run_folder(tmp_path):
    run_tts(["pipeline.num_inference_steps=2", "search.rounds=3", "batch_size=4"], tmp_path / "a")
    run_tts(["pipeline.num_inference_steps=2", "search.rounds=2", "prompt=two green squares"], tmp_path / "a")
    groups = collections.defaultdict(list)
    for path in (tmp_path / "a").glob("*.json"):
        m = PATTERN.match(path.name)
        if m:
            groups[(m[1], m[2])].append((int(m[3]), int(m[4]), json.loads(path.read_text())))
    assert sorted(len(v) for v in groups.values()) == [2, 3]
    for rounds in groups.values():
        for round_, seed, doc in rounds:
            assert doc["search_round"] == round_ and doc["best_noise_seed"] == seed
            assert "/" not in doc["best_img_path"]  # relative to the run folder
            assert (tmp_path / "a" / doc["best_img_path"]).exists()
            assert set(doc) >= {"prompt", "search_round", "num_noises", "best_noise_seed", "best_score",
                                "choice_of_metric", "best_img_path"}


FLUX_DEV = {"pretrained_model_name_or_path": "black-forest-labs/FLUX.1-dev", "torch_dtype": "bf16",
            "pipeline_call_args": {"height": 1024, "width": 1024, "max_sequence_length": 512, "guidance_scale": 3.5,
                                   "num_inference_steps": 50},
            "verifier_args": {"name": "gemini", "max_new_tokens": 800, "choice_of_metric": "overall_score"},
            "search_args": {"search_method": "random", "search_rounds": 4},
            "batch_size_for_img_gen": 1, "use_low_gpu_vram": False}


def test_a_tt_scale_flux_config_maps_every_key():
    over = to_overrides(FLUX_DEV, config_dir())
    assert over[:2] == ["pipeline=flux-dev", 'pipeline.dtype="bf16"']
    assert {"pipeline.height=1024", "pipeline.num_inference_steps=50", "pipeline.guidance_scale=3.5",
            "verifier=gemini", 'verifier.choice_of_metric="overall_score"', "search=random", "search.rounds=4",
            "batch_size=1"} <= set(over)
    sdxl = {"pretrained_model_name_or_path": "stabilityai/stable-diffusion-xl-base-1.0",
            "pipeline_call_args": {"negative_prompt": "bad quality, worse quality"},
            "search_args": {"search_method": "zero-order", "search_rounds": 2, "threshold": 0.9, "num_neighbors": 3}}
    over = to_overrides(sdxl, config_dir())
    assert '+pipeline.call_args={negative_prompt:"bad quality, worse quality"}' in over
    assert {"pipeline=sdxl", "search=zero-order", "search.threshold=0.9", "search.num_neighbors=3"} <= set(over)


@pytest.mark.parametrize("config,says", [
    ({"pretrained_model_name_or_path": "x", "batch_size": 2}, "'batch_size'"),
    ({"verifier_args": {"name": "gemini", "temperature": 0}}, "'temperature'"),
    ({"search_args": {"search_method": "path-search", "N": 4}}, "'N'"),
    ({"search_args": {"search_method": "path-search"}}, "not available in tts yet"),
    ({"verifier_args": {"name": "clipscore"}}, "unknown verifier 'clipscore'; did you mean"),
])
def test_unknown_keys_of_a_tt_scale_flux_config_are_named(config, says):
    with pytest.raises(TtsfConfigError, match=says):
        to_overrides(config, config_dir())


def test_verifier_args_may_name_any_tts_verifier_with_its_own_default_metric():
    """The reference's JSON names a grader and its metric; naming a tts verifier instead works offline, and a
    grader's metric (overall_score) falls back to that verifier's default rather than failing."""
    grader_args = {"name": "shapes", "choice_of_metric": "overall_score", "max_new_tokens": 300,
                   "model_name": "gemini-2.0-flash"}
    verifier = [o for o in to_overrides({"verifier_args": grader_args}, config_dir()) if o.startswith("verifier")]
    assert verifier == ["verifier=shapes"]
    own = to_overrides({"verifier_args": {"name": "shapes", "choice_of_metric": "correct"}}, config_dir())
    assert [o for o in own if o.startswith("verifier.")] == ['verifier.choice_of_metric="correct"']
    kept = to_overrides({"verifier_args": {"name": "gemini", "choice_of_metric": "overall_score"}}, config_dir())
    assert 'verifier.choice_of_metric="overall_score"' in kept


@pytest.mark.slow
def test_tts_search_runs_a_tt_scale_flux_config_as_is(tmp_path):
    config = {"pretrained_model_name_or_path": "tts://shapes-model", "torch_dtype": "fp32",
              "pipeline_call_args": {"num_inference_steps": 2},
              "search_args": {"search_method": "zero-order", "search_rounds": 2, "threshold": 0.9, "num_neighbors": 2},
              "verifier_args": {"name": "shapes", "choice_of_metric": "overall_score", "max_new_tokens": 300},
              "batch_size_for_img_gen": 2}
    (tmp_path / "shapes.json").write_text(json.dumps(config))
    out = subprocess.run([sys.executable, "-c", "from tts.app.cli import main; main()",
                          f"ttsf_config={tmp_path / 'shapes.json'}", f"hydra.run.dir={tmp_path / 'run'}"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["pipeline"]["name"] == "shapes" and saved["pipeline"]["num_inference_steps"] == 2
    assert saved["search"]["threshold"] == 0.9 and saved["batch_size"] == 2
    assert saved["verifier"]["choice_of_metric"] == "criteria_met"   # the shapes verifier's own default
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"pretrained_model_name_or_path": "x", "typo_key": 1}))
    out = subprocess.run([sys.executable, "-c", "from tts.app.cli import main; main()", f"ttsf_config={bad}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "'typo_key'" in out.stderr and "Traceback" not in out.stderr


def test_the_migration_table_names_real_keys():
    """Every tts key in the migration table (docs/migrating.md) is accepted by the command line, and every
    tt-scale-flux key in it is one that ttsf_config maps."""
    from pathlib import Path

    from tts.app.overrides import check_overrides

    section = (Path(__file__).parents[1] / "docs" / "migrating.md").read_text()
    rows = [line.split("|")[1:3] for line in section.splitlines() if line.startswith("| `")]
    assert len(rows) >= 12
    ttsf_keys = set(FLUX_DEV) | set(FLUX_DEV["pipeline_call_args"]) | set(FLUX_DEV["verifier_args"]) \
        | set(FLUX_DEV["search_args"]) | {"negative_prompt", "model_name", "prompt_path", "threshold",
                                          "num_neighbors", "num_prompts"}
    for left, right in rows:
        for key in re.findall(r"`([a-z_]+)", left):
            if key not in ("output", "process_results"):
                assert key in ttsf_keys, key
        for key in re.findall(r"`((?:pipeline|verifier|search)\.[a-z_]+)", right):
            group = {"pipeline": "pipeline=flux-dev", "verifier": "verifier=qwen", "search": "search=zero-order"}
            check_overrides([group[key.split(".")[0]], f"{key}=1"])
