"""What every verifier costs per image on this machine, against generating one image (issue 29, item 7).

    OMP_NUM_THREADS=1 python scripts/benchmark_verifiers.py --threads 1          # every configs/verifier/*.yaml
    python scripts/benchmark_verifiers.py --only shapes,compressibility --repeats 2

Prints a Markdown table (verifier, what it measures, metric and direction, seconds per image, that time over
one image of the embedded shapes model and over one SD-1.5-sized image, parity with the reference) and the
command, date, threads and CPU it ran with. One row per config in configs/verifier/.

How each row is measured (medians over ``--repeats`` after one warm-up call, in one process, one thread count):

- Model verifiers (clip, aesthetic, pickscore, hpsv2, imagereward, detector, vqascore, qwen): no full-size
  weights are on this machine and there is no model hub, so each is built at the FULL-SIZE architecture of the
  checkpoint its config names (the published config.json values are written below, with the model id) with
  RANDOM weights: compute time does not depend on weight values. The model, a tokenizer built in code (one
  token per word, as a real BPE gives for common English) and the real image processor are put into the
  verifier object where ``setup()`` would put them, and the verifier's own ``score()`` is timed on one
  512 x 512 image (SD-1.5's output), preprocessing included. Qwen2.5-VL-7B does not fit in fp32 next to the
  rest, so vqascore and qwen are timed at 2 and 4 decoder layers and at 2 and 4 vision blocks and
  extrapolated linearly to its 28 and 32. qwen (a generating grader) is timed as prefill plus N greedy decode
  steps through transformers' ``generate`` (outlines' JSON constraint left out), N a typical answer's length.
- Local verifiers without a network (shapes, shapes-proxy, shapes-reward, shapes-ensemble, compressibility,
  incompressibility, none, temporal): their config instantiated and timed on real images of the embedded
  shapes model, a batch of ``--local-batch`` images per call, divided by the batch.
- API verifiers (gemini, openai): not measurable offline (one API call per image); custom: the user's own.
- Generation reference, measured in the same process, interleaved with the verifiers: (a) one image of the
  default run's pipeline (configs/pipeline/shapes.yaml: the embedded shapes model, 10 steps), before every
  verifier; (b) one SD-1.5 image: diffusers' UNet2DConditionModel from SD 1.5's config with random weights on a
  64 x 64 latent, one evaluation timed (before the first verifier, at the middle and after the last) and
  multiplied by 50 steps x 2 (classifier-free guidance), plus the CLIP text encoder (prompt and negative prompt,
  77 tokens) and the VAE decode to 512 x 512, each timed once at the start.
"""
from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import re
import shlex
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = ROOT / "configs" / "verifier"
MODEL_PROMPT = "a photo of a red car and a blue bench"   # a GenEval template (the detector parses it)
SHAPES_PROMPT = "two red circles and a blue triangle"   # a shapes-world prompt (the shapes verifiers parse it)
IMAGE_SIDE = 512                                         # SD-1.5's output size: what the model verifiers score
QWEN_ANSWER_TOKENS = 360   # a typical grading answer: six explanations of ~40 tokens plus the JSON keys and scores
DEVICE = torch.device("cpu")

# ------------------------------------------------------------------------------------------ full-size configs
#: openai/clip-vit-large-patch14 config.json (clip, aesthetic, temporal's CLIP, detector's colour classifier).
CLIP_L = dict(text=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                        max_position_embeddings=77, hidden_act="quick_gelu"),
              vision=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                          image_size=224, patch_size=14, hidden_act="quick_gelu"), projection_dim=768)
#: laion/CLIP-ViT-H-14-laion2B-s32B-b79K and yuvalkirstain/PickScore_v1 config.json (pickscore; hpsv2's ViT-H-14).
CLIP_H = dict(text=dict(hidden_size=1024, intermediate_size=4096, num_attention_heads=16, num_hidden_layers=24,
                        max_position_embeddings=77, hidden_act="gelu"),
              vision=dict(hidden_size=1280, intermediate_size=5120, num_attention_heads=16, num_hidden_layers=32,
                          image_size=224, patch_size=14, hidden_act="gelu"), projection_dim=1024)
#: THUDM/ImageReward: BLIP ViT-L/16 at 224 px (vit="large") and med_config.json's BERT with cross-attention.
IR_VISION = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                 image_size=224, patch_size=16, layer_norm_eps=1e-6, hidden_act="gelu")
IR_TEXT = dict(vocab_size=30524, hidden_size=768, encoder_hidden_size=1024, intermediate_size=3072,
               num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=512, is_decoder=True)
