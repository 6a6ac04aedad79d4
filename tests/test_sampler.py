"""The step-level sampler (tts.sampling.sampler) against the pipeline call, on every family's tiny twin and the shapes model."""
import logging

import numpy as np
import pytest
import torch
from twins import TWINS, save_twin, twin_guidance

from tts.sampling.generate import Generator
from tts.core.noise import derive_seed, fresh
from tts.pipelines import PipelineConfigError, PipelineSpec
from tts.sampling.sampler import Sampler, SamplerOptions, Schedule, _schedule

PROMPT = "a red cube on the moon"
LINEAGES = [fresh(1), fresh(2), fresh(3)]
#: golden cases: twin (or the shapes model) and call arguments; Flux's second case runs true CFG
CASES = {"flux": ("flux", {}), "flux-true-cfg": ("flux", {"negative_prompt": "blurry", "true_cfg_scale": 4.0}),
         "sd15": ("sd15", {}), "sdxl": ("sdxl", {"guidance_rescale": 0.7}), "pixart-sigma": ("pixart-sigma", {}),
         "sd3": ("sd3", {}), "sd3.5": ("sd3.5", {}),
         "sana": ("sana", {}), "sana-sprint": ("sana-sprint", {}),
         "flux2": ("flux2", {}), "qwenimage": ("qwenimage", {}),
         "qwenimage-true-cfg": ("qwenimage", {"negative_prompt": " ", "true_cfg_scale": 4.0}),
         "zimage": ("zimage", {}), "zimage-cfg-options": ("zimage", {"cfg_truncation": 0.3, "cfg_normalization": 1.0}),
         "shapes": ("shapes", {}), "shapes-cfg": ("shapes", {})}


def make_spec(family, root, call_args=None, steps=None, **settings):
    if family == "shapes":
        base = {"height": 32, "width": 32, "num_inference_steps": 4, "guidance_scale": 1.0}
        return PipelineSpec(name="shapes", model_id="tts://shapes-model", device="cpu",
                            **{**base, **settings, **({"num_inference_steps": steps} if steps else {})})
    _, preset, call = TWINS[family]
    call = {**call, **({"num_inference_steps": steps} if steps else {})}
    guidance = settings.pop("guidance_scale", twin_guidance(family))
    return PipelineSpec(name=preset, model_id=str(save_twin(family, root)), dtype="fp32", device="cpu",
                        guidance_scale=guidance, call_args=call_args or {}, **{**call, **settings})


@pytest.fixture
def opened(twins_root):
    """opened(family, ...) -> a Generator and a Sampler on it, both closed after the test."""
    made = []

    def make(family, call_args=None, options=SamplerOptions(), steps=None, **settings):
        spec = make_spec(family, twins_root, call_args, steps, **settings)
        gen = Generator(spec.load(), spec)
        sampler = Sampler(gen, options)
        made.extend([sampler, gen])
        return gen, sampler
    yield make
    for thing in made:
        thing.close()


def pixels(images):
    return np.stack([np.asarray(im, dtype=int) for im in images])


def max_diff(a, b) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


@pytest.mark.parametrize("case", list(CASES))
def test_sampler_images_equal_the_pipeline_call(case, opened):
    family, call_args = CASES[case]
    settings = {"guidance_scale": 1.5} if case == "shapes-cfg" else {}
    gen, sampler = opened(family, call_args, **settings)
    golden, nfe, _ = gen.generate(PROMPT, LINEAGES)
    images, traj = sampler.generate(PROMPT, LINEAGES)
    assert max_diff(images, golden) <= 1  # <= 1/255, fp32 on the CPU
    assert traj.nfe.tolist() == [nfe] * len(LINEAGES)
    assert sampler.fallback is None and traj.step == sampler.num_steps


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux", "sd3", "pixart-sigma", "sana", "flux2", "qwenimage",
                                    "zimage"])
