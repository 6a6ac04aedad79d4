"""Flux.1 (dev / schnell): 16-channel latents at 2*(H//16) x 2*(W//16), packed into 2x2 patches
(B, (H/16)*(W/16), 64) before the transformer; T5 + CLIP pooled text embeddings.

``guidance_scale`` is Flux-dev's distilled guidance (an input of the transformer, one pass per step); a
negative prompt acts only through true classifier-free guidance, ``true_cfg_scale`` > 1 (two passes per
step), as in diffusers' FluxPipeline."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("FluxPipeline",)
NEGATIVE_KEYS = ("negative_prompt", "negative_prompt_2")
ENCODE_KEYS = NEGATIVE_KEYS


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    channels = pipe.transformer.config.in_channels // 4
    return channels, 2 * (height // (pipe.vae_scale_factor * 2)), 2 * (width // (pipe.vae_scale_factor * 2))


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    b, c, h, w = noise.shape
    return pipe._pack_latents(noise, b, c, h, w)


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    true_cfg = call_args.get("true_cfg_scale", 1.0)
    if isinstance(true_cfg, bool) or not isinstance(true_cfg, (int, float)):
        return f"pipeline.call_args.true_cfg_scale must be a number, got {true_cfg!r}"
    if "negative_prompt_2" in call_args and "negative_prompt" not in call_args:
        return "pipeline.call_args.negative_prompt_2 needs pipeline.call_args.negative_prompt (for the CLIP encoder)"
    if "negative_prompt" in call_args and true_cfg <= 1:
        return ("Flux takes a negative prompt only with true classifier-free guidance: add "
                "+pipeline.call_args.true_cfg_scale=4 (any value > 1; two denoiser passes per step)")
    if true_cfg > 1 and "negative_prompt" not in call_args:
        return ("pipeline.call_args.true_cfg_scale acts only with a negative prompt: add "
                "+pipeline.call_args.negative_prompt=...")
    return None


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    kwargs = {"device": pipe._execution_device, "num_images_per_prompt": 1,
              "max_sequence_length": max_sequence_length or 512}
    embeds, pooled, _ = pipe.encode_prompt(prompt=prompt, prompt_2=None, **kwargs)
    out = {"prompt_embeds": embeds, "pooled_prompt_embeds": pooled}
    negative = pick(call_args, ENCODE_KEYS)
    if negative:
        neg, neg_pooled, _ = pipe.encode_prompt(prompt=negative["negative_prompt"],
                                                prompt_2=negative.get("negative_prompt_2"), **kwargs)
        out |= {"negative_prompt_embeds": neg, "negative_pooled_prompt_embeds": neg_pooled}
    return out
