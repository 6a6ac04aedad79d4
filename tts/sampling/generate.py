"""Batched generation for search: text encoders once per prompt, noises from lineages, NFEs counted.

``Generator.generate(prompt, lineages)`` turns noise lineages (tts.core.noise) into images with one
pipeline call per batch: the prompt's embeddings (computed once per prompt and passed back as
``prompt_embeds``) are repeated to the batch size, each candidate's noise is built on the CPU
from its lineage (so it does not depend on batch size or device) and packed the way its family
expects. ``pipeline.call_args`` go to every pipeline call, except those the family's prompt encoding
consumes (a negative prompt is encoded once per prompt with the prompt). NFEs are measured, not assumed:
a forward pre-hook on the denoiser counts the rows it evaluates (classifier-free guidance doubles
them), divided by the batch size. Embeddings are kept per loaded pipeline for the last few prompts, so
batches that interleave prompts (tts-serve, several clients) still encode each prompt once. An
out-of-memory error in a pipeline call unloads the other pipelines and retries once (tts.pipelines.models).

``make_generator(spec)`` is what a search calls: this local Generator, or a RemoteGenerator
(tts.pipelines.remote) when ``pipeline.server`` is set; both have ``latent_shape``, ``generate`` and ``close``.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Callable

import torch

from ..pipelines.models import ModelManager, manager
from ..core.noise import make_noise, step_noise_seed
from ..core.video import Video
from ..pipelines import LoadedPipeline, PipelineSpec, frame_rate, frames, is_video, latent_shape, torch_dtype
from ..pipelines.flags import mark_flagged

EMBEDS_KEPT = 16  # prompts whose embeddings stay cached per loaded pipeline
StepFn = Callable[[int, int], None]  # (steps done, steps in all)


@dataclasses.dataclass(frozen=True, eq=False)
class Embeds:
    """Prompt embeddings given instead of a prompt (tts-serve's ``prompt_embeds``): the keyword arguments the
    family's encoding would return, batch size 1; ``digest`` identifies them (equal digests, same tensors)."""

    digest: str
    tensors: dict

    def __eq__(self, other):
        return isinstance(other, Embeds) and other.digest == self.digest

    def __hash__(self):
        return hash(self.digest)


def make_generator(spec: PipelineSpec, models: ModelManager | None = None):
    """The generator a search uses: on the server(s) of ``pipeline.server``, else here (model manager)."""
    if spec.server:
        from ..pipelines.remote import RemoteGenerator

        return RemoteGenerator(spec)
    models = models or manager()
    loaded = models.load(spec)
    spec._apply_memory_options(loaded.pipe)
    return Generator(loaded, spec, models)


def videos(family, spec: PipelineSpec, rows: list) -> list[Video]:
    """A video family's output (each row a list of PIL frames) as Video candidates at the spec's frame rate."""
    return [Video(list(frames_), frame_rate(family, spec)) for frames_ in rows]


class DenoiserRows:
    """Counts the rows a denoiser evaluates (a forward pre-hook; classifier-free guidance doubles them): NFEs
    are measured, not assumed. ``rows`` is reset by its owner."""

    def __init__(self, denoiser):
        self.rows = 0
        self._hook = getattr(denoiser, "_orig_mod", denoiser).register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs):
        first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) or _tensor_list(a)), None)
        if first is not None:  # a batch tensor, or one tensor per row (Z-Image's transformer takes a list)
            self.rows += len(first) if isinstance(first, list) else first.shape[0]

    def close(self) -> None:
        self._hook.remove()


