"""Layer 4: generating images from noises with a loaded pipeline: whole batches (``generate``), one denoising
step at a time (``sampler``) and particles with NFE accounting (``particles``). Imports pipelines and below."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    from PIL import Image


@runtime_checkable
class ImageGenerator(Protocol):
    """What a search generates through: the local ``generate.Generator``, tts.pipelines.remote's
    ``RemoteGenerator`` (a tts-serve server) and tts.run.safety's ``Screened`` (another generator behind the
    safety screen). ``generate`` turns noise lineages (tts.core.noise) into one image each for ``prompt`` and
    returns (images, NFEs per candidate, seconds for the batch)."""

    @property
    def latent_shape(self) -> tuple[int, ...]: ...

    def generate(self, prompt: str, lineages: list[dict]) -> tuple[list[Image.Image], float, float]: ...

    def close(self) -> None: ...
