"""Stable Diffusion 1.x / 2.x (SD1.5, SD-turbo, the DDPO fine-tunes): 4-channel latents at H/8 x W/8,
CLIP text embeddings; classifier-free guidance when guidance_scale > 1."""
from __future__ import annotations

import torch

CLASS_NAMES = ("StableDiffusionPipeline",)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None) -> dict:
    cfg = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    embeds, negative = pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg)
    out = {"prompt_embeds": embeds}
    if cfg:
        out["negative_prompt_embeds"] = negative
    return out