IR_HEAD = (768, 1024, 128, 64, 16, 1)
#: LAION improved-aesthetic-predictor sac+logos+ava1-l14-linearMSE.pth: the MLP's widths.
AESTHETIC_HEAD = (768, 1024, 128, 64, 16, 1)
#: google/owlv2-base-patch16-ensemble config.json.
OWLV2 = dict(text=dict(hidden_size=512, intermediate_size=2048, num_attention_heads=8, num_hidden_layers=12,
                       max_position_embeddings=16),
             vision=dict(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                         image_size=960, patch_size=16), projection_dim=512)
#: Qwen/Qwen2.5-VL-7B-Instruct config.json (vqascore, qwen); depths are the benchmark's.
QWEN_TEXT = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_attention_heads=28,
                 num_key_value_heads=4, max_position_embeddings=128000, rope_theta=1000000.0,
                 rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}, tie_word_embeddings=False)
QWEN_VISION = dict(hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, window_size=112, hidden_act="silu")
QWEN_DEPTH = {"text": 28, "vision": 32}   # the full model's decoder layers and vision blocks
#: stable-diffusion-v1-5 unet/config.json, vae/config.json, text_encoder/config.json.
SD15_UNET = dict(sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
                 layers_per_block=2, cross_attention_dim=768, attention_head_dim=8, norm_num_groups=32,
                 down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                 up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
SD15_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                layers_per_block=2, sample_size=512, down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32)
SD15_STEPS, SD15_CFG = 50, 2

# ---------------------------------------------------------------------------------- what each verifier is
#: name -> (what it measures, parity with the reference as the repository shows it).
INFO = {
    "shapes": ("shapes world: every requirement of the prompt (colours, counts, relations) checked exactly",
               "it is the reference (the shapes world's own checker); rules unit-tested"),
    "shapes-proxy": ("shapes world: colour mass + blob count, an imperfect proxy", "none (the project's own)"),
    "shapes-reward": ("shapes world: a small learned reward predicting the checker", "none (the project's own)"),
    "shapes-ensemble": ("shapes-reward and shapes-proxy, ranks averaged", "none (the project's own)"),
    "compressibility": ("minus JPEG kB at quality 95 (DDPO)", "DDPO's definition; value tested against the JPEG "
                        "size, no run of ddpo-pytorch"),
    "incompressibility": ("JPEG kB at quality 95 (DDPO)", "as compressibility"),
    "none": ("nothing (every score 0; human-preference search)", "n/a"),
    "temporal": ("video: similarity of consecutive frames (CLIP or pixels)", "none (the project's own)"),
    "clip": ("prompt-image agreement: 2.5 * max(cos, 0) of CLIP ViT-L/14 embeddings",
             "equal to transformers' CLIPModel forward on a tiny random twin (1e-4); no reference-package golden"),
    "aesthetic": ("aesthetic quality, prompt-agnostic: LAION predictor v2 (MLP on CLIP ViT-L/14)",
                  "head arithmetic equal to a hand computation on a tiny twin (1e-4); no reference-package golden"),
    "pickscore": ("human preference: logit_scale * cos of a CLIP-H fine-tuned on Pick-a-Pic",
                  "equal to transformers' CLIPModel forward on a tiny random twin (1e-3); no reference-package golden"),
    "imagereward": ("human preference: BLIP ViT-L/16 + BERT cross-attention + MLP, normalised",
                    "golden values from image-reward 1.5 on the same random weights: max abs diff 8.65e-7 "
                    "over 25 pairs (tests/golden/imagereward.json)"),
    "hpsv2": ("human preference: cos of an open_clip ViT-H-14 fine-tuned on HPD v2 (v2.1)",
              "golden values from hpsv2 1.2.0 on the same random weights: max abs diff 1.49e-7 over 25 pairs "
              "(tests/golden/hpsv2.json)"),
    "vqascore": ('prompt faithfulness: P("Yes") of Qwen2.5-VL-7B to \'Does this figure show "{prompt}"?\'',
                 "none: t2v_metrics pins torch 2.5.1 and transformers 4.49; batched = one-at-a-time and = the "
                 "model's own forward (tiny twin)"),
    "qwen": ("six-metric grade (0-10) by Qwen2.5-VL-7B, JSON constrained by outlines",
             "tt-scale-flux's six metric names; no score comparison with its Qwen verifier; structured grading "
             "tested on a tiny twin"),
    "detector": ("GenEval-style: OWLv2 detections checked for counts, CLIP crop colours, positions",
                 "rules unit-tested on hand-made detections; thresholds uncalibrated against GenEval; "
                 "no comparison with GenEval's Mask2Former pipeline"),
    "ensemble": ("the paper's ensemble: aesthetic, clip, pickscore, ranks averaged per prompt",
                 "rank arithmetic unit-tested; members as their rows"),
    "gemini": ("six-metric grade (0-10) by Gemini (API)", "tt-scale-flux's six metric names, tts's own grading "
               "prompt; no score comparison (the provider's model grades)"),
    "openai": ("six-metric grade (0-10) by an OpenAI model (API)", "as gemini"),
    "custom": ("yours (verifier._target_=my_pkg.MyVerifier)", "yours"),
}
API = {"gemini", "openai"}
API_COST = "one API call per image (latency and price set by the provider; the run's cost ledger counts them)"
LOCAL = ("shapes", "shapes-proxy", "shapes-reward", "shapes-ensemble", "compressibility", "incompressibility",
         "none", "temporal")


