"""The field's rewards rebuilt on current libraries, each proved equal to its reference implementation on the
same random weights: golden values in tests/golden/, made by scripts/*_golden.py in a separate environment."""
import json
from pathlib import Path

import pytest
import torch
from PIL import Image

import imagereward_twin
from conftest import run_tts
from tts.core.runfolder import read_manifest

GOLDEN = Path(__file__).resolve().parent / "golden"
STEPS = ["pipeline.num_inference_steps=2", "search.rounds=2"]


@pytest.fixture(scope="module")
def imagereward_dir(tmp_path_factory):
    return imagereward_twin.save_imagereward_twin(tmp_path_factory.mktemp("imagereward"))


def imagereward(folder, **kw):
    from tts.verifiers.imagereward import ImageRewardVerifier

    v = ImageRewardVerifier(model_name=str(folder), tokenizer_name=str(folder / "tokenizer"), device="cpu", **kw)
    v.setup()
    return v


def test_imagereward_equals_the_reference_package_on_the_same_weights(imagereward_dir):
    """scripts/imagereward_golden.py ran image-reward 1.5 (ImageReward.score, one pair at a time) on this very
    checkpoint; ours scores all 25 pairs in one batch."""
    from tts.verifiers.imagereward import preprocess

    golden = json.loads((GOLDEN / "imagereward.json").read_text())
    state = torch.load(imagereward_dir / "ImageReward.pt", weights_only=True)
    assert imagereward_twin.weights_checksum(state) == pytest.approx(golden["weights_checksum"], rel=1e-12)
    images = imagereward_twin.golden_images()
    assert [float(preprocess(im).double().sum()) for im in images] == pytest.approx(golden["pixel_sums"], abs=1e-6)
    v = imagereward(imagereward_dir)
    tokens = v._tok(golden["prompts"], padding="max_length", truncation=True, max_length=35)["input_ids"]
    assert tokens == golden["token_ids"]
    prompts = [p for p in golden["prompts"] for _ in images]
    scores = [s["imagereward"].score for s in v.score(prompts, images * len(golden["prompts"]))]
    expected = [x for row in golden["scores"] for x in row]
    assert max(abs(a - b) for a, b in zip(scores, expected)) < 1e-4
    assert max(expected) - min(expected) > 0.5  # the weights matter: a wrong mapping cannot hide in a flat score


def test_imagereward_reward_is_differentiable_in_the_image(imagereward_dir):
    from tts.verifiers.imagereward import preprocess

    v = imagereward(imagereward_dir)
    x = preprocess(imagereward_twin.golden_images()[0]).unsqueeze(0).requires_grad_(True)
    r = v.reward(["a photo of a cat"], x)
    (grad,) = torch.autograd.grad(r.sum(), x)
    d = torch.randn_like(x)
    eps = 1e-3
    with torch.no_grad():
        fd = (v.reward(["a photo of a cat"], x + eps * d) - v.reward(["a photo of a cat"], x - eps * d)) / (2 * eps)
    assert float((grad * d).sum()) == pytest.approx(float(fd), rel=1e-2, abs=1e-4)


