"""verifier=detector: GenEval's rules over OWLv2 detections and CLIP crop colours, on tiny random twins
(an OWLv2 and a CLIP built offline, loaded through from_pretrained like the real checkpoints)."""
import string
from pathlib import Path

import pytest
import torch

import imagereward_twin
from tts.verifiers import geneval_rules

pytest.importorskip("scipy", reason="OWLv2's PIL image processor needs scipy: pip install -e '.[detector]'")


def save_owlv2(root: Path) -> Path:
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil

    out = Path(root) / "tiny-owlv2"
    vocab = {"!": 0, "<|startoftext|>": 1, "<|endoftext|>": 2}  # OWL masks out queries whose first id is 0
    for c in string.ascii_lowercase:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    CLIPTokenizer(vocab=vocab, merges=[], model_max_length=16).save_pretrained(out)
    text = dict(vocab_size=64, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=16, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    vision = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4, image_size=64,
                  patch_size=16)
    torch.manual_seed(0)
    Owlv2ForObjectDetection(Owlv2Config(text_config=text, vision_config=vision, projection_dim=32)).save_pretrained(out)
    Owlv2ImageProcessorPil(size={"height": 64, "width": 64}).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    from twins import save_clip
    from tts.verifiers.detector import DetectorVerifier

    root = tmp_path_factory.mktemp("detector")
    v = DetectorVerifier(detector_name=str(save_owlv2(root)), clip_name=str(save_clip(root)), threshold=0.05,
                         counting_threshold=0.05, nms_iou=0.5, device="cpu")
    v.check()
    v.setup()
    return v


def test_detections_are_the_prompts_objects_inside_the_image_with_geneval_colours(detector):
    image = imagereward_twin.golden_images()[1]
    spec = geneval_rules.parse("a photo of a red car and a blue bench")
    found = detector.detect(spec, image)
    assert found and {d.noun for d in found} <= {"car", "bench"}
    for d in found:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 <= image.width and 0 <= y0 <= y1 <= image.height and d.score >= 0.05
        assert d.colour in geneval_rules.COLOURS
    [scores] = detector.score(["a photo of a red car and a blue bench"], [image])
    verdict = geneval_rules.check(spec, detector.detect(spec, image))
    assert scores["criteria_met"].score == verdict.criteria_met and scores["correct"].score == verdict.correct
    assert scores["correct"].explanation == verdict.explanation()


def test_nothing_above_the_threshold_names_every_missing_object(detector):
    from tts.verifiers.detector import DetectorVerifier

    strict = DetectorVerifier(detector_name=detector.detector_name, clip_name=detector.clip_name, threshold=1.0,
                              counting_threshold=1.0, device="cpu")
    strict._detector, strict._processor, strict._clip, strict._dev, strict._dtype = (
        detector._detector, detector._processor, detector._clip, detector._dev, detector._dtype)
    [s] = strict.score(["a photo of a dog left of a cat"], imagereward_twin.golden_images()[:1])
    assert s["correct"].score == 0.0 and s["correct"].explanation == (
        "failed: cat: want 1, found 0; dog: want 1, found 0")


def test_nms_keeps_the_best_of_overlapping_boxes():
    from tts.verifiers.detector import nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], dtype=torch.float)
    assert nms(boxes, torch.tensor([0.5, 0.9, 0.4]), 0.5) == [1, 2]
    assert nms(boxes, torch.tensor([0.5, 0.9, 0.4]), 0.9) == [1, 0, 2]


def test_bad_prompts_and_settings_fail_before_loading():
    from tts.verifiers.base import VerifierError
    from tts.verifiers.detector import DetectorVerifier

    v = DetectorVerifier()
    with pytest.raises(geneval_rules.PromptError, match="not a GenEval prompt"):
        v.check_prompt("an astronaut riding a horse")
    with pytest.raises(VerifierError, match="threshold must lie in"):
        DetectorVerifier(threshold=0)


def test_a_prompt_outside_the_templates_stops_the_run_before_anything_loads(tmp_path):
    from conftest import compose
    from tts.app.build import build_job
    from tts.app.errors import is_user_error as _is_user_error

    with pytest.raises(geneval_rules.PromptError) as e:
        build_job(compose(["verifier=detector", "prompt='a red cube'"]), tmp_path)
    assert _is_user_error(e.value) and "not a GenEval prompt: 'a red cube'" in str(e.value)
    assert not list(tmp_path.iterdir())