@dataclass
class Cost:
    seconds: float | None   # per image (per 16-frame video for temporal); None: not measured here
    how: str                # how it was measured (or why not)


@dataclass
class Row:
    name: str
    measures: str
    metric: str
    cost: Cost
    parity: str


# ------------------------------------------------------------------------------------------------ timing
def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def free() -> None:
    gc.collect()


# ------------------------------------------------------------------------------------------- tokenizers
def _bytes_to_unicode() -> dict[int, str]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def _merges(words: list[str]) -> list[tuple[str, str]]:
    """BPE merges learnt on ``words`` until each is one symbol (the most frequent pair first, as BPE training
    does), so the tokenizer turns each of them into one token."""
    from collections import Counter

    def start(w: str) -> tuple[str, ...]:
        core, end = (w[:-4], "</w>") if w.endswith("</w>") else (w, "")
        return (*core[:-1], core[-1:] + end)

    segs = [start(w) for w in words]
    merges: list[tuple[str, str]] = []
    while True:
        counts = Counter(pair for seg in segs for pair in zip(seg, seg[1:]))
        if not counts:
            return merges
        pair = max(counts, key=lambda p: (counts[p], p))
        merges.append(pair)
        segs = [_merge(seg, pair) for seg in segs]


def _merge(seg: tuple[str, ...], pair: tuple[str, str]) -> tuple[str, ...]:
    out, i = [], 0
    while i < len(seg):
        if i + 1 < len(seg) and (seg[i], seg[i + 1]) == pair:
            out.append(seg[i] + seg[i + 1])
            i += 2
        else:
            out.append(seg[i])
            i += 1
    return tuple(out)


