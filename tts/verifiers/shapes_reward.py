"""A learned reward for the shapes world (tts.world.reward.ShapesRewardModel): what real searches live
with, an imperfect learned scorer (as ImageReward, Xu et al. 2023, or PickScore, Kirstain et al. 2023)
standing in for the exact checker (``verifier=shapes``), which judges. It predicts the checker's
``criteria_met`` (metric ``reward``) and the probability of ``correct`` (``p_correct``) from the image and
the prompt; trained on x0 previews too, with the noise level as an input (TTSnap, arXiv 2511.22242), so
``score_preview`` scores intermediate previews. It reads the prompt with the world's parser and counts the
objects each phrase asks for on learned density maps (tts.world.reward). Weights ship in the package
(``tts://shapes-reward``, under 1 MB; ``scripts/train_reward.py``); ``model_path`` takes any folder
``save_pretrained`` wrote.
"""
from __future__ import annotations

from pathlib import Path

from ..core.records import MetricScore
from ..core.torchutil import check_dtype, resolve_device, resolve_dtype
from ..world import grammar
from .base import Verifier


class ShapesRewardVerifier(Verifier):
    name = "shapes-reward"
    metrics = ("reward", "p_correct")

    def __init__(self, model_path: str = "tts://shapes-reward", choice_of_metric: str | None = "reward",
                 device: str = "cpu", dtype: str = "fp32"):
        super().__init__(choice_of_metric)
        check_dtype("verifier.dtype", dtype, allow_auto=True)
        self.model_path, self.device, self.dtype = model_path, device, dtype
        self._model = None

    def check_prompt(self, prompt: str) -> None:
        grammar.parse(prompt)

    def setup(self) -> None:
        from ..world.reward import ShapesRewardModel

        dev = resolve_device(self.device)
        path = self.model_path
        if path.startswith("tts://"):  # shipped in the package: tts/assets/NAME
            path = str(Path(__file__).resolve().parents[1] / "assets" / path[len("tts://"):])
        self._model = ShapesRewardModel.from_pretrained(path,
                                                        torch_dtype=resolve_dtype(self.dtype, dev)).to(dev).eval()

    def score(self, prompts, images):
        return self.score_preview(prompts, images, 0.0)

    def score_preview(self, prompts, images, noise_level: float):
        """Scores of x0 previews made at ``noise_level`` (the step's timestep over the training timesteps,
        in [0, 1]; 0 is a final image)."""
        if self._model is None:
            self.setup()
        met, correct = self._model.predict(list(prompts), list(images), noise_level)
        return [{"reward": MetricScore(score=m, explanation=f"predicted criteria_met (p_correct {c:.2f})"),
                 "p_correct": MetricScore(score=c, explanation="predicted probability that the image is correct")}
                for m, c in zip(met, correct)]

    def score_tensor(self, prompts, images):
        """The chosen metric (``reward``: predicted criteria_met; ``p_correct``) of a (B, 3, H, W) tensor in
        [0, 1] (final images), differentiable (base.DifferentiableVerifier)."""
        import torch

        from ..world.reward import encode_prompts

        if self._model is None:
            self.setup()
        model = self._model
        dtype = next(model.parameters()).dtype
        pixels = images.to(model.device, dtype) * 2.0 - 1.0  # tts.world.reward.to_pixels: [-1, 1]
        groups, relation = encode_prompts(list(prompts))
        logits = model(pixels, groups.to(model.device), relation.to(model.device),
                       torch.zeros(len(prompts), device=model.device, dtype=dtype)).sigmoid()
        return logits[:, 0 if self.choice_of_metric == "reward" else 1]
