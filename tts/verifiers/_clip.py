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

    def embed_tensor(self, prompts, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (image, text) embeddings of a (B, 3, H, W) tensor in [0, 1]; the image side keeps its
        gradients (the differentiable path of ``score_tensor``)."""
        if self._model is None:
            self.setup()
        return (embed_pixels(self._model, self._proc, images, self._dev, self._dtype),
                embed_texts(self._model, self._tok, prompts, self._dev))

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


def pixels_from_tensor(processor, images: torch.Tensor) -> torch.Tensor:
    """The image processor's steps on a (B, 3, H, W) tensor in [0, 1], differentiably: shortest side resized
    (bicubic, antialiased, as PIL's filter) when it is not already the processor's size, centre crop, normalise."""
    x = images
    size = getattr(processor, "size", None) or {}
    if getattr(processor, "do_resize", True) and size.get("shortest_edge"):
        edge, (h, w) = int(size["shortest_edge"]), x.shape[-2:]
        if min(h, w) != edge:
            scale = edge / min(h, w)
            x = torch.nn.functional.interpolate(x, size=(max(edge, round(h * scale)), max(edge, round(w * scale))),
                                                mode="bicubic", antialias=True, align_corners=False)
    crop = getattr(processor, "crop_size", None) or {}
    if getattr(processor, "do_center_crop", True) and crop.get("height"):
        ch, cw, (h, w) = int(crop["height"]), int(crop["width"]), x.shape[-2:]
        top, left = max(0, (h - ch) // 2), max(0, (w - cw) // 2)
        x = x[..., top:top + ch, left:left + cw]
    if getattr(processor, "do_normalize", True):
        mean = torch.tensor(processor.image_mean, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(processor.image_std, device=x.device, dtype=x.dtype).view(1, -1, 1, 1)
        x = (x - mean) / std
    return x


def embed_pixels(model, processor, images: torch.Tensor, device, dtype) -> torch.Tensor:
    """L2-normalised image embeddings of a (B, 3, H, W) tensor in [0, 1], with gradients."""
    pixels = pixels_from_tensor(processor, images.to(device, dtype))
    feats = model.get_image_features(pixel_values=pixels)
    feats = getattr(feats, "pooler_output", feats)
    return torch.nn.functional.normalize(feats.float() if feats.dtype != torch.float64 else feats, dim=-1)


@torch.no_grad()
def embed_texts(model, tokenizer, texts, device) -> torch.Tensor:
    """L2-normalised text embeddings, one row per text."""
    max_len = getattr(tokenizer, "model_max_length", 77)
    tokens = tokenizer(texts, padding=True, truncation=True, max_length=min(max_len, 77), return_tensors="pt")
    feats = model.get_text_features(**{k: v.to(device) for k, v in tokens.items()})
    feats = getattr(feats, "pooler_output", feats)
    return torch.nn.functional.normalize(feats.float() if feats.dtype != torch.float64 else feats, dim=-1)
