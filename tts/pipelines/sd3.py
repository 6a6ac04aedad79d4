"""Stable Diffusion 3: 16-channel latents at H/8 x W/8; two CLIP encoders + T5 (sequence + pooled)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import negative_needs_guidance, pick

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("StableDiffusion3Pipeline",)
NEGATIVE_KEYS = ("negative_prompt", "negative_prompt_2", "negative_prompt_3")
ENCODE_KEYS = (*NEGATIVE_KEYS, "clip_skip")


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.transformer.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    return negative_needs_guidance(call_args, NEGATIVE_KEYS, guidance_scale)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt=prompt, prompt_2=None, prompt_3=None, device=pipe._execution_device, num_images_per_prompt=1,
        do_classifier_free_guidance=cfg, max_sequence_length=max_sequence_length or 256,
        **pick(call_args, ENCODE_KEYS))
    out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    if cfg:
        out |= {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
    return out
