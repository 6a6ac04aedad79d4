"""HiDream-I1 (HiDream-ai, arXiv 2505.22705): a sparse diffusion transformer (mixture-of-experts blocks) on
16-channel flow-matching latents at 2*(H//16) x 2*(W//16), which it cuts into 2x2 patches itself; four text
encoders: two CLIP (pooled embeddings), T5-XXL and Llama-3.1-8B-Instruct (the hidden states of every layer).

``HiDreamImagePipeline`` generates at a fixed area, 1024 x 1024 pixels for the released checkpoints
(``default_sample_size * vae_scale_factor`` squared): ``height`` and ``width`` only set the aspect ratio, and
the pipeline rescales them (multiples of 16), as :func:`size` does, so latents are drawn at the size it uses.
Classifier-free guidance when guidance_scale > 1 (HiDream-I1-Full: 50 steps, guidance 5; -Dev 28 steps and
-Fast 16 steps are guidance-distilled: guidance_scale 0). The Llama encoder's embeddings are
(layers, batch, tokens, dim): batch is their second dimension (``BATCH_DIMS``).

HiDream-ai's checkpoints do not ship the Llama: name it in ``pipeline.components`` (the preset loads
``meta-llama/Llama-3.1-8B-Instruct`` in fp16 on its own, tts.pipelines.components). Memory (bf16 weights):
transformer 17 B parameters ~34 GB, Llama-3.1-8B ~16 GB, T5-XXL ~9.5 GB, CLIPs and VAE ~1 GB: ~61 GB on one GPU
(an 80 GB H100 fits it with batch size 1-4 at 1024 px), or ``pipeline.cpu_offload=true`` (each model moves to
the GPU only while it runs: ~35 GB of GPU memory, slower), or ``pipeline.quantize=nf4`` for the transformer.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .checks import PipelineConfigError, negative_prompt_check, pick
from .stepping import Conditioning, doubled, guide, same_latents

if TYPE_CHECKING:
    import torch

CLASS_NAMES = ("HiDreamImagePipeline",)
MODEL_ID_HINTS = ("hidream",)  # tts-plan's guess of the family when the checkpoint cannot be read
WEIGHTS_GB = {"HiDream-ai/HiDream-I1-Full": 61.0}  # bf16 weights with the Llama loaded on its own
DENOISER = "transformer"
STEP_ARGS = ()  # call arguments the stepped sampler (tts.sampling.sampler) honours (prepare / predict / decode below)
NEGATIVE_KEYS = ("negative_prompt", "negative_prompt_2", "negative_prompt_3", "negative_prompt_4")
ENCODE_KEYS = NEGATIVE_KEYS
to_pipeline_latents = same_latents  # the transformer patchifies (B, C, h, w) itself
call_args_problem = negative_prompt_check(NEGATIVE_KEYS)
#: embeddings whose batch dimension is not the first (generation concatenates batch rows along it)
BATCH_DIMS = {"prompt_embeds_llama3": 1, "negative_prompt_embeds_llama3": 1}
DEFAULT_MAX_SEQUENCE_LENGTH = 128  # HiDreamImagePipeline's


def size(pipe, height: int, width: int) -> tuple[int, int]:
    """The pixel size HiDreamImagePipeline generates for a requested one: the same aspect ratio at its fixed
    area, each side a multiple of 2 * vae_scale_factor (its own computation)."""
    division = pipe.vae_scale_factor * 2
    area = (pipe.default_sample_size * pipe.vae_scale_factor) ** 2
    scale = math.sqrt(area / (width * height))
    return int(height * scale // division * division), int(width * scale // division * division)


def latent_shape(pipe, height: int, width: int) -> tuple[int, int, int]:
    h, w = size(pipe, height, width)
    factor = pipe.vae_scale_factor * 2
    return pipe.transformer.config.in_channels, 2 * (h // factor), 2 * (w // factor)


def encode(pipe, prompt: str, guidance_scale: float, max_sequence_length: int | None, call_args: dict) -> dict:
    """The four encoders' embeddings (negatives with classifier-free guidance), in the transformer's dtype: a
    Llama loaded on its own in another dtype (fp16) is cast once here."""
    if pipe.text_encoder_4 is None or pipe.tokenizer_4 is None:
        raise PipelineConfigError("this HiDream checkpoint has no Llama text encoder: load it on its own with "
                                  "pipeline.components.text_encoder_4.model_id=meta-llama/Llama-3.1-8B-Instruct and "
                                  "pipeline.components.tokenizer_4.model_id=meta-llama/Llama-3.1-8B-Instruct (the "
                                  "hidream-i1 preset does)")
    cfg = guidance_scale > 1
    t5, neg_t5, llama, neg_llama, pooled, neg_pooled = pipe.encode_prompt(
        prompt=prompt, device=pipe._execution_device, num_images_per_prompt=1, do_classifier_free_guidance=cfg,
        max_sequence_length=max_sequence_length or DEFAULT_MAX_SEQUENCE_LENGTH, **pick(call_args, ENCODE_KEYS))
    out = {"prompt_embeds_t5": t5, "prompt_embeds_llama3": llama, "pooled_prompt_embeds": pooled}
    if cfg:
        out |= {"negative_prompt_embeds_t5": neg_t5, "negative_prompt_embeds_llama3": neg_llama,
                "negative_pooled_prompt_embeds": neg_pooled}
    dtype = pipe.transformer.dtype
    return {k: v.to(dtype) for k, v in out.items()}


def prepare(pipe, scheduler, spec, embeds: dict, latents: torch.Tensor) -> Conditioning:
    """Timesteps on ``scheduler`` as HiDreamImagePipeline sets them (UniPC without, flow matching with the shift
    of the transformer's maximum sequence length); every embedding per row, the Llama's batch-first."""
    from diffusers import UniPCMultistepScheduler
    from diffusers.pipelines.hidream_image.pipeline_hidream_image import calculate_shift, retrieve_timesteps

    if isinstance(scheduler, UniPCMultistepScheduler):
        scheduler.set_timesteps(spec.num_inference_steps, device=latents.device)
    else:
        retrieve_timesteps(scheduler, spec.num_inference_steps, latents.device,
                           mu=calculate_shift(pipe.transformer.max_seq))
    rows = {k: v.transpose(0, 1) if k in BATCH_DIMS else v for k, v in embeds.items()}
    return Conditioning(rows, {}, spec.guidance_scale, spec.guidance_scale > 1)


def predict(pipe, cond: Conditioning, model_input: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """One pass (two rows per trajectory with guidance); the transformer predicts minus the flow, as in the pipeline."""
    x = doubled(model_input, cond.cfg)
    out = pipe.transformer(hidden_states=x, timesteps=t.expand(len(x)),
                           encoder_hidden_states_t5=cond.pair("prompt_embeds_t5"),
                           encoder_hidden_states_llama3=cond.pair("prompt_embeds_llama3").transpose(0, 1),
                           pooled_embeds=cond.pair("pooled_prompt_embeds"), return_dict=False)[0]
    return guide(-out, cond)


def decode(pipe, latents: torch.Tensor, height: int, width: int) -> list:
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents.to(pipe.vae.dtype), return_dict=False)[0]
    return pipe.image_processor.postprocess(image, output_type="pil")
