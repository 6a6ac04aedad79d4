"""A full search end to end on a tiny random-weight twin of each pipeline family, loaded with from_pretrained."""
import json

import pytest
from conftest import compose, run_tts
from twins import (DISTILLED, EMBEDDED_PRESETS, OTHER_TWINS, PRESET_TWINS, TWINS, WEAK_TEXT, save_twin,
                   twin_guidance)

from tts.core.runfolder import read_manifest

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
    steps, guided = call["num_inference_steps"], family not in DISTILLED  # e.g. flux-dev: distilled guidance, 1 pass
    assert all(r.nfe == steps * (2 if guided else 1) for r in records)
    for r in records:
        assert (tmp_path / r.image).exists()
        assert r.image == f"prompt@a_red_cube_on_the_moon_hash@{r.prompt_hash}_i@{r.round}_s@{r.seed}.png"
        assert set(r.scores["incompressibility"]) == {"incompressibility"}
    for round_ in (1, 2):
        [round_json] = tmp_path.glob(f"prompt@a_red_cube_on_the_moon_hash@{records[0].prompt_hash}_i@{round_}_s@*.json")
        doc = json.loads(round_json.read_text())
        assert round_json.name.endswith(f"_s@{doc['best_noise_seed']}.json")  # named after its best image
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


#: family -> the call arguments that turn its negative prompt on (Flux: true classifier-free guidance)
NEGATIVE = {"sd15": {"negative_prompt": "blurry, dark"},
            "sdxl": {"negative_prompt": "blurry, dark", "negative_prompt_2": "grainy"},
            "sd3": {"negative_prompt": "blurry, dark", "negative_prompt_3": "grainy"},
            "pixart-sigma": {"negative_prompt": "blurry, dark"},
            "flux": {"negative_prompt": "blurry, dark", "true_cfg_scale": 4.0},
            "sana": {"negative_prompt": "blurry, dark"},
            "qwenimage": {"negative_prompt": "blurry, dark", "true_cfg_scale": 4.0},
            "zimage": {"negative_prompt": "blurry, dark"}}
#: family -> what a user passes the pipeline for tts's settings (latents drawn at exactly height x width)
DIRECT = {"pixart-sigma": {"use_resolution_binning": False, "clean_caption": False},
          "sana": {"use_resolution_binning": False}}
ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")


def _twin_spec(family, root, call_args):
    from tts.pipelines import PipelineSpec

    _, preset, call = TWINS[family]
    guidance = twin_guidance(family)
    return PipelineSpec(name=preset, model_id=str(save_twin(family, root)), dtype="fp32", device="cpu",
                        guidance_scale=guidance, call_args=call_args, **call)


def _direct(pipe, spec, family, prompt, latents, batch, **extra):
    """The diffusers pipeline called directly, as a user would, on the same latents."""
    kwargs = {"max_sequence_length": spec.max_sequence_length} if spec.max_sequence_length else {}
    kwargs |= DIRECT.get(family, {})
    return pipe(prompt=prompt, num_images_per_prompt=batch, latents=latents, height=spec.height, width=spec.width,
                num_inference_steps=spec.num_inference_steps, guidance_scale=spec.guidance_scale, output_type="pil",
                **kwargs, **extra).images


@pytest.mark.slow
@pytest.mark.parametrize("family", list(NEGATIVE))
def test_negative_prompt_is_encoded_once_and_matches_diffusers(family, twins_root):
    import numpy as np

    from tts.sampling.generate import Generator
    from tts.core.noise import fresh

    prompt, lineages = "a red cube on the moon", [fresh(1), fresh(2)]
    spec = _twin_spec(family, twins_root, NEGATIVE[family])
    spec.check()
    gen = Generator(spec.load(), spec)
    pipe, calls = gen.pipe, []
    hooks = [getattr(pipe, n).register_forward_hook(lambda *a, n=n: calls.append(n))
             for n in ENCODERS if getattr(pipe, n, None) is not None]
    try:
        images, nfe, _ = gen.generate(prompt, lineages)
        per_prompt = len(calls)
        again, _, _ = gen.generate(prompt, lineages)
        assert len(calls) == per_prompt  # the second batch of the same prompt runs no text encoder
        calls.clear()
        latents = gen.family.to_pipeline_latents(pipe, gen.noise(lineages), spec.height, spec.width)
        golden = _direct(pipe, spec, family, prompt, latents, len(lineages), **NEGATIVE[family])
        assert len(calls) == per_prompt  # diffusers encodes prompt and negative prompt the same number of times
    finally:
        for h in hooks:
            h.remove()
        gen.close()
    assert nfe == 2 * spec.num_inference_steps  # classifier-free guidance (true CFG for Flux): two passes a step
    for a, b, c in zip(images, again, golden):
        assert np.array_equal(np.asarray(a), np.asarray(b))
        assert np.abs(np.asarray(a, dtype=int) - np.asarray(c, dtype=int)).max() <= 1
    plain_spec = _twin_spec(family, twins_root, {"true_cfg_scale": 1.0} if family == "flux" else {})
    if family in WEAK_TEXT:  # the twin's text moves pixels by about a level: the final latents show it
        negative, plain = _final_latents(spec, prompt, lineages), _final_latents(plain_spec, prompt, lineages)
        assert (negative - plain).abs().max() > 1e-3
        return
    plain = Generator(plain_spec.load(), plain_spec)
    without, _, _ = plain.generate(prompt, lineages)
    plain.close()
    # the negative prompt changes every image, by more than the rounding allowed against diffusers above
    assert all(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max() > 2 for a, b in zip(images, without))


