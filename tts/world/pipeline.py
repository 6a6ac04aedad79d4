"""ShapesPipeline: the embedded miniature text-to-image model of the shapes world.

A pixel-space conditional DDPM (Ho et al. 2020) with classifier-free guidance (Ho & Salimans 2022),
sampled with DDIM (Song et al. 2021). Components follow diffusers' layout (``model_index.json``,
``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``), are loaded by ``from_pretrained``,
and ``__call__`` follows diffusers' conventions (prompt, num_inference_steps, guidance_scale,
latents, generator, prompt_embeds, callback_on_step_end, output_type), so search strategies treat
it like any other pipeline. Its "latents" are the 3-channel pixels themselves (vae_scale_factor 1).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from diffusers import DiffusionPipeline, ImagePipelineOutput
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image


class ShapesPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet"
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self, unet, text_encoder, tokenizer, scheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
        self.vae_scale_factor = 1
        self._interrupt = False

    @property
    def default_sample_size(self) -> int:
        return self.unet.config.sample_size

    def _embed(self, texts: list[str], device) -> torch.Tensor:
        ids = self.tokenizer(texts, padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(device)
        return self.text_encoder(ids)[0]

    def encode_prompt(self, prompt, device=None, num_images_per_prompt: int = 1,
                      do_classifier_free_guidance: bool = True, negative_prompt=None):
        """(prompt_embeds, negative_prompt_embeds), as StableDiffusionPipeline.encode_prompt returns."""
        device = device or self._execution_device
        prompt = [prompt] if isinstance(prompt, str) else list(prompt)
        embeds = self._embed(prompt, device).repeat_interleave(num_images_per_prompt, 0)
        negative = None
        if do_classifier_free_guidance:
            neg = negative_prompt if negative_prompt is not None else ""
            neg = [neg] * len(prompt) if isinstance(neg, str) else list(neg)
            negative = self._embed(neg, device).repeat_interleave(num_images_per_prompt, 0)
        return embeds, negative

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 20,
        guidance_scale: float = 3.0,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
    ):
        device = self._execution_device
        size = self.default_sample_size
        if (height or size) != size or (width or size) != size:
            raise ValueError(f"ShapesPipeline makes {size}x{size} images; got height={height}, width={width}")
        cfg = guidance_scale > 1.0
        # 1. Text embeddings (once; pass prompt_embeds to skip the text encoder).
        if prompt_embeds is None:
            prompt_embeds, negative_prompt_embeds = self.encode_prompt(
                prompt, device, num_images_per_prompt, cfg, negative_prompt)
        elif cfg and negative_prompt_embeds is None:
            negative_prompt_embeds = self._embed([""], device).expand(prompt_embeds.shape[0], -1, -1)
        batch = prompt_embeds.shape[0]
        # 2. Initial noise.
        shape = (batch, self.unet.config.in_channels, size, size)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=prompt_embeds.dtype)
        latents = latents.to(device=device, dtype=self.unet.dtype) * self.scheduler.init_noise_sigma
        # 3. Denoise.
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        self._interrupt = False
        extra = {"eta": eta, "generator": generator} if "eta" in self.scheduler.step.__code__.co_varnames else {}
        for i, t in enumerate(self.progress_bar(self.scheduler.timesteps)):
            if self._interrupt:
                break
            context = torch.cat([negative_prompt_embeds, prompt_embeds]) if cfg else prompt_embeds
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = self.scheduler.scale_model_input(model_in, t)
            noise = self.unet(model_in, t, encoder_hidden_states=context).sample
            if cfg:
                uncond, cond = noise.chunk(2)
                noise = uncond + guidance_scale * (cond - uncond)
            latents = self.scheduler.step(noise, t, latents, **extra).prev_sample
            if callback_on_step_end is not None:
                local = {"latents": latents, "prompt_embeds": prompt_embeds}
                out = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                latents = out.pop("latents", latents)
                prompt_embeds = out.pop("prompt_embeds", prompt_embeds)
        # 4. Decode: pixels in [-1, 1] -> output_type.
        images = (latents / 2 + 0.5).clamp(0, 1)
        if output_type == "latent":
            images = latents
        elif output_type in ("pil", "np"):
            arr = images.permute(0, 2, 3, 1).float().cpu().numpy()
            images = [Image.fromarray((a * 255).round().astype(np.uint8)) for a in arr] if output_type == "pil" else arr
        self.maybe_free_model_hooks()
        if not return_dict:
            return (images,)
        return ImagePipelineOutput(images=images)
