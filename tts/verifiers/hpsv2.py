"""HPSv2 / HPSv2.1 (Wu et al. 2023, "Human Preference Score v2"): an open_clip ViT-H-14 fine-tuned on human
preference pairs; the score is the cosine of the L2-normalised image and prompt embeddings (about 0.2-0.35
for typical images; higher is better). ``version``: ``v2.1`` (default) or ``v2.0``.

Rebuilt on transformers' ``CLIPModel``: the ORIGINAL checkpoint (``HPS_v2.1_compressed.pt`` or
``HPS_v2_compressed.pt``, ``{"state_dict": open_clip keys}``, from the hub repo ``xswu/HPSv2`` or a local
file) is mapped onto it as transformers' own open_clip conversion does (fused ``in_proj`` split into q/k/v,
``c_fc``/``c_proj`` -> ``fc1``/``fc2``, projections transposed). open_clip itself is not needed: it imports
torchvision, whose registry wheels are CUDA builds that do not import next to a CPU torch. The tokenizer is
open_clip's CLIP BPE as a transformers ``CLIPTokenizer`` (the laion ViT-H-14 repo's), 77 tokens, prompts
HTML-unescaped and whitespace-collapsed as open_clip does. Preprocessing is the hpsv2 package's: RGB, to a
tensor, bicubic (antialiased) resize of the LONGER side to 224, zero padding to a square, CLIP normalisation.
Equal to ``hpsv2.img_score.score`` within 1e-4 (tests/golden/hpsv2.json, made by scripts/hpsv2_golden.py).
"""
from __future__ import annotations

import difflib
import html
import re

import torch

from ..core.records import MetricScore
from ..core.torchutil import check_dtype, resolve_device, resolve_dtype
from .aesthetic import read_state_dict
from .base import Verifier, VerifierError

CHECKPOINTS = {"v2.1": "HPS_v2.1_compressed.pt", "v2.0": "HPS_v2_compressed.pt"}
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
#: open_clip residual-block names -> transformers' CLIPEncoderLayer names.
BLOCK_KEYS = [("ln_1.", "layer_norm1."), ("ln_2.", "layer_norm2."), ("attn.out_proj.", "self_attn.out_proj."),
              ("mlp.c_fc.", "mlp.fc1."), ("mlp.c_proj.", "mlp.fc2.")]


class HPSv2Verifier(Verifier):
    name = "hpsv2"
    metrics = ("hps",)

    def __init__(self, version: str = "v2.1", checkpoint: str | None = None,
                 tokenizer_name: str = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K", vision_heads: int = 16,
                 text_heads: int = 16, choice_of_metric: str | None = "hps", device: str = "auto", dtype: str = "auto"):
        super().__init__(choice_of_metric)
        if version not in CHECKPOINTS:
            close = difflib.get_close_matches(str(version), CHECKPOINTS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise VerifierError(f"verifier.version must be one of {', '.join(CHECKPOINTS)}, got {version!r}{hint}")
        check_dtype("verifier.dtype", dtype, allow_auto=True)
        self.version, self.checkpoint, self.tokenizer_name = version, checkpoint, tokenizer_name
        self.vision_heads, self.text_heads, self.device, self.dtype = vision_heads, text_heads, device, dtype
        self._model = None

    def setup(self) -> None:
        from transformers import CLIPTokenizer

        self._dev = resolve_device(self.device)
        self._dtype = resolve_dtype(self.dtype, self._dev)
        try:
            state = read_state_dict(self.checkpoint or f"xswu/HPSv2/{CHECKPOINTS[self.version]}")
        except FileNotFoundError:
            raise FileNotFoundError(f"verifier.checkpoint {self.checkpoint!r} not found (a local "
                                    f"{CHECKPOINTS[self.version]}, or <hub repo>/<file>, or null for xswu/HPSv2)") from None
        self._model = build_model(state.get("state_dict", state), self.vision_heads, self.text_heads)
        self._model.to(self._dev, self._dtype).eval()
        self._tok = CLIPTokenizer.from_pretrained(self.tokenizer_name)

    def reward(self, prompts: list[str], pixel_values: torch.Tensor) -> torch.Tensor:
        """The differentiable score of preprocessed images (N, 3, 224, 224), one per prompt."""
        context = self._model.config.text_config.max_position_embeddings
        tokens = self._tok([clean(p) for p in prompts], padding=True, truncation=True, max_length=context,
                           return_tensors="pt").to(self._dev)
        image = self._model.get_image_features(pixel_values=pixel_values.to(self._dev, self._dtype))
        text = self._model.get_text_features(**tokens)
        image, text = (getattr(x, "pooler_output", x).float() for x in (image, text))
        return torch.nn.functional.cosine_similarity(image, text, dim=-1)

    @torch.no_grad()
    def score(self, prompts, images):
        size = self._model.config.vision_config.image_size
        pixels = torch.stack([preprocess(im, size) for im in images])
        return [{"hps": MetricScore(score=v, explanation=f"HPS{self.version} cos(image, prompt)")}
                for v in self.reward(list(prompts), pixels).tolist()]


def clean(text: str) -> str:
    """open_clip's prompt cleaning (HTML entities unescaped twice, whitespace collapsed)."""
    return re.sub(r"\s+", " ", html.unescape(html.unescape(text)).strip()).strip()


def preprocess(image, size: int = 224) -> torch.Tensor:
    """hpsv2's ``preprocess_val``: RGB -> [0, 1] tensor -> bicubic antialiased resize of the longer side to
    ``size`` (each side rounded) -> zero padding centred (the odd pixel right/bottom) -> CLIP mean/std."""
    image = image.convert("RGB")
    w, h = image.size
    x = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1).float() / 255
    scale = size / float(max(h, w))
    if scale != 1.0:
        nh, nw = round(h * scale), round(w * scale)
        x = torch.nn.functional.interpolate(x[None], size=(nh, nw), mode="bicubic", align_corners=False,
                                            antialias=True)[0]
        ph, pw = size - nh, size - nw
        x = torch.nn.functional.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    return (x - torch.tensor(CLIP_MEAN).view(3, 1, 1)) / torch.tensor(CLIP_STD).view(3, 1, 1)


