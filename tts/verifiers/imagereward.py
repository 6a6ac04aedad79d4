"""ImageReward (Xu et al. 2023, "ImageReward: Learning and Evaluating Human Preferences for Text-to-Image
Generation"): a BLIP ViT-L/16 image encoder at 224 px, a BERT text encoder whose layers cross-attend to the
image tokens, and an MLP head (768-1024-128-64-16-1, no activations) on the text's [CLS] state; the score is
normalised by the published mean (0.16717) and std (1.03334). Higher is better; about -2 to 2.

Rebuilt on transformers' BLIP classes (``BlipVisionModel``, ``BlipTextModel``), loading the ORIGINAL
checkpoint files: ``ImageReward.pt`` (a state dict with the original key names, mapped here) and
``med_config.json`` (the text encoder's BERT config), from a hub repo (``THUDM/ImageReward``) or a local
folder; the tokenizer is bert-base-uncased plus BLIP's ``[DEC]`` and ``[ENC]`` tokens, prompts padded and cut
to 35 tokens, as the reference does. Preprocessing is the reference's (torchvision's ``Resize(224, BICUBIC)``,
``CenterCrop``, CLIP normalisation) done with Pillow. Equal to the reference package's scores within 1e-4
(tests/golden/imagereward.json, made by scripts/imagereward_golden.py). Batched: one forward per batch.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from ..core.records import MetricScore
from ..core.torchutil import check_dtype, resolve_device, resolve_dtype
from .base import Verifier

MEAN, STD = 0.16717362830052426, 1.0333394966054072  # ImageReward.py, the reward's normalisation
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
MAX_TOKENS = 35
HEAD_LAYERS = (0, 2, 4, 6, 7)  # Linear indices of the original nn.Sequential (Dropouts between)
#: Original vision key pieces -> transformers' BlipVisionModel names (as transformers' BLIP conversion maps them).
VISION_KEYS = [(r"^cls_token$", "embeddings.class_embedding"), (r"^pos_embed$", "embeddings.position_embedding"),
               (r"^patch_embed\.proj\.", "embeddings.patch_embedding."), (r"^norm\.", "post_layernorm."),
               (r"^blocks\.(\d+)\.norm1\.", r"encoder.layers.\1.layer_norm1."),
               (r"^blocks\.(\d+)\.norm2\.", r"encoder.layers.\1.layer_norm2."),
               (r"^blocks\.(\d+)\.attn\.qkv\.", r"encoder.layers.\1.self_attn.qkv."),
               (r"^blocks\.(\d+)\.attn\.proj\.", r"encoder.layers.\1.self_attn.projection."),
               (r"^blocks\.(\d+)\.mlp\.", r"encoder.layers.\1.mlp.")]
UNUSED = ("blip.text_encoder.embeddings.position_ids",)


class ImageRewardModel(torch.nn.Module):
    """BLIP vision encoder -> BERT with cross-attention -> MLP on [CLS] -> (r - mean) / std."""

    def __init__(self, vision, text, head: torch.nn.Sequential):
        super().__init__()
        self.vision, self.text, self.head = vision, text, head

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        image = self.vision(pixel_values=pixel_values).last_hidden_state
        image_mask = torch.ones(image.shape[:-1], dtype=torch.long, device=image.device)
        text = self.text(input_ids=input_ids, attention_mask=attention_mask, encoder_hidden_states=image,
                         encoder_attention_mask=image_mask, is_decoder=False).last_hidden_state
        return ((self.head(text[:, 0, :].float()) - MEAN) / STD).squeeze(-1)


class ImageRewardVerifier(Verifier):
    name = "imagereward"
    metrics = ("imagereward",)

    def __init__(self, model_name: str = "THUDM/ImageReward", tokenizer_name: str = "bert-base-uncased",
                 choice_of_metric: str | None = "imagereward", device: str = "auto", dtype: str = "auto"):
        super().__init__(choice_of_metric)
        check_dtype("verifier.dtype", dtype, allow_auto=True)
        self.model_name, self.tokenizer_name, self.device, self.dtype = model_name, tokenizer_name, device, dtype
        self._model = None

    def setup(self) -> None:
        self._dev = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype, self._dev)
        files = checkpoint_files(self.model_name)
        self._model = build_model(torch.load(files["ImageReward.pt"], map_location="cpu", weights_only=True),
                                  json.loads(Path(files["med_config.json"]).read_text()))
        self._model.to(self._dev, self._dtype).eval()
        self._model.head.float()
        self._tok = load_tokenizer(self.tokenizer_name)

    def reward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        """The differentiable reward of preprocessed images (N, 3, 224, 224), one per prompt."""
        tokens = self._tok(prompts, padding="max_length", truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        return self._model(pixel_values.to(self._dev, self._dtype), tokens["input_ids"].to(self._dev),
                           tokens["attention_mask"].to(self._dev))

    @torch.no_grad()
    def score(self, prompts, images):
        size = self._model.vision.config.image_size
        pixels = torch.stack([preprocess(im, size) for im in images])
        return [{"imagereward": MetricScore(score=v, explanation="ImageReward (normalised; higher is better)")}
                for v in self.reward(list(prompts), pixels).tolist()]


def preprocess(image, size: int = 224) -> torch.Tensor:
    """The reference's torchvision transform on a PIL image: Resize(size, BICUBIC) (shorter side; the longer
    truncated, as torchvision does), CenterCrop(size), RGB, to [0, 1], CLIP mean/std."""
    from PIL import Image

    w, h = image.size
    if min(w, h) != size:
        w, h = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        image = image.resize((w, h), Image.BICUBIC)
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    image = image.crop((left, top, left + size, top + size)).convert("RGB")
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(size, size, 3)
    x = x.permute(2, 0, 1).float() / 255.0
    return (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


def checkpoint_files(model_name: str) -> dict[str, str]:
    """Paths of ImageReward.pt and med_config.json: in a local folder, else downloaded from the hub repo."""
    names = ("ImageReward.pt", "med_config.json")
    folder = Path(model_name).expanduser()
    if folder.is_dir():
        missing = [n for n in names if not (folder / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{folder} lacks {', '.join(missing)} (an ImageReward folder holds "
                                    f"ImageReward.pt and med_config.json, as the hub repo THUDM/ImageReward)")
        return {n: str(folder / n) for n in names}
    from huggingface_hub import hf_hub_download

    return {n: hf_hub_download(model_name, n) for n in names}


def load_tokenizer(name: str):
    """bert-base-uncased (or a local WordPiece folder) plus BLIP's [DEC] (bos) and [ENC] tokens."""
    from transformers import BertTokenizer

    tok = BertTokenizer.from_pretrained(name)
    tok.add_special_tokens({"bos_token": "[DEC]"})
    tok.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    return tok


