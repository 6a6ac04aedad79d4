"""verifier=shapes-reward: the shipped learned reward loads through its config and from_pretrained, reads the image,
the prompt and the noise level, and tells right scenes from near misses on prompts it never trained on."""
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
from hydra.utils import instantiate
from PIL import Image

from conftest import compose
from tts.world import bench, grammar, scenes
from tts.world.reward import ShapesRewardModel

ASSET = Path(__file__).resolve().parents[1] / "tts" / "assets" / "shapes-reward"
_spec = importlib.util.spec_from_file_location("train_reward", Path(__file__).resolve().parents[1] / "scripts" / "train_reward.py")


def _train_reward():
    if "train_reward" not in sys.modules:
        module = importlib.util.module_from_spec(_spec)
        sys.modules["train_reward"] = module  # dataclasses look their module up there
        _spec.loader.exec_module(module)
    return sys.modules["train_reward"]


@pytest.fixture(scope="module")
def verifier():
    v = instantiate(compose(["verifier=shapes-reward"]).verifier)
    v.setup()
    return v


def test_weights_are_small_and_load_through_the_config(verifier):
    size = sum(f.stat().st_size for f in ASSET.iterdir())
    assert size < 3 * 2**20, f"shapes-reward weights are {size / 2**20:.1f} MB (at most 3 MB)"
    assert isinstance(verifier._model, ShapesRewardModel) and not verifier._model.training
    out = verifier.score(["a red circle", "two blue squares"], [Image.new("RGB", (32, 32), (255, 255, 255))] * 2)
    assert set(out[0]) == {"reward", "p_correct"} and all(0 <= s.score <= 1 for o in out for s in o.values())


def test_it_tells_right_scenes_from_near_misses_on_bench_prompts(verifier):
    """Bench prompts (never trained on): a rendered scene of the prompt against a scene with one thing changed;
    labels from the exact checker; the reward must rank them far better than chance, yet not perfectly."""
    tr, rng = _train_reward(), np.random.default_rng(7)
    prompts, images = [], []
    for p in bench.build(0)[::4]:
        spec = grammar.parse(p.text)
        for target in (spec, tr.near_miss(spec, rng)):
            prompts.append(p.text)
            images.append(scenes.render(target, rng)[0])
    met, correct = tr.labels(prompts, images)
    p_correct = np.array([s["p_correct"].score for s in verifier.score(prompts, images)])
    assert 0.75 < tr.auc(p_correct, correct) < 1.0


def test_it_is_noise_aware_and_reads_the_prompt(verifier):
    rng = np.random.default_rng(3)
    image = scenes.render(grammar.parse("a red circle"), rng)[0]
    final = verifier.score_preview(["a red circle"], [image], 0.0)[0]["reward"].score
    early = verifier.score_preview(["a red circle"], [image], 0.9)[0]["reward"].score
    wrong = verifier.score(["a blue square"], [image])[0]["reward"].score
    assert final != early and wrong < final


def test_auc_and_spearman_helpers_are_right():
    tr = _train_reward()
    assert tr.auc(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0])) == 1.0
    assert tr.auc(np.array([0.1, 0.9]), np.array([1, 0])) == 0.0
    assert tr.auc(np.array([0.5, 0.5]), np.array([1, 0])) == 0.5
    assert tr.spearman(np.array([1.0, 2, 3]), np.array([10.0, 20, 30])) == pytest.approx(1.0)
