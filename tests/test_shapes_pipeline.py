"""The embedded model loads through from_pretrained and follows diffusers' pipeline conventions."""
import json

import numpy as np
import pytest
import torch

from tts.pipelines import resolve_model_path
from tts.world.pipeline import ShapesPipeline

MODEL = resolve_model_path("tts://shapes-model")


@pytest.fixture(scope="module")
def pipe():
    p = ShapesPipeline.from_pretrained(MODEL)
    p.set_progress_bar_config(disable=True)
    return p


def test_layout_and_size():
    from pathlib import Path

    root = Path(MODEL)
    index = json.loads((root / "model_index.json").read_text())
    assert index["_class_name"] == "ShapesPipeline"
    assert {"unet", "text_encoder", "tokenizer", "scheduler"} <= set(index)
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert size <= 25e6
    assert list(root.rglob("*.safetensors"))


def test_call_conventions(pipe):
    out = pipe("a red circle", num_inference_steps=3, guidance_scale=3.0, num_images_per_prompt=2,
               generator=torch.Generator().manual_seed(0))
    assert len(out.images) == 2 and out.images[0].size == (32, 32)
    arr = pipe("a red circle", num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(0)).images
    assert arr.shape == (1, 32, 32, 3) and 0 <= arr.min() and arr.max() <= 1
    latents = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    embeds, negative = pipe.encode_prompt("a blue square", num_images_per_prompt=1)
    a = pipe(prompt_embeds=embeds, negative_prompt_embeds=negative, latents=latents, num_inference_steps=3,
             output_type="np").images
    b = pipe("a blue square", latents=latents, num_inference_steps=3, output_type="np").images
    np.testing.assert_allclose(a, b, atol=1e-6)
    with pytest.raises(ValueError, match="32x32"):
        pipe("a red circle", height=64, width=64)


def test_callback_on_step_end_sees_and_replaces_latents_and_can_interrupt(pipe):
    seen = []

    def callback(p, step, timestep, kwargs):
        seen.append((step, tuple(kwargs["latents"].shape)))
        if step == 1:
            p._interrupt = True
        return {"latents": kwargs["latents"][[1, 0]]}  # re-index particles, as resampling would

    pipe("a red circle", num_inference_steps=5, num_images_per_prompt=2, callback_on_step_end=callback,
         callback_on_step_end_tensor_inputs=["latents"])
    assert seen == [(0, (2, 3, 32, 32)), (1, (2, 3, 32, 32))]


def test_generator_mixes_prompts_in_one_batch_as_if_generated_apart():
    from tts.sampling.generate import Generator
    from tts.core.noise import fresh
    from tts.pipelines import PipelineSpec

    spec = PipelineSpec(name="shapes", model_id="tts://shapes-model", height=32, width=32, num_inference_steps=3,
                        guidance_scale=2.0, device="cpu")
    gen = Generator(spec.load(), spec)
    noises = [fresh(1), fresh(2), fresh(3)]
    mixed, nfe, _ = gen.generate(["a red circle", "a blue square", "a red circle"], noises)
    red, _, _ = gen.generate("a red circle", [noises[0], noises[2]])
    blue, _, _ = gen.generate("a blue square", [noises[1]])
    gen.close()
    assert nfe == 6  # 3 steps, two passes each with guidance
    for a, b in zip(mixed, [red[0], blue[0], red[1]]):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
