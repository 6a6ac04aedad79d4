"""Loading and embedding with a CLIP model through transformers (shared by clip, aesthetic, pickscore).

Loads with ``from_pretrained`` from a hub id or a local folder (tokenizer, image processor, model), on
the requested device and dtype; the PIL image processor is used, so no torchvision is needed.
"""
from __future__ import annotations

import torch

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise ValueError(f"verifier.dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def check_dtype(dtype: str) -> None:
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"verifier.dtype must be auto, {', '.join(DTYPES)}; got {dtype!r}")


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
