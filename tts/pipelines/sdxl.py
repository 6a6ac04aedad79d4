"""Stable Diffusion XL: 4-channel latents at H/8 x W/8; two CLIP encoders (sequence + pooled embeddings)."""
from __future__ import annotations

import torch

CLASS_NAMES = ("StableDiffusionXLPipeline",)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None) -> dict:
    cfg = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt, device=pipe._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=cfg)
    out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    if cfg:
        out |= {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
    return out
