"""Batched generation for search: text encoders once per prompt, noises from lineages, NFEs counted.

``Generator.generate(prompt, lineages)`` turns noise lineages (tts.noise) into images with one
pipeline call per batch: the prompt's embeddings (computed once per prompt and passed back as
``prompt_embeds``) are repeated to the batch size, each candidate's noise is built on the CPU
from its lineage (so it does not depend on batch size or device) and packed the way its family
expects. ``pipeline.call_args`` go to every pipeline call, except those the family's prompt encoding
consumes (a negative prompt is encoded once per prompt with the prompt). NFEs are measured, not assumed:
a forward pre-hook on the denoiser counts the rows it evaluates (classifier-free guidance doubles
them), divided by the batch size.
"""
from __future__ import annotations

import time

import torch

from .noise import make_noise
from .pipelines import LoadedPipeline, PipelineSpec, torch_dtype


class Generator:
    def __init__(self, loaded: LoadedPipeline, spec: PipelineSpec):
        self.loaded, self.spec = loaded, spec
        self.pipe, self.family = loaded.pipe, loaded.family
        self._embeds_for: str | None = None
        self._embeds: dict = {}
        self._rows = 0
        self._call_args = {k: v for k, v in spec.call_args.items() if k not in self.family.ENCODE_KEYS}
        denoiser = loaded.denoiser
        self._hook = getattr(denoiser, "_orig_mod", denoiser).register_forward_pre_hook(self._count, with_kwargs=True)

    def close(self) -> None:
        self._hook.remove()

    def _count(self, module, args, kwargs):
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
        if first is not None:
            self._rows += first.shape[0]

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return self.family.latent_shape(self.pipe, self.spec.height, self.spec.width)

    def encode(self, prompt: str) -> dict:
        """The prompt's embeddings, computed on the first call for this prompt and reused after."""
        if self._embeds_for != prompt:
            with torch.no_grad():
                self._embeds = self.family.encode(self.pipe, prompt, self.spec.guidance_scale,
                                                  self.spec.max_sequence_length, self.spec.call_args)
            self._embeds_for = prompt
        return self._embeds

    def noise(self, lineages: list[dict]) -> torch.Tensor:
        return torch.stack([make_noise(n, self.latent_shape) for n in lineages])

    def row_embeds(self, prompt: str | list[str], batch: int) -> dict:
        """Embeddings for a batch: one prompt repeated, or one prompt per row (each distinct one encoded once)."""
        rows = [prompt] * batch if isinstance(prompt, str) else prompt
        per = {p: self.encode(p) for p in dict.fromkeys(rows)}
        first = per[rows[0]]
        return {k: torch.cat([per[p][k] for p in rows]) if isinstance(v, torch.Tensor) else v for k, v in first.items()}

    def generate(self, prompt: str | list[str], lineages: list[dict]):
        """(images, NFEs per candidate, seconds) for one batch; ``prompt`` is the batch's prompt or one per row."""
        start = time.perf_counter()
        batch = len(lineages)
        kwargs = self.row_embeds(prompt, batch)
        latents = self.family.to_pipeline_latents(self.pipe, self.noise(lineages), self.spec.height, self.spec.width)
        # the compute dtype (also under NF4)
        latents = latents.to(device=self.pipe._execution_device, dtype=torch_dtype(self.spec.dtype))
        self._rows = 0
        with torch.no_grad():
            out = self.pipe(**kwargs, **self._call_args, latents=latents, height=self.spec.height,
                            width=self.spec.width, num_inference_steps=self.spec.num_inference_steps,
                            guidance_scale=self.spec.guidance_scale, output_type="pil")
        return out.images, self._rows / batch, time.perf_counter() - start
