"""Stable Diffusion XL: 4-channel latents at H/8 x W/8; two CLIP encoders (sequence + pooled embeddings)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import distilled_guidance, negative_needs_guidance, pick

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("StableDiffusionXLPipeline",)
NEGATIVE_KEYS = ("negative_prompt", "negative_prompt_2")
ENCODE_KEYS = (*NEGATIVE_KEYS, "clip_skip")


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.unet.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    return negative_needs_guidance(call_args, NEGATIVE_KEYS, guidance_scale)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1 and pipe.unet.config.time_cond_proj_dim is None
    distilled_guidance(cfg, guidance_scale, call_args, NEGATIVE_KEYS)
    embeds, negative, pooled, negative_pooled = pipe.encode_prompt(
        prompt, device=pipe._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
        **pick(call_args, ENCODE_KEYS))
    out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    if cfg:
        out |= {"negative_prompt_embeds": negative, "negative_pooled_prompt_embeds": negative_pooled}
    return out
