"""Stable Diffusion 1.x / 2.x (SD1.5, SD-turbo, the DDPO fine-tunes): 4-channel latents at H/8 x W/8,
CLIP text embeddings; classifier-free guidance when guidance_scale > 1."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import distilled_guidance, pick
from .stepping import Conditioning, doubled, guide, plain_family, with_negatives

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("StableDiffusionPipeline",)
MODEL_ID_HINTS = ("stable-diffusion-v1", "sd-turbo", "ddpo")  # tts-plan's guess when the checkpoint cannot be read
WEIGHTS_GB = {"stable-diffusion-v1-5/stable-diffusion-v1-5": 2.7, "stabilityai/sd-turbo": 2.6,  # fp16 weights
              **{f"kvablack/ddpo-{k}": 2.7 for k in ("aesthetic", "alignment", "compressibility", "incompressibility")}}
DENOISER = "unet"
STEP_ARGS = ("guidance_rescale",)  # call arguments the stepped sampler (tts.sampling.sampler) honours
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = (*NEGATIVE_KEYS, "clip_skip")
latent_shape, to_pipeline_latents, call_args_problem = plain_family("unet", NEGATIVE_KEYS)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    distilled_guidance(cfg, guidance_scale, call_args, NEGATIVE_KEYS)
    embeds, negative = pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg, **pick(call_args, ENCODE_KEYS))
    return with_negatives(cfg, {"prompt_embeds": embeds}, {"negative_prompt_embeds": negative})


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler``; embeddings per row; the guidance embedding of guidance-distilled UNets."""
    import torch
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps

    retrieve_timesteps(scheduler, spec.num_inference_steps, latents.device)
    cfg = spec.guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    rows = {k: embeds[k] for k in ("prompt_embeds", "negative_prompt_embeds") if k in embeds}
    if pipe.unet.config.time_cond_proj_dim is not None:
        scale = torch.tensor(spec.guidance_scale - 1).repeat(latents.shape[0])
        rows["timestep_cond"] = pipe.get_guidance_scale_embedding(
            scale, embedding_dim=pipe.unet.config.time_cond_proj_dim).to(device=latents.device, dtype=latents.dtype)
    shared = {"guidance_rescale": float(spec.call_args.get("guidance_rescale", 0.0))}
    return Conditioning(rows, shared, spec.guidance_scale, cfg)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = pipe.unet(doubled(model_input, cond.cfg), t, encoder_hidden_states=cond.pair("prompt_embeds"),
                    timestep_cond=cond.rows.get("timestep_cond"), return_dict=False)[0]
    return guide(out, cond, cond.shared["guidance_rescale"])


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """As the pipeline decodes, safety checker included (its flags ride in each image's info, tts.run.safety)."""
    from .flags import mark_flagged

    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    image, nsfw = pipe.run_safety_checker(image, latents.device, latents.dtype)
    denormalize = [True] * image.shape[0] if nsfw is None else [not n for n in nsfw]
    return mark_flagged(pipe.image_processor.postprocess(image, output_type="pil", do_denormalize=denormalize), nsfw)


def decode_tensor(pipe, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The VAE's decoding as a differentiable (B, 3, H, W) tensor in [0, 1] (gradient search, tts.sampling.gradient);
    the safety checker does not act here (the candidate's image is decoded by ``decode``)."""
    image = pipe.vae.decode(latents / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return (image.float() / 2 + 0.5).clamp(0, 1)
