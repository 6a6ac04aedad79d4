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


def call_default(pipe, name: str):
    """The default of the pipeline call's argument ``name`` (e.g. Sana's ``complex_human_instruction``): what
    the pipeline would use, for an encoding tts makes itself."""
    import inspect

    return inspect.signature(type(pipe).__call__).parameters[name].default


def without_variance(pipe, out: torch.Tensor, channels: int) -> torch.Tensor:
    """A transformer that predicts a learned variance too (out_channels = 2 x latent channels): keep the noise."""
    return out.chunk(2, dim=1)[0] if pipe.transformer.config.out_channels // 2 == channels else out


def vae_decode(pipe, latents: torch.Tensor) -> list:
    """Latents to PIL images through the pipeline's VAE: undo its scaling (and shift, where it has one)."""
    vae = pipe.vae
    latents = latents.to(vae.dtype) / vae.config.scaling_factor + (getattr(vae.config, "shift_factor", None) or 0)
    image = vae.decode(latents, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")


def linear_sigmas(scheduler, steps: int):
    """The sigmas the flow-matching pipelines (Flux, FLUX.2, Qwen-Image) give their scheduler: 1 .. 1/steps,
    evenly spaced (None when the scheduler makes its own flow sigmas)."""
    import numpy as np

    return None if scheduler.config.get("use_flow_sigmas", False) else np.linspace(1.0, 1 / steps, steps)


def true_cfg(pipe, run, cond: Conditioning, renorm: bool = False) -> torch.Tensor:
    """True classifier-free guidance (Flux, Qwen-Image): ``run(prefix)`` is one denoiser pass on the rows'
    ``<prefix>prompt_embeds``; with guidance a second, negative pass, combined with ``true_cfg_scale``;
    ``renorm``: the combination rescaled to the conditional output's norm per token (QwenImagePipeline)."""
    with pipe.transformer.cache_context("cond"):
        out = run("")
    if not cond.cfg:
        return out
    with pipe.transformer.cache_context("uncond"):
        negative = run("negative_")
    guided = negative + cond.shared["true_cfg_scale"] * (out - negative)
    if renorm:
        guided = guided * (out.norm(dim=-1, keepdim=True) / guided.norm(dim=-1, keepdim=True))
    return guided


def ragged_rows(tensors: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row sequences of different lengths (Z-Image's embeddings: one (tokens, dim) tensor per row) as rows of a
    :class:`Conditioning`: zero-padded to the longest, and their lengths."""
    import torch

    longest = max(t.shape[0] for t in tensors)
    padded = torch.stack([torch.cat([t, t.new_zeros(longest - t.shape[0], *t.shape[1:])]) for t in tensors])
    return padded, torch.tensor([t.shape[0] for t in tensors], dtype=torch.long)


def unragged(padded: torch.Tensor, lengths: torch.Tensor) -> list[torch.Tensor]:
    """The per-row sequences :func:`ragged_rows` padded."""
    return [row[:n] for row, n in zip(padded, lengths.tolist())]


# -- video families (Wan, LTX-Video): frame counts and 5-D latents

def frame_count_check(family: str, factor: int):
    """``frames_problem(num_frames)`` of a video family whose VAE compresses time by ``factor``: the count must
    be 1 + a multiple of it (the error names the nearest valid count)."""
    def problem(num_frames: int) -> str | None:
        if num_frames % factor == 1:
            return None
        near = num_frames // factor * factor + 1
        return f"pipeline.num_frames must be 1 + a multiple of {factor} for {family}, got {num_frames}: use {near}"

    return problem


def video_latent_shape(spatial: str, temporal: str, default_frames: int):
    """``latent_shape(pipe, height, width, num_frames)`` of a video family: the denoiser's input channels, the
    frames and the pixels divided by the pipeline's compression ratios (attribute names ``spatial``, ``temporal``)."""
    def latent_shape(pipe, height: int, width: int, num_frames: int = default_frames) -> tuple[int, int, int, int]:
        s = getattr(pipe, spatial)
        return (pipe.transformer.config.in_channels, (num_frames - 1) // getattr(pipe, temporal) + 1,
                height // s, width // s)

    return latent_shape


def masked_embeds(embeds, mask, negative, negative_mask, cfg: bool) -> dict:
    """``encode``'s result for a family with attention-masked text embeddings (PixArt, Sana): latents are drawn at
    exactly (height, width), so the pipeline must not re-bin the resolution."""
    out = {"prompt_embeds": embeds, "prompt_attention_mask": mask, "use_resolution_binning": False,
           "negative_prompt": None}
    if cfg:
        out |= {"negative_prompt_embeds": negative, "negative_prompt_attention_mask": negative_mask}
    return out
