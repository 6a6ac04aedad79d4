"""CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
Captioning", Eq. 1): ``w * max(cos(E_image, E_text), 0)`` with w = 2.5, one of the paper's verifiers
(Ma et al. 2025, Sec. 4). Batched: one forward for the batch's images and one for its prompts.
"""
from __future__ import annotations

from ..records import MetricScore
from . import _clip
from .base import Verifier


class CLIPScoreVerifier(Verifier):
    name = "clip"
    metrics = ("clip_score", "cosine")

    def __init__(self, model_name: str = "openai/clip-vit-large-patch14", processor_name: str | None = None,
                 choice_of_metric: str | None = "clip_score", device: str = "auto", dtype: str = "auto",
                 w: float = 2.5):
        super().__init__(choice_of_metric)
        _clip.check_dtype(dtype)
        self.model_name, self.processor_name, self.device, self.dtype, self.w = model_name, processor_name, device, dtype, w
        self._model = None

    def setup(self) -> None:
        self._model, self._tok, self._proc, self._dev, self._dtype = _clip.load(
            self.model_name, self.processor_name, self.device, self.dtype)

    def score(self, prompts, images):
        img = _clip.embed_images(self._model, self._proc, images, self._dev, self._dtype)
        txt = _clip.embed_texts(self._model, self._tok, prompts, self._dev)
        cos = (img * txt).sum(-1).tolist()
        return [{"clip_score": MetricScore(score=self.w * max(c, 0.0), explanation=f"{self.w} * max(cos, 0)"),
                 "cosine": MetricScore(score=c, explanation="cosine of CLIP image and text embeddings")}
                for c in cos]