def clip_tokenizer(texts: list[str], max_length: int = 77):
    """A CLIP BPE whose merges make each word of ``texts`` one token (as the real 49408-token BPE does for common
    English words), so token counts are realistic."""
    from transformers import CLIPTokenizer

    words = sorted({w + "</w>" for t in texts for w in re.findall(r"[a-z]+|[0-9]|[^\sa-z0-9]+", t.lower())})
    merges = _merges(words)
    base = list(_bytes_to_unicode().values())
    vocab = base + [b + "</w>" for b in base] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(dict.fromkeys(vocab))}, merges=merges,
                         model_max_length=max_length)


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
#: Qwen2.5-VL's chat template, shortened to images and text (its default system message kept: it costs tokens).
QWEN_TEMPLATE = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
QWEN_TEMPLATE_TEXT = ("system\nYou are a helpful assistant.", "user\n", "assistant\n")  # its words, as tokens
QWEN_SPLIT = re.compile(r"'s|'t|'re|'ve|'m|'ll|'d|[^\r\n\w]?[^\W\d_]+|\d| ?[^\s\w]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def qwen_tokenizer(texts: list[str]):
    """A byte-level Qwen2 tokenizer with Qwen's special tokens whose merges make each pre-token of ``texts`` one
    token (Qwen's own BPE splits common English about the same way)."""
    from transformers import Qwen2Tokenizer

    table = _bytes_to_unicode()
    texts = [*texts, *QWEN_TEMPLATE_TEXT]
    words = sorted({"".join(table[b] for b in piece.encode()) for t in texts for piece in QWEN_SPLIT.findall(t)})
    merges = _merges(words)
    vocab = list(dict.fromkeys(list(table.values()) + ["".join(m) for m in merges]))
    ids = {c: i for i, c in enumerate(vocab)}
    for s in QWEN_SPECIALS:
        ids[s] = len(ids)
    tok = Qwen2Tokenizer(vocab=ids, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    tok.chat_template = QWEN_TEMPLATE
    return tok


# ------------------------------------------------------------------------------------------ model builders
def clip_model(spec: dict, tok):
    from transformers import CLIPConfig, CLIPModel

    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
               vocab_size=49408)
    cfg = CLIPConfig(text_config={**spec["text"], **ids}, vision_config=spec["vision"],
                     projection_dim=spec["projection_dim"])
    return CLIPModel(cfg).eval()


def clip_image_processor():
    try:
        from transformers import CLIPImageProcessorPil as cls
    except ImportError:
        from transformers import CLIPImageProcessor as cls
    return cls()  # 224 shortest edge, bicubic, centre crop 224, CLIP mean/std: the checkpoints' preprocessor_config


def install_clip(v, spec: dict) -> None:
    """What ClipVerifier.setup puts in place, at full size with random weights."""
    v._tok = clip_tokenizer([MODEL_PROMPT])
    v._model, v._proc, v._dev, v._dtype = clip_model(spec, v._tok), clip_image_processor(), DEVICE, torch.float32


def random_head(widths, indices=(0, 2, 4, 6, 7)) -> dict:
    return {k: v for i, (a, b) in zip(indices, zip(widths, widths[1:]))
            for k, v in ((f"layers.{i}.weight", torch.randn(b, a) / a ** 0.5), (f"layers.{i}.bias", torch.zeros(b)))}


def build_clip():
    from tts.verifiers.clip import CLIPScoreVerifier

    v = CLIPScoreVerifier(device="cpu", dtype="fp32")
    install_clip(v, CLIP_L)
    return v, "score() of CLIP ViT-L/14 (openai/clip-vit-large-patch14), random weights"


def build_aesthetic():
    from tts.verifiers.aesthetic import AestheticVerifier, build_head

    v = AestheticVerifier(device="cpu", dtype="fp32")
    install_clip(v, CLIP_L)
    v._head = build_head(random_head(AESTHETIC_HEAD)).eval()
    return v, "score() of CLIP ViT-L/14 + the LAION MLP (768-1024-128-64-16-1), random weights"


def build_pickscore():
    from tts.verifiers.pickscore import PickScoreVerifier

    v = PickScoreVerifier(device="cpu", dtype="fp32")
    install_clip(v, CLIP_H)
    return v, "score() of CLIP ViT-H/14 (yuvalkirstain/PickScore_v1), random weights"


def build_hpsv2():
    from tts.verifiers.hpsv2 import HPSv2Verifier

    v = HPSv2Verifier(device="cpu", dtype="fp32")
    v._tok = clip_tokenizer([MODEL_PROMPT])
    v._model, v._dev, v._dtype = clip_model(CLIP_H, v._tok), DEVICE, torch.float32
    return v, "score() of open_clip ViT-H-14 as transformers' CLIPModel (xswu/HPSv2 v2.1), random weights"


def build_imagereward():
    from transformers import BlipTextConfig, BlipVisionConfig, BlipVisionModel
    from transformers.models.blip.modeling_blip_text import BlipTextModel

    from tts.verifiers import imagereward as ir

    v = ir.ImageRewardVerifier(device="cpu", dtype="fp32")
    vision = BlipVisionModel(BlipVisionConfig(**IR_VISION))
    text = BlipTextModel(BlipTextConfig(**IR_TEXT, pad_token_id=0, bos_token_id=IR_TEXT["vocab_size"] - 2,
                                        sep_token_id=102), add_pooling_layer=False)
    head = ir._head(random_head(IR_HEAD))
    v._model = ir.ImageRewardModel(vision, text, head).eval()
    with tempfile.TemporaryDirectory() as folder:
        words = re.findall(r"[a-z]+|[^\sa-z]", MODEL_PROMPT.lower())
        Path(folder, "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
                                                        *dict.fromkeys(words)]) + "\n")
        Path(folder, "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}))
        v._tok = ir.load_tokenizer(folder)
    v._dev, v._dtype = DEVICE, torch.float32
    return v, "score() of BLIP ViT-L/16 + BERT-base with cross-attention (THUDM/ImageReward), random weights"


def build_detector():
    from transformers import Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessorPil, Owlv2Processor

    from tts.verifiers.detector import DetectorVerifier

    # thresholds of 1: the random detector keeps no box, so the (cheap) NMS does not see thousands of boxes
    v = DetectorVerifier(threshold=1.0, counting_threshold=1.0, device="cpu", dtype="fp32")
    tok = clip_tokenizer([MODEL_PROMPT], max_length=16)
    cfg = Owlv2Config(text_config={**OWLV2["text"], "bos_token_id": tok.bos_token_id,
                                   "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id},
                      vision_config=OWLV2["vision"], projection_dim=OWLV2["projection_dim"])
    v._detector = Owlv2ForObjectDetection(cfg).eval()
    v._processor = Owlv2Processor(image_processor=Owlv2ImageProcessorPil(), tokenizer=tok)
    texts = [MODEL_PROMPT] + [t.format(c=c, noun=n) for n in ("car", "bench") for c in
                              ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white")
                              for t in ("a photo of a {c} {noun}", "a photo of a {c}-colored {noun}",
                                        "a photo of a {c} object")]
    ctok = clip_tokenizer(texts)
    v._clip = (clip_model(CLIP_L, ctok), ctok, clip_image_processor(), DEVICE, torch.float32)
    v._dev, v._dtype = DEVICE, torch.float32
    return v, ("score() with OWLv2 base/16 at 960 px (google/owlv2-base-patch16-ensemble), random weights, "
               "+ CLIP ViT-L/14 colour of one crop per coloured object (2 here)")


def time_detector(v, image, repeats: int) -> float:
    """score() (detection and rules; no box kept by the random detector) plus the colour step the prompt asks for
    when each object is found once: one CLIP crop embedding and the 30 colour texts per coloured noun."""
    box = (64.0, 64.0, 320.0, 256.0)
    det = median_time(lambda: v.score([MODEL_PROMPT], [image]), repeats)
    colour = median_time(lambda: [v.colours(image, noun, [box]) for noun in ("car", "bench")], repeats)
    return det + colour


# ------------------------------------------------------------------------------------------------- qwen
class Qwen:
    """Qwen2.5-VL-7B's layers at full width, built once at 4 decoder layers and 4 vision blocks; ``depth(t, v)``
    keeps the first t and v of them (a vision block with full attention last, as the real model's 8th, 16th, ...)."""

    def __init__(self, texts: list[str]):
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

        from tts.verifiers.qwen import image_only_processor

        self.tok = qwen_tokenizer(texts)
        ids = {s: self.tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
        cfg = Qwen2_5_VLConfig(
            text_config={**QWEN_TEXT, "num_hidden_layers": 4, "bos_token_id": None, "eos_token_id": ids["<|im_end|>"]},
            vision_config={**QWEN_VISION, "depth": 4, "fullatt_block_indexes": [3]},
            image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
            vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"],
            tie_word_embeddings=False)
        self.model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
        self.layers = self.model.model.language_model.layers
        self.blocks = self.model.model.visual.blocks
        self.proc = image_only_processor(qwen_image_processor(), self.tok)

    def depth(self, text: int, vision: int) -> None:
        self.model.model.language_model.layers = torch.nn.ModuleList(list(self.layers)[:text])
        self.model.model.visual.blocks = torch.nn.ModuleList(list(self.blocks)[:vision])
        self.model.model.visual.fullatt_block_indexes = [vision - 1]


def qwen_image_processor():
    try:
        from transformers import Qwen2VLImageProcessorPil as cls
    except ImportError:
        from transformers import Qwen2VLImageProcessor as cls
    return cls()  # Qwen2.5-VL's preprocessor_config: patch 14, merge 2, min 56*56, max 28*28*1280 pixels


def extrapolate(measure: Callable[[int, int], tuple[float, ...]]) -> tuple[float, ...]:
    """Linear in decoder layers and in vision blocks, from depths (2, 2), (4, 2) and (2, 4) to the full model
    (each number ``measure`` returns, separately)."""
    base, text4, vision4 = measure(2, 2), measure(4, 2), measure(2, 4)
    print(f"  depth (2, 2): {base}, (4, 2): {text4}, (2, 4): {vision4}", file=sys.stderr)
    return tuple(b + (t - b) / 2 * (QWEN_DEPTH["text"] - 2) + (v - b) / 2 * (QWEN_DEPTH["vision"] - 2)
                 for b, t, v in zip(base, text4, vision4))


def measure_vqascore(image, repeats: int) -> Cost:
    from tts.verifiers.vqascore import QUESTION, VQAScoreVerifier

    q = Qwen([QUESTION.format(prompt=MODEL_PROMPT), "Yes"])
    v = VQAScoreVerifier(device="cpu", dtype="fp32")
    v._model, v._proc = q.model, q.proc
    v._answer_id = q.tok.encode(v.answer, add_special_tokens=False)[0]

    def at(text: int, vision: int) -> float:
        q.depth(text, vision)
        return (median_time(lambda: v.score([MODEL_PROMPT], [image]), repeats),)

    chat = v.chat(MODEL_PROMPT)
    tokens = len(q.proc(text=[chat], images=[image.convert("RGB")], return_tensors="pt")["input_ids"][0])
    [seconds] = extrapolate(at)
    del v, q
    free()
    return Cost(seconds, f"score() of Qwen2.5-VL-7B (Qwen/Qwen2.5-VL-7B-Instruct), random weights: one forward of "
                         f"{tokens} tokens (question + 512 px image) with the logits of every position; "
                         "extrapolated from depth 2 and 4 (decoder and vision)")


def measure_qwen(image, repeats: int) -> Cost:
    from transformers import LogitsProcessor, LogitsProcessorList

    from tts.verifiers import grading
    from tts.verifiers.qwen import _with_format

    template = grading.load_template(None)
    text = grading.fill_template(template, MODEL_PROMPT, image)
    q = Qwen([text, '{"accuracy_to_prompt": {"explanation": "', '", "score": 7}}'])
    shown = _with_format(image, 512)  # the qwen config's max_side
    chat = q.proc.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}],
                                      tokenize=False, add_generation_prompt=True)
    steps = 4

    class Clock(LogitsProcessor):
        def __init__(self):
            self.marks: list[float] = []

        def __call__(self, input_ids, scores):
            self.marks.append(time.perf_counter())
            return scores

    def once() -> tuple[float, float]:
        inputs = q.proc(text=[chat], images=[shown], return_tensors="pt")
        clock, start = Clock(), time.perf_counter()
        q.model.generate(**inputs, max_new_tokens=steps + 1, min_new_tokens=steps + 1, do_sample=False,
                         logits_processor=LogitsProcessorList([clock]))
        gaps = [b - a for a, b in zip(clock.marks, clock.marks[1:])]
        return clock.marks[0] - start, statistics.median(gaps)

    def at(text: int, vision: int) -> float:
        q.depth(text, vision)
        once()
        runs = [once() for _ in range(repeats)]
        return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)

    prompt_tokens = len(q.proc(text=[chat], images=[shown], return_tensors="pt")["input_ids"][0])
    prefill, step = extrapolate(at)
    del q
    free()
    return Cost(prefill + QWEN_ANSWER_TOKENS * step,
                f"prefill ({prompt_tokens} tokens: grading prompt + 512 px image; {prefill:.0f} s) + {QWEN_ANSWER_TOKENS} "
                f"greedy decode steps ({step:.2f} s each; a typical six-metric answer; the config's max_new_tokens is 1024) "
                         "through transformers' generate, outlines' constraint left out; Qwen2.5-VL-7B, random "
                         "weights, extrapolated from depth 2 and 4 (decoder and vision)")


