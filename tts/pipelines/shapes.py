"""The embedded shapes-world model (tts.world.pipeline.ShapesPipeline): pixel space, 3 channels at H x W."""
from __future__ import annotations

import torch

CLASS_NAMES = ("ShapesPipeline",)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.unet.config.in_channels, height, width


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None) -> dict:
    cfg = guidance_scale > 1
    embeds, negative = pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg)
    out = {"prompt_embeds": embeds}
    if cfg:
        out["negative_prompt_embeds"] = negative
    return out
