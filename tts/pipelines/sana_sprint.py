"""Sana-Sprint (Chen et al. 2025, arXiv 2503.09641): Sana distilled by continuous-time consistency (sCM) into
1-4 steps. The same DC-AE latents and Gemma-2 encoding as Sana (tts.pipelines.sana); the guidance scale is
distilled into the transformer (an input, one pass per step: no negative prompt). Its SCMScheduler works in
TrigFlow time (t from pi/2 to 0, state scaled by ``sigma_data``) and draws fresh noise at every step but the
last from the call's generator: tts gives each candidate its own generator seeded from its initial noise
(``STEP_NOISE``; tts.core.noise.step_noise_seed), so candidates replay, and the step-level sampler draws the same
noises row by row (they follow rows a search keeps or copies). ``intermediate_timesteps`` (1.3) applies only to
2 steps: for any other count tts passes None, as the pipeline requires.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from . import sana
from .stepping import Conditioning, call_default, vae_decode

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("SanaSprintPipeline",)
MODEL_ID_HINTS = ("sana_sprint", "sana-sprint")  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"Efficient-Large-Model/Sana_Sprint_1.6B_1024px_diffusers": 9.0}  # bf16 weights, as Sana
DENOISER = "transformer"
STEP_ARGS = ("max_timesteps", "intermediate_timesteps")  # call arguments the stepped sampler honours
STATE_DTYPE = sana.STATE_DTYPE
STEP_NOISE = True  # the scheduler draws noise at every step from the call's (per-row) generators
TRAILING_TIMESTEPS = 1  # the scheduler's timesteps end with t = 0, which is no step
EMBEDS = ("prompt_embeds", "prompt_attention_mask")
ENCODE_KEYS = ("clean_caption", "complex_human_instruction")
latent_shape = sana.latent_shape
to_pipeline_latents = sana.to_pipeline_latents


def passes(guidance_scale: float, call_args: dict) -> int:
    return 1  # guidance distilled into the transformer


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    return None


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    embeds, mask = pipe.encode_prompt(prompt, num_images_per_prompt=1, device=pipe._execution_device,
                                      max_sequence_length=max_sequence_length or sana.DEFAULT_MAX_SEQUENCE_LENGTH,
                                      **sana.gemma_args(pipe, call_args, ENCODE_KEYS))
    return {"prompt_embeds": embeds, "prompt_attention_mask": mask, "use_resolution_binning": False}


def timestep_args(pipe, spec) -> dict:
    """``max_timesteps`` and ``intermediate_timesteps`` as the call gets them (the latter None unless 2 steps)."""
    args = {k: spec.call_args.get(k, call_default(pipe, k)) for k in STEP_ARGS}
    if spec.num_inference_steps != 2 and "intermediate_timesteps" not in spec.call_args:
        args["intermediate_timesteps"] = None
    return args


def call_kwargs(pipe, spec, step_seeds: list[int]) -> dict:
    """What a pipeline call takes besides the embeddings: the timestep arguments and one generator per row."""
    from ..core.noise import step_noise_generators

    return {**timestep_args(pipe, spec), "generator": step_noise_generators(step_seeds)}


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """TrigFlow timesteps on ``scheduler``, whose initial noise is scaled by sigma_data as in the pipeline; Gemma
    embeddings, masks and the distilled-guidance vector per row."""
    import torch
    from diffusers.pipelines.sana.pipeline_sana_sprint import retrieve_timesteps

    retrieve_timesteps(scheduler, spec.num_inference_steps, latents.device, None, sigmas=None,
                       **timestep_args(pipe, spec))
    scheduler.set_begin_index(0)
    scheduler.init_noise_sigma = scheduler.config.sigma_data
    rows = {k: embeds[k] for k in EMBEDS}
    guidance = torch.full([latents.shape[0]], float(spec.guidance_scale), device=latents.device)
    rows["guidance"] = guidance.to(embeds["prompt_embeds"].dtype) * pipe.transformer.config.guidance_embeds_scale
    return Conditioning(rows, {}, spec.guidance_scale, False)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass: the TrigFlow input scaling and output conversion of SanaSprintPipeline (sCM, Lu & Song 2024)."""
    import torch

    sigma_data, dtype = pipe.scheduler.config.sigma_data, pipe.transformer.dtype
    scm = torch.sin(t) / (torch.cos(t) + torch.sin(t))
    scm = scm.expand(model_input.shape[0])
    s = scm.view(-1, 1, 1, 1)
    norm = torch.sqrt(s ** 2 + (1 - s) ** 2)
    x = model_input / sigma_data * norm
    out = pipe.transformer(x.to(dtype), encoder_hidden_states=cond.rows["prompt_embeds"].to(dtype),
                           encoder_attention_mask=cond.rows["prompt_attention_mask"], guidance=cond.rows["guidance"],
                           timestep=scm, return_dict=False)[0]
    out = ((1 - 2 * s) * x + (1 - 2 * s + 2 * s ** 2) * out) / norm
    return out.float() * sigma_data


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """The last step's x0 (its state at t = 0), or an x0 preview, out of the sigma_data scale."""
    return vae_decode(pipe, latents / pipe.scheduler.config.sigma_data)
