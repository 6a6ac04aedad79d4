"""An imperfect scorer for the shapes world, for verifier-hacking studies (Ma et al. 2025, Sec. 4.2):
search can be steered by this cheap proxy while the exact checker (``verifier=shapes``) judges the
result. It sees only colour mass and blob count, never shapes, sizes or positions:

    proxy = 0.5 * colour_match + 0.5 / (1 + |blobs - objects asked for|)

where colour_match = 1 - L1/2 between the colour mix of the foreground pixels and the mix the
prompt implies (named colours weighted by count and size; 1 when no colour is named).
"""
from __future__ import annotations

import numpy as np

from ..core.records import MetricScore
from ..world import grammar
from ..world.detect import components, segment
from .base import Verifier

_AREA = {"big": 150.0, "small": 50.0, None: 90.0}


class ShapesProxyVerifier(Verifier):
    name = "shapes-proxy"
    metrics = ("proxy_score",)

    def check_prompt(self, prompt: str) -> None:
        grammar.parse(prompt)

    def score(self, prompts, images):
        names = list(grammar.COLOURS)
        out = []
        for prompt, img in zip(prompts, images):
            spec = grammar.parse(prompt)
            fg, dist = segment(img)
            label = dist.argmin(-1)
            observed = np.array([np.sum(fg & (label == i)) for i in range(len(names))], dtype=np.float64)
            want = np.zeros(len(names))
            for g in spec.groups:
                if g.colour:
                    want[names.index(g.colour)] += g.count * _AREA[g.size]
            if want.sum() > 0 and observed.sum() > 0:
                colour_match = 1 - 0.5 * np.abs(observed / observed.sum() - want / want.sum()).sum()
            else:
                colour_match = 1.0 if want.sum() == 0 else 0.0
            blobs = sum(len(pix) >= 8 for pix in components(fg))
            value = 0.5 * colour_match + 0.5 / (1 + abs(blobs - spec.n_objects))
            out.append({"proxy_score": MetricScore(
                score=float(value), explanation=f"colour match {colour_match:.2f}, {blobs} blobs for {spec.n_objects} objects")})
        return out

