"""FLUX.2 [dev] (Black Forest Labs, 2025; Flux2Pipeline): a 32B flow-matching transformer on the FLUX.2 VAE,
whose 32-channel latents are cut into 2x2 patches: tts draws the noise as the pipeline's ``latents`` argument
takes it, (B, 4 x 32, H/16, W/16), and the pipeline packs it to (B, H/16 x W/16, 128) tokens with 4-D (T, H, W, L)
position ids. One text encoder, Mistral-Small-3.1-24B (hidden states of layers 10, 20, 30, stacked), prompted with
the pipeline's system message. Guidance is distilled (a transformer input, one pass per step; no negative prompt);
timesteps shift with an empirical mu of the image's token count and the step count. Memory (bf16 weights):
transformer ~64 GB, Mistral ~48 GB: ~112 GB, one 141 GB GPU, else ``pipeline.cpu_offload=true`` or
``pipeline.quantize=nf4`` (transformer in 4 bits, ~16 GB).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import pick
from .stepping import Conditioning, linear_sigmas

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("Flux2Pipeline",)
MODEL_ID_HINTS = ("flux.2", "flux2")  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"black-forest-labs/FLUX.2-dev": 112.0}  # bf16 weights: transformer 64, Mistral-Small-3.1 48
DENOISER = "transformer"
STEP_ARGS = ()  # call arguments the stepped sampler (tts.sampling.sampler) honours
ENCODE_KEYS = ("text_encoder_out_layers",)
DEFAULT_MAX_SEQUENCE_LENGTH = 512  # Flux2Pipeline's
#: call arguments that change what the prompt is or add reference images: not for a search of one prompt's noises
UNSUPPORTED = {"caption_upsample_temperature": "prompt upsampling rewrites the prompt with the text encoder, which "
                                               "tts runs once per prompt on the prompt as given: rewrite the prompts "
                                               "before the search",
               "image": "reference images (editing) are not supported by tts: generate from text"}


def load_problem(index: dict) -> str | None:
    """What keeps the checkpoint from loading here, found before it loads: the released FLUX.2 [dev] names a
    PixtralProcessor as its tokenizer, which transformers builds only with torchvision installed."""
    import importlib.util

    if (index.get("tokenizer") or [None, None])[1] == "PixtralProcessor" and not importlib.util.find_spec("torchvision"):
        return ("this FLUX.2 checkpoint's tokenizer (PixtralProcessor) needs torchvision: pip install torchvision "
                "(the build matching your torch)")
    return None


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    factor = pipe.vae_scale_factor * 2
    return pipe.transformer.config.in_channels, height // factor, width // factor


def to_pipeline_latents(pipe, noise: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return noise  # the pipeline packs (B, C, h, w) into tokens itself


def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
    for key, why in UNSUPPORTED.items():
        if key in call_args:
            return f"pipeline.call_args.{key}: {why}"
    return None


def passes(guidance_scale: float, call_args: dict) -> int:
    return 1  # guidance distilled into the transformer


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    embeds, _ = pipe.encode_prompt(prompt=prompt, device=pipe._execution_device, num_images_per_prompt=1,
                                   max_sequence_length=max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH,
                                   **pick(call_args, ENCODE_KEYS))
    return {"prompt_embeds": embeds}


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler`` (sigmas 1 .. 1/n shifted by the empirical mu, as Flux2Pipeline); embeddings and
    the distilled-guidance vector per row; the image's position ids shared (the state stays (B, C, h, w): the
    scheduler's step is elementwise, so packing is the transformer's business, in :func:`predict`)."""
    import torch
    from diffusers.pipelines.flux2.pipeline_flux2 import compute_empirical_mu, retrieve_timesteps

    n = spec.num_inference_steps
    mu = compute_empirical_mu(image_seq_len=latents.shape[2] * latents.shape[3], num_steps=n)
    retrieve_timesteps(scheduler, n, latents.device, sigmas=linear_sigmas(scheduler, n), mu=mu)
    rows = {"prompt_embeds": embeds["prompt_embeds"],
            "guidance": torch.full([latents.shape[0]], float(spec.guidance_scale), device=latents.device)}
    shared = {"img_ids": pipe._prepare_latent_ids(latents[:1]).to(latents.device)}
    return Conditioning(rows, shared, spec.guidance_scale, False)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass on the packed tokens, the output unpacked to the state's (B, C, h, w)."""
    b, c, h, w = model_input.shape
    embeds = cond.rows["prompt_embeds"]
    out = pipe.transformer(hidden_states=pipe._pack_latents(model_input).to(pipe.transformer.dtype),
                           timestep=t.expand(b).to(model_input.dtype) / 1000, guidance=cond.rows["guidance"],
                           encoder_hidden_states=embeds, txt_ids=pipe._prepare_text_ids(embeds).to(embeds.device),
                           img_ids=cond.shared["img_ids"], return_dict=False)[0]
    return out[:, : h * w].permute(0, 2, 1).reshape(b, c, h, w)


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    """Undo the VAE's batch normalisation of patched latents, un-patch, decode (as Flux2Pipeline)."""
    import torch

    bn, vae = pipe.vae.bn, pipe.vae
    mean = bn.running_mean.view(1, -1, 1, 1).to(latents.device, latents.dtype)
    std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + vae.config.batch_norm_eps).to(latents.device, latents.dtype)
    latents = pipe._unpatchify_latents(latents * std + mean)
    image = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")