# -------------------------------------------------------------------------------------------- references
class Reference:
    """One image of the embedded shapes model (the default pipeline) and of an SD-1.5-sized model, timed between
    the verifiers."""

    def __init__(self, with_sd: bool, repeats: int):
        from tts.app.cli import config_dir
        from tts.core.noise import fresh
        from tts.pipelines import PipelineSpec
        from tts.sampling.generate import make_generator

        preset = yaml.safe_load((config_dir() / "pipeline" / "shapes.yaml").read_text())
        preset.pop("_target_")
        self.spec = PipelineSpec(**{**preset, "device": "cpu"})
        self.gen, self.fresh = make_generator(self.spec), fresh
        self.shapes_times: list[float] = []
        self.unet_times: list[float] = []
        self.seed = 0
        self.sd_fixed = 0.0
        self.with_sd = with_sd
        if with_sd:
            self._build_sd(repeats)

    def images(self, n: int, prompt: str = SHAPES_PROMPT):
        images, _, _ = self.gen.generate(prompt, [self.fresh(1000 + i) for i in range(n)])
        return images

    def shapes_once(self) -> None:
        self.seed += 1
        start = time.perf_counter()
        self.gen.generate(SHAPES_PROMPT, [self.fresh(self.seed)])
        self.shapes_times.append(time.perf_counter() - start)

    def _build_sd(self, repeats: int) -> None:
        from diffusers import AutoencoderKL, UNet2DConditionModel
        from transformers import CLIPTextConfig, CLIPTextModel

        self.unet = UNet2DConditionModel(**SD15_UNET).eval()
        self.latent, self.context = torch.randn(1, 4, 64, 64), torch.randn(1, 77, 768)
        text = CLIPTextModel(CLIPTextConfig(**CLIP_L["text"], vocab_size=49408)).eval()
        vae = AutoencoderKL(**SD15_VAE).eval()
        ids = torch.randint(0, 49408, (2, 77))
        with torch.no_grad():
            self.text_s = median_time(lambda: text(input_ids=ids), repeats)
            self.vae_s = median_time(lambda: vae.decode(self.latent / 0.18215), 1, warmup=0)
        del text, vae
        free()

    @torch.no_grad()
    def unet_once(self) -> None:
        if not self.with_sd:
            return
        t = torch.tensor([500])
        if not self.unet_times:
            self.unet(self.latent, t, encoder_hidden_states=self.context)  # warm-up
        start = time.perf_counter()
        self.unet(self.latent, t, encoder_hidden_states=self.context)
        self.unet_times.append(time.perf_counter() - start)

    def shapes_s(self) -> float:
        return statistics.median(self.shapes_times)

    def sd_s(self) -> float | None:
        if not self.unet_times:
            return None
        return statistics.median(self.unet_times) * SD15_STEPS * SD15_CFG + self.text_s + self.vae_s


