"""Z-Image (Tongyi-MAI, 2025; ZImagePipeline): a 6B single-stream DiT (S3-DiT) on the Flux VAE (16-channel latents
at H/8 x W/8, 2x2 patches cut by the transformer), text from Qwen3-4B's second-to-last hidden state under its chat
template, one (tokens, dim) tensor per row at each prompt's own length; the transformer takes lists, one entry per
row, and predicts minus the flow. Guidance: classifier-free when guidance_scale > 0, as ``pos + g (pos - neg)``
(optionally truncated late in the schedule, ``cfg_truncation``, and norm-capped, ``cfg_normalization``); the
few-step Z-Image-Turbo is distilled (guidance 0, one pass per step). The pipeline keeps latents in float32.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick
from .stepping import Conditioning, call_default, ragged_rows, unragged, vae_decode

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("ZImagePipeline",)
MODEL_ID_HINTS = ("z-image",)  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"Tongyi-MAI/Z-Image": 20.5, "Tongyi-MAI/Z-Image-Turbo": 20.5}  # bf16: transformer 12.3, Qwen3-4B 8
DENOISER = "transformer"
STEP_ARGS = ("cfg_normalization", "cfg_truncation")  # call arguments the stepped sampler honours
STATE_DTYPE = "fp32"  # the dtype the pipeline keeps its latents in, whatever the weights' dtype
ENCODE_KEYS = ("negative_prompt",)
DEFAULT_MAX_SEQUENCE_LENGTH = 512  # ZImagePipeline's


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    factor = pipe.vae_scale_factor * 2
    return pipe.transformer.config.in_channels, 2 * (height // factor), 2 * (width // factor)


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise  # the transformer patchifies (B, C, h, w) itself


def guided(guidance_scale: float) -> bool:
    """ZImagePipeline guides whenever guidance_scale > 0 (not > 1 as most pipelines)."""
    return guidance_scale > 0


def passes(guidance_scale: float, call_args: dict) -> int:
    """Two when guided (at most: steps past ``cfg_truncation`` run one), else one."""
    return 2 if guided(guidance_scale) else 1


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    if "negative_prompt" in call_args and not guided(guidance_scale):
        return ("pipeline.call_args.negative_prompt acts only with classifier-free guidance: Z-Image guides when "
                "pipeline.guidance_scale > 0 (Z-Image-Turbo runs at 0: drop the negative prompt)")
    return None


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guided(guidance_scale)
    embeds, negative = pipe.encode_prompt(prompt=prompt, device=pipe._execution_device, do_classifier_free_guidance=cfg,
                                          max_sequence_length=max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH,
                                          **pick(call_args, ENCODE_KEYS))
    return {"prompt_embeds": embeds, **({"negative_prompt_embeds": negative} if cfg else {})}


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler`` (Z-Image's sigmas 1 .. 1/n, shifted by the image's token count); each row's
    embeddings padded into one tensor with their lengths; the guidance settings shared."""
    from diffusers.pipelines.z_image.pipeline_z_image import (calculate_shift, get_default_z_image_sigmas,
                                                              retrieve_timesteps)

    n, c = spec.num_inference_steps, scheduler.config
    mu = calculate_shift((latents.shape[2] // 2) * (latents.shape[3] // 2), c.get("base_image_seq_len", 256),
                         c.get("max_image_seq_len", 4096), c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    retrieve_timesteps(scheduler, n, latents.device, sigmas=get_default_z_image_sigmas(n), mu=mu)
    rows = {}
    for key in ("prompt_embeds", "negative_prompt_embeds"):
        if key in embeds:
            rows[key], rows[key + "_lengths"] = ragged_rows(embeds[key])
    shared = {k: spec.call_args.get(k, call_default(pipe, k)) for k in STEP_ARGS}
    return Conditioning(rows, shared, spec.guidance_scale, guided(spec.guidance_scale))


def _scale_at(cond: Conditioning, t: torch.Tensor) -> float:
    """The guidance scale at timestep t: 0 past ``cfg_truncation`` (of normalised time), as the pipeline."""
    truncation = cond.shared["cfg_truncation"]
    if truncation is not None and float(truncation) <= 1 and float((1000 - t.float()) / 1000) > truncation:
        return 0.0
    return cond.guidance_scale


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass on per-row lists (positive rows then negative rows under guidance), combined row by row."""
    import torch

    rows, b = cond.rows, model_input.shape[0]
    scale = _scale_at(cond, t)
    cfg = cond.cfg and scale > 0
    x = model_input.to(pipe.transformer.dtype)
    timestep = (1000 - t.expand(b)) / 1000
    embeds = unragged(rows["prompt_embeds"], rows["prompt_embeds_lengths"])
    if cfg:
        x, timestep = x.repeat(2, 1, 1, 1), timestep.repeat(2)
        embeds = embeds + unragged(rows["negative_prompt_embeds"], rows["negative_prompt_embeds_lengths"])
    out = pipe.transformer(list(x.unsqueeze(2).unbind(dim=0)), timestep, embeds, return_dict=False)[0]
    if cfg:
        out = [_combine(pos.float(), neg.float(), scale, cond.shared["cfg_normalization"])
               for pos, neg in zip(out[:b], out[b:])]
    return -torch.stack([o.float() for o in out]).squeeze(2)


def _combine(pos: torch.Tensor, neg: torch.Tensor, scale: float, normalization) -> torch.Tensor:
    import torch

    pred = pos + scale * (pos - neg)
    if normalization and float(normalization) > 0.0:
        cap = torch.linalg.vector_norm(pos) * float(normalization)
        norm = torch.linalg.vector_norm(pred)
        if norm > cap:
            pred = pred * (cap / norm)
    return pred


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    return vae_decode(pipe, latents)
