"""DDPO's compressibility reward (Black et al. 2023, Sec. 6.1): minus the image's JPEG size in kB
(bytes / 1000) at quality 95. Higher = simpler, smaller images."""
from __future__ import annotations

import io

from ..records import MetricScore
from .base import Verifier


class Compressibility(Verifier):
    name = "compressibility"
    metrics = ("compressibility",)

    def score(self, prompts, images):
        out = []
        for img in images:
            buf = io.BytesIO()
            img.convert("RGB").save(buf, format="JPEG", quality=95)
            kb = buf.tell() / 1000
            out.append({"compressibility": MetricScore(score=-kb, explanation=f"JPEG q95: {kb:.2f} kB")})
        return out
