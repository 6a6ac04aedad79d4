"""A tiny random HPSv2 checkpoint in the ORIGINAL layout (``{"state_dict": open_clip CLIP keys}``, as
HPS_v2.1_compressed.pt), a tiny CLIP BPE (open_clip's gzip merges format, and the same vocabulary as a
transformers CLIPTokenizer folder), and the golden inputs.

Needs only torch and Pillow (and transformers for the tokenizer folder), so the suite and
``scripts/hpsv2_golden.py`` (run with the reference ``hpsv2`` package elsewhere) build the same weights.
"""
from __future__ import annotations

import gzip
import math
from pathlib import Path

import torch

from imagereward_twin import golden_images  # noqa: F401  (the same images for every reward's golden values)

#: Tiny sizes; the real ViT-H-14: vision 1280 x 32 layers (head width 80), text 1024 x 24 (16 heads), embed 1024.
VISION = dict(width=64, layers=2, heads=2, patch=14, image=224)
TEXT = dict(width=32, layers=2, heads=4, context=77)
EMBED = 16
WORDS = ["a", "photo", "of", "cat", "cats", "dog", "red", "blue", "car", "bench", "two", "left", "the", "on",
         "and", "astronaut", "moon", "egg", "green", "painting", "horse", "riding"]
PROMPTS = [
    "a photo of a cat",
    "A red car &amp; a BLUE bench,   on the moon!",
    "two dogs left of the astronaut riding a green horse",
    "zebra xylophone quokka 42",
    " ".join(["a painting of a cat riding a horse"] * 10),  # longer than 77 tokens: truncated, eot kept
]


def bytes_to_unicode() -> dict[int, str]:
    """CLIP's byte-to-character table (the same in open_clip and transformers)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def merges() -> list[tuple[str, str]]:
    """Left-to-right merges that build each of WORDS (end-of-word marked with </w>)."""
    out: list[tuple[str, str]] = []
    for w in WORDS:
        pieces = list(w[:-1]) + [w[-1] + "</w>"]
        while len(pieces) > 1:
            pair = (pieces[0], pieces[1])
            if pair not in out:
                out.append(pair)
            pieces = ["".join(pair)] + pieces[2:]
    return out


def vocab() -> list[str]:
    """open_clip's SimpleTokenizer order: 256 bytes, 256 bytes + </w>, merges, then start and end of text."""
    base = list(bytes_to_unicode().values())
    return base + [b + "</w>" for b in base] + ["".join(m) for m in merges()] + ["<|startoftext|>", "<|endoftext|>"]


def original_shapes() -> dict[str, tuple[int, ...]]:
    v, t = VISION["width"], TEXT["width"]
    n = (VISION["image"] // VISION["patch"]) ** 2 + 1
    s = {"visual.class_embedding": (v,), "visual.positional_embedding": (n, v), "visual.proj": (v, EMBED),
         "visual.conv1.weight": (v, 3, VISION["patch"], VISION["patch"]), "visual.ln_pre.weight": (v,),
         "visual.ln_pre.bias": (v,), "visual.ln_post.weight": (v,), "visual.ln_post.bias": (v,),
         "positional_embedding": (TEXT["context"], t), "text_projection": (t, EMBED), "logit_scale": (),
         "token_embedding.weight": (len(vocab()), t), "ln_final.weight": (t,), "ln_final.bias": (t,)}
    for prefix, width, layers in (("visual.transformer", v, VISION["layers"]), ("transformer", t, TEXT["layers"])):
        for i in range(layers):
            b = f"{prefix}.resblocks.{i}."
            s.update({b + "ln_1.weight": (width,), b + "ln_1.bias": (width,),
                      b + "attn.in_proj_weight": (3 * width, width), b + "attn.in_proj_bias": (3 * width,),
                      b + "attn.out_proj.weight": (width, width), b + "attn.out_proj.bias": (width,),
                      b + "ln_2.weight": (width,), b + "ln_2.bias": (width,),
                      b + "mlp.c_fc.weight": (4 * width, width), b + "mlp.c_fc.bias": (4 * width,),
                      b + "mlp.c_proj.weight": (width, 4 * width), b + "mlp.c_proj.bias": (width,)})
    return s


def random_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in sorted(original_shapes().items()):
        x = torch.randn(shape, generator=g)
        if key == "logit_scale":
            x = torch.tensor(math.log(100.0))
        elif ("ln_" in key or "ln_final" in key) and key.endswith(".weight"):
            x = 1 + 0.1 * x
        elif key.endswith("bias"):
            x = 0.1 * x
        elif "embedding" in key:
            x = 0.5 * x
        else:
            x = x / math.sqrt(shape[0] if key in ("visual.proj", "text_projection") else math.prod(shape[1:]))
        state[key] = x
    return state


def open_clip_model_config() -> dict:
    """The tiny model in open_clip's model-config format (for the reference)."""
    return {"embed_dim": EMBED,
            "vision_cfg": {"image_size": VISION["image"], "layers": VISION["layers"], "width": VISION["width"],
                           "head_width": VISION["width"] // VISION["heads"], "patch_size": VISION["patch"]},
            "text_cfg": {"context_length": TEXT["context"], "vocab_size": len(vocab()), "width": TEXT["width"],
                         "heads": TEXT["heads"], "layers": TEXT["layers"]}}


def save_bpe_gz(path: Path) -> Path:
    """The merges in open_clip's bpe_simple_vocab_16e6.txt.gz format (a header line, then one merge a line)."""
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges()))  # no final newline: it would add a token
    return path


def save_hpsv2_twin(root: Path) -> Path:
    """``root/tiny-hpsv2`` with HPS_v2.1_compressed.pt ({"state_dict": ...}) and tokenizer/ (CLIPTokenizer)."""
    out = Path(root) / "tiny-hpsv2"
    if (out / "HPS_v2.1_compressed.pt").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": random_state_dict()}, out / "HPS_v2.1_compressed.pt")
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer(vocab={t: i for i, t in enumerate(vocab())}, merges=merges(),
                        model_max_length=TEXT["context"])
    tok.save_pretrained(out / "tokenizer")
    return out


def weights_checksum(state: dict[str, torch.Tensor]) -> float:
    return float(sum(t.double().abs().sum() for t in state.values()))
