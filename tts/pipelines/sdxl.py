"""Stable Diffusion XL: 4-channel latents at H/8 x W/8; two CLIP encoders (sequence + pooled embeddings)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import distilled_guidance, pick
from .stepping import Conditioning, doubled, embeds_dtype, guide, plain_family, with_negatives

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("StableDiffusionXLPipeline",)
MODEL_ID_HINTS = ("xl",)  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"stabilityai/stable-diffusion-xl-base-1.0": 6.9, "SG161222/RealVisXL_V4.0": 6.9}  # fp16 weights
DENOISER = "unet"
STEP_ARGS = ("guidance_rescale",)  # call arguments the stepped sampler (tts.sampling.sampler) honours
EMBEDS = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
NEGATIVE_KEYS = ("negative_prompt", "negative_prompt_2")
ENCODE_KEYS = (*NEGATIVE_KEYS, "clip_skip")
latent_shape, to_pipeline_latents, call_args_problem = plain_family("unet", NEGATIVE_KEYS)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    distilled_guidance(cfg, guidance_scale, call_args, NEGATIVE_KEYS)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt, device=pipe._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
        **pick(call_args, ENCODE_KEYS))
    return with_negatives(cfg, {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled},
                          {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled})


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler``; embeddings per row; the micro-conditioning ``add_time_ids`` (original and
    target size = the image size, crop (0, 0), as the pipeline's defaults; Podell et al. 2023, Sec. 2.2)."""
    import torch
    from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import retrieve_timesteps

    retrieve_timesteps(scheduler, spec.num_inference_steps, latents.device)
    cfg = spec.guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    rows = {k: embeds[k] for k in EMBEDS if k in embeds}
    projection = (int(rows["pooled_prompt_embeds"].shape[-1]) if pipe.text_encoder_2 is None
                  else pipe.text_encoder_2.config.projection_dim)
    size = (spec.height, spec.width)
    time_ids = pipe._get_add_time_ids(size, (0, 0), size, dtype=embeds_dtype(embeds),
                                      text_encoder_projection_dim=projection).to(latents.device)
    if pipe.unet.config.time_cond_proj_dim is not None:
        scale = torch.tensor(spec.guidance_scale - 1).repeat(latents.shape[0])
        rows["timestep_cond"] = pipe.get_guidance_scale_embedding(
            scale, embedding_dim=pipe.unet.config.time_cond_proj_dim).to(device=latents.device, dtype=latents.dtype)
    shared = {"add_time_ids": time_ids, "guidance_rescale": float(spec.call_args.get("guidance_rescale", 0.0))}
    return Conditioning(rows, shared, spec.guidance_scale, cfg)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = doubled(model_input, cond.cfg)
    time_ids = cond.shared["add_time_ids"].repeat(len(x), 1)
    added = {"text_embeds": cond.pair("pooled_prompt_embeds"), "time_ids": time_ids}
    out = pipe.unet(x, t, encoder_hidden_states=cond.pair("prompt_embeds"),
                    timestep_cond=cond.rows.get("timestep_cond"), added_cond_kwargs=added, return_dict=False)[0]
    return guide(out, cond, cond.shared["guidance_rescale"])


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """As the pipeline decodes: the VAE upcast to fp32 where it overflows in fp16, latents_mean/std when the VAE
    declares them, the invisible watermark when the pipeline has one."""
    import torch

    vae = pipe.vae
    upcast = vae.dtype == torch.float16 and vae.config.force_upcast
    if upcast:
        pipe.upcast_vae()
        latents = latents.to(next(iter(vae.post_quant_conv.parameters())).dtype)
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is not None and std is not None:
        mean = torch.tensor(mean).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        std = torch.tensor(std).view(1, -1, 1, 1).to(latents.device, latents.dtype)
        latents = latents * std / vae.config.scaling_factor + mean
    else:
        latents = latents / vae.config.scaling_factor
    image = vae.decode(latents, return_dict=False)[0]
    if upcast:
        vae.to(dtype=torch.float16)
    if getattr(pipe, "watermark", None) is not None:
        image = pipe.watermark.apply_watermark(image)
    return pipe.image_processor.postprocess(image, output_type="pil")
