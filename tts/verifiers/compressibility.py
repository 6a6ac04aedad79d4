"""DDPO's compressibility reward (Black et al. 2023, Sec. 6.1): minus the image's JPEG size in kB
(bytes / 1000) at quality 95, as DDPO defines and reports it. Higher (a smaller file) is better."""
from __future__ import annotations

from ._jpeg import JpegSizeReward


class Compressibility(JpegSizeReward):
    name = "compressibility"
    metrics = ("compressibility",)
    sign = -1  # DDPO's definition: the reward is -kB, so maximising it minimises the file size
