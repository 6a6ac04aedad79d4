"""What components declare about themselves: the settings a resumed run folder may change
(``operational_keys``, read by tts.core.runfolder from each ``_target_`` class) and the direction of their
metrics (``Verifier.lower_is_better``), followed by strategies, the ensemble and the scripted person."""
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import run_tts
from tts.core import runfolder as rf
from tts.core.runfolder import RunFolder, RunFolderMismatch, config_differences, read_manifest
from tts.search import Candidate
from tts.search.frontends import ShownItem
from tts.search.frontends.scripted import ScriptedFrontend

USER_VERIFIER = {"_target_": "tts_test_components.Darkness", "poll_s": 1.0, "gamma": 1.0}


def test_a_new_operational_option_is_declared_by_its_component_alone(tmp_path):
    """tts_test_components.Darkness declares poll_s operational; runfolder.py knows nothing of it."""
    assert not [p for p in Path(rf.__file__).parent.glob("*.py") if "poll_s" in p.read_text()]
    folder = RunFolder(tmp_path)
    folder.write_config({"verifier": USER_VERIFIER, "seed": 0}, ("verifier", "seed"))
    folder.write_config({"verifier": {**USER_VERIFIER, "poll_s": 9.0}, "seed": 0}, ("verifier", "seed"))
    with pytest.raises(RunFolderMismatch, match="verifier.gamma"):
        folder.write_config({"verifier": {**USER_VERIFIER, "gamma": 2.0}, "seed": 0}, ("verifier", "seed"))
    assert json.loads((tmp_path / "config.json").read_text())["verifier"]["poll_s"] == 1.0


@pytest.mark.parametrize("old,new,operational", [
    ({"_target_": "tts.pipelines.PipelineSpec", "cpu_offload": False, "height": 64},
     {"_target_": "tts.pipelines.PipelineSpec", "cpu_offload": True, "height": 64}, True),
    ({"_target_": "tts.pipelines.PipelineSpec", "height": 64}, {"_target_": "tts.pipelines.PipelineSpec", "height": 32},
     False),
    ({"_target_": "tts.verifiers.gemini.GeminiVerifier", "timeout_s": 60, "api_version": "v1beta"},
     {"_target_": "tts.verifiers.gemini.GeminiVerifier", "timeout_s": 5, "api_version": "v1"}, True),
    ({"_target_": "tts.verifiers.openai.OpenAIVerifier", "model_name": "a"},
     {"_target_": "tts.verifiers.openai.OpenAIVerifier", "model_name": "b"}, False),
    ({"_target_": "tts.verifiers.ensemble.EnsembleVerifier",
      "members": [{"_target_": "tts.verifiers.clip.CLIPScoreVerifier", "device": "cpu"}]},
     {"_target_": "tts.verifiers.ensemble.EnsembleVerifier",
      "members": [{"_target_": "tts.verifiers.clip.CLIPScoreVerifier", "device": "cuda:1"}]}, True),
    ({"_target_": "tts.search.human_preference.HumanPreferenceSearch", "rounds": 3,
      "frontend": {"_target_": "tts.search.frontends.terminal.TerminalFrontend", "inline_images": "auto"}},
     {"_target_": "tts.search.human_preference.HumanPreferenceSearch", "rounds": 3,
      "frontend": {"_target_": "tts.search.frontends.web.WebFrontend", "port": 0}}, True),
    ({"_target_": "tts.search.human_preference.HumanPreferenceSearch", "interface": "terminal", "port": 8787},
     {"_target_": "tts.search.human_preference.HumanPreferenceSearch",
      "frontend": {"_target_": "tts.search.frontends.web.WebFrontend"}}, True),  # a folder of an older version
    ({"_target_": "tts.search.zero_order.ZeroOrderSearch", "threshold": 0.95},
     {"_target_": "tts.search.zero_order.ZeroOrderSearch", "threshold": 0.9}, False),
])
def test_shipped_components_declare_what_may_change_on_resume(old, new, operational):
    assert (config_differences(old, new, "x") == []) == operational


def test_candidates_follow_the_metrics_direction():
    lo, hi = Candidate(1, 0, {}, 0.2, higher_is_better=False), Candidate(1, 1, {}, 0.8, higher_is_better=False)
    assert lo.beats(hi) and not hi.beats(lo) and lo.beats(None)
    assert Candidate(1, 1, {}, 0.8).beats(Candidate(1, 0, {}, 0.2))
    assert not Candidate(1, 0, {}, None).beats(None) and lo.beats(Candidate(1, 2, {}, None, higher_is_better=False))


def test_the_simulated_person_picks_the_best_in_the_metrics_direction(tmp_path):
    items = [ShownItem(k + 1, tmp_path / f"{k}.png", k, s, "m", higher_is_better=False) for k, s in enumerate((3, 1, 2))]
    assert ScriptedFrontend(simulate_top_k=2).present(1, "p", items, tmp_path).picks == [2, 3]
    for item in items:
        item.higher_is_better = True
    assert ScriptedFrontend(simulate_top_k=2).present(1, "p", items, tmp_path).picks == [1, 3]


def test_ensemble_ranks_a_lower_is_better_member_reversed():
    from tts.verifiers.ensemble import EnsembleVerifier
    from tts_test_components import Darkness
    from tts_test_plugins import Brightness

    ens = EnsembleVerifier([Brightness(), Darkness()], method="mean_rank")
    dark, light = Image.new("RGB", (8, 8), (10, 10, 10)), Image.new("RGB", (8, 8), (240, 240, 240))
    ens.score(["p"], [dark])
    (second,) = ens.score(["p"], [light])
    # brighter ranks first for Brightness and last for Darkness: they cancel out
    assert second.scores["ensemble"].score == pytest.approx(0.5)


def test_jpeg_rewards_keep_ddpos_values_and_both_are_maximised():
    from tts.verifiers.compressibility import Compressibility
    from tts.verifiers.incompressibility import Incompressibility
    from tts.verifiers._jpeg import jpeg_kb

    img = Image.effect_noise((32, 32), 64).convert("RGB")
    kb = jpeg_kb(img)
    assert Compressibility().score(["p"], [img])[0]["compressibility"].score == -kb
    assert Incompressibility().score(["p"], [img])[0]["incompressibility"].score == kb
    assert Compressibility().higher_is_better() and Incompressibility().higher_is_better()


def test_a_search_minimises_a_lower_is_better_metric(tmp_path):
    """The loop tells strategies each candidate with the verifier's direction, and its best is the lowest."""
    summary = run_tts(["verifier._target_=tts_test_components.Darkness", "verifier.choice_of_metric=luminance",
                       "pipeline.num_inference_steps=2", "search.rounds=2"], tmp_path)
    scores = [r.score for r in read_manifest(tmp_path) if r.status == "ok"]
    assert summary["groups"]["all"]["luminance"] == pytest.approx(min(scores))
