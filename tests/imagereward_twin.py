"""A tiny random ImageReward checkpoint in the ORIGINAL file layout (``ImageReward.pt`` state dict with the
original key names, ``med_config.json``) plus a small BERT WordPiece tokenizer folder, and the golden inputs.

Needs only torch and Pillow, so both the test suite and ``scripts/imagereward_golden.py`` (run in a separate
environment with the reference ``image-reward`` package) build the very same weights and images from it.
Weights come from a seeded ``torch.Generator`` in sorted key order, scaled so every layer matters (fan-in
scaled matrices, LayerNorm gains near 1), so the scores spread over a few units.
"""
from __future__ import annotations

import json
import math
import string
from pathlib import Path

import torch
from PIL import Image

#: The tiny sizes (the real checkpoint: vision 1024 x 24 layers, text 768 x 12 layers, 12 heads, 3072).
VISION = dict(hidden=128, layers=2, patch=16, image=224)  # 128 / 64 = 2 heads, as BLIP's ViTs (head dim 64)
TEXT = dict(hidden=32, layers=2, heads=4, intermediate=64, max_positions=64)
HEAD = (1024, 128, 64, 16, 1)  # the original MLP's widths after the text hidden size
WORDS = ["a", "photo", "of", "cat", "cats", "dog", "red", "blue", "car", "bench", "two", "left", "the", "on",
         "and", "an", "astronaut", "moon", "egg", "green", "painting", "horse", "riding"]
PROMPTS = [
    "a photo of a cat",
    "A red car and a BLUE bench, on the moon!",
    "two dogs left of the astronaut riding a green horse",
    "zebra xylophone quokka",  # out-of-vocabulary words: WordPiece pieces
    " ".join(["a painting of a cat riding a horse"] * 6),  # longer than 35 tokens: truncated
]
#: (width, height) of the golden images: square, wide, tall, smaller than 224 (upscaled), exactly 224.
SIZES = [(256, 256), (320, 200), (150, 300), (96, 64), (224, 224)]


def vocab() -> list[str]:
    letters = list(string.ascii_lowercase)
    return (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + letters + ["##" + c for c in letters]
            + list("!,.") + [w for w in WORDS if w not in letters])


def med_config() -> dict:
    """The original med_config.json's keys, tiny sizes (vocab = WordPiece vocab + [DEC] + [ENC], as 30522 + 2)."""
    return {"architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
            "hidden_dropout_prob": 0.1, "hidden_size": TEXT["hidden"], "initializer_range": 0.02,
            "intermediate_size": TEXT["intermediate"], "layer_norm_eps": 1e-12,
            "max_position_embeddings": TEXT["max_positions"], "model_type": "bert",
            "num_attention_heads": TEXT["heads"], "num_hidden_layers": TEXT["layers"], "pad_token_id": 0,
            "type_vocab_size": 2, "vocab_size": len(vocab()) + 2, "encoder_width": VISION["hidden"],
            "add_cross_attention": True}


