"""A search over several pipelines (``search.pipelines``, tts.pipelines.arms): one generator whose batches may mix
candidates of several pipelines. Each lineage names its pipeline (``lineage["pipeline"]``, a label; absent: the
first); each pipeline's share of a batch is one call on that pipeline, loaded through the model manager when it is
needed (so ``models.max_resident`` / ``models.max_memory_gb`` decide what stays loaded; the least recently used
pipeline is unloaded first). Every image carries the NFEs it is charged (measured NFEs x the pipeline's cost per
NFE relative to the first) in ``image.info[NFE_KEY]``, which the safety screen (tts.run.safety) reads per image.
"""
from __future__ import annotations

import time

from ..pipelines.arms import PipelineArm
from ..pipelines.models import ModelManager, manager

NFE_KEY = "tts.charged_nfe"
PIPELINE_KEY = "pipeline"  # the lineage's key naming its pipeline


class MultiGenerator:
    """The ImageGenerator interface (``latent_shape``, ``generate``, ``close``) over several pipelines."""

    def __init__(self, arms: list[PipelineArm], models: ModelManager | None = None, first=None):
        self.arms = {a.label: a for a in arms}
        self.first = arms[0].label
        self.models = models or manager()
        self._generators: dict[str, object] = {}
        self.loads: list[str] = []  # labels in the order their pipeline was (re)loaded, for tests and logs
        if first is not None:  # the first pipeline's generator, already made by the caller
            self._generators[self.first] = first
        self.latent_shape = tuple(self._generator(self.first).latent_shape)

    def _generator(self, label: str):
        from .generate import Generator, make_generator

        arm = self.arms[label]
        held = self._generators.get(label)
        if held is not None and getattr(held, "loaded", None) is not None and self.models.is_loaded(arm.spec) \
                and self.models.load(arm.spec) is held.loaded:
            return held
        if held is not None:
            held.close()
        if not self.models.is_loaded(arm.spec):
            self.loads.append(label)
        gen = make_generator(arm.spec, self.models)
        if isinstance(gen, Generator) and hasattr(self, "latent_shape") and tuple(gen.latent_shape) != self.latent_shape:
            raise ValueError(f"search.pipelines: {label} makes latents of shape {tuple(gen.latent_shape)}, the first "
                             f"pipeline {self.latent_shape}: every pipeline of one search needs the same latent shape")
        self._generators[label] = gen
        return gen

    def generate(self, prompt, lineages: list[dict], on_step=None):
        """(images, mean charged NFEs per candidate, seconds): each pipeline's candidates in one call, in order."""
        start = time.perf_counter()
        groups: dict[str, list[int]] = {}
        for i, lin in enumerate(lineages):
            label = lin.get(PIPELINE_KEY, self.first)
            if label not in self.arms:
                raise ValueError(f"a candidate names pipeline {label!r}, not one of {', '.join(self.arms)}")
            groups.setdefault(label, []).append(i)
        images: list = [None] * len(lineages)
        for label, rows in groups.items():
            got, nfe, _ = self._generator(label).generate(prompt, [lineages[i] for i in rows])
            for i, image in zip(rows, got):
                image.info[NFE_KEY] = nfe * self.arms[label].cost
                images[i] = image
        charged = sum(im.info[NFE_KEY] for im in images) / max(1, len(images))
        return images, charged, time.perf_counter() - start

    def close(self) -> None:
        for gen in self._generators.values():
            gen.close()
        self._generators.clear()


def charged_nfe(image, batch_nfe: float) -> float:
    """The NFEs one image is charged: what a MultiGenerator set in it, else its batch's NFEs per image."""
    info = getattr(image, "info", None)
    return float(info.pop(NFE_KEY)) if info and NFE_KEY in info else batch_nfe