def test_select_duplicates_and_reorders_rows_like_separate_runs(family, opened):
    _, sampler = opened(family, options=SamplerOptions(batch_changes=True), steps=3)
    traj = sampler.run(sampler.start(PROMPT, LINEAGES), until=1)
    picked = sampler.run(traj.select([2, 0, 0]))
    assert picked.nfe.tolist() == [traj.nfe[0].item() * 3] * 3
    for row, lineage in enumerate([LINEAGES[2], LINEAGES[0], LINEAGES[0]]):
        alone = sampler.run(sampler.start(PROMPT, [lineage]))
        torch.testing.assert_close(picked.latents[row], alone.latents[0], rtol=1e-3, atol=1e-3)
        torch.testing.assert_close(picked.x0[row], alone.x0[0], rtol=1e-3, atol=1e-3)
        assert max_diff(sampler.decode(picked.latents[row:row + 1]), sampler.decode(alone.latents)) <= 1
    with pytest.raises(IndexError, match="select takes"):
        traj.select([3])


def step_seeds(lineages):
    return lambda step: [derive_seed(lin, "step", step) for lin in lineages]


@pytest.mark.parametrize("family", ["sd15", "sdxl", "flux", "sd3", "flux2"])
def test_stochastic_sampler_replays_from_seeds_and_differs_from_the_ode(family, opened):
    _, ode = opened(family, steps=4)
    _, sde = opened(family, options=SamplerOptions(eta=1.0), steps=4)
    deterministic, _ = ode.generate(PROMPT, LINEAGES)
    first, traj = sde.generate(PROMPT, LINEAGES, seeds=step_seeds(LINEAGES))
    again, _ = sde.generate(PROMPT, LINEAGES, seeds=step_seeds(LINEAGES))
    other, _ = sde.generate(PROMPT, LINEAGES, seeds=step_seeds([fresh(7), fresh(8), fresh(9)]))
    assert max_diff(first, again) == 0
    assert max_diff(first, deterministic) > 2 and max_diff(first, other) > 2
    # one row alone replays the same image: its noises depend on its seeds only, not on the batch
    alone, _ = sde.generate(PROMPT, LINEAGES[1:2], seeds=step_seeds(LINEAGES[1:2]))
    assert max_diff(alone, first[1:2]) <= 1
    with pytest.raises(ValueError, match="one noise seed per row"):
        sde.step(sde.start(PROMPT, LINEAGES))


def exact_outputs(schedule: Schedule, x: torch.Tensor, x0: torch.Tensor, i: int) -> torch.Tensor:
    """The model output a perfect denoiser gives for data that is the single point x0."""
    a, s = float(schedule.alpha[i]), float(schedule.sigma[i])
    eps = (x / float(schedule.scale[i]) - a * x0) / s
    return {"flow": eps - x0, "epsilon": eps, "v_prediction": a * eps - s * x0}[schedule.prediction]


