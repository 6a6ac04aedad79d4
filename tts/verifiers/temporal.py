"""Temporal consistency of a video: the mean similarity of consecutive frames. ``backend=clip``: the cosine of
their CLIP image embeddings (``model_name``, loaded as the clip verifier loads it); ``pixel``: one minus their mean
absolute pixel difference (in [0, 1], no model); ``auto``: CLIP when the model can be had, else pixels (said once
in the log). Both in [0, 1] for natural frames, higher is steadier. An image (one frame) scores 1. It scores whole
videos (``takes_video``), every frame, so ``verifier.frames`` does not apply; pair it with a quality verifier in an
ensemble, since a still video is perfectly consistent.
"""
from __future__ import annotations

import logging

import numpy as np

from ..core.video import is_video
from .base import Verifier, VerifierError

log = logging.getLogger(__name__)
BACKENDS = ("auto", "clip", "pixel")


class TemporalVerifier(Verifier):
    name = "temporal"
    metrics = ("temporal", "temporal_min")
    takes_video = True

    def __init__(self, backend: str = "auto", model_name: str = "openai/clip-vit-large-patch14",
                 choice_of_metric: str | None = None, device: str = "auto", dtype: str = "auto"):
        super().__init__(choice_of_metric)
        if backend not in BACKENDS:
            raise VerifierError(f"verifier.backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        self.backend, self.model_name, self.device, self.dtype = backend, model_name, device, dtype
        self._clip = None

    def setup(self) -> None:
        if self.backend == "pixel" or self._clip is not None:
            return
        from ._clip import load

        try:
            model, _, proc, dev, dtype = load(self.model_name, None, self.device, self.dtype)
        except Exception as e:  # noqa: BLE001 - auto falls back to pixels; clip says why it cannot load
            if self.backend == "clip":
                raise VerifierError(f"verifier.model_name={self.model_name}: cannot load CLIP ({e}); use "
                                    "verifier.backend=pixel for the pixel-space score") from None
            log.warning("temporal verifier: CLIP %s not available (%s): scoring in pixel space",
                        self.model_name, type(e).__name__)
            self.backend = "pixel"
            return
        self._clip = (model, proc, dev, dtype)

    def score(self, prompts, images):
        if self.backend != "pixel" and self._clip is None:
            self.setup()
        return [self._one(item) for item in images]

    def _one(self, item) -> dict:
        from ..core.records import MetricScore

        frames = item.frames if is_video(item) else [item]
        if len(frames) < 2:
            sims = [1.0]
        elif self._clip is not None:
            from ._clip import embed_images

            emb = embed_images(*self._clip[:2], frames, *self._clip[2:])
            sims = (emb[1:] * emb[:-1]).sum(dim=-1).tolist()
        else:
            arr = np.stack([np.asarray(f.convert("RGB"), dtype=np.float32) / 255 for f in frames])
            sims = (1 - np.abs(arr[1:] - arr[:-1]).mean(axis=(1, 2, 3))).tolist()
        how = "CLIP cosine" if self._clip is not None else "1 - mean |pixel difference|"
        mean, low = float(np.mean(sims)), float(np.min(sims))
        return {"temporal": MetricScore(score=mean, explanation=f"{how} of {len(sims)} consecutive frame pairs"),
                "temporal_min": MetricScore(score=low, explanation=f"the least similar pair ({how})")}
