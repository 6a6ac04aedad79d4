"""Family-specific behaviour of the current image families on their tiny twins (tests/twins.py); the golden
sampler-vs-pipeline cases are in tests/test_sampler.py, full searches in tests/test_families.py."""
import numpy as np
import pytest
from test_sampler import LINEAGES, PROMPT, max_diff, opened  # noqa: F401  (opened is a fixture)

from tts.core.noise import fresh
from tts.pipelines import PipelineConfigError
from tts.sampling.sampler import SamplerOptions


def test_sana_sprint_candidates_replay_from_their_lineage_whatever_the_batch(opened):
    """SCM draws fresh noise at its intermediate step: tts seeds it per candidate, so a candidate's image depends
    on its own lineage only (alone or in a batch), in the pipeline call and in the step-level sampler."""
    gen, sampler = opened("sana-sprint", options=SamplerOptions(batch_changes=True))
    batch, _, _ = gen.generate(PROMPT, LINEAGES)
    alone, _, _ = gen.generate(PROMPT, LINEAGES[1:2])
    assert max_diff(alone, batch[1:2]) == 0
    traj = sampler.run(sampler.start(PROMPT, LINEAGES), until=1)
    picked = sampler.run(traj.select([2, 1, 1]))
    assert max_diff(sampler.decode(picked.latents), [batch[2], batch[1], batch[1]]) <= 1
    assert picked.nfe.tolist() == [2.0] * 3  # guidance distilled: one pass a step


def test_sana_sprint_step_noise_is_the_lineages_and_matters(opened):
    """tts's image is the pipeline's with the generator seeded from the candidate's lineage; another step noise
    on the same initial noise gives another image (the intermediate step's noise matters)."""
    import torch

    from tts.core.noise import step_noise_seed

    gen, _ = opened("sana-sprint")
    spec, lineage = gen.spec, fresh(5)
    ours, _, _ = gen.generate(PROMPT, [lineage])
    latents = gen.noise([lineage])

    def direct(seed):
        return gen.pipe(prompt=PROMPT, latents=latents, height=spec.height, width=spec.width,
                        num_inference_steps=spec.num_inference_steps, guidance_scale=spec.guidance_scale,
                        max_sequence_length=spec.max_sequence_length, use_resolution_binning=False,
                        generator=torch.Generator().manual_seed(seed)).images
    assert max_diff(ours, direct(step_noise_seed(lineage))) <= 1
    assert max_diff(ours, direct(step_noise_seed(lineage) + 1)) > 2


def test_sana_sprint_refuses_what_its_scheduler_cannot_do(opened, twins_root):
    with pytest.raises(PipelineConfigError, match="set the search's eta to 0"):
        opened("sana-sprint", options=SamplerOptions(eta=0.5))
    _, sampler = opened("sana-sprint", options=SamplerOptions(batch_changes=True))
    traj = sampler.run(sampler.start(PROMPT, LINEAGES), until=1)
    with pytest.raises(PipelineConfigError, match="renoise is not supported on SCMScheduler"):
        sampler.renoise(traj, 0, [1, 2, 3])
    assert np.isfinite(traj.x0.numpy()).all()  # x0 previews come from the scheduler's own step


@pytest.mark.parametrize("family", ["sd3.5", "sana", "sana-sprint", "flux2", "qwenimage", "zimage"])
def test_prompt_is_encoded_once_and_reaches_the_image(family, opened):
    """A second batch of the same prompt runs no text encoder (nor does the step-level sampler); another prompt
    gives other final latents (a tiny random transformer may move pixels by less than a level); images come at the
    spec's size."""
    gen, sampler = opened(family)
    encoders = [m for n, m in vars(gen.pipe).items() if n.startswith("text_encoder") and m is not None]
    calls = []
    hooks = [m.register_forward_hook(lambda *a: calls.append(1)) for m in encoders]
    try:
        first, _, _ = gen.generate(PROMPT, LINEAGES[:2])
        per_prompt = len(calls)
        again, _, _ = gen.generate(PROMPT, LINEAGES[:2])
        _, mine = sampler.generate(PROMPT, LINEAGES[:2])
        assert per_prompt >= 1 and len(calls) == per_prompt
        _, other = sampler.generate("a green pyramid in the snow", LINEAGES[:2])
    finally:
        for h in hooks:
            h.remove()
    assert max_diff(first, again) == 0
    assert (mine.latents - other.latents).abs().max() > 1e-3
    assert all(im.size == (gen.spec.width, gen.spec.height) for im in first)


