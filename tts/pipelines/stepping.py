"""What the family modules' step functions share: the per-batch conditioning and classifier-free guidance.

A family's ``prepare`` returns a :class:`Conditioning`: ``rows`` holds every tensor with one row per
trajectory (embeddings, pooled embeddings, attention masks, Flux's guidance vector), ``shared`` what all
rows share (Flux's text / image position ids, SDXL's micro-conditioning ``add_time_ids``, PixArt-Alpha's
resolution conditioning, the true-CFG scale). ``select(index)`` keeps, duplicates and re-orders rows, so the
conditioning follows the latents when a search drops or resamples trajectories (tts.sampling.sampler). A tensor whose
batch dimension is not the first (HiDream's Llama embeddings: layers first) names it in ``batch_dims``.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclasses.dataclass
class Conditioning:
    rows: dict[str, torch.Tensor]
    shared: dict[str, Any]
    guidance_scale: float
    cfg: bool  # classifier-free guidance: the denoiser sees [negative rows; positive rows]
    batch_dims: dict[str, int] = dataclasses.field(default_factory=dict)  # rows whose batch dimension is not 0

    def select(self, index: torch.Tensor) -> Conditioning:
        rows = {k: v.index_select(self.batch_dims.get(k, 0), index.to(v.device)) for k, v in self.rows.items()}
        return dataclasses.replace(self, rows=rows)

    def pair(self, key: str) -> torch.Tensor:
        """``[negative_<key>; <key>]`` under classifier-free guidance, else ``<key>`` (the pipelines' order)."""
        import torch

        if not self.cfg:
            return self.rows[key]
        return torch.cat([self.rows["negative_" + key], self.rows[key]], dim=self.batch_dims.get(key, 0))


def doubled(x: torch.Tensor, cfg: bool) -> torch.Tensor:
    import torch

    return torch.cat([x, x]) if cfg else x


def guide(out: torch.Tensor, cond: Conditioning, rescale: float = 0.0) -> torch.Tensor:
    """Classifier-free guidance (Ho & Salimans 2022, arXiv 2207.12598), with the optional rescale of
    Lin et al. 2024 (arXiv 2305.08891, Sec. 3.4) as diffusers applies it."""
    if not cond.cfg:
        return out
    uncond, text = out.chunk(2)
    guided = uncond + cond.guidance_scale * (text - uncond)
    if rescale > 0:
        from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import rescale_noise_cfg

        guided = rescale_noise_cfg(guided, text, guidance_rescale=rescale)
    return guided


def embeds_dtype(embeds: dict) -> torch.dtype:
    return embeds["prompt_embeds"].dtype


# -- the latent facts most families share (a family module binds them: ``latent_shape = vae_latent_shape("unet")``)

def vae_latent_shape(denoiser: str, pixel_space: bool = False):
    """``latent_shape(pipe, height, width)`` of a family whose latents have the denoiser's (``pipe.<denoiser>``)
    input channels at ``H / vae_scale_factor`` x ``W / vae_scale_factor`` (``pixel_space``: at H x W)."""
    def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
        channels = getattr(pipe, denoiser).config.in_channels
        if pixel_space:
            return channels, height, width
        return channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor

    return latent_shape


def same_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """``to_pipeline_latents`` of a family whose pipeline takes latents as (B, C, h, w), as they are drawn."""
    return noise


def plain_family(denoiser: str, negative_keys: tuple[str, ...], pixel_space: bool = False):
    """``(latent_shape, to_pipeline_latents, call_args_problem)`` of a family without latent packing whose only
    call-argument rule is that a negative prompt needs guidance (SD, SDXL, SD3, PixArt, shapes)."""
    from .checks import negative_prompt_check

    return vae_latent_shape(denoiser, pixel_space), same_latents, negative_prompt_check(negative_keys)


def with_negatives(cfg: bool, positive: dict, negative: dict) -> dict:
    """``encode``'s result: the prompt's embeddings, and the negative ones under classifier-free guidance."""
    return positive | negative if cfg else positive
