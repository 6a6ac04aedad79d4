"""PixArt-Sigma: 4-channel latents at H/8 x W/8 (the transformer predicts 8 channels: noise + variance);
T5 embeddings with attention masks."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import negative_needs_guidance, pick

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = (*NEGATIVE_KEYS, "clean_caption")


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.transformer.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    return negative_needs_guidance(call_args, NEGATIVE_KEYS, guidance_scale)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        prompt, do_classifier_free_guidance=cfg, num_images_per_prompt=1, device=pipe._execution_device,
        max_sequence_length=max_sequence_length or 300, **pick(call_args, ENCODE_KEYS))
    # Latents are built at exactly (height, width), so the pipeline must not re-bin the resolution.
    out = {"prompt_embeds": embeds, "prompt_attention_mask": mask, "use_resolution_binning": False,
           "negative_prompt": None}
    if cfg:
        out |= {"negative_prompt_embeds": negative, "negative_prompt_attention_mask": negative_mask}
    return out
