"""Differentiable scores (issue 29 item 6): clip, pickscore, aesthetic and shapes-reward expose ``score_tensor``,
whose gradient matches central finite differences (in float64, on the tiny twins and the shipped shapes reward),
and whose value equals ``score()`` on the same pixels."""
import numpy as np
import pytest
import torch
from PIL import Image
from twins import save_clip

from tts.verifiers.aesthetic import AestheticVerifier
from tts.verifiers.base import DifferentiableVerifier, is_differentiable
from tts.verifiers.clip import CLIPScoreVerifier
from tts.verifiers.pickscore import PickScoreVerifier
from tts.verifiers.shapes import ShapesVerifier
from tts.verifiers.shapes_reward import ShapesRewardVerifier

PROMPTS = ["a red circle left of a blue square", "two green triangles"]


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return save_clip(tmp_path_factory.mktemp("clip"))


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    torch.manual_seed(1)
    dims, state = [16, 8, 6, 4, 2, 1], {}
    for i, (a, b) in zip((0, 2, 4, 6, 7), zip(dims, dims[1:])):
        state[f"layers.{i}.weight"], state[f"layers.{i}.bias"] = torch.randn(b, a), torch.randn(b)
    path = tmp_path_factory.mktemp("head") / "head.pth"
    torch.save(state, path)
    return path


def verifiers(clip_dir, head):
    yield CLIPScoreVerifier(str(clip_dir), choice_of_metric="cosine", device="cpu")
    yield PickScoreVerifier(str(clip_dir), processor_name=None, device="cpu")
    yield AestheticVerifier(str(clip_dir), head_path=str(head), device="cpu")
    yield ShapesRewardVerifier()
    yield ShapesRewardVerifier(choice_of_metric="p_correct")


def in_float64(v):
    v.setup()
    v._model = v._model.double()
    if hasattr(v, "_dtype"):
        v._dtype = torch.float64
    if hasattr(v, "_head"):
        v._head = v._head.double()
    return v


def test_the_differentiable_verifiers_say_so():
    assert all(is_differentiable(cls.__new__(cls)) for cls in
               (CLIPScoreVerifier, PickScoreVerifier, AestheticVerifier, ShapesRewardVerifier))
    assert not is_differentiable(ShapesVerifier())  # the exact checker counts blobs: no gradient
    assert isinstance(ShapesRewardVerifier(), DifferentiableVerifier)


@pytest.mark.parametrize("size", [32, 48])  # the model's input size, and one resized to it
def test_gradient_matches_finite_differences(clip_dir, head, size):
    torch.manual_seed(0)
    for v in verifiers(clip_dir, head):
        v = in_float64(v)
        x = torch.rand(2, 3, size, size, dtype=torch.float64, requires_grad=True)
        out = v.score_tensor(PROMPTS, x)
        assert out.shape == (2,) and out.dtype == torch.float64
        (grad,) = torch.autograd.grad(out.sum(), x)
        assert grad.abs().sum() > 0, v.name
        for _ in range(3):  # directional derivatives along random directions
            d = torch.randn_like(x)
            eps = 1e-5
            with torch.no_grad():
                fd = (v.score_tensor(PROMPTS, x + eps * d).sum() - v.score_tensor(PROMPTS, x - eps * d).sum()) / (2 * eps)
            assert float((grad * d).sum()) == pytest.approx(float(fd), rel=1e-5, abs=1e-8), (v.name, v.choice_of_metric)


def test_score_tensor_equals_score_on_the_same_pixels(clip_dir, head):
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in PROMPTS]
    images = [Image.fromarray(a) for a in arrays]
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255
    for v in verifiers(clip_dir, head):
        v.setup()
        expected = [s[v.choice_of_metric].score for s in v.score(PROMPTS, images)]
        got = v.score_tensor(PROMPTS, x).tolist()
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-5), (v.name, v.choice_of_metric)