# -------------------------------------------------------------------------------------------- verifiers
def config_names() -> list[str]:
    return sorted(p.stem for p in CONFIGS.glob("*.yaml"))


def metric_and_direction(name: str) -> str:
    """The config's choice_of_metric and its direction, from the verifier class (higher_is_better)."""
    import importlib

    cfg = yaml.safe_load((CONFIGS / f"{name}.yaml").read_text())
    target = cfg.get("_target_")
    if not target or target == "???":
        return "yours"
    module, _, cls_name = target.rpartition(".")
    cls = getattr(importlib.import_module(module), cls_name)
    metric = cfg.get("choice_of_metric") or (cls.metrics[0] if cls.metrics else None)
    if name == "none":
        return f"`{metric}` (constant 0)"
    lower = metric in getattr(cls, "lower_is_better", frozenset())
    return f"`{metric}`, {'lower' if lower else 'higher'} is better"


def instantiate_local(name: str):
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(CONFIGS / f"{name}.yaml")
    if name == "temporal":
        cfg.backend = "pixel"  # no CLIP weights here (auto falls back to pixels; the clip row gives CLIP's cost)
        cfg.device, cfg.dtype = "cpu", "fp32"
    return instantiate(cfg, _convert_="all")


def measure_local(name: str, images, repeats: int) -> Cost:
    from tts.core.video import Video

    v = instantiate_local(name)
    v.setup()
    if name == "temporal":
        video = Video(frames=list(images[:16]), fps=8)
        seconds = median_time(lambda: v.score([SHAPES_PROMPT], [video]), repeats)
        return Cost(seconds, "score() of one 16-frame 32 px video, pixel backend (the CLIP backend costs one CLIP "
                             "ViT-L/14 image embedding per frame: 16 x the clip row's image side)")
    seconds = median_time(lambda: v.score([SHAPES_PROMPT] * len(images), images), repeats) / len(images)
    return Cost(seconds, f"score() of its config on {len(images)} real 32 px shapes images per call")


