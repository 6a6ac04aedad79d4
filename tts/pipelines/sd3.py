"""Stable Diffusion 3 and 3.5 (Medium, Large: the same pipeline; 3.5 adds QK normalisation and, in Medium, dual
attention layers, read from the transformer's config): 16-channel latents at H/8 x W/8; two CLIP encoders + T5
(sequence + pooled)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick
from .stepping import Conditioning, doubled, guide, plain_family, with_negatives

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("StableDiffusion3Pipeline",)
MODEL_ID_HINTS = ("stable-diffusion-3",)  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"stabilityai/stable-diffusion-3-medium-diffusers": 15.5,  # fp16 / bf16 weights (T5-XXL 9.5 of each)
              "stabilityai/stable-diffusion-3.5-large": 27.5, "stabilityai/stable-diffusion-3.5-medium": 16.0}
DENOISER = "transformer"
STEP_ARGS = ()  # call arguments the stepped sampler (tts.sampling.sampler) honours
EMBEDS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
NEGATIVE_KEYS = ("negative_prompt", "negative_prompt_2", "negative_prompt_3")
ENCODE_KEYS = (*NEGATIVE_KEYS, "clip_skip")
latent_shape, to_pipeline_latents, call_args_problem = plain_family("transformer", NEGATIVE_KEYS)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompt, prompt_2=None, prompt_3=None, device=pipe._execution_device, num_images_per_prompt=1,
        do_classifier_free_guidance=cfg, max_sequence_length=max_sequence_length or 256,
        **pick(call_args, ENCODE_KEYS))
    return with_negatives(cfg, {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled},
                          {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled})


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler`` (the resolution-dependent shift when the scheduler uses dynamic shifting);
    sequence and pooled embeddings per row."""
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift, retrieve_timesteps

    kwargs = {}
    if scheduler.config.get("use_dynamic_shifting", None):
        patch = pipe.transformer.config.patch_size
        seq_len = (latents.shape[2] // patch) * (latents.shape[3] // patch)
        c = scheduler.config
        kwargs["mu"] = calculate_shift(seq_len, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                                       c.get("base_shift", 0.5), c.get("max_shift", 1.16))
    retrieve_timesteps(scheduler, spec.num_inference_steps, latents.device, **kwargs)
    rows = {k: embeds[k] for k in EMBEDS if k in embeds}
    return Conditioning(rows, {}, spec.guidance_scale, spec.guidance_scale > 1)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = doubled(model_input, cond.cfg)
    out = pipe.transformer(hidden_states=x, timestep=t.expand(len(x)), encoder_hidden_states=cond.pair("prompt_embeds"),
                           pooled_projections=cond.pair("pooled_prompt_embeds"), return_dict=False)[0]
    return guide(out, cond)


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")