def original_shapes() -> dict[str, tuple[int, ...]]:
    """Every tensor of the original ImageReward state dict (its key names), at the tiny sizes."""
    v, t = VISION["hidden"], TEXT["hidden"]
    n = (VISION["image"] // VISION["patch"]) ** 2 + 1
    s = {"blip.visual_encoder.cls_token": (1, 1, v), "blip.visual_encoder.pos_embed": (1, n, v),
         "blip.visual_encoder.patch_embed.proj.weight": (v, 3, VISION["patch"], VISION["patch"]),
         "blip.visual_encoder.patch_embed.proj.bias": (v,),
         "blip.visual_encoder.norm.weight": (v,), "blip.visual_encoder.norm.bias": (v,)}
    for i in range(VISION["layers"]):
        b = f"blip.visual_encoder.blocks.{i}."
        s.update({b + "norm1.weight": (v,), b + "norm1.bias": (v,), b + "attn.qkv.weight": (3 * v, v),
                  b + "attn.qkv.bias": (3 * v,), b + "attn.proj.weight": (v, v), b + "attn.proj.bias": (v,),
                  b + "norm2.weight": (v,), b + "norm2.bias": (v,), b + "mlp.fc1.weight": (4 * v, v),
                  b + "mlp.fc1.bias": (4 * v,), b + "mlp.fc2.weight": (v, 4 * v), b + "mlp.fc2.bias": (v,)})
    e = "blip.text_encoder.embeddings."
    s.update({e + "word_embeddings.weight": (len(vocab()) + 2, t),
              e + "position_embeddings.weight": (TEXT["max_positions"], t),
              e + "LayerNorm.weight": (t,), e + "LayerNorm.bias": (t,), e + "position_ids": (1, TEXT["max_positions"])})
    for i in range(TEXT["layers"]):
        b = f"blip.text_encoder.encoder.layer.{i}."
        for att, kv in (("attention", t), ("crossattention", v)):
            for name, shape in (("query", (t, t)), ("key", (t, kv)), ("value", (t, kv))):
                s[f"{b}{att}.self.{name}.weight"], s[f"{b}{att}.self.{name}.bias"] = shape, (t,)
            s.update({f"{b}{att}.output.dense.weight": (t, t), f"{b}{att}.output.dense.bias": (t,),
                      f"{b}{att}.output.LayerNorm.weight": (t,), f"{b}{att}.output.LayerNorm.bias": (t,)})
        s.update({b + "intermediate.dense.weight": (TEXT["intermediate"], t),
                  b + "intermediate.dense.bias": (TEXT["intermediate"],),
                  b + "output.dense.weight": (t, TEXT["intermediate"]), b + "output.dense.bias": (t,),
                  b + "output.LayerNorm.weight": (t,), b + "output.LayerNorm.bias": (t,)})
    s.update({"blip.vision_proj.weight": (256, v), "blip.vision_proj.bias": (256,),
              "blip.text_proj.weight": (256, t), "blip.text_proj.bias": (256,)})
    widths = (t, *HEAD)
    for j, i in enumerate((0, 2, 4, 6, 7)):
        s[f"mlp.layers.{i}.weight"], s[f"mlp.layers.{i}.bias"] = (widths[j + 1], widths[j]), (widths[j + 1],)
    return s


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in sorted(original_shapes().items()):
        if key.endswith("position_ids"):
            state[key] = torch.arange(shape[1]).unsqueeze(0)
            continue
        x = torch.randn(shape, generator=g)
        if "norm" in key.lower() and key.endswith(".weight"):
            x = 1 + 0.1 * x
        elif key.endswith(".bias"):
            x = 0.1 * x
        elif "embed" in key or key.endswith("cls_token"):
            x = 0.5 * x
        else:
            x = x / math.sqrt(math.prod(shape[1:]))
        state[key] = x
    return state


def save_imagereward_twin(root: Path) -> Path:
    """``root/tiny-imagereward`` with ImageReward.pt, med_config.json and tokenizer/ (vocab.txt, uncased)."""
    out = Path(root) / "tiny-imagereward"
    if (out / "ImageReward.pt").exists():
        return out
    (out / "tokenizer").mkdir(parents=True, exist_ok=True)
    torch.save(random_state_dict(), out / "ImageReward.pt")
    (out / "med_config.json").write_text(json.dumps(med_config(), indent=2))
    (out / "tokenizer" / "vocab.txt").write_text("\n".join(vocab()) + "\n")
    (out / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True,
                                                                        "model_max_length": 512}))
    return out


def golden_images() -> list[Image.Image]:
    """Deterministic RGB images (smooth gradients plus seeded noise, so resizing matters), one per SIZES entry."""
    images = []
    for k, (w, h) in enumerate(SIZES):
        g = torch.Generator().manual_seed(100 + k)
        yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
        base = torch.stack([xx, yy, (xx + yy) / 2], -1) * 200
        noise = torch.randint(0, 56, (h, w, 3), generator=g).float()
        images.append(Image.fromarray((base + noise).clamp(0, 255).to(torch.uint8).numpy(), "RGB"))
    return images


def weights_checksum(state: dict[str, torch.Tensor]) -> float:
    return float(sum(t.double().abs().sum() for t in state.values()))
