"""CLIP models through transformers, shared by clip, aesthetic and pickscore: loading, embedding, and
:class:`ClipVerifier`, the base of the three (model, processor, device and dtype settings; ``setup``).

Loads with ``from_pretrained`` from a hub id or a local folder (tokenizer, image processor, model), on
the requested device and dtype (tts.core.torchutil: ``auto`` is CUDA, then MPS, then CPU; fp16 on CUDA,
fp32 elsewhere); the PIL image processor is used, so no torchvision is needed.
"""
from __future__ import annotations

import torch

from ..core.torchutil import check_dtype, resolve_device, resolve_dtype
from .base import Verifier


class ClipVerifier(Verifier):
    """A verifier on a CLIP model: ``model_name`` (and ``processor_name`` when the processor lives
    elsewhere) loaded in ``setup`` onto ``device`` in ``dtype``; subclasses implement ``score``."""

    def __init__(self, model_name: str, processor_name: str | None = None, choice_of_metric: str | None = None,
                 device: str = "auto", dtype: str = "auto"):
        super().__init__(choice_of_metric)
        check_dtype("verifier.dtype", dtype, allow_auto=True)
        self.model_name, self.processor_name, self.device, self.dtype = model_name, processor_name, device, dtype
        self._model = None

    def setup(self) -> None:
        self._model, self._tok, self._proc, self._dev, self._dtype = load(
            self.model_name, self.processor_name, self.device, self.dtype)

    def embed(self, prompts, images) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (image, text) embeddings, one row per pair."""
        return (embed_images(self._model, self._proc, images, self._dev, self._dtype),
                embed_texts(self._model, self._tok, prompts, self._dev))


def image_processor(name: str):
    try:
        from transformers import CLIPImageProcessorPil as cls
    except ImportError:  # older transformers: the slow processor is PIL-based
        from transformers import CLIPImageProcessor as cls
    return cls.from_pretrained(name)


def load(model_name: str, processor_name: str | None, device: str, dtype: str):
    """(model, tokenizer, image processor, device, dtype), the model in eval mode on its device."""
    from transformers import AutoTokenizer, CLIPModel

    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    model = CLIPModel.from_pretrained(model_name, dtype=torch_dtype).to(dev).eval()
    name = processor_name or model_name
    return model, AutoTokenizer.from_pretrained(name), image_processor(name), dev, torch_dtype


@torch.no_grad()
def embed_images(model, processor, images, device, dtype) -> torch.Tensor:
    """L2-normalised image embeddings, one row per image (one batched forward)."""
    pixels = processor(images=[im.convert("RGB") for im in images], return_tensors="pt")["pixel_values"]
    feats = model.get_image_features(pixel_values=pixels.to(device, dtype))
    feats = getattr(feats, "pooler_output", feats)
    return torch.nn.functional.normalize(feats.float(), dim=-1)


@torch.no_grad()
def embed_texts(model, tokenizer, texts, device) -> torch.Tensor:
    """L2-normalised text embeddings, one row per text."""
    max_len = getattr(tokenizer, "model_max_length", 77)
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=min(max_len, 77), return_tensors="pt")
    feats = model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})
    feats = getattr(feats, "pooler_output", feats)
    return torch.nn.functional.normalize(feats.float(), dim=-1)
