"""Local verifiers (CLIPScore, LAION aesthetic, PickScore, ensembles) with a tiny random CLIP built
offline and loaded through the same from_pretrained code as the real checkpoints."""
import pytest
import torch
from PIL import Image

from conftest import run_tts
from tts.core.records import MetricScore
from tts.core.runfolder import read_manifest
from tts.verifiers.base import Verdict, Verifier
from twins import save_clip

STEPS = ["pipeline.num_inference_steps=2", "search.rounds=2"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_clip(tmp_path_factory.mktemp("clip"))


def reference_logits(clip_dir, prompt, path):
    """logit_scale * cos(image, text) straight from transformers' CLIPModel forward (an independent path)."""
    from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel

    model = CLIPModel.from_pretrained(clip_dir).eval()
    pixels = CLIPImageProcessor.from_pretrained(clip_dir)(images=[Image.open(path).convert("RGB")],
                                                          return_tensors="pt")["pixel_values"]
    tokens = AutoTokenizer.from_pretrained(clip_dir)([prompt], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = model(pixel_values=pixels, **tokens)
    return float(out.logits_per_image[0, 0]), float(model.logit_scale.detach().exp())


def test_clipscore_and_pickscore_match_the_clip_forward(clip_dir, tmp_path):
    for name, extra in (("clip", []), ("pickscore", ["verifier.processor_name=null"])):
        run_dir = tmp_path / name
        run_tts([f"verifier={name}", f"verifier.model_name={clip_dir}", *extra, *STEPS], run_dir)
        records = read_manifest(run_dir)
        assert len(records) == 6 and all(r.status == "ok" for r in records)
        for r in records[:2]:
            logits, scale = reference_logits(clip_dir, r.prompt, run_dir / r.image)
            if name == "clip":
                assert r.scores["clip"]["cosine"].score == pytest.approx(logits / scale, abs=1e-4)
                assert r.score == pytest.approx(2.5 * max(logits / scale, 0), abs=1e-4)
            else:
                assert r.score == pytest.approx(logits, abs=1e-3)


def test_aesthetic_head_on_clip_image_embeddings(clip_dir, tmp_path):
    from transformers import CLIPImageProcessor, CLIPModel

    torch.manual_seed(1)
    dims = [16, 8, 6, 4, 2, 1]
    state = {}
    for i, (a, b) in zip((0, 2, 4, 6, 7), zip(dims, dims[1:])):
        state[f"layers.{i}.weight"], state[f"layers.{i}.bias"] = torch.randn(b, a), torch.randn(b)
    head = tmp_path / "head.pth"
    torch.save(state, head)
    run = tmp_path / "run"  # a folder of its own: one holding the head file is not a run, and is refused
    run_tts(["verifier=aesthetic", f"verifier.model_name={clip_dir}", f"verifier.head_path={head}", *STEPS], run)
    records = read_manifest(run)
    assert all(r.status == "ok" for r in records) and len({r.score for r in records}) > 1
    model = CLIPModel.from_pretrained(clip_dir).eval()
    r = records[0]
    pixels = CLIPImageProcessor.from_pretrained(clip_dir)(images=[Image.open(run / r.image).convert("RGB")],
                                                          return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        x = model.get_image_features(pixel_values=pixels)
        x = getattr(x, "pooler_output", x)
        x = torch.nn.functional.normalize(x, dim=-1)
        for i in (0, 2, 4, 6, 7):
            x = x @ state[f"layers.{i}.weight"].T + state[f"layers.{i}.bias"]
    assert r.score == pytest.approx(float(x), abs=1e-4)


def test_ensemble_keeps_every_member_score_and_ranks_per_prompt(tmp_path):
    members = "[{_target_:tts.verifiers.shapes.ShapesVerifier},{_target_:tts.verifiers.compressibility.Compressibility}]"
    run_tts(["verifier=ensemble", f"verifier.members={members}", *STEPS], tmp_path)
    records = read_manifest(tmp_path)
    assert all(r.status == "ok" for r in records)
    for r in records:
        assert set(r.scores) == {"ensemble", "shapes", "compressibility"}
        assert set(r.scores["shapes"]) == {"correct", "criteria_met"}
        assert 0.0 <= r.score <= 1.0


class Fixed(Verifier):
    metrics = ("v",)

    def __init__(self, name, values, fail_at=None):
        self.name, self.values, self.fail_at = name, list(values), fail_at
        super().__init__()

    def score(self, prompts, images):
        out = []
        for _ in prompts:
            v = self.values.pop(0)
            out.append(Verdict(error="boom") if v is None else {"v": MetricScore(score=v)})
        return out


def test_mean_rank_and_zscore_arithmetic():
    from tts.verifiers.ensemble import EnsembleVerifier

    imgs = [Image.new("RGB", (4, 4))] * 3
    e = EnsembleVerifier([Fixed("a", [1, 3, 2]), Fixed("b", [30, 10, 20])], method="mean_rank")
    first, second, third = e.score(["p"] * 3, imgs)
    assert first.scores["ensemble"].score == 0.5                   # alone in its pool
    assert second.scores["ensemble"].score == pytest.approx(0.5)    # a: best of 2 (1.0), b: worst of 2 (0.0)
    assert third.scores["ensemble"].score == pytest.approx(0.5)     # a: middle (0.5), b: middle (0.5)
    assert third.members["a"]["v"].score == 2 and third.members["b"]["v"].score == 20
    z = EnsembleVerifier([Fixed("a", [0, 2]), Fixed("b", [5, 5])], method="zscore", weights=[3, 1])
    _, two = z.score(["q"] * 2, imgs[:2])
    assert two.scores["ensemble"].score == pytest.approx((3 * 1.0 + 1 * 0.0) / 4)
    bad = EnsembleVerifier([Fixed("a", [None]), Fixed("b", [1])])
    [v] = bad.score(["p"], imgs[:1])
    assert v.error and "a: boom" in v.error and v.members == {"b": {"v": MetricScore(score=1)}}
    with pytest.raises(ValueError, match="at least two"):
        EnsembleVerifier([Fixed("a", [])])
    with pytest.raises(ValueError, match="weights"):
        EnsembleVerifier([Fixed("a", []), Fixed("b", [])], weights=[1])


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from twins import save_qwen

    return save_qwen(tmp_path_factory.mktemp("qwen"))


def test_qwen_grades_with_outlines_structured_json(qwen_dir, tmp_path):
    """Every candidate graded in full through outlines, with the loop verifying two batches at once
    (verify_concurrency=2, the default): outlines' generator is not safe to call concurrently."""
    from tts.verifiers import grading

    run_tts(["verifier=qwen", f"verifier.model_name={qwen_dir}", "verifier.max_new_tokens=900",
             "verifier.max_explanation_chars=12", "verifier.max_side=64", "verify_concurrency=2", *STEPS], tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 6 and all(r.status == "ok" for r in records), [r.error for r in records]
    for r in records:
        assert set(r.scores["qwen"]) == set(grading.METRICS)
        assert all(s.score in range(11) and len(s.explanation) <= 12 for s in r.scores["qwen"].values())
        assert r.score == r.scores["qwen"]["overall_score"].score


def test_qwen_answer_cut_off_is_recorded_as_failed_with_the_reason(qwen_dir, tmp_path):
    run_tts(["verifier=qwen", f"verifier.model_name={qwen_dir}", "verifier.max_new_tokens=20",
             "verifier.max_side=64", "pipeline.num_inference_steps=2", "search.rounds=1"], tmp_path)
    records = read_manifest(tmp_path)
    assert records and all(r.status == "failed" and "malformed JSON" in r.error and "max_new_tokens=20" in r.error
                           for r in records)


def test_a_users_own_verifier_yaml_through_hydras_search_path(tmp_path):
    (tmp_path / "my_configs" / "verifier").mkdir(parents=True)
    (tmp_path / "my_configs" / "verifier" / "sharp.yaml").write_text(
        "_target_: verifiers.example_custom.Sharpness\nchoice_of_metric: sharpness\nscale: 2.0\n")
    run_tts([f"hydra.searchpath=[file://{tmp_path / 'my_configs'}]", "verifier=sharp", *STEPS], tmp_path / "run")
    records = read_manifest(tmp_path / "run")
    assert records and all(r.status == "ok" and set(r.scores["sharpness"]) == {"sharpness", "colourfulness"}
                           for r in records)
