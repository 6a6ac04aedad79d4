"""A full search end to end on a tiny random-weight twin of each pipeline family, loaded with from_pretrained."""
import json

import pytest
from conftest import run_tts
from twins import TWINS, save_twin

from tts.runfolder import read_manifest

REFERENCE_ROUND_FIELDS = {"prompt", "search_round", "num_noises", "best_noise_seed", "best_score",
                          "choice_of_metric", "best_img_path"}


@pytest.mark.slow
@pytest.mark.parametrize("family", list(TWINS))
def test_family_runs_a_full_search(family, twins_root, tmp_path):
    _, preset, call = TWINS[family]
    path = save_twin(family, twins_root)
    overrides = [f"pipeline={preset}", f"pipeline.model_id={path}", "pipeline.dtype=fp32", "pipeline.device=cpu",
                 "verifier=incompressibility", "search.rounds=2", "batch_size=4", "prompt=a red cube on the moon"]
    overrides += [f"pipeline.{k}={v}" for k, v in call.items()]
    summary = run_tts(overrides, tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 2 + 4 and all(r.status == "ok" for r in records)
    steps, guided = call["num_inference_steps"], family != "flux"  # flux-dev uses distilled guidance: 1 pass
    assert all(r.nfe == steps * (2 if guided else 1) for r in records)
    for r in records:
        assert (tmp_path / r.image).exists()
        assert r.image == f"prompt@a_red_cube_on_the_moon_hash@{r.prompt_hash}_i@{r.round}_s@{r.seed}.png"
        assert set(r.scores["incompressibility"]) == {"incompressibility"}
    for round_ in (1, 2):
        doc = json.loads((tmp_path / f"prompt@a_red_cube_on_the_moon_hash@{records[0].prompt_hash}_i@{round_}.json")
                         .read_text())
        assert REFERENCE_ROUND_FIELDS <= set(doc)
        assert doc["num_noises"] == 2 ** round_
        mine = [r.score for r in records if r.round == round_]
        assert doc["best_score"]["score"] == max(mine)
    assert summary["candidates"] == 6
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["pipeline"]["model_id"] == str(path)


@pytest.mark.slow
def test_zero_order_on_a_twin(twins_root, tmp_path):
    path = save_twin("sd15", twins_root)
    run_tts(["pipeline=sd15", f"pipeline.model_id={path}", "pipeline.dtype=fp32", "pipeline.device=cpu",
             "pipeline.height=32", "pipeline.width=32", "pipeline.num_inference_steps=2", "verifier=compressibility",
             "search=zero-order", "search.rounds=3", "search.num_neighbors=3", "prompt=a blue sphere"], tmp_path)
    records = read_manifest(tmp_path)
    rounds = [sum(r.round == k for r in records) for k in (1, 2, 3)]
    assert rounds[0] == 4 and all(n in (3, 4) for n in rounds[1:])
    neighbours = [r for r in records if r.noise["kind"] == "neighbor"]
    assert all(r.noise["threshold"] == 0.95 for r in neighbours)
    # every pivot a neighbour points at was itself generated and scored earlier (never regenerated)
    lineages = [json.dumps(r.noise, sort_keys=True) for r in records]
    assert len(set(lineages)) == len(lineages)
    for r in neighbours:
        assert json.dumps(r.noise["pivot"], sort_keys=True) in lineages