MODEL_BUILDERS = {"clip": build_clip, "aesthetic": build_aesthetic, "pickscore": build_pickscore,
                  "hpsv2": build_hpsv2, "imagereward": build_imagereward, "detector": build_detector}
ENSEMBLE_MEMBERS = ("aesthetic", "clip", "pickscore")


def measure_model(name: str, image, repeats: int) -> Cost:
    if name == "vqascore":
        return measure_vqascore(image, repeats)
    if name == "qwen":
        return measure_qwen(image, repeats)
    v, how = MODEL_BUILDERS[name]()
    with torch.no_grad():
        if name == "detector":
            seconds = time_detector(v, image, repeats)
        else:
            seconds = median_time(lambda: v.score([MODEL_PROMPT], [image]), repeats)
    del v
    free()
    return Cost(seconds, how + f", one {IMAGE_SIDE} px image per call")


def measure(name: str, ctx: dict, repeats: int) -> Cost:
    if name in API:
        return Cost(None, API_COST)
    if name == "custom":
        return Cost(None, "the user's own verifier: its own cost")
    if name in LOCAL:
        return measure_local(name, ctx["shapes_images"], repeats)
    if name in MODEL_BUILDERS or name in ("vqascore", "qwen"):
        return measure_model(name, ctx["model_image"], repeats)
    if name == "ensemble":
        parts = [ctx["costs"].get(m) for m in ENSEMBLE_MEMBERS]
        if any(p is None or p.seconds is None for p in parts):
            return Cost(None, "the sum of its members' rows (measure them too)")
        return Cost(sum(p.seconds for p in parts), "the sum of its members' rows (aesthetic + clip + pickscore): "
                                                   "each member scores every image itself")
    return Cost(None, "not measured: this script has no way to build it yet")


# ------------------------------------------------------------------------------------------------ output
def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    return f"{s:.3g}" if s >= 1e-3 else f"{s:.2e}"


def fmt_ratio(s: float | None, ref: float | None) -> str:
    if s is None or not ref:
        return "-"
    r = s / ref
    return f"{r:.3g}" if r >= 1e-3 else f"{r:.1e}"


