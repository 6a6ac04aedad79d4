"""HiDream-I1 on a tiny random-weight twin (tests/twins_extra.py), loaded with from_pretrained like a hub checkpoint:
same images as diffusers' own call, a batch of several prompts, the Llama loaded on its own, a full search."""
import types

import numpy as np
import pytest
from conftest import run_tts
from twins_extra import save_hidream, save_llama

from tts.pipelines import PipelineConfigError, PipelineSpec, family_for
from tts.pipelines import hidream

CALL = {"height": 128, "width": 128, "num_inference_steps": 2, "max_sequence_length": 16}


def _spec(path, **extra):
    return PipelineSpec(name="hidream-i1", model_id=str(path), dtype="fp32", device="cpu", guidance_scale=5.0,
                        **(CALL | extra))


def test_the_family_is_found_from_the_checkpoint(twins_root):
    spec = _spec(save_hidream(twins_root))
    source = spec.check()
    assert family_for(source.index["_class_name"]) is hidream


def test_latents_are_drawn_at_the_size_the_pipeline_rescales_to():
    pipe = types.SimpleNamespace(vae_scale_factor=8, default_sample_size=128,
                                 transformer=types.SimpleNamespace(config=types.SimpleNamespace(in_channels=16)))
    assert hidream.size(pipe, 1024, 1024) == (1024, 1024)
    assert hidream.size(pipe, 512, 512) == (1024, 1024)  # a fixed area: only the aspect ratio is asked for
    h, w = hidream.size(pipe, 768, 1344)
    assert h % 16 == 0 and w % 16 == 0 and abs(w / h - 1344 / 768) < 0.05 and 0.95 < h * w / 1024 ** 2 <= 1
    assert hidream.latent_shape(pipe, 1024, 1024) == (16, 128, 128)


@pytest.mark.slow
def test_a_batch_of_two_prompts_matches_diffusers(twins_root):
    from tts.sampling.generate import Generator
    from tts.core.noise import fresh

    spec = _spec(save_hidream(twins_root))
    gen = Generator(spec.load(), spec)
    prompts, lineages = ["a red cube", "a blue sphere"], [fresh(1), fresh(2)]
    try:
        images, nfe, _ = gen.generate(prompts, lineages)
        latents = gen.noise(lineages)
        golden = gen.pipe(prompt=prompts, latents=latents, height=128, width=128, num_inference_steps=2,
                          guidance_scale=5.0, max_sequence_length=16, output_type="pil").images
    finally:
        gen.close()
    assert nfe == 2 * 2  # classifier-free guidance: two rows a step
    assert images[0].size == (128, 128)
    for a, b in zip(images, golden):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
    assert np.abs(np.asarray(images[0], dtype=int) - np.asarray(images[1], dtype=int)).max() > 2


def test_a_checkpoint_without_its_llama_names_the_setting(twins_root):
    spec = _spec(save_hidream(twins_root, with_llama=False))
    with pytest.raises(PipelineConfigError, match=r"has no text_encoder_4, which HiDreamImagePipeline needs: .* "
                                                  r"pipeline.components.text_encoder_4.model_id="):
        spec.load()


def test_components_are_validated():
    with pytest.raises(PipelineConfigError, match="needs a model_id"):
        _spec("x", components={"text_encoder_4": {"dtype": "fp16"}})
    with pytest.raises(PipelineConfigError, match="dtype must be"):
        _spec("x", components={"text_encoder_4": {"model_id": "m", "dtype": "fp8"}})
    with pytest.raises(PipelineConfigError, match="unknown key pipeline.components.text_encoder_4.revision"):
        _spec("x", components={"text_encoder_4": {"model_id": "m", "revision": "main"}})
    a, b = _spec("x"), _spec("x", components={"text_encoder_4": {"model_id": "m"}})
    assert a.load_key != b.load_key  # a pipeline loaded with another component is another pipeline


@pytest.mark.slow
def test_hidream_preset_runs_a_search_with_its_llama_loaded_on_its_own(twins_root, tmp_path):
    from tts.pipelines.models import manager
    from tts.core.runfolder import read_manifest

    path, llama = save_hidream(twins_root, with_llama=False), save_llama(twins_root)
    overrides = ["pipeline=hidream-i1", f"pipeline.model_id={path}", "pipeline.dtype=fp32", "pipeline.device=cpu",
                 f"pipeline.components.text_encoder_4.model_id={llama}",
                 f"pipeline.components.tokenizer_4.model_id={llama}", "verifier=incompressibility",
                 "search.rounds=1", "batch_size=2", "prompt=a red cube on the moon"]
    overrides += [f"pipeline.{k}={v}" for k, v in CALL.items()]
    summary = run_tts(overrides, tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 2 and all(r.status == "ok" and r.nfe == 4 for r in records)
    assert summary["candidates"] == 2
    [resident] = [r for r in manager().resident_map.values() if r.name == "hidream-i1"]
    encoder = resident.loaded.pipe.text_encoder_4
    assert encoder.dtype.is_floating_point and str(encoder.dtype) == "torch.float16"  # the preset's fp16 Llama


@pytest.mark.slow
def test_the_step_level_sampler_gives_the_pipelines_images(twins_root):
    from tts.sampling.generate import Generator
    from tts.core.noise import fresh
    from tts.sampling.sampler import Sampler

    spec = _spec(save_hidream(twins_root))
    gen = Generator(spec.load(), spec)
    sampler = Sampler(gen)
    prompts, lineages = ["a red cube", "a blue sphere"], [fresh(3), fresh(4)]
    try:
        images, _, _ = gen.generate(prompts, lineages)
        stepped, traj = sampler.generate(prompts, lineages)  # two prompts: each row keeps its own embeddings
    finally:
        sampler.close()
        gen.close()
    assert traj.nfe.tolist() == [4.0, 4.0]
    for a, b in zip(images, stepped):
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() <= 1