@pytest.mark.parametrize("kind", ["FlowMatchEulerDiscreteScheduler", "DDIMScheduler", "EulerDiscreteScheduler"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_stochastic_steps_keep_the_marginals_of_the_ode(kind, eta):
    """With a perfect denoiser for point data x0, x_i ~ N(alpha_i x0, sigma_i^2) at every step, for any eta."""
    import diffusers

    scheduler = getattr(diffusers, kind)(**({"prediction_type": "v_prediction"} if kind == "DDIMScheduler" else {}))
    scheduler.set_timesteps(6)
    schedule = _schedule(scheduler)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((20000, 1), 0.7, dtype=torch.float64)
    state = torch.randn(x0.shape, generator=gen, dtype=torch.float64) * getattr(scheduler, "init_noise_sigma", 1.0)
    state = (state / float(schedule.scale[0]) * float(schedule.sigma[0]) + float(schedule.alpha[0]) * x0
             ) * float(schedule.scale[0])  # exactly at the first position's marginal
    for i in range(len(scheduler.timesteps)):
        out = exact_outputs(schedule, state, x0, i)
        state, pred = schedule.step(state, out, i, eta, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
        torch.testing.assert_close(pred, x0)
        x = state / float(schedule.scale[i + 1])
        assert abs(x.mean().item() - float(schedule.alpha[i + 1]) * 0.7) < 0.02
        assert abs(x.std().item() - float(schedule.sigma[i + 1])) < 0.02
        if 0 < i + 1 < len(scheduler.timesteps):  # renoise back to the start: that step's marginal again
            back = schedule.renoise(state, i + 1, 0, torch.randn(x0.shape, generator=gen, dtype=torch.float64))
            back = back / float(schedule.scale[0])
            assert abs(back.mean().item() - float(schedule.alpha[0]) * 0.7) < 0.02
            assert abs(back.std().item() - float(schedule.sigma[0])) < 0.02


@pytest.mark.parametrize("family", ["sd15", "flux"])
def test_renoise_then_step_back_to_the_end(family, opened):
    _, sampler = opened(family, options=SamplerOptions(batch_changes=True), steps=4)
    traj = sampler.run(sampler.start(PROMPT, LINEAGES), until=3)
    seeds = [derive_seed(lin, "renoise", 3) for lin in LINEAGES]
    back = sampler.renoise(traj, 1, seeds)
    assert back.step == 1 and back.x0 is None and back.nfe.tolist() == traj.nfe.tolist()
    done = sampler.run(back)
    again = sampler.run(sampler.renoise(traj, 1, seeds))
    other = sampler.run(sampler.renoise(traj, 1, [s + 1 for s in seeds]))
    straight = sampler.run(traj)
    per_step = traj.nfe[0].item() / 3
    assert done.nfe.tolist() == [per_step * 6] * 3  # 3 steps, back to step 1, 3 more
    assert torch.equal(done.latents, again.latents)
    assert not torch.allclose(done.latents, other.latents) and not torch.allclose(done.latents, straight.latents)
    assert len(sampler.decode(done.latents)) == 3
    with pytest.raises(ValueError, match="earlier step"):
        sampler.renoise(traj, 3, seeds)


def test_nfes_per_row_are_exact(opened):
    gen, sampler = opened("sd15", options=SamplerOptions(batch_changes=True), steps=4)  # guided: 2 passes a step
    rows = []
    hook = gen.loaded.denoiser.register_forward_pre_hook(lambda m, a, k: rows.append(a[0].shape[0]), with_kwargs=True)
    try:
        traj = sampler.run(sampler.start(PROMPT, LINEAGES), until=2)
        traj = sampler.run(traj.select([0, 0, 1, 2, 2]))
    finally:
        hook.remove()
    assert sum(rows) == 3 * 2 * 2 + 5 * 2 * 2 == traj.spent
    assert traj.nfe.tolist() == [8.0] * 5  # each row's own path: 4 steps x 2 passes, its shared prefix included
    assert traj.shared.tolist() == [0.0, 4.0, 0.0, 0.0, 4.0]  # second copies share their first 2 guided steps
    assert (traj.nfe - traj.shared).sum().item() == traj.spent  # no row dropped: own NFEs add up to the cost
    dropped = traj.select([4, 3])  # row 3 owned the prefix; row 4, its copy, now owns only its own steps
    assert dropped.shared.tolist() == [4.0, 0.0]


@pytest.fixture
def multistep(opened):
    """opened(...) with the sd15 twin's pipeline on DPM-Solver++ (a multistep scheduler) while the test runs."""
    from diffusers import DPMSolverMultistepScheduler

    pipes = []

    def make(**kwargs):
        gen, _ = opened("sd15", steps=4)
        pipes.append((gen.pipe, gen.pipe.scheduler))
        gen.pipe.scheduler = DPMSolverMultistepScheduler.from_config(gen.pipe.scheduler.config)
        return gen, Sampler(gen, **kwargs)
    yield make
    for pipe, scheduler in pipes:
        pipe.scheduler = scheduler


def test_multistep_scheduler_runs_as_is_and_falls_back_for_batch_changes(multistep, caplog):
    gen, plain = multistep()
    golden, _, _ = gen.generate(PROMPT, LINEAGES)
    images, traj = plain.generate(PROMPT, LINEAGES)
    assert plain.fallback is None and max_diff(images, golden) <= 1
    with pytest.raises(PipelineConfigError, match="batch_changes=True"):
        traj.select([0])
    with caplog.at_level(logging.WARNING, logger="tts.sampling.sampler"):
        _, moving = multistep(options=SamplerOptions(batch_changes=True))
    assert moving.fallback.startswith("DDIMScheduler") and "DPMSolverMultistepScheduler" in moving.fallback
    assert "DDIMScheduler" in caplog.text
    picked = moving.run(moving.run(moving.start(PROMPT, LINEAGES), until=2).select([1, 1]))
    assert picked.step == 4 and len(moving.decode(picked.latents)) == 2
    plain.close()
    moving.close()


def test_unsupported_call_args_are_refused_in_one_line(twins_root):
    spec = make_spec("sd15", twins_root, {"eta": 0.5})
    gen = Generator(spec.load(), spec)
    try:
        with pytest.raises(PipelineConfigError, match="call_args.eta is not supported by the step-level sampler"):
            Sampler(gen)
    finally:
        gen.close()


def test_safety_checker_flags_follow_the_sampler(twins_root):
    """SD's safety checker runs in the sampler's decode as in the pipeline call: same black images, same flags."""
    from twins_extra import save_flagging_sd15

    from tts.run.safety import is_flagged

    spec = make_spec("sd15", twins_root)
    spec.model_id = str(save_flagging_sd15(twins_root))
    gen = Generator(spec.load(), spec)
    sampler = Sampler(gen)
    try:
        golden, _, _ = gen.generate(PROMPT, LINEAGES[:2])
        images, _ = sampler.generate(PROMPT, LINEAGES[:2])
    finally:
        sampler.close()
        gen.close()
    assert [is_flagged(im) for im in images] == [is_flagged(im) for im in golden] == [True, True]
    assert max_diff(images, golden) == 0


def test_flux_dev_guidance_vector_follows_rows():
    """A Flux-dev layout (guidance embedding): golden equality, and the per-row guidance vector follows select()."""
    from twins import build_flux

    from tts.pipelines import LoadedPipeline, flux

    torch.manual_seed(0)
    pipe = build_flux(guidance_embeds=True)
    pipe.set_progress_bar_config(disable=True)
    _, preset, call = TWINS["flux"]
    spec = PipelineSpec(name=preset, model_id="in-memory-flux-dev-twin", dtype="fp32", device="cpu",
                        guidance_scale=3.5, **{**call, "num_inference_steps": 3})
    gen = Generator(LoadedPipeline(pipe, flux, torch.device("cpu")), spec)
    sampler = Sampler(gen, SamplerOptions(batch_changes=True))
    try:
        golden, _, _ = gen.generate(PROMPT, LINEAGES)
        images, _ = sampler.generate(PROMPT, LINEAGES)
        traj = sampler.run(sampler.start(PROMPT, LINEAGES), until=1)
        assert traj.cond.rows["guidance"].tolist() == [3.5] * 3
        picked = sampler.run(traj.select([1, 1]))
        alone = sampler.run(sampler.start(PROMPT, LINEAGES[1:2]))
    finally:
        sampler.close()
        gen.close()
    assert max_diff(images, golden) <= 1
    assert picked.cond.rows["guidance"].shape == (2,)
    torch.testing.assert_close(picked.latents[1], alone.latents[0], rtol=1e-3, atol=1e-3)