def split_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """The original state dict as (vision, text, head) state dicts in transformers' / our names."""
    vision, text, head, unknown = {}, {}, {}, []
    for key, value in state.items():
        if key.startswith("blip.visual_encoder."):
            vision[_vision_name(key.removeprefix("blip.visual_encoder."))] = value
        elif key.startswith(UNUSED):
            continue
        elif key.startswith("blip.text_encoder."):
            text[key.removeprefix("blip.text_encoder.")] = value
        elif key.startswith("mlp.layers."):
            head[key.removeprefix("mlp.")] = value
        elif not key.startswith("blip."):  # other BLIP parts (projections, queues) play no part in the reward
            unknown.append(key)
    if unknown or not vision or not text or not head:
        raise ValueError(f"not an ImageReward state dict (ImageReward.pt): unexpected keys {unknown[:5]}"
                         if unknown else "not an ImageReward state dict: it lacks blip.visual_encoder.*, "
                                         "blip.text_encoder.* or mlp.layers.*")
    return vision, text, head


def _vision_name(key: str) -> str:
    for pattern, repl in VISION_KEYS:
        new, n = re.subn(pattern, repl, key)
        if n:
            return new
    raise ValueError(f"ImageReward.pt: unknown vision key blip.visual_encoder.{key}")


def build_model(state: dict[str, torch.Tensor], med_config: dict) -> ImageRewardModel:
    """ImageRewardModel with every tensor of the original checkpoint in place (sizes read from the tensors
    and med_config.json; vision heads at BLIP's head width 64)."""
    from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    v_state, t_state, h_state = split_state(state)
    hidden = v_state["embeddings.class_embedding"].shape[-1]
    patch = v_state["embeddings.patch_embedding.weight"].shape[-1]
    grid = round((v_state["embeddings.position_embedding"].shape[1] - 1) ** 0.5)
    layers = 1 + max(int(k.split(".")[2]) for k in v_state if k.startswith("encoder.layers."))
    vision = BlipVisionModel(BlipVisionConfig(
        hidden_size=hidden, intermediate_size=v_state["encoder.layers.0.mlp.fc1.weight"].shape[0],
        num_hidden_layers=layers, num_attention_heads=max(1, hidden // 64), image_size=grid * patch,
        patch_size=patch, layer_norm_eps=1e-6, hidden_act="gelu"))
    c = med_config
    text = BlipTextModel(BlipTextConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden_size"], encoder_hidden_size=hidden,
        intermediate_size=c["intermediate_size"], num_hidden_layers=c["num_hidden_layers"],
        num_attention_heads=c["num_attention_heads"], max_position_embeddings=c["max_position_embeddings"],
        hidden_act=c.get("hidden_act", "gelu"), layer_norm_eps=c.get("layer_norm_eps", 1e-12),
        pad_token_id=c.get("pad_token_id", 0), bos_token_id=c["vocab_size"] - 2,  # [DEC], as BLIP adds it
        sep_token_id=102 if c["vocab_size"] > 102 else None, is_decoder=True), add_pooling_layer=False)
    head = _head(h_state)
    for name, module, sd in (("vision", vision, v_state), ("text", text, t_state)):
        missing, unexpected = module.load_state_dict(sd, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        if missing or unexpected:
            raise ValueError(f"ImageReward.pt does not fit the {name} encoder: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    return ImageRewardModel(vision, text, head)


def _head(state: dict[str, torch.Tensor]) -> torch.nn.Sequential:
    layers = sorted({int(k.split(".")[1]) for k in state if k.endswith(".weight")})
    if tuple(layers) != HEAD_LAYERS:
        raise ValueError(f"ImageReward.pt: the head has Linear layers {layers}, expected {list(HEAD_LAYERS)}")
    modules = [torch.nn.Identity() for _ in range(layers[-1] + 1)]
    for i in layers:
        out_dim, in_dim = state[f"layers.{i}.weight"].shape
        modules[i] = torch.nn.Linear(in_dim, out_dim)
    head = torch.nn.Sequential()
    head.add_module("layers", torch.nn.Sequential(*modules))
    head.load_state_dict(state)
    return head
