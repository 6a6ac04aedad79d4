"""verifier=shapes-reward: the shipped learned reward loads through its config and from_pretrained, reads the image,
the prompt and the noise level, and tells right scenes from near misses on prompts it never trained on."""
import dataclasses
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image

from conftest import compose
from tts.world import bench, grammar, scenes
from tts.world.detect import detect
from tts.world.reward import (MAX_GROUPS, ShapesRewardModel, density_targets, encode_objects, encode_prompts,
                              held_out_free, to_pixels)

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
    met, correct, _ = tr.labels(prompts, images)
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
    # two prompts: the scores rank each prompt's own images right, though the pooled ranking is wrong
    scores, labels, prompts = np.array([0.2, 0.1, 0.9, 0.8]), np.array([1, 0, 1, 0]), np.array(["a", "a", "b", "b"])
    assert tr.within_prompt_auc(scores, labels, prompts) == (1.0, 2)
    assert tr.auc(scores, labels) == 0.75
    assert tr.within_prompt_auc(np.array([0.5, 0.5, 0.3]), np.array([1, 0, 0]), np.array(["a", "a", "a"])) == (0.75, 2)


def test_prompts_are_read_with_the_worlds_parser():
    groups, relation = encode_prompts(["two small red circles", "a blue square left of a triangle"])
    assert groups.shape == (2, MAX_GROUPS, 4)
    assert groups[0, 0].tolist() == [2, 1, 1, 2] and groups[0, 1:].sum() == 0  # red = 1, circle = 1, small = 2
    assert groups[1, 0].tolist() == [1, 3, 2, 0] and groups[1, 1].tolist() == [1, 0, 3, 0]
    assert relation.tolist() == [0, 1]  # "left of" is RELATIONS[0]
    with pytest.raises(grammar.PromptError):
        encode_prompts(["a photo of a cat"])


def test_density_targets_put_one_unit_of_mass_on_each_matching_object():
    image, objects = scenes.render(grammar.parse("two big red circles and a small blue square"), np.random.default_rng(0))
    found = encode_objects(detect(image))[None]
    queries = torch.tensor([[[1, 1, 0], [1, 1, 2], [0, 0, 0], [0, 2, 0], [3, 2, 2], [2, 0, 0]]])
    maps = density_targets(torch.from_numpy(found), queries)
    assert maps.shape == (1, 6, 16, 16)
    assert maps.sum((2, 3))[0].tolist() == pytest.approx([2, 0, 3, 1, 1, 0], abs=1e-4)
    peak = divmod(int(maps[0, 3].argmax()), 16)  # the square's cell (row, col) holds its centre
    square = next(o for o in objects if o.shape == "square")
    assert abs(peak[0] - square.cy / 2) <= 1 and abs(peak[1] - square.cx / 2) <= 1


def test_training_never_names_a_held_out_pair():
    q = torch.tensor([[[5, 3, 0], [6, 2, 1], [4, 1, 2], [5, 1, 0]]])  # purple triangle, cyan square, yellow circle
    assert held_out_free(q).tolist() == [[[0, 3, 0], [0, 2, 1], [0, 1, 2], [5, 1, 0]]]
    tr = _train_reward()
    objects = torch.from_numpy(np.stack([encode_objects(o) for o in (
        [scenes.Obj("triangle", "purple", "big", 0, 0, 12, 12)], [scenes.Obj("circle", "yellow", "small", 4, 4, 9, 9)])]))
    for seed in range(20):
        extra = tr.extra_queries(objects, torch.Generator().manual_seed(seed))
        assert (held_out_free(extra) == extra).all()


def test_the_shipped_model_counts_what_the_prompt_asks_for(verifier):
    """The density maps of the shipped weights sum to the number of matching objects on rendered scenes of bench
    prompts (never trained on), to within half an object for most phrases."""
    rng, errors = np.random.default_rng(11), []
    prompts = [p.text for p in bench.build(0) if p.tags["category"] in ("counting", "two_object", "color_attr")][::6]
    images = [scenes.render(grammar.parse(t), rng, allow_held_out=False)[0] for t in prompts]
    groups, relation = encode_prompts(prompts)
    model = verifier._model
    with torch.no_grad():
        _, maps = model(to_pixels(images), groups, relation, torch.zeros(len(images)),
                        extra_queries=torch.zeros(len(images), 0, 3, dtype=torch.long))
    counts = maps.sum((2, 3))
    for row, image in enumerate(images):
        truth = density_targets(torch.from_numpy(encode_objects(detect(image)))[None],
                                torch.cat([groups[row:row + 1, :, 1:], torch.zeros(1, 1, 3, dtype=torch.long)], 1))
        asked = (groups[row, :, 0] > 0).tolist() + [True]
        errors += [abs(float(c) - float(t)) for c, t, a in zip(counts[row], truth.sum((2, 3))[0], asked) if a]
    assert np.mean(np.array(errors) < 0.5) > 0.9, f"counts off by 0.5 or more on {np.mean(np.array(errors) >= 0.5):.0%}"


def test_training_resumes_after_a_kill_to_the_same_weights(tmp_path, monkeypatch):
    """scripts/train_reward.py's train(): killed right after its first checkpoint, a rerun resumes there and ends with
    the weights of an uninterrupted run; a checkpoint of another model is refused with the fix."""
    import argparse
    tr = _train_reward()
    data = tr.rendered(tr.training_prompts(12, 5), 5)
    data = tr.Data.concat([data, dataclasses.replace(data, noise=np.full(len(data), 0.5, np.float32), step=np.full(len(data), 5))])
    args = lambda work: argparse.Namespace(work=work, seed=0, lr=2e-3, batch=16, epochs=2, aux_weight=1.0,
                                          preview_share=0.5)
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    straight = tr.train(args(tmp_path / "a"), data).state_dict()
    save = torch.save

    def killed(obj, path):
        save(obj, path)
        raise KeyboardInterrupt

    monkeypatch.setattr(tr.torch, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        tr.train(args(tmp_path / "b"), data)
    monkeypatch.setattr(tr.torch, "save", save)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = tr.train(args(tmp_path / "b"), data).state_dict()
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)
    with pytest.raises(SystemExit, match="new --work"):
        tr.train(argparse.Namespace(**{**vars(args(tmp_path / "b")), "epochs": 3}), data)
