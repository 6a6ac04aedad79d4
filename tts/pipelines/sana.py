"""Sana (Xie et al. 2024, arXiv 2410.10629): a linear-attention diffusion transformer on a 32x deep-compression
autoencoder (DC-AE): 32-channel latents at H/32 x W/32, one token per latent pixel; Gemma-2 text embeddings with
attention masks, the prompt prefixed by the model's "complex human instruction" (the pipeline's default, used
here too); flow matching with DPM-Solver++ (flow sigmas, shift 3) in the released checkpoints. Classifier-free
guidance when guidance_scale > 1 (two passes per step). The pipeline keeps latents in float32 (``STATE_DTYPE``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import negative_needs_guidance, pick
from .stepping import Conditioning, call_default, doubled, guide, vae_decode, without_variance, masked_embeds

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("SanaPipeline",)
MODEL_ID_HINTS = ("sana",)  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"Efficient-Large-Model/Sana_1600M_1024px_BF16_diffusers": 9.0}  # bf16: Gemma-2 5.2, DiT 3.2, DC-AE 0.6
DENOISER = "transformer"
STEP_ARGS = ()  # call arguments the stepped sampler (tts.sampling.sampler) honours
STATE_DTYPE = "fp32"  # the dtype the pipeline keeps its latents in, whatever the weights' dtype
EMBEDS = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = (*NEGATIVE_KEYS, "clean_caption", "complex_human_instruction")
DEFAULT_MAX_SEQUENCE_LENGTH = 300  # SanaPipeline's


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    return pipe.transformer.config.in_channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    return negative_needs_guidance(call_args, NEGATIVE_KEYS, guidance_scale)


def gemma_args(pipe, call_args: dict, keys: tuple[str, ...]) -> dict:
    """The encoding arguments among ``keys``, with the pipeline's own complex human instruction unless given."""
    args = pick(call_args, keys)
    args.setdefault("complex_human_instruction", call_default(pipe, "complex_human_instruction"))
    return args


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        prompt, do_classifier_free_guidance=cfg, num_images_per_prompt=1, device=pipe._execution_device,
        max_sequence_length=max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH,
        **gemma_args(pipe, call_args, ENCODE_KEYS))
    return masked_embeds(embeds, mask, negative, negative_mask, cfg)


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler``; Gemma embeddings and masks per row."""
    from diffusers.pipelines.sana.pipeline_sana import retrieve_timesteps

    retrieve_timesteps(scheduler, spec.num_inference_steps, latents.device)
    rows = {k: embeds[k] for k in EMBEDS if k in embeds}
    return Conditioning(rows, {}, spec.guidance_scale, spec.guidance_scale > 1)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass (two rows per trajectory with guidance) in the transformer's dtype, the output in float32."""
    x = doubled(model_input, cond.cfg)
    dtype = pipe.transformer.dtype
    out = pipe.transformer(x.to(dtype), encoder_hidden_states=cond.pair("prompt_embeds").to(dtype),
                           encoder_attention_mask=cond.pair("prompt_attention_mask"),
                           timestep=t.expand(len(x)) * pipe.transformer.config.timestep_scale, return_dict=False)[0]
    return without_variance(pipe, guide(out.float(), cond), model_input.shape[1])


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    return vae_decode(pipe, latents)