def test_imagereward_steers_a_search_and_records_its_scores(imagereward_dir, tmp_path):
    run_tts(["verifier=imagereward", f"verifier.model_name={imagereward_dir}",
             f"verifier.tokenizer_name={imagereward_dir / 'tokenizer'}", *STEPS], tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 6 and all(r.status == "ok" for r in records)
    v = imagereward(imagereward_dir)
    again = v.score([r.prompt for r in records], [Image.open(tmp_path / r.image) for r in records])
    assert [r.score for r in records] == pytest.approx([s["imagereward"].score for s in again], abs=1e-4)
    assert len({r.score for r in records}) > 1


def test_imagereward_refuses_a_folder_without_the_original_files(imagereward_dir, tmp_path):
    from tts.verifiers.imagereward import ImageRewardVerifier, build_model

    (tmp_path / "ImageReward.pt").write_bytes((imagereward_dir / "ImageReward.pt").read_bytes())
    with pytest.raises(FileNotFoundError, match="lacks med_config.json"):
        ImageRewardVerifier(model_name=str(tmp_path), device="cpu").setup()
    state = torch.load(imagereward_dir / "ImageReward.pt", weights_only=True)
    config = json.loads((imagereward_dir / "med_config.json").read_text())
    build_model({**state, "blip.image_queue": torch.zeros(2)}, config)  # other BLIP parts are not the reward's
    with pytest.raises(ValueError, match="unexpected keys.*vision_model"):
        build_model({**state, "vision_model.foo": torch.zeros(1)}, config)
    del state["blip.visual_encoder.blocks.1.attn.qkv.weight"]
    with pytest.raises(ValueError, match="missing.*layers.1.self_attn.qkv.weight"):
        build_model(state, config)


@pytest.fixture(scope="module")
def hpsv2_dir(tmp_path_factory):
    import hpsv2_twin

    return hpsv2_twin.save_hpsv2_twin(tmp_path_factory.mktemp("hpsv2"))


def hpsv2(folder, **kw):
    from tts.verifiers.hpsv2 import HPSv2Verifier

    v = HPSv2Verifier(checkpoint=str(folder / "HPS_v2.1_compressed.pt"), tokenizer_name=str(folder / "tokenizer"),
                      vision_heads=2, text_heads=4, device="cpu", **kw)
    v.setup()
    return v


def test_hpsv2_equals_the_reference_package_on_the_same_weights(hpsv2_dir):
    """scripts/hpsv2_golden.py ran hpsv2 1.2.0's img_score.score (its vendored open_clip, one pair at a time) on
    this very checkpoint; ours (transformers' CLIPModel, keys mapped) scores all 25 pairs in one batch."""
    import hpsv2_twin
    from tts.verifiers.hpsv2 import clean, preprocess

    golden = json.loads((GOLDEN / "hpsv2.json").read_text())
    state = torch.load(hpsv2_dir / "HPS_v2.1_compressed.pt", weights_only=True)["state_dict"]
    assert hpsv2_twin.weights_checksum(state) == pytest.approx(golden["weights_checksum"], rel=1e-12)
    images = hpsv2_twin.golden_images()
    assert [float(preprocess(im).double().sum()) for im in images] == pytest.approx(golden["pixel_sums"], abs=1e-6)
    v = hpsv2(hpsv2_dir)
    assert v._tok([clean(p) for p in golden["prompts"]], truncation=True, max_length=77)["input_ids"] == golden["token_ids"]
    prompts = [p for p in golden["prompts"] for _ in images]
    scores = [s["hps"].score for s in v.score(prompts, images * len(golden["prompts"]))]
    expected = [x for row in golden["scores"] for x in row]
    assert max(abs(a - b) for a, b in zip(scores, expected)) < 1e-4
    assert max(expected) - min(expected) > 0.3


def test_hpsv2_steers_a_search_and_names_its_versions(hpsv2_dir, tmp_path):
    from tts.verifiers.base import VerifierError
    from tts.verifiers.hpsv2 import HPSv2Verifier, build_model

    run_tts(["verifier=hpsv2", f"verifier.checkpoint={hpsv2_dir / 'HPS_v2.1_compressed.pt'}",
             f"verifier.tokenizer_name={hpsv2_dir / 'tokenizer'}", "verifier.vision_heads=2", "verifier.text_heads=4",
             *STEPS], tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 6 and all(r.status == "ok" for r in records)
    again = hpsv2(hpsv2_dir).score([r.prompt for r in records], [Image.open(tmp_path / r.image) for r in records])
    assert [r.score for r in records] == pytest.approx([s["hps"].score for s in again], abs=1e-4)
    assert HPSv2Verifier(version="v2.0").version == "v2.0"
    with pytest.raises(VerifierError, match="did you mean 'v2.1'"):
        HPSv2Verifier(version="2.1")
    with pytest.raises(ValueError, match="not an open_clip CLIP state dict"):
        build_model({"foo": torch.zeros(1)}, 2, 4)
    with pytest.raises(FileNotFoundError, match="verifier.checkpoint '/nowhere/HPS.pt' not found"):
        HPSv2Verifier(checkpoint="/nowhere/HPS.pt", device="cpu").setup()


def test_hpsv2_reward_is_differentiable_in_the_image(hpsv2_dir):
    import hpsv2_twin
    from tts.verifiers.hpsv2 import preprocess

    v = hpsv2(hpsv2_dir)
    x = preprocess(hpsv2_twin.golden_images()[1]).unsqueeze(0).requires_grad_(True)
    (grad,) = torch.autograd.grad(v.reward(["a red car"], x).sum(), x)
    d, eps = torch.randn_like(x), 1e-3
    with torch.no_grad():
        fd = (v.reward(["a red car"], x + eps * d) - v.reward(["a red car"], x - eps * d)) / (2 * eps)
    assert float((grad * d).sum()) == pytest.approx(float(fd), rel=1e-2, abs=1e-4)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from twins import save_qwen

    return save_qwen(tmp_path_factory.mktemp("qwen"))


def test_vqascore_is_the_next_token_probability_of_yes_batched_as_alone(qwen_dir):
    from tts.verifiers.vqascore import VQAScoreVerifier

    v = VQAScoreVerifier(model_name=str(qwen_dir), device="cpu", max_side=64)
    v.setup()
    images = imagereward_twin.golden_images()[:3]
    prompts = ["a photo of a cat", "a red car and a blue bench on the moon, seen from far away", "two dogs"]
    batched = [s["vqascore"].score for s in v.score(prompts, images)]
    alone = [v.score([p], [im])[0]["vqascore"].score for p, im in zip(prompts, images)]
    assert batched == pytest.approx(alone, abs=1e-5) and all(0 < s < 1 for s in batched)
    assert len(set(batched)) == 3
    # the same number from the model's own forward on the chat text, as t2v_metrics reads it
    from tts.verifiers.qwen import _with_format

    text = v._proc.apply_chat_template([{"role": "user", "content": [
        {"type": "image"}, {"type": "text", "text": f'Does this figure show "{prompts[1]}"? Please answer yes or no.'}]}],
        tokenize=False, add_generation_prompt=True)
    inputs = v._proc(text=[text], images=[_with_format(images[1], 64)], return_tensors="pt")
    with torch.no_grad():
        probs = v._model(**inputs).logits[0, -1].float().softmax(-1)
    assert batched[1] == pytest.approx(float(probs[v._proc.tokenizer.encode("Yes")[0]]), abs=1e-6)


def test_vqascore_steers_a_search_and_refuses_a_question_without_the_prompt(qwen_dir, tmp_path):
    from tts.verifiers.base import VerifierError
    from tts.verifiers.vqascore import VQAScoreVerifier

    run_tts(["verifier=vqascore", f"verifier.model_name={qwen_dir}", "verifier.max_side=64", *STEPS], tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 6 and all(r.status == "ok" and 0 < r.score < 1 for r in records)
    with pytest.raises(VerifierError, match="must contain {prompt}"):
        VQAScoreVerifier(question="Is this good?")
