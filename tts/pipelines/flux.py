"""Flux.1 (dev / schnell): 16-channel latents at 2*(H//16) x 2*(W//16), packed into 2x2 patches
(B, (H/16)*(W/16), 64) before the transformer; T5 + CLIP pooled text embeddings.

``guidance_scale`` is Flux-dev's distilled guidance (an input of the transformer, one pass per step); a
negative prompt acts only through true classifier-free guidance, ``true_cfg_scale`` > 1 (two passes per
step), as in diffusers' FluxPipeline."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick, true_cfg_problem
from .stepping import Conditioning, linear_sigmas, true_cfg

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("FluxPipeline",)
MODEL_ID_HINTS = ("flux.1", "flux")  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"black-forest-labs/FLUX.1-dev": 34.0, "black-forest-labs/FLUX.1-schnell": 34.0}  # bf16 weights
DENOISER = "transformer"
STEP_ARGS = ("true_cfg_scale",)  # call arguments the stepped sampler (tts.sampling.sampler) honours
EMBEDS = ("prompt_embeds", "pooled_prompt_embeds", "negative_prompt_embeds", "negative_pooled_prompt_embeds")
NEGATIVE_KEYS = ("negative_prompt", "negative_prompt_2")
ENCODE_KEYS = NEGATIVE_KEYS


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    channels = pipe.transformer.config.in_channels // 4
    return channels, 2 * (height // (pipe.vae_scale_factor * 2)), 2 * (width // (pipe.vae_scale_factor * 2))


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    b, c, h, w = noise.shape
    return pipe._pack_latents(noise, b, c, h, w)


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    if "negative_prompt_2" in call_args and "negative_prompt" not in call_args:
        return "pipeline.call_args.negative_prompt_2 needs pipeline.call_args.negative_prompt (for the CLIP encoder)"
    return true_cfg_problem(call_args, "Flux")


def passes(guidance_scale: float, call_args: dict) -> int:
    """Denoiser passes per step: the distilled guidance is one; true CFG with a negative prompt two."""
    return 2 if "negative_prompt" in call_args and float(call_args.get("true_cfg_scale", 1.0)) > 1 else 1


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    kwargs = {"device": pipe._execution_device, "num_images_per_prompt": 1,
              "max_sequence_length": max_sequence_length or 512}
    embeds, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, **kwargs)
    out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    negative = pick(call_args, ENCODE_KEYS)
    if negative:
        neg, neg_pooled, _ = pipe.encode_prompt(prompt=negative["negative_prompt"],
                                                prompt_2=negative.get("negative_prompt_2"), **kwargs)
        out |= {"negative_prompt_embeds": neg, "negative_pooled_prompt_embeds": neg_pooled}
    return out


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler`` (sigmas 1 .. 1/n shifted by the image's sequence length, as FluxPipeline);
    embeddings and the distilled-guidance vector per row; text and image position ids shared by all rows."""
    import torch
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps

    n, c = spec.num_inference_steps, scheduler.config
    sigmas = linear_sigmas(scheduler, n)
    mu = calculate_shift(latents.shape[1], c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    retrieve_timesteps(scheduler, n, latents.device, sigmas=sigmas, mu=mu)
    rows = {k: embeds[k] for k in EMBEDS if k in embeds}
    if pipe.transformer.config.guidance_embeds:
        rows["guidance"] = torch.full([latents.shape[0]], spec.guidance_scale, device=latents.device,
                                      dtype=torch.float32)
    h, w = (2 * (size // (pipe.vae_scale_factor * 2)) for size in (spec.height, spec.width))
    dtype = embeds["prompt_embeds"].dtype
    shared = {"img_ids": pipe._prepare_latent_image_ids(latents.shape[0], h // 2, w // 2, latents.device, dtype),
              "txt_ids": torch.zeros(embeds["prompt_embeds"].shape[1], 3, device=latents.device,
                                     dtype=pipe.text_encoder.dtype),
              "true_cfg_scale": float(spec.call_args.get("true_cfg_scale", 1.0))}
    true_cfg = shared["true_cfg_scale"] > 1 and "negative_prompt_embeds" in rows
    if true_cfg:
        shared["negative_txt_ids"] = torch.zeros(embeds["negative_prompt_embeds"].shape[1], 3, device=latents.device,
                                                 dtype=pipe.text_encoder.dtype)
    return Conditioning(rows, shared, spec.guidance_scale, true_cfg)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass with the distilled guidance; with true classifier-free guidance a second, negative pass."""
    rows, shared = cond.rows, cond.shared
    timestep = t.expand(model_input.shape[0]).to(model_input.dtype) / 1000

    def run(prefix: str):
        return pipe.transformer(hidden_states=model_input, timestep=timestep, guidance=rows.get("guidance"),
                                pooled_projections=rows[prefix + "pooled_prompt_embeds"],
                                encoder_hidden_states=rows[prefix + "prompt_embeds"],
                                txt_ids=shared[prefix + "txt_ids"],
                                img_ids=shared["img_ids"], joint_attention_kwargs={}, return_dict=False)[0]

    return true_cfg(pipe, run, cond)


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")