def test_qwen_image_rows_of_prompts_of_different_lengths(opened):
    """Qwen-Image keeps each prompt's own token length: a batch of a short and a long prompt (padded with masked
    zeros) gives each prompt's images alone, in the pipeline call and in the step-level sampler, under true CFG."""
    gen, sampler = opened("qwenimage", {"negative_prompt": "blurry", "true_cfg_scale": 4.0})
    prompts = ["a cube", "a red cube on the moon under a starry sky"]
    short, long_ = (gen.encode(p)["prompt_embeds"].shape[1] for p in prompts)
    assert short < long_
    both, nfe, _ = gen.generate(prompts, LINEAGES[:2])
    stepped, traj = sampler.generate(prompts, LINEAGES[:2])
    alone = [gen.generate(p, [lin])[0][0] for p, lin in zip(prompts, LINEAGES[:2])]
    assert max_diff(both, alone) <= 1 and max_diff(stepped, alone) <= 1
    assert nfe == 2 * gen.spec.num_inference_steps and traj.nfe.tolist() == [nfe, nfe]


def test_qwen_image_refuses_half_of_true_cfg(twins_root):
    from test_sampler import make_spec

    with pytest.raises(PipelineConfigError, match="true_cfg_scale=4"):
        make_spec("qwenimage", twins_root, {"negative_prompt": "blurry"}).check()
    with pytest.raises(PipelineConfigError, match="acts only with a negative prompt"):
        make_spec("qwenimage", twins_root, {"true_cfg_scale": 3.0}).check()


def test_z_image_guidance_counts_its_passes(opened):
    """Z-Image guides whenever guidance_scale > 0 (two rows a step), not past cfg_truncation (one row), and the
    turbo setting (0) runs one pass a step; a batch of prompts of different token lengths (one tensor per row)
    gives each prompt's images alone."""
    gen, sampler = opened("zimage", {"cfg_truncation": 0.3})  # steps at normalised times 0 and 0.5: the 2nd unguided
    _, nfe, _ = gen.generate(PROMPT, LINEAGES[:1])
    assert nfe == 2 + 1
    turbo, _ = opened("zimage", guidance_scale=0.0)
    _, nfe, _ = turbo.generate(PROMPT, LINEAGES[:1])
    assert nfe == 2
    prompts = ["a cube", "a red cube on the moon under a starry sky"]
    both, _, _ = gen.generate(prompts, LINEAGES[:2])
    stepped, traj = sampler.generate(prompts, LINEAGES[:2])
    alone = [gen.generate(p, [lin])[0][0] for p, lin in zip(prompts, LINEAGES[:2])]
    assert max_diff(both, alone) <= 1 and max_diff(stepped, alone) <= 1 and traj.nfe.tolist() == [3.0, 3.0]
    with pytest.raises(PipelineConfigError, match="guidance_scale > 0"):
        from test_sampler import make_spec

        make_spec("zimage", gen.spec.model_id.rsplit("/", 1)[0], {"negative_prompt": "x"}, guidance_scale=0.0).check()


@pytest.mark.slow
@pytest.mark.parametrize("family,search", [("sana", "smc"), ("flux2", "smc"), ("qwenimage", "prune"),
                                           ("zimage", "smc"), ("sana-sprint", "prune")])
def test_in_loop_searches_run_on_the_current_families(family, search, twins_root, tmp_path):
    """The particle engine (x0 previews, resampling or pruning of rows) drives each current family's twin through
    tts-search; Sana's multistep DPM-Solver++ falls back to first-order flow matching for changing rows."""
    from conftest import run_tts
    from twins import TWINS, save_twin

    from tts.core.runfolder import read_manifest

    _, preset, call = TWINS[family]
    steps = {"smc": ["search.num_particles=3", "search.resample_interval=1"],
             "prune": ["search.num_particles=4", "search.prune_at=[1]"]}[search]
    overrides = [f"pipeline={preset}", f"pipeline.model_id={save_twin(family, twins_root)}", "pipeline.dtype=fp32",
                 "pipeline.device=cpu", "verifier=incompressibility", f"search={search}", *steps,
                 "prompt=a red cube on the moon",
                 *(f"pipeline.{k}={v}" for k, v in {**call, "num_inference_steps": 3}.items())]
    run_tts(overrides, tmp_path)
    records = read_manifest(tmp_path)
    assert records and all(r.status == "ok" and r.nfe > 0 for r in records)
    assert all((tmp_path / r.image).exists() for r in records)


def test_flux2_checkpoint_with_a_pixtral_processor_says_what_it_needs(tmp_path):
    """The released FLUX.2 [dev] names a PixtralProcessor (torchvision needed): said in one line before loading."""
    import importlib.util
    import json

    from tts.pipelines import PipelineSpec

    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "Flux2Pipeline",
                                                           "tokenizer": ["transformers", "PixtralProcessor"]}))
    spec = PipelineSpec(name="flux2-dev", model_id=str(tmp_path), height=64, width=64, num_inference_steps=2,
                        guidance_scale=4.0)
    if importlib.util.find_spec("torchvision"):
        assert spec.check().index["_class_name"] == "Flux2Pipeline"
    else:
        with pytest.raises(PipelineConfigError, match="PixtralProcessor.* needs torchvision: pip install torchvision"):
            spec.check()
