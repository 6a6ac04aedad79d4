"""DDPO's incompressibility reward (Black et al. 2023, "Training Diffusion Models with RL", Sec. 6.1):
the image's JPEG size in kB (bytes / 1000) at quality 95. Higher = more detail."""
from __future__ import annotations

from ._jpeg import JpegSizeReward


class Incompressibility(JpegSizeReward):
    name = "incompressibility"
    metrics = ("incompressibility",)
    sign = 1
