"""Flux.1 (dev / schnell): 16-channel latents at 2*(H//16) x 2*(W//16), packed into 2x2 patches
(B, (H/16)*(W/16), 64) before the transformer; T5 + CLIP pooled text embeddings."""
from __future__ import annotations

import torch

CLASS_NAMES = ("FluxPipeline",)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    channels = pipe.transformer.config.in_channels // 4
    return channels, 2 * (height // (pipe.vae_scale_factor * 2)), 2 * (width // (pipe.vae_scale_factor * 2))


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    b, c, h, w = noise.shape
    return pipe._pack_latents(noise, b, c, h, w)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None) -> dict:
    embeds, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, device=pipe._execution_device,
                                           num_images_per_prompt=1, max_sequence_length=max_sequence_length or 512)
    return {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
