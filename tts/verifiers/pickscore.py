"""PickScore (Kirstain et al. 2023, "Pick-a-Pic", Sec. 4): a CLIP-H model fine-tuned on human
preferences; the score is ``logit_scale * cos(E_image, E_text)`` (about 18-23 for typical images).
Batched: one forward for the batch's images and one for its prompts.
"""
from __future__ import annotations

from ..core.records import MetricScore
from ._clip import ClipVerifier


class PickScoreVerifier(ClipVerifier):
    name = "pickscore"
    metrics = ("pickscore",)

    def __init__(self, model_name: str = "yuvalkirstain/PickScore_v1",
                 processor_name: str | None = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K",
                 choice_of_metric: str | None = "pickscore", device: str = "auto", dtype: str = "auto"):
        super().__init__(model_name, processor_name, choice_of_metric, device, dtype)

    def score(self, prompts, images):
        img, txt = self.embed(prompts, images)
        scale = float(self._model.logit_scale.detach().exp())
        return [{"pickscore": MetricScore(score=scale * float(c), explanation=f"{scale:.1f} * cos(image, prompt)")}
                for c in (img * txt).sum(-1).tolist()]

    def score_tensor(self, prompts, images):
        """PickScore of a (B, 3, H, W) tensor in [0, 1], differentiable (base.DifferentiableVerifier)."""
        img, txt = self.embed_tensor(prompts, images)
        return self._model.logit_scale.detach().exp().to(img.dtype) * (img * txt.to(img.dtype)).sum(-1)