def convert_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip CLIP keys -> transformers CLIPModel keys."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    out = {"logit_scale": state["logit_scale"],
           "text_model.embeddings.token_embedding.weight": state["token_embedding.weight"],
           "text_model.embeddings.position_embedding.weight": state["positional_embedding"],
           "text_model.final_layer_norm.weight": state["ln_final.weight"],
           "text_model.final_layer_norm.bias": state["ln_final.bias"],
           "text_projection.weight": state["text_projection"].T,
           "vision_model.embeddings.class_embedding": state["visual.class_embedding"],
           "vision_model.embeddings.position_embedding.weight": state["visual.positional_embedding"],
           "vision_model.embeddings.patch_embedding.weight": state["visual.conv1.weight"],
           "vision_model.pre_layrnorm.weight": state["visual.ln_pre.weight"],
           "vision_model.pre_layrnorm.bias": state["visual.ln_pre.bias"],
           "vision_model.post_layernorm.weight": state["visual.ln_post.weight"],
           "vision_model.post_layernorm.bias": state["visual.ln_post.bias"],
           "visual_projection.weight": state["visual.proj"].T}
    for src, dst in (("visual.transformer.resblocks.", "vision_model.encoder.layers."),
                     ("transformer.resblocks.", "text_model.encoder.layers.")):
        for key, value in state.items():
            if not key.startswith(src):
                continue
            i, rest = key[len(src):].split(".", 1)
            base = f"{dst}{i}."
            if rest.startswith("attn.in_proj_"):
                kind = rest.removeprefix("attn.in_proj_")  # weight or bias
                for name, part in zip(("q_proj", "k_proj", "v_proj"), value.chunk(3, dim=0)):
                    out[f"{base}self_attn.{name}.{kind}"] = part
                continue
            for a, b in BLOCK_KEYS:
                if rest.startswith(a):
                    out[base + b + rest[len(a):]] = value
                    break
            else:
                raise ValueError(f"HPSv2 checkpoint: unknown key {key}")
    return out


def build_model(state: dict[str, torch.Tensor], vision_heads: int, text_heads: int):
    """A transformers CLIPModel holding the open_clip checkpoint (sizes read from the tensors)."""
    from transformers import CLIPConfig, CLIPModel

    missing = [k for k in ("visual.conv1.weight", "token_embedding.weight", "text_projection")
               if k not in {k.removeprefix("module.") for k in state}]
    if missing:
        raise ValueError(f"not an open_clip CLIP state dict (HPS_v2*.pt): it lacks {', '.join(missing)}")
    sd = convert_state(state)
    v_width = sd["vision_model.embeddings.class_embedding"].shape[0]
    patch = sd["vision_model.embeddings.patch_embedding.weight"].shape[-1]
    grid = round((sd["vision_model.embeddings.position_embedding.weight"].shape[0] - 1) ** 0.5)
    vocab, t_width = sd["text_model.embeddings.token_embedding.weight"].shape

    def layers(prefix):
        return 1 + max(int(k[len(prefix):].split(".")[0]) for k in sd if k.startswith(prefix))

    text = dict(vocab_size=vocab, hidden_size=t_width, intermediate_size=sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                num_hidden_layers=layers("text_model.encoder.layers."), num_attention_heads=text_heads,
                max_position_embeddings=sd["text_model.embeddings.position_embedding.weight"].shape[0],
                hidden_act="gelu", layer_norm_eps=1e-5, bos_token_id=vocab - 2, eos_token_id=vocab - 1,
                pad_token_id=vocab - 1)
    vision = dict(hidden_size=v_width, intermediate_size=sd["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
                  num_hidden_layers=layers("vision_model.encoder.layers."), num_attention_heads=vision_heads,
                  image_size=grid * patch, patch_size=patch, hidden_act="gelu", layer_norm_eps=1e-5)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision,
                                 projection_dim=sd["visual_projection.weight"].shape[0]))
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(f"HPSv2 checkpoint does not fit CLIP: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return model
