"""Wan 2.1 text-to-video (Alibaba, 2025; WanPipeline): a flow-matching DiT over 5-D latents (B, 16, 1 + (F - 1)/4,
H/8, W/8) from the Wan VAE (4x in time, 8x in space; the transformer cuts 1x2x2 patches), text from UMT5-XXL padded
to ``max_sequence_length`` (512). Guidance is classifier-free in two separate transformer passes (conditional, then
negative) combined as ``neg + g (cond - neg)``. The pipeline keeps latents in float32 and decodes them through the
VAE's per-channel mean and std. ``pipeline.num_frames`` must be 1 + a multiple of 4 (81 on the model cards);
``pipeline.fps`` is the MP4's frame rate (16, as the cards export). Wan 2.2's two-expert checkpoints
(``transformer_2``) and its per-token timesteps (``expand_timesteps``) are not supported.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import negative_prompt_check, pick
from .stepping import Conditioning, with_negatives, frame_count_check, video_latent_shape


if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("WanPipeline",)
VIDEO = True  # candidates are videos (tts.core.video.Video): num_frames and fps are pipeline settings
DEFAULT_NUM_FRAMES = 81
DEFAULT_FPS = 16.0
TEMPORAL_FACTOR = 4  # the Wan VAE's compression in time (num_frames = 1 + 4k)
MODEL_ID_HINTS = ("wan2.1", "wan-ai/wan")
#: bf16 weights: DiT 2.8 / 28.6, UMT5-XXL 11.4, VAE 0.25
WEIGHTS_GB = {"Wan-AI/Wan2.1-T2V-1.3B-Diffusers": 14.5, "Wan-AI/Wan2.1-T2V-14B-Diffusers": 39.7}
DENOISER = "transformer"
STEP_ARGS = ()
STATE_DTYPE = "fp32"
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = NEGATIVE_KEYS
DEFAULT_MAX_SEQUENCE_LENGTH = 512
call_args_problem = negative_prompt_check(NEGATIVE_KEYS)


def load_problem(index: dict) -> str | None:
    if (index.get("transformer_2") or [None])[0]:
        return "Wan 2.2's two-expert checkpoints (transformer_2) are not supported: use a Wan 2.1 checkpoint"
    return None


frames_problem = frame_count_check("Wan", TEMPORAL_FACTOR)


latent_shape = video_latent_shape("vae_scale_factor_spatial", "vae_scale_factor_temporal", DEFAULT_NUM_FRAMES)


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise  # (B, C, F, h, w): the transformer patchifies itself


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, negative = pipe.encode_prompt(prompt=prompt, do_classifier_free_guidance=cfg, num_videos_per_prompt=1,
                                          max_sequence_length=max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH,
                                          device=pipe._execution_device, **pick(call_args, ENCODE_KEYS))
    return with_negatives(cfg, {"prompt_embeds": embeds}, {"negative_prompt_embeds": negative})


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """The scheduler's own timesteps (Wan sets no sigmas); the embeddings per row."""
    scheduler.set_timesteps(spec.num_inference_steps, device=latents.device)
    cfg = spec.guidance_scale > 1
    rows = {k: embeds[k] for k in ("prompt_embeds", "negative_prompt_embeds") if k in embeds}
    return Conditioning(rows, {}, spec.guidance_scale, cfg)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The conditional pass, then the negative one under guidance (as WanPipeline: two calls, not one doubled)."""
    dtype = pipe.transformer.dtype
    x, timestep = model_input.to(dtype), t.expand(model_input.shape[0])

    def run(key):
        with pipe.transformer.cache_context("uncond" if key.startswith("negative") else "cond"):
            return pipe.transformer(hidden_states=x, timestep=timestep, encoder_hidden_states=cond.rows[key].to(dtype),
                                    return_dict=False)[0]
    out = run("prompt_embeds")
    if cond.cfg:
        uncond = run("negative_prompt_embeds")
        out = uncond + cond.guidance_scale * (out - uncond)
    return out.float()


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """Each row's frames (a list of PIL images per row), through the VAE's per-channel mean and std."""
    import torch

    vae = pipe.vae
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, vae.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(latents.device, vae.dtype)
    video = vae.decode(latents.to(vae.dtype) * std + mean, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="pil")
