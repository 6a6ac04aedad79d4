"""DDPO's JPEG-size rewards (Black et al. 2023, "Training Diffusion Models with Reinforcement Learning",
Sec. 6.1), shared by compressibility and incompressibility: the image's JPEG size in kB (bytes / 1000)
at quality 95, times the reward's ``sign``. DDPO defines incompressibility as the size (+kB) and
compressibility as minus the size (-kB); the recorded values are those rewards, as DDPO reports them,
and both are maximised (higher is better: a bigger file, or a smaller one)."""
from __future__ import annotations

import io

from ..core.records import MetricScore
from .base import Verifier

QUALITY = 95


def jpeg_kb(image) -> float:
    """The image's JPEG size at quality 95, in kB (bytes / 1000)."""
    buf = io.BytesIO()
    image.convert("RGB").save(buf, format="JPEG", quality=QUALITY)
    return buf.tell() / 1000


class JpegSizeReward(Verifier):
    """``sign * JPEG kB`` under the verifier's one metric (its ``name``)."""

    sign: int = 1

    def score(self, prompts, images):
        out = []
        for img in images:
            kb = jpeg_kb(img)
            out.append({self.name: MetricScore(score=self.sign * kb, explanation=f"JPEG q{QUALITY}: {kb:.2f} kB")})
        return out
