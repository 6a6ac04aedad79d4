"""The embedded shapes-world model (tts.world.pipeline.ShapesPipeline): pixel space, 3 channels at H x W."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick
from .stepping import Conditioning, doubled, guide, plain_family, with_negatives

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("ShapesPipeline",)
DENOISER = "unet"
STEP_ARGS = ()  # call arguments the stepped sampler (tts.sampling.sampler) honours


def pipeline_class(class_name: str) -> type:
    """The shapes model's pipeline lives in tts.world, not in diffusers."""
    from ..world.pipeline import ShapesPipeline

    return ShapesPipeline
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = NEGATIVE_KEYS
latent_shape, to_pipeline_latents, call_args_problem = plain_family("unet", NEGATIVE_KEYS, pixel_space=True)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, negative = pipe.encode_prompt(prompt, pipe._execution_device, 1, cfg, **pick(call_args, ENCODE_KEYS))
    return with_negatives(cfg, {"prompt_embeds": embeds}, {"negative_prompt_embeds": negative})


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    scheduler.set_timesteps(spec.num_inference_steps, device=latents.device)
    cfg = spec.guidance_scale > 1
    if cfg and "negative_prompt_embeds" not in embeds:  # as ShapesPipeline: the empty prompt
        embeds = {**embeds, "negative_prompt_embeds": pipe._embed([""], latents.device).expand(
            embeds["prompt_embeds"].shape[0], -1, -1)}
    rows = {k: embeds[k] for k in ("prompt_embeds", "negative_prompt_embeds") if k in embeds}
    return Conditioning(rows, {}, spec.guidance_scale, cfg)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = pipe.unet(doubled(model_input, cond.cfg), t, encoder_hidden_states=cond.pair("prompt_embeds")).sample
    return guide(out, cond)


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """Pixels in [-1, 1] to PIL images, as ShapesPipeline does."""
    import numpy as np
    from PIL import Image

    arr = (latents / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).float().cpu().numpy()
    return [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr]


def decode_tensor(pipe, latents: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Pixels in [-1, 1] to a differentiable (B, 3, H, W) tensor in [0, 1] (gradient search, tts.sampling.gradient)."""
    return (latents / 2 + 0.5).clamp(0, 1)
