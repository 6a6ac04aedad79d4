"""The pipeline's own safety checker, as it reaches tts: each image carries its ``nsfw_content_detected`` flag in
its PIL ``info`` (set where the pipeline decodes: tts.sampling.generate, the families' ``decode``); what a flagged
image means for a search (blocked, rewritten, another pipeline) is tts.run.safety's policy."""
from __future__ import annotations

from PIL import Image

NSFW_KEY = "tts_nsfw"  # the pipeline's flag, kept in each PIL image's ``info``


def mark_flagged(images: list, flags) -> list:
    """Keep the pipeline's per-image ``nsfw_content_detected`` (None: it has no checker) in each image."""
    for i, image in enumerate(images):
        if flags is not None and isinstance(image, Image.Image):
            image.info[NSFW_KEY] = bool(flags[i])
    return images


def is_flagged(image: Image.Image) -> bool:
    return bool(image.info.get(NSFW_KEY, False))
