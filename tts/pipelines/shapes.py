"""The embedded shapes-world model (tts.world.pipeline.ShapesPipeline): pixel space, 3 channels at H x W."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import negative_needs_guidance, pick

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("ShapesPipeline",)
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = NEGATIVE_KEYS


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.unet.config.in_channels, height, width


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    return negative_needs_guidance(call_args, NEGATIVE_KEYS, guidance_scale)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, negative = pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg, **pick(call_args, ENCODE_KEYS))
    out = {"prompt_embeds": embeds}
    if cfg:
        out["negative_prompt_embeds"] = negative
    return out
