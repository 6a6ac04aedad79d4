"""PixArt-Sigma: 4-channel latents at H/8 x W/8 (the transformer predicts 8 channels: noise + variance);
T5 embeddings with attention masks."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick
from .stepping import Conditioning, doubled, embeds_dtype, guide, plain_family, without_variance, masked_embeds

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("PixArtSigmaPipeline", "PixArtAlphaPipeline")
MODEL_ID_HINTS = ("pixart",)  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"PixArt-alpha/PixArt-Sigma-XL-2-1024-MS": 10.9}  # fp16 weights (T5-XXL 9.5)
DENOISER = "transformer"
STEP_ARGS = ()  # call arguments the stepped sampler (tts.sampling.sampler) honours
EMBEDS = ("prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds", "negative_prompt_attention_mask")
NEGATIVE_KEYS = ("negative_prompt",)
ENCODE_KEYS = (*NEGATIVE_KEYS, "clean_caption")
latent_shape, to_pipeline_latents, call_args_problem = plain_family("transformer", NEGATIVE_KEYS)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    cfg = guidance_scale > 1
    embeds, mask, negative, negative_mask = pipe.encode_prompt(
        prompt, do_classifier_free_guidance=cfg, num_images_per_prompt=1, device=pipe._execution_device,
        max_sequence_length=max_sequence_length or 300, **pick(call_args, ENCODE_KEYS))
    return masked_embeds(embeds, mask, negative, negative_mask, cfg)


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler``; T5 embeddings and masks per row; PixArt-Alpha's 1024 px models take the
    image resolution and aspect ratio as conditioning (Chen et al. 2023, Sec. 2.3), PixArt-Sigma none."""
    import torch
    from diffusers.pipelines.pixart_alpha.pipeline_pixart_alpha import retrieve_timesteps

    retrieve_timesteps(scheduler, spec.num_inference_steps, latents.device)
    added = {"resolution": None, "aspect_ratio": None}
    if type(pipe).__name__ == "PixArtAlphaPipeline" and pipe.transformer.config.sample_size == 128:
        dtype = embeds_dtype(embeds)
        added = {"resolution": torch.tensor([[spec.height, spec.width]], dtype=dtype, device=latents.device),
                 "aspect_ratio": torch.tensor([[spec.height / spec.width]], dtype=dtype, device=latents.device)}
    rows = {k: embeds[k] for k in EMBEDS if k in embeds}
    return Conditioning(rows, {"added_cond_kwargs": added}, spec.guidance_scale, spec.guidance_scale > 1)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    x = doubled(model_input, cond.cfg)
    added = {k: None if v is None else v.expand(len(x), -1) for k, v in cond.shared["added_cond_kwargs"].items()}
    timestep = (t[None] if t.ndim == 0 else t).to(x.device).expand(len(x))
    out = pipe.transformer(x, encoder_hidden_states=cond.pair("prompt_embeds"),
                           encoder_attention_mask=cond.pair("prompt_attention_mask"), timestep=timestep,
                           added_cond_kwargs=added, return_dict=False)[0]
    return without_variance(pipe, guide(out, cond), model_input.shape[1])


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    image = pipe.vae.decode(latents.to(pipe.vae.dtype) / pipe.vae.config.scaling_factor, return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")