def table(rows: list[Row], shapes_s: float, sd_s: float | None) -> str:
    head = ("| verifier | what it measures | metric, direction | s per image | x one shapes image | "
            "x one SD-1.5 image | parity with the reference | measured as |\n|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        cost = fmt_seconds(r.cost.seconds) if r.cost.seconds is not None else r.cost.how
        how = r.cost.how if r.cost.seconds is not None else "-"
        lines.append(f"| `{r.name}` | {r.measures} | {r.metric} | {cost} | {fmt_ratio(r.cost.seconds, shapes_s)} | "
                     f"{fmt_ratio(r.cost.seconds, sd_s)} | {r.parity} | {how} |")
    return "\n".join(lines)


def machine() -> str:
    model = ""
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} logical CPUs"


def parse(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated verifier config names (default: every config)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=2, help="timed calls per measurement, after one warm-up")
    p.add_argument("--local-batch", type=int, default=16, help="images per call for the local verifiers")
    p.add_argument("--no-sd", action="store_true", help="skip the SD-1.5 reference (its column shows -)")
    p.add_argument("--json", default=None, help="also write the rows and references to this JSON file")
    args = p.parse_args(argv)
    names = config_names()
    chosen = [n.strip() for n in args.only.split(",") if n.strip()] or names
    unknown = [n for n in chosen if n not in names]
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], names, n=1)
        p.error(f"no verifier config {unknown[0]!r} in configs/verifier"
                + (f" (did you mean {hint[0]!r}?)" if hint else f"; choices: {', '.join(names)}"))
    if args.repeats < 1 or args.local_batch < 1:
        p.error("--repeats and --local-batch must be at least 1")
    args.names = chosen
    return args


def run(args: argparse.Namespace) -> dict:
    """Measure the chosen verifiers and the references; the rows, the references and the Markdown table."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    measured = list(args.names)
    if "ensemble" in measured:  # its cost is its members'
        measured = [m for m in ENSEMBLE_MEMBERS if m not in measured] + measured
        measured.remove("ensemble")
        measured.append("ensemble")
    ref = Reference(with_sd=not args.no_sd, repeats=args.repeats)
    images = ref.images(args.local_batch)
    ctx = {"shapes_images": images, "costs": {},
           "model_image": images[0].convert("RGB").resize((IMAGE_SIDE, IMAGE_SIDE), resample=3)}
    ref.unet_once()
    wall = time.perf_counter()
    for i, name in enumerate(measured):
        ref.shapes_once()
        start = time.perf_counter()
        ctx["costs"][name] = measure(name, ctx, args.repeats)
        print(f"[{name}: {time.perf_counter() - start:.1f} s]", file=sys.stderr, flush=True)
        if i == len(measured) // 2:
            ref.unet_once()
    ref.shapes_once()
    ref.unet_once()
    rows = [Row(n, INFO.get(n, ("?", "?"))[0], metric_and_direction(n), ctx["costs"][n], INFO.get(n, ("?", "?"))[1])
            for n in measured]
    shapes_s, sd_s = ref.shapes_s(), ref.sd_s()
    return {"rows": rows, "shapes_s": shapes_s, "sd_s": sd_s, "ref": ref, "wall_s": time.perf_counter() - wall,
            "table": table(rows, shapes_s, sd_s)}


def main(argv=None) -> int:
    args = parse(argv)
    started = time.perf_counter()
    out = run(args)
    ref = out["ref"]
    command = "python scripts/benchmark_verifiers.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    print(f"{command}\n{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
          f"{torch.get_num_threads()} torch thread(s), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}, "
          f"{machine()}, torch {torch.__version__}\n")
    sd = (f"one SD-1.5 image: {out['sd_s']:.1f} s = UNet {statistics.median(ref.unet_times):.2f} s/eval "
          f"(median of {len(ref.unet_times)}) x {SD15_STEPS} steps x {SD15_CFG} (CFG) + text encoder "
          f"{ref.text_s:.2f} s + VAE decode {ref.vae_s:.2f} s" if out["sd_s"] else "SD-1.5 reference skipped")
    print(f"one shapes image (configs/pipeline/shapes.yaml, 10 steps): {out['shapes_s'] * 1000:.1f} ms "
          f"(median of {len(ref.shapes_times)}); {sd}\n")
    print(out["table"])
    print(f"\nwall time: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps({
            "rows": [{"name": r.name, "seconds": r.cost.seconds, "how": r.cost.how} for r in out["rows"]],
            "shapes_s": out["shapes_s"], "sd_s": out["sd_s"]}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
