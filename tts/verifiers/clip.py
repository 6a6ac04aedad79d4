"""CLIPScore (Hessel et al. 2021, "CLIPScore: A Reference-free Evaluation Metric for Image
Captioning", Eq. 1): ``w * max(cos(E_image, E_text), 0)`` with w = 2.5, one of the paper's verifiers
(Ma et al. 2025, Sec. 4). Batched: one forward for the batch's images and one for its prompts.
"""
from __future__ import annotations

from ..core.records import MetricScore
from ._clip import ClipVerifier


class CLIPScoreVerifier(ClipVerifier):
    name = "clip"
    metrics = ("clip_score", "cosine")

    def __init__(self, model_name: str = "openai/clip-vit-large-patch14", processor_name: str | None = None,
                 choice_of_metric: str | None = "clip_score", device: str = "auto", dtype: str = "auto",
                 w: float = 2.5):
        super().__init__(model_name, processor_name, choice_of_metric, device, dtype)
        self.w = w

    def score(self, prompts, images):
        img, txt = self.embed(prompts, images)
        return [{"clip_score": MetricScore(score=self.w * max(c, 0.0), explanation=f"{self.w} * max(cos, 0)"),
                 "cosine": MetricScore(score=c, explanation="cosine of CLIP image and text embeddings")}
                for c in (img * txt).sum(-1).tolist()]

    def score_tensor(self, prompts, images):
        """The chosen metric of a (B, 3, H, W) tensor in [0, 1], differentiable (base.DifferentiableVerifier);
        ``clip_score``'s max(cos, 0) has no gradient where the cosine is negative."""
        img, txt = self.embed_tensor(prompts, images)
        cos = (img * txt.to(img.dtype)).sum(-1)
        return cos if self.choice_of_metric == "cosine" else self.w * cos.clamp(min=0.0)