def _final_latents(spec, prompt, lineages):
    from tts.sampling.generate import Generator
    from tts.sampling.sampler import Sampler

    gen = Generator(spec.load(), spec)
    sampler = Sampler(gen)
    try:
        return sampler.run(sampler.start(prompt, lineages)).latents
    finally:
        sampler.close()
        gen.close()


@pytest.mark.slow
def test_negative_prompt_from_the_command_line(twins_root, tmp_path):
    path = save_twin("sd15", twins_root)
    run_tts(["pipeline=sd15", f"pipeline.model_id={path}", "pipeline.dtype=fp32", "pipeline.device=cpu",
             "pipeline.height=32", "pipeline.width=32", "pipeline.num_inference_steps=2", "verifier=compressibility",
             "search.rounds=1", "+pipeline.call_args.negative_prompt='blurry, dark'", "+pipeline.call_args.eta=0.5",
             "prompt=a blue sphere"], tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["pipeline"]["call_args"] == {"negative_prompt": "blurry, dark", "eta": 0.5}
    assert len(read_manifest(tmp_path)) == 2


@pytest.mark.slow
def test_call_args_that_shape_the_prompt_encoding_reach_it(twins_root):
    """clip_skip acts inside encode_prompt: tts, which encodes the prompt itself, must pass it there."""
    import numpy as np

    from tts.sampling.generate import Generator
    from tts.core.noise import fresh

    images = {}
    for call_args in ({"clip_skip": 1}, {}):
        spec = _twin_spec("sd3", twins_root, call_args)
        gen = Generator(spec.load(), spec)
        images[len(call_args)], _, _ = gen.generate("a blue sphere", [fresh(3)])
        latents = gen.noise([fresh(3)])
        gen.close()
    golden = _direct(gen.pipe, spec, "sd3", "a blue sphere", latents, 1, clip_skip=1)
    skipped, plain = (np.asarray(images[n][0], dtype=int) for n in (1, 0))
    assert np.abs(skipped - np.asarray(golden[0], dtype=int)).max() <= 1
    assert np.abs(skipped - plain).max() > 2


def test_every_pipeline_preset_has_a_twin():
    """Adding a preset (configs/pipeline/*.yaml) means naming the twin of its family in tests/twins.py."""
    from tts.core.configtree import choices

    twinned = {preset for _, preset, _ in TWINS.values()} | set(PRESET_TWINS) | set(EMBEDDED_PRESETS) | set(OTHER_TWINS)
    assert set(choices("pipeline")) == twinned


@pytest.mark.slow
@pytest.mark.parametrize("preset", list(PRESET_TWINS))
def test_preset_runs_through_a_twin_of_its_family(preset, twins_root):
    """The preset's own steps, guidance and call arguments, on a tiny twin of its family (only the size shrinks):
    the pipeline call and the step-level sampler (tts.sampling.sampler) agree and count the NFEs the preset implies."""
    import hydra
    import numpy as np

    from tts.sampling.generate import Generator
    from tts.core.noise import fresh
    from tts.sampling.sampler import Sampler

    family = PRESET_TWINS[preset]
    _, _, small = TWINS[family]
    sizes = [f"pipeline.{k}={small[k]}" for k in ("height", "width", "num_frames") if k in small]
    cfg = compose([f"pipeline={preset}", f"pipeline.model_id={save_twin(family, twins_root)}", "pipeline.dtype=fp32",
                   "pipeline.device=cpu", *sizes])
    spec = hydra.utils.instantiate(cfg.pipeline)
    assert spec.name == preset and (spec.height, spec.width) == (small["height"], small["width"])
    spec.check()
    gen = Generator(spec.load(), spec)
    sampler = Sampler(gen)
    try:
        images, nfe, _ = gen.generate("a blue sphere", [fresh(1), fresh(2)])
        stepped, traj = sampler.generate("a blue sphere", [fresh(1), fresh(2)])
    finally:
        sampler.close()
        gen.close()
    passes = 2 if spec.guidance_scale > 1 and family not in DISTILLED else 1
    assert nfe == spec.num_inference_steps * passes and traj.nfe.tolist() == [nfe, nfe]
    assert all(im.size == (spec.width, spec.height) for im in images)
    for a, b in zip(images, stepped):
        a, b = getattr(a, "frames", [a]), getattr(b, "frames", [b])  # a video: every frame
        assert np.abs(np.stack(a).astype(int) - np.stack(b).astype(int)).max() <= 1


def test_families_come_from_their_modules(twins_root):
    """Every family module is found without a list, and names the component that holds its denoiser."""
    from tts.pipelines import FAMILIES, family_for, model_index, pipeline_class
    from tts.world.pipeline import ShapesPipeline

    names = {f.__name__.rsplit(".", 1)[-1] for f in FAMILIES}
    assert {"flux", "sd", "sdxl", "pixart", "sd3", "shapes", "flux2", "qwenimage", "zimage", "sana", "sana_sprint"} <= names
    models = [str(save_twin(family, twins_root)) for family in TWINS] + ["tts://shapes-model"]
    for model_id in models:
        index = model_index(model_id)
        family = family_for(index["_class_name"])
        assert family.DENOISER in index and family.DENOISER in ("unet", "transformer")
    assert pipeline_class("ShapesPipeline") is ShapesPipeline