class Generator:
    def __init__(self, loaded: LoadedPipeline, spec: PipelineSpec, models: ModelManager | None = None):
        self.loaded, self.spec = loaded, spec
        self.pipe, self.family = loaded.pipe, loaded.family
        self.models = models or manager()
        self._call_args = {k: v for k, v in spec.call_args.items() if k not in self.family.ENCODE_KEYS}
        self.counter = DenoiserRows(loaded.denoiser)
        #: the run folder ``stored`` noise lineages are read from (tts.core.noise), set by who knows it
        self.noise_root = None

    def close(self) -> None:
        self.counter.close()

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        return latent_shape(self.family, self.pipe, self.spec)

    def encode(self, prompt: str | Embeds) -> dict:
        """The prompt's embeddings, computed on the first call for this prompt (and these encoding settings)
        and reused after; given embeddings are moved to the pipeline's device and compute dtype."""
        if isinstance(prompt, Embeds):
            device, dtype = self.pipe._execution_device, torch_dtype(self.spec.dtype)
            return {k: v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
                    for k, v in prompt.tensors.items()}
        cache = self.loaded.embeds
        key = (prompt, self.spec.guidance_scale, self.spec.max_sequence_length,
               tuple(sorted((k, repr(v)) for k, v in self.spec.call_args.items() if k in self.family.ENCODE_KEYS)))
        if key not in cache:
            with torch.no_grad():
                cache[key] = self.family.encode(self.pipe, prompt, self.spec.guidance_scale,
                                                self.spec.max_sequence_length, self.spec.call_args)
            while len(cache) > EMBEDS_KEPT:
                cache.popitem(last=False)
        cache.move_to_end(key)
        return cache[key]

    def noise(self, lineages: list[dict]) -> torch.Tensor:
        return torch.stack([make_noise(n, self.latent_shape, self.noise_root) for n in lineages])

    def row_embeds(self, prompt: str | list[str | Embeds], batch: int) -> dict:
        """Embeddings for a batch: one prompt repeated, or one prompt per row (each distinct one encoded once)."""
        rows = [prompt] * batch if isinstance(prompt, (str, Embeds)) else prompt
        per = {p: self.encode(p) for p in dict.fromkeys(rows)}
        first = per[rows[0]]
        dims = getattr(self.family, "BATCH_DIMS", {})  # batch not first (HiDream's Llama: layers, batch, ...)
        return {k: _join([per[p][k] for p in rows], dims.get(k, 0)) if isinstance(v, (torch.Tensor, list)) else v
                for k, v in first.items()}

    def generate(self, prompt: str | list[str | Embeds], lineages: list[dict], on_step: StepFn | None = None):
        """(images, NFEs per candidate, seconds) for one batch; ``prompt`` is the batch's prompt or one per row;
        ``on_step(done, steps)`` is called after every denoising step. Out of memory: the other pipelines are
        unloaded and the batch is tried once more (then tts.pipelines.models.ModelMemoryError)."""
        start = time.perf_counter()
        images = self.models.retry_on_oom(lambda: self._call(prompt, lineages, on_step), self.spec.load_key,
                                          f"generating a batch of {len(lineages)} with", self.spec.name,
                                          self.loaded.device)
        return images, self.counter.rows / len(lineages), time.perf_counter() - start

    def _call(self, prompt, lineages: list[dict], on_step: StepFn | None) -> list:
        batch = len(lineages)
        kwargs = self.row_embeds(prompt, batch)
        latents = self.family.to_pipeline_latents(self.pipe, self.noise(lineages), self.spec.height, self.spec.width)
        # the compute dtype (also under NF4)
        latents = latents.to(device=self.pipe._execution_device, dtype=torch_dtype(self.spec.dtype))
        self.counter.rows = 0
        with torch.no_grad():
            call = {"latents": latents, "height": self.spec.height, "width": self.spec.width,
                    "num_inference_steps": self.spec.num_inference_steps, "guidance_scale": self.spec.guidance_scale,
                    "output_type": "pil"}
            if is_video(self.family):
                call["num_frames"] = frames(self.family, self.spec)
            out = self.pipe(**kwargs, **self._step_callback(on_step), **(call | self._family_args(lineages)))
        if is_video(self.family):
            return videos(self.family, self.spec, out.frames)
        # the safety checker's per-image flags ride in each image's info (tts.run.safety reads them)
        return mark_flagged(out.images, getattr(out, "nsfw_content_detected", None))

    def _family_args(self, lineages: list[dict]) -> dict:
        """``pipeline.call_args`` and what the family adds to a call (Sana-Sprint: per-row generators for the noise
        its scheduler draws, seeded from each candidate's lineage, tts.core.noise.step_noise_seed)."""
        if not hasattr(self.family, "call_kwargs"):
            return self._call_args
        seeds = [step_noise_seed(lin) for lin in lineages]
        return {**self._call_args, **self.family.call_kwargs(self.pipe, self.spec, seeds)}

    def _step_callback(self, on_step: StepFn | None) -> dict:
        """The pipeline's step callback argument for ``on_step`` (``callback_on_step_end``, or the older
        ``callback`` of PixArt's pipelines)."""
        if on_step is None:
            return {}
        steps = self.spec.num_inference_steps
        if "callback_on_step_end" in _call_parameters(type(self.pipe)):
            def at_end(pipe, i, t, tensors):
                on_step(i + 1, steps)
                return tensors
            return {"callback_on_step_end": at_end}
        return {"callback": lambda i, t, latents: on_step(i + 1, steps), "callback_steps": 1}


def _tensor_list(value) -> bool:
    return isinstance(value, list) and bool(value) and isinstance(value[0], torch.Tensor)


def _join(tensors: list, dim: int):
    """Rows of several prompts in one batch; token sequences of different lengths (Qwen-Image keeps each prompt's
    own length) are padded with zeros at the end, which their attention masks, padded alike, mask out; embeddings
    given as one tensor per row (Z-Image) stay a list, one entry per row."""
    if isinstance(tensors[0], list):
        return [t for per_prompt in tensors for t in per_prompt]
    if dim == 0 and tensors[0].ndim >= 2 and len({t.shape[1] for t in tensors}) > 1:
        longest = max(t.shape[1] for t in tensors)
        tensors = [torch.cat([t, t.new_zeros(t.shape[0], longest - t.shape[1], *t.shape[2:])], dim=1) for t in tensors]
    return torch.cat(tensors, dim=dim)


def _call_parameters(cls: type) -> frozenset[str]:
    import inspect

    return frozenset(inspect.signature(cls.__call__).parameters)
