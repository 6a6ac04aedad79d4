"""The LAION aesthetic predictor (v2, "improved aesthetic predictor"; used by DDPO, Black et al.
2023, Sec. 6.1, and by Ma et al. 2025, Sec. 4): an MLP on the L2-normalised CLIP ViT-L/14 image
embedding, trained on SAC + LOGOS + AVA ratings (1-10 scale). Prompt-agnostic; batched.

The head is a plain state dict (``layers.{0,2,4,6,7}.{weight,bias}``; a .pth or .safetensors file,
local or ``<hub repo>/<file>``); its layer sizes are read from the file, so any such MLP loads.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.records import MetricScore
from . import _clip


class AestheticVerifier(_clip.ClipVerifier):
    name = "aesthetic"
    metrics = ("aesthetic",)

    def __init__(self, model_name: str = "openai/clip-vit-large-patch14",
                 head_path: str = "camenduru/improved-aesthetic-predictor/sac+logos+ava1-l14-linearMSE.pth",
                 processor_name: str | None = None, choice_of_metric: str | None = "aesthetic",
                 device: str = "auto", dtype: str = "auto"):
        super().__init__(model_name, processor_name, choice_of_metric, device, dtype)
        self.head_path = head_path

    def setup(self) -> None:
        super().setup()
        self._head = build_head(read_state_dict(self.head_path)).to(self._dev).eval()

    @torch.no_grad()
    def score(self, prompts, images):
        emb = _clip.embed_images(self._model, self._proc, images, self._dev, self._dtype)
        values = self._head(emb).squeeze(-1).tolist()
        return [{"aesthetic": MetricScore(score=v, explanation="LAION aesthetic predictor v2 (1-10 scale)")}
                for v in values]

    def score_tensor(self, prompts, images):
        """The aesthetic score of a (B, 3, H, W) tensor in [0, 1], differentiable (base.DifferentiableVerifier)."""
        if self._model is None:
            self.setup()
        emb = _clip.embed_pixels(self._model, self._proc, images, self._dev, self._dtype)
        head_dtype = next(self._head.parameters()).dtype
        return self._head(emb.to(head_dtype)).squeeze(-1)


def read_state_dict(head_path: str) -> dict:
    path = Path(head_path).expanduser()
    if not path.exists():
        repo, _, filename = head_path.rpartition("/")
        if not repo or head_path.startswith(("/", ".", "~")):
            raise FileNotFoundError(f"aesthetic head {head_path!r} not found (a local file or <hub repo>/<file>)")
        from huggingface_hub import hf_hub_download

        path = Path(hf_hub_download(repo, filename))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def build_head(state: dict) -> torch.nn.Sequential:
    """The predictor's MLP: Linear/Dropout blocks at the indices the file names (dropouts are inert at eval)."""
    linear = sorted({int(k.split(".")[1]) for k in state if k.startswith("layers.") and k.endswith(".weight")})
    if not linear:
        raise ValueError("aesthetic head: no layers.<i>.weight tensors in the file")
    modules: list[torch.nn.Module] = [torch.nn.Identity() for _ in range(linear[-1] + 1)]
    for i in linear:
        out_dim, in_dim = state[f"layers.{i}.weight"].shape
        modules[i] = torch.nn.Linear(in_dim, out_dim)
    head = torch.nn.Sequential()
    head.add_module("layers", torch.nn.Sequential(*modules))
    head.load_state_dict({k: v.float() for k, v in state.items()})
    return head
