"""More tiny random-weight twins, built offline and saved like hub checkpoints (tests/twins.py has the families'):
HiDream-I1 (four text encoders incl. a Llama), an SD 1.5 twin whose safety checker flags every image, a tiny
instruct LLM with a chat template (the prompt rewriter), and a verifier that records the prompts it judged."""
from __future__ import annotations

import string
from pathlib import Path

import torch
from twins import QWEN_TEMPLATE, build_sd15, clip_tokenizer, t5_text, t5_tokenizer

from tts.core.records import MetricScore
from tts.verifiers.base import Verifier


def llama_tokenizer():
    """A character-level fast tokenizer with Llama 3's special tokens (no hub)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<|begin_of_text|>": 0, "<|end_of_text|>": 1, "<unk>": 2}
    for c in string.ascii_lowercase + " ":
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|end_of_text|>",
                                   unk_token="<unk>", model_max_length=128)


def llama_text(hidden: int = 16):
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=hidden, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                                        bos_token_id=0, eos_token_id=1, pad_token_id=1))


def clip_text_128(hidden: int = 32):
    """A CLIP text encoder with 128 positions (HiDream pads its CLIP prompts to max_sequence_length)."""
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    return CLIPTextModelWithProjection(CLIPTextConfig(
        bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=37, num_attention_heads=4,
        num_hidden_layers=2, vocab_size=64, projection_dim=32, max_position_embeddings=128))


def build_hidream(with_llama: bool = True):
    """HiDreamImagePipeline with the sizes of diffusers' own test (patch 2, 4 latent channels, 1+1 layers, MoE of 4
    experts); a one-block VAE, so the pipeline's fixed 128*8-pixel-square area is 128 x 128 here."""
    from diffusers import (AutoencoderKL, FlowMatchEulerDiscreteScheduler, HiDreamImagePipeline,
                           HiDreamImageTransformer2DModel)

    transformer = HiDreamImageTransformer2DModel(
        patch_size=2, in_channels=4, out_channels=4, num_layers=1, num_single_layers=1, attention_head_dim=8,
        num_attention_heads=4, caption_channels=[32, 16], text_emb_dim=64, num_routed_experts=4,
        num_activated_experts=2, axes_dims_rope=(4, 2, 2), max_resolution=(32, 32), llama_layers=(0, 1)).eval()
    vae = AutoencoderKL(block_out_channels=[4], in_channels=3, out_channels=3, latent_channels=4,
                        down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"], norm_num_groups=2,
                        layers_per_block=1, sample_size=32, scaling_factor=0.3611, shift_factor=0.1159)
    return HiDreamImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, transformer=transformer,
        text_encoder=clip_text_128(), tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text_128(), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_text(), tokenizer_3=t5_tokenizer(),
        text_encoder_4=llama_text() if with_llama else None, tokenizer_4=llama_tokenizer() if with_llama else None)


def save_hidream(root: Path, with_llama: bool = True) -> Path:
    """The HiDream twin in diffusers layout; without the Llama, as HiDream-ai's checkpoints ship (it is loaded on
    its own: pipeline.components), with the Llama saved beside it in ``<root>/tiny-llama``."""
    path = Path(root) / ("hidream" if with_llama else "hidream-no-llama")
    if not (path / "model_index.json").exists():
        torch.manual_seed(0)
        build_hidream(with_llama).save_pretrained(path)
    return path


def save_llama(root: Path) -> Path:
    """The twin's Llama text encoder and tokenizer alone (as meta-llama's repository holds them)."""
    path = Path(root) / "tiny-llama"
    if not (path / "config.json").exists():
        torch.manual_seed(0)
        build_hidream(True).text_encoder_4.save_pretrained(path)
        llama_tokenizer().save_pretrained(path)
    return path


def build_flagging_sd15():
    """The SD 1.5 twin with a tiny StableDiffusionSafetyChecker whose concept thresholds are below any cosine
    distance, so it flags (and blacks out) every image, as the real checker does for flagged content."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    pipe = build_sd15()
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    text = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, vocab_size=64)
    checker = StableDiffusionSafetyChecker(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    with torch.no_grad():
        checker.concept_embeds_weights.fill_(-2.0)  # cos - (-2) > 0 for every image
    extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe.register_modules(safety_checker=checker, feature_extractor=extractor)
    pipe.register_to_config(requires_safety_checker=True)
    return pipe


def save_flagging_sd15(root: Path) -> Path:
    path = Path(root) / "sd15-flagging"
    if not (path / "model_index.json").exists():
        torch.manual_seed(0)
        build_flagging_sd15().save_pretrained(path)
    return path


def save_instruct_llm(root: Path) -> Path:
    """A tiny random Qwen2 causal LM with a byte-level tokenizer and Qwen's chat template (the rewriter's twin)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    out = Path(root) / "tiny-qwen2.5-instruct"
    if (out / "config.json").exists():
        return out
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for s in specials:
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": specials})
    tok.chat_template = QWEN_TEMPLATE
    ids = {s: tok.convert_tokens_to_ids(s) for s in specials}
    cfg = Qwen2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                      bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    torch.manual_seed(0)
    Qwen2ForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


class PromptSpy(Verifier):
    """Scores brightness and records every prompt it was asked to judge (the rewriter must not change them)."""

    name = "spy"
    metrics = ("brightness",)
    prompts: list[str] = []
    images: int = 0

    def score(self, prompts, images):
        import numpy as np

        PromptSpy.prompts += list(prompts)
        PromptSpy.images += len(images)
        return [{"brightness": MetricScore(score=float(np.asarray(i).mean()))} for i in images]
