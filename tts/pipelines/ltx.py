"""LTX-Video 0.9.x (Lightricks, 2024; LTXPipeline): a flow-matching DiT over the LTX VAE's 128-channel latents
(32x in space, 8x in time: (B, 128, 1 + (F - 1)/8, H/32, W/32)), packed by the pipeline into tokens (B, F' h w, 128)
(patch 1x1x1): tts draws the noise 5-D and packs it as the pipeline's ``latents`` argument takes it. Text from
T5-XXL (``max_sequence_length`` 128) with its attention mask; classifier-free guidance in one doubled pass
(optionally rescaled, ``guidance_rescale``); sigmas 1 .. 1/n shifted by the video's token count. ``pipeline.fps``
is the frame rate the transformer's rotary positions are scaled by (``frame_rate``, 25) and the MP4's.
``pipeline.num_frames`` must be 1 + a multiple of 8 (161 on the model card). 0.9.1's VAE is timestep-conditioned:
``decode_timestep`` / ``decode_noise_scale`` add noise before decoding, seeded per candidate from its lineage in the
pipeline call (tts.core.noise.step_noise_seed); the step-level sampler decodes at timestep 0, without that noise.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import negative_prompt_check, pick
from .stepping import Conditioning, doubled, guide, with_negatives, frame_count_check, video_latent_shape


if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("LTXPipeline",)
VIDEO = True  # candidates are videos (tts.core.video.Video): num_frames and fps are pipeline settings
DEFAULT_NUM_FRAMES = 161
DEFAULT_FPS = 25.0
TEMPORAL_FACTOR = 8
MODEL_ID_HINTS = ("ltx-video",)
#: bf16 weights: DiT 3.8, T5-XXL 9.5, VAE 0.8
WEIGHTS_GB = {"Lightricks/LTX-Video": 14.1, "a-r-r-o-w/LTX-Video-0.9.1-diffusers": 14.1}
DENOISER = "transformer"
STEP_ARGS = ("guidance_rescale", "decode_timestep", "decode_noise_scale")  # the sampler decodes without noise
STATE_DTYPE = "fp32"
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = NEGATIVE_KEYS
DEFAULT_MAX_SEQUENCE_LENGTH = 128
call_args_problem = negative_prompt_check(NEGATIVE_KEYS)


frames_problem = frame_count_check("LTX-Video", TEMPORAL_FACTOR)


latent_shape = video_latent_shape("vae_spatial_compression_ratio", "vae_temporal_compression_ratio", DEFAULT_NUM_FRAMES)


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(B, C, F, h, w) packed into tokens (B, F h w / patches, C x patch volume), as LTXPipeline.prepare_latents."""
    return pipe._pack_latents(noise, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size)


def call_kwargs(pipe, spec, step_seeds: list[int]) -> dict:
    """The frame rate (rotary positions), and per-row generators for the noise a timestep-conditioned VAE adds
    before decoding (seeded from each candidate's lineage, so it replays alone or in any batch)."""
    import torch

    fps = spec.fps or DEFAULT_FPS
    extra = {"frame_rate": int(fps) if float(fps).is_integer() else fps}
    if pipe.vae.config.timestep_conditioning:
        extra["generator"] = [torch.Generator("cpu").manual_seed(int(s)) for s in step_seeds]
    return extra


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        prompt=prompt, do_classifier_free_guidance=cfg, num_videos_per_prompt=1, device=pipe._execution_device,
        max_sequence_length=max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH, **pick(call_args, ENCODE_KEYS))
    return with_negatives(cfg, {"prompt_embeds": embeds, "prompt_attention_mask": mask},
                          {"negative_prompt_embeds": negative, "negative_prompt_attention_mask": negative_mask})


def _grid(pipe, spec) -> tuple[int, int, int]:
    """The latent video's (frames, height, width) after patching."""
    _, f, h, w = latent_shape(pipe, spec.height, spec.width, spec.num_frames or DEFAULT_NUM_FRAMES)
    ps, pt = pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    return f // pt, h // ps, w // ps


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Sigmas 1 .. 1/n shifted by the video's token count (as LTXPipeline); embeddings and masks per row; the
    latent grid and the rotary scale (the VAE's compression over the frame rate) shared."""
    import numpy as np
    from diffusers.pipelines.ltx.pipeline_ltx import calculate_shift, retrieve_timesteps

    n, c = spec.num_inference_steps, scheduler.config
    f, h, w = _grid(pipe, spec)
    mu = calculate_shift(f * h * w, c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    retrieve_timesteps(scheduler, n, latents.device, sigmas=np.linspace(1.0, 1 / n, n), mu=mu)
    rows = {k: v for k, v in embeds.items() if k.endswith(("prompt_embeds", "prompt_attention_mask"))}
    fps = call_kwargs(pipe, spec, [])["frame_rate"]
    s = pipe.vae_spatial_compression_ratio
    shared = {"grid": (f, h, w), "rope_interpolation_scale": (pipe.vae_temporal_compression_ratio / fps, s, s),
              "guidance_rescale": float(spec.call_args.get("guidance_rescale", 0.0))}
    return Conditioning(rows, shared, spec.guidance_scale, spec.guidance_scale > 1)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass on the packed tokens (doubled under guidance), guided (and rescaled) in float32."""
    embeds = cond.pair("prompt_embeds")
    x = doubled(model_input, cond.cfg).to(embeds.dtype)
    f, h, w = cond.shared["grid"]
    out = pipe.transformer(hidden_states=x, encoder_hidden_states=embeds, timestep=t.expand(len(x)),
                           encoder_attention_mask=cond.pair("prompt_attention_mask"), num_frames=f, height=h, width=w,
                           rope_interpolation_scale=cond.shared["rope_interpolation_scale"], return_dict=False)[0]
    return guide(out.float(), cond, cond.shared["guidance_rescale"])


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """Unpack the tokens (the frame count follows from the token count), undo the VAE's normalisation, decode;
    each row's frames as a list of PIL images. A timestep-conditioned VAE decodes at timestep 0, without noise
    (the pipeline call's ``decode_timestep`` / ``decode_noise_scale`` need the candidate's seed)."""
    import torch

    vae, ps, pt = pipe.vae, pipe.transformer_spatial_patch_size, pipe.transformer_temporal_patch_size
    h, w = height // pipe.vae_spatial_compression_ratio // ps, width // pipe.vae_spatial_compression_ratio // ps
    f = latents.shape[1] // (h * w)
    x = pipe._unpack_latents(latents, f, h, w, ps, pt)
    x = pipe._denormalize_latents(x, vae.latents_mean, vae.latents_std, vae.config.scaling_factor).to(vae.dtype)
    timestep = None
    if vae.config.timestep_conditioning:
        timestep = torch.zeros(len(x), device=x.device, dtype=x.dtype)
    video = vae.decode(x, timestep, return_dict=False)[0]
    return pipe.video_processor.postprocess_video(video, output_type="pil")
