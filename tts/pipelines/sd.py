"""Stable Diffusion 1.x / 2.x (SD1.5, SD-turbo, the DDPO fine-tunes): 4-channel latents at H/8 x W/8,
CLIP text embeddings; classifier-free guidance when guidance_scale > 1."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import distilled_guidance, negative_needs_guidance, pick

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("StableDiffusionPipeline",)
NEGATIVE_KEYS = ("negative_prompt",)
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
    embeds, negative = pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg, **pick(call_args, ENCODE_KEYS))
    out = {"prompt_embeds": embeds}
    if cfg:
        out["negative_prompt_embeds"] = negative
    return out
