"""PixArt-Sigma: 4-channel latents at H/8 x W/8 (the transformer predicts 8 channels: noise + variance);
T5 embeddings with attention masks."""
from __future__ import annotations

import torch

CLASS_NAMES = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.transformer.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None) -> dict:
    cfg = guidance_scale > 1
    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        prompt, do_classifier_free_guidance=cfg, num_images_per_prompt=1, device=pipe._execution_device,
        max_sequence_length=max_sequence_length or 300)
    # Latents are built at exactly (height, width), so the pipeline must not re-bin the resolution.
    out = {"prompt_embeds": embeds, "prompt_attention_mask": mask, "use_resolution_binning": False,
           "negative_prompt": None}
    if cfg:
        out |= {"negative_prompt_embeds": negative, "negative_prompt_attention_mask": negative_mask}
    return out
