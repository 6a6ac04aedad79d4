"""Stable Diffusion 3: 16-channel latents at H/8 x W/8; two CLIP encoders + T5 (sequence + pooled)."""
from __future__ import annotations

import torch

CLASS_NAMES = ("StableDiffusion3Pipeline",)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.transformer.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None) -> dict:
    cfg = guidance_scale > 1
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompt, prompt_2=None, prompt_3=None, device=pipe._execution_device, num_images_per_prompt=1,
        do_classifier_free_guidance=cfg, max_sequence_length=max_sequence_length or 256)
    out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    if cfg:
        out |= {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
    return out
