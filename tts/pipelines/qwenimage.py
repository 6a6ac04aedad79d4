"""Qwen-Image (Qwen team 2025, arXiv 2508.02324; QwenImagePipeline): a 20B MMDiT on the Qwen-Image VAE (a
one-frame video VAE: 16-channel latents at H/8 x W/8, normalised by per-channel means and deviations), packed into
2x2 patches (B, (H/16)*(W/16), 64) like Flux; text from Qwen2.5-VL-7B's last hidden state under the pipeline's
system prompt, each prompt at its own token length (tts pads rows of several prompts with masked zeros).
Guidance is true classifier-free guidance: a negative prompt with ``true_cfg_scale`` > 1 (two passes per step),
the guided output rescaled to the conditional output's norm per token; ``guidance_scale`` acts only on a
guidance-distilled transformer (``guidance_embeds``) and is not passed to the others (the pipeline would warn).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick, true_cfg_problem
from .stepping import Conditioning, call_default, linear_sigmas, true_cfg

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("QwenImagePipeline",)
MODEL_ID_HINTS = ("qwen-image",)  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"Qwen/Qwen-Image": 58.0}  # bf16 weights: transformer 40.9, Qwen2.5-VL-7B 16.6, VAE 0.25
DENOISER = "transformer"
STEP_ARGS = ("true_cfg_scale",)  # call arguments the stepped sampler (tts.sampling.sampler) honours
EMBEDS = ("prompt_embeds", "prompt_embeds_mask", "negative_prompt_embeds", "negative_prompt_embeds_mask")
ENCODE_KEYS = ("negative_prompt",)
DEFAULT_MAX_SEQUENCE_LENGTH = 512  # QwenImagePipeline's


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    factor = pipe.vae_scale_factor * 2
    return pipe.transformer.config.in_channels // 4, 2 * (height // factor), 2 * (width // factor)


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    b, c, h, w = noise.shape
    return pipe._pack_latents(noise, b, c, h, w)


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    return true_cfg_problem({"true_cfg_scale": 1.0, **call_args}, "Qwen-Image") if call_args else None


def passes(guidance_scale: float, call_args: dict) -> int:
    """Two with true CFG (a negative prompt and true_cfg_scale > 1; tts refuses one without the other), else one."""
    return 2 if "negative_prompt" in call_args and float(call_args.get("true_cfg_scale", 1.0)) > 1 else 1


def true_cfg_scale(pipe, call_args: dict) -> float:
    return float(call_args.get("true_cfg_scale", call_default(pipe, "true_cfg_scale")))


def _encode(pipe, text: str, max_sequence_length: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings and their mask (all ones when the pipeline returns none, so rows of several prompts can pad)."""
    import torch

    embeds, mask = pipe.encode_prompt(prompt=text, device=pipe._execution_device, num_images_per_prompt=1,
                                      max_sequence_length=max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH)
    if mask is None:
        mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    return embeds, mask


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    embeds, mask = _encode(pipe, prompt, max_sequence_length)
    out = {"prompt_embeds": embeds, "prompt_embeds_mask": mask}
    negative = pick(call_args, ENCODE_KEYS)
    if negative and true_cfg_scale(pipe, call_args) > 1:
        neg, neg_mask = _encode(pipe, negative["negative_prompt"], max_sequence_length)
        out |= {"negative_prompt_embeds": neg, "negative_prompt_embeds_mask": neg_mask}
    return out


def call_kwargs(pipe, spec, step_seeds: list[int]) -> dict:
    """What the call must not get, or the pipeline warns every batch: ``guidance_scale`` on a transformer that is
    not guidance-distilled; its default ``true_cfg_scale`` (4) without a negative prompt."""
    out = {} if pipe.transformer.config.guidance_embeds else {"guidance_scale": None}
    return out if "negative_prompt" in spec.call_args else out | {"true_cfg_scale": 1.0}


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler`` (sigmas 1 .. 1/n shifted by the packed sequence length, as QwenImagePipeline);
    embeddings and masks per row (and the distilled-guidance vector where the transformer takes one)."""
    import torch
    from diffusers.pipelines.qwenimage.pipeline_qwenimage import calculate_shift, retrieve_timesteps

    n, c = spec.num_inference_steps, scheduler.config
    mu = calculate_shift(latents.shape[1], c.get("base_image_seq_len", 256), c.get("max_image_seq_len", 4096),
                         c.get("base_shift", 0.5), c.get("max_shift", 1.15))
    retrieve_timesteps(scheduler, n, latents.device, sigmas=linear_sigmas(scheduler, n), mu=mu)
    rows = {k: embeds[k] for k in EMBEDS if k in embeds}
    if pipe.transformer.config.guidance_embeds:
        rows["guidance"] = torch.full([latents.shape[0]], float(spec.guidance_scale), device=latents.device)
    factor = pipe.vae_scale_factor * 2
    shared = {"true_cfg_scale": true_cfg_scale(pipe, spec.call_args),
              "grid": (1, spec.height // factor, spec.width // factor)}
    return Conditioning(rows, shared, spec.guidance_scale, "negative_prompt_embeds" in rows)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass; with true classifier-free guidance a second, negative pass, renormalised (as the pipeline)."""
    rows, b = cond.rows, model_input.shape[0]

    def run(prefix: str):
        mask = rows[prefix + "prompt_embeds_mask"]
        return pipe.transformer(hidden_states=model_input, timestep=t.expand(b).to(model_input.dtype) / 1000,
                                guidance=rows.get("guidance"), encoder_hidden_states=rows[prefix + "prompt_embeds"],
                                encoder_hidden_states_mask=None if bool(mask.all()) else mask,
                                img_shapes=[[cond.shared["grid"]]] * b, attention_kwargs={}, return_dict=False)[0]

    return true_cfg(pipe, run, cond, renorm=True)


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """Unpack to one-frame video latents, undo the VAE's per-channel normalisation, decode the frame."""
    import torch

    vae = pipe.vae
    latents = pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor).to(vae.dtype)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean = torch.tensor(vae.config.latents_mean).view(shape).to(latents.device, latents.dtype)
    std = torch.tensor(vae.config.latents_std).view(shape).to(latents.device, latents.dtype)
    image = vae.decode(latents / (1.0 / std) + mean, return_dict=False)[0][:, :, 0]  # the pipeline's arithmetic
    return pipe.image_processor.postprocess(image, output_type="pil")
