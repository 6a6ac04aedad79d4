"""The committed shapes model follows its text, as judged by the exact checker.

Not a benchmark (scripts/benchmark_scaling.py measures the bench); a guard that the weights shipped in
tts/assets/shapes-model draw what single-object prompts ask for far more often than a text-blind
model could: a model that ignores the prompt gets the named colour and shape of a single object
right about 1 time in 18 at best.
"""
import numpy as np
import pytest
import torch
import yaml

from tts.core.configtree import config_dir
from tts.pipelines import resolve_model_path
from tts.verifiers.shapes import ShapesVerifier
from tts.world.pipeline import ShapesPipeline

PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow triangle", "a purple circle", "a cyan circle"]
SEEDS = 4
THRESHOLD = 0.5  # measured 21 of 24 with the committed weights; a text-blind model: about 1 in 18


@pytest.fixture(scope="module")
def pipe():
    p = ShapesPipeline.from_pretrained(resolve_model_path("tts://shapes-model"))
    p.set_progress_bar_config(disable=True)
    return p


@pytest.fixture(scope="module")
def verdicts(pipe):
    preset = yaml.safe_load((config_dir() / "pipeline" / "shapes.yaml").read_text())
    prompts = [p for p in PROMPTS for _ in range(SEEDS)]
    images = pipe(prompts, num_inference_steps=preset["num_inference_steps"], guidance_scale=preset["guidance_scale"],
                  generator=torch.Generator().manual_seed(0)).images
    return ShapesVerifier().score(prompts, images)


def test_single_objects_have_the_named_colour_and_shape(verdicts):
    correct = np.mean([v["correct"].score for v in verdicts])
    assert correct >= THRESHOLD, f"only {correct:.0%} of single-object images are right"


def test_text_changes_the_image(pipe):
    latents = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    red = pipe("a red circle", latents=latents, num_inference_steps=10, output_type="np").images[0]
    blue = pipe("a blue circle", latents=latents, num_inference_steps=10, output_type="np").images[0]
    # the same noise, another colour word: a red object in one image, a blue one in the other
    assert (red[..., 0] - red[..., 2]).max() > 0.4 and (blue[..., 2] - blue[..., 0]).max() > 0.4
