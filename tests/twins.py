"""Tiny random-weight twins of real diffusers pipelines, built offline and saved with ``save_pretrained``.

Each builder makes the real pipeline class from the real component classes (sizes from diffusers'
own tests), with character-level CLIP / T5 tokenizers built in code (no hub), and writes it to a
folder that tts then loads through the same ``from_pretrained`` path as a real checkpoint.
"""
from __future__ import annotations

import string
from pathlib import Path

import torch

CHARS = list(string.ascii_lowercase)


def clip_tokenizer():
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in CHARS:
        vocab[c] = len(vocab)
        vocab[c + "</w>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


def t5_tokenizer():
    from transformers import T5Tokenizer

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -1.0)]
    vocab += [("\u2581" + c, -1.0) for c in CHARS] + [(c, -2.0) for c in CHARS]
    return T5Tokenizer(vocab=vocab, extra_ids=0, model_max_length=512)


def char_tokenizer(cls_name: str = "PreTrainedTokenizerFast", specials=("<pad>", "<eos>", "<bos>", "<unk>"),
                   chars: str = string.ascii_lowercase + " ", **kw):
    """A character-level fast tokenizer of the class ``cls_name`` (GemmaTokenizerFast, Qwen2TokenizerFast, ...),
    its special tokens first in the vocabulary (no hub); ``kw`` names them (pad_token=..., eos_token=...)."""
    import transformers
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    vocab = {t: i for i, t in enumerate(specials)}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    unk = kw.get("unk_token", specials[-1])
    tok = Tokenizer(models.WordLevel(vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    return getattr(transformers, cls_name)(tokenizer_object=tok, model_max_length=kw.pop("model_max_length", 4096),
                                          **kw)


def clip_text(projection: bool = False, hidden: int = 32, proj: int = 32):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    cfg = CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=hidden, intermediate_size=37,
                         num_attention_heads=4, num_hidden_layers=2, vocab_size=64, projection_dim=proj)
    return CLIPTextModelWithProjection(cfg) if projection else CLIPTextModel(cfg)


def t5_text(d_model: int = 32):
    from transformers import T5Config, T5EncoderModel

    return T5EncoderModel(T5Config(d_model=d_model, d_ff=37, d_kv=8, num_layers=2, num_heads=4, vocab_size=64,
                                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))


def vae(latent_channels: int = 4, blocks=(4, 8), **kw):
    from diffusers import AutoencoderKL

    return AutoencoderKL(block_out_channels=list(blocks), in_channels=3, out_channels=3, latent_channels=latent_channels,
                         down_block_types=["DownEncoderBlock2D"] * len(blocks),
                         up_block_types=["UpDecoderBlock2D"] * len(blocks), norm_num_groups=2 if blocks[0] > 1 else 1,
                         layers_per_block=1, sample_size=32, **kw)


def build_sd15():
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=2)
    return StableDiffusionPipeline(vae=vae(), text_encoder=clip_text(), tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=DDIMScheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def build_sdxl():
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    unet = UNet2DConditionModel(block_out_channels=(4, 8), layers_per_block=1, sample_size=16, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time",
                                addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
                                projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=2)
    return StableDiffusionXLPipeline(vae=vae(), text_encoder=clip_text(), tokenizer=clip_tokenizer(),
                                     text_encoder_2=clip_text(projection=True), tokenizer_2=clip_tokenizer(),
                                     unet=unet, scheduler=EulerDiscreteScheduler())


def build_pixart_sigma():
    from diffusers import DDIMScheduler, PixArtSigmaPipeline, PixArtTransformer2DModel

    transformer = PixArtTransformer2DModel(sample_size=8, num_layers=2, patch_size=2, attention_head_dim=8,
                                           num_attention_heads=3, caption_channels=32, in_channels=4,
                                           cross_attention_dim=24, out_channels=8, attention_bias=True,
                                           activation_fn="gelu-approximate", num_embeds_ada_norm=1000,
                                           norm_type="ada_norm_single", norm_elementwise_affine=False, norm_eps=1e-6)
    return PixArtSigmaPipeline(tokenizer=t5_tokenizer(), text_encoder=t5_text(), vae=vae(), transformer=transformer,
                               scheduler=DDIMScheduler())


def build_sd3(**layout):
    """SD3's layout; ``layout``: SD3.5's transformer options (``qk_norm``, ``dual_attention_layers``)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    transformer = SD3Transformer2DModel(sample_size=16, patch_size=1, in_channels=4, num_layers=1,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=32, pooled_projection_dim=64, out_channels=4, **layout)
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae(blocks=(4,), shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False,
                use_post_quant_conv=False),
        text_encoder=clip_text(projection=True), tokenizer=clip_tokenizer(),
        text_encoder_2=clip_text(projection=True), tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5_text(), tokenizer_3=t5_tokenizer())


def build_sd35():
    """SD3.5 Medium's layout: QK-normalised, its (only) layer with dual attention (MMDiT-X)."""
    return build_sd3(qk_norm="rms_norm", dual_attention_layers=(0,))


def build_flux(guidance_embeds: bool = False):
    """Flux-schnell's layout; ``guidance_embeds=True``: Flux-dev's (distilled guidance as a transformer input)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8],
                                         guidance_embeds=guidance_embeds)
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), transformer=transformer,
                        vae=vae(latent_channels=1, blocks=(4,), shift_factor=0.0609, scaling_factor=1.5035,
                                use_quant_conv=False, use_post_quant_conv=False),
                        text_encoder=clip_text(), tokenizer=clip_tokenizer(),
                        text_encoder_2=t5_text(), tokenizer_2=t5_tokenizer())


def gemma_text(hidden: int = 8):
    """A tiny Gemma-2 text encoder (Sana's) with diffusers' test sizes."""
    from transformers import Gemma2Config, Gemma2Model

    return Gemma2Model(Gemma2Config(head_dim=16, hidden_size=hidden, intermediate_size=64, max_position_embeddings=8192,
                                    num_attention_heads=2, num_hidden_layers=1, num_key_value_heads=2, vocab_size=64,
                                    pad_token_id=0, eos_token_id=1, bos_token_id=2, attn_implementation="eager"))


def gemma_tokenizer():
    return char_tokenizer("GemmaTokenizerFast", pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                          unk_token="<unk>")


def dc_ae():
    """A two-block deep-compression autoencoder (Sana's AutoencoderDC) with diffusers' test sizes: 4 channels, /2."""
    from diffusers import AutoencoderDC

    return AutoencoderDC(in_channels=3, latent_channels=4, attention_head_dim=2,
                         encoder_block_types=("ResBlock", "EfficientViTBlock"),
                         decoder_block_types=("ResBlock", "EfficientViTBlock"), encoder_block_out_channels=(8, 8),
                         decoder_block_out_channels=(8, 8), encoder_qkv_multiscales=((), (5,)),
                         decoder_qkv_multiscales=((), (5,)), encoder_layers_per_block=(1, 1),
                         decoder_layers_per_block=[1, 1], downsample_block_type="conv",
                         upsample_block_type="interpolate", decoder_norm_types="rms_norm", decoder_act_fns="silu",
                         scaling_factor=0.41407)


def sana_transformer(**kw):
    from diffusers import SanaTransformer2DModel

    return SanaTransformer2DModel(patch_size=1, in_channels=4, out_channels=4, num_layers=1, num_attention_heads=2,
                                  attention_head_dim=4, num_cross_attention_heads=2, cross_attention_head_dim=4,
                                  cross_attention_dim=8, caption_channels=8, sample_size=32, **kw)


def build_sana():
    """SanaPipeline on the released checkpoints' scheduler: DPM-Solver++ with flow sigmas, shift 3."""
    from diffusers import DPMSolverMultistepScheduler, SanaPipeline

    scheduler = DPMSolverMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    return SanaPipeline(tokenizer=gemma_tokenizer(), text_encoder=gemma_text(), vae=dc_ae(),
                        transformer=sana_transformer(), scheduler=scheduler)


def build_sana_sprint():
    """SanaSprintPipeline: a guidance-embedding, QK-normalised Sana transformer on the SCM (TrigFlow) scheduler."""
    from diffusers import SanaSprintPipeline, SCMScheduler

    return SanaSprintPipeline(tokenizer=gemma_tokenizer(), text_encoder=gemma_text(), vae=dc_ae(),
                              transformer=sana_transformer(qk_norm="rms_norm_across_heads", guidance_embeds=True),
                              scheduler=SCMScheduler())


MISTRAL_TEMPLATE = ("{% for m in messages %}{% if m['role'] == 'system' %}[SYSTEM_PROMPT]{% else %}[INST]{% endif %}"
                    "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}"
                    "{% if m['role'] == 'system' %}[/SYSTEM_PROMPT]{% else %}[/INST]{% endif %}{% endfor %}")


def mistral_tokenizer():
    """FLUX.2's tokenizer: a character-level tokenizer with Mistral's chat tokens and template (left truncation, so a
    short max_sequence_length keeps the prompt, not the system message). The real checkpoint ships a
    PixtralProcessor, which needs torchvision and only forwards the text here: a plain tokenizer does the same."""
    specials = ("<pad>", "[IMG]", "<s>", "</s>", "[IMG_BREAK]", "[IMG_END]", "[INST]", "[/INST]", "[SYSTEM_PROMPT]",
                "[/SYSTEM_PROMPT]", "<unk>")
    tok = char_tokenizer("LlamaTokenizerFast", specials, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                         unk_token="<unk>", truncation_side="left")
    tok.add_special_tokens({"additional_special_tokens": list(specials[1:-1])})
    tok.chat_template = MISTRAL_TEMPLATE
    return tok


def mistral3_text(layers: int = 30):
    """A tiny Mistral-3 (Pixtral vision tower + Mistral text model) with the 30 layers FLUX.2 reads (10, 20, 30)."""
    from transformers import Mistral3Config, Mistral3ForConditionalGeneration

    text = dict(model_type="mistral", vocab_size=64, hidden_size=16, intermediate_size=37, max_position_embeddings=512,
                num_attention_heads=4, num_hidden_layers=layers, num_key_value_heads=2, rope_theta=1e9,
                sliding_window=None, bos_token_id=2, eos_token_id=3, pad_token_id=0)
    vision = dict(model_type="pixtral", hidden_size=16, num_hidden_layers=1, num_attention_heads=4,
                  intermediate_size=37, image_size=30, patch_size=6, num_channels=3)
    return Mistral3ForConditionalGeneration(Mistral3Config(text_config=text, vision_config=vision, bos_token_id=2,
                                                           eos_token_id=3, pad_token_id=0, image_seq_length=4,
                                                           vision_feature_layer=-1, image_token_index=1))


def build_flux2():
    """Flux2Pipeline with diffusers' test sizes (1 + 1 layers, 4 token channels, a one-block FLUX.2 VAE)."""
    from diffusers import AutoencoderKLFlux2, FlowMatchEulerDiscreteScheduler, Flux2Pipeline, Flux2Transformer2DModel

    transformer = Flux2Transformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                          attention_head_dim=16, num_attention_heads=2, joint_attention_dim=48,
                                          timestep_guidance_channels=256, axes_dims_rope=[4, 4, 4, 4])
    vae = AutoencoderKLFlux2(sample_size=32, in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",),
                             up_block_types=("UpDecoderBlock2D",), block_out_channels=(4,), layers_per_block=1,
                             latent_channels=1, norm_num_groups=1, use_quant_conv=False, use_post_quant_conv=False)
    return Flux2Pipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=mistral3_text(),
                         tokenizer=mistral_tokenizer(), transformer=transformer)


def build_qwenimage():
    """QwenImagePipeline with diffusers' test sizes (2 layers, patch 2, a 3-level Qwen-Image VAE: /4) on the tiny
    Qwen2.5-VL (hidden 32, the transformer's joint attention dimension)."""
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)

    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3, joint_attention_dim=32,
                                              guidance_embeds=False, axes_dims_rope=(8, 4, 4))
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.1, -0.2, 0.0, 0.3],
                                 latents_std=[1.5, 0.8, 1.0, 2.0])
    tok = qwen_tokenizer()
    return QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=qwen25vl(tok).eval(),
                             tokenizer=tok, transformer=transformer)


def build_zimage():
    """ZImagePipeline with diffusers' test sizes (2 + 1 refiner layers, dim 32, a two-block Flux-like VAE) on a tiny
    Qwen3 text model; the transformer's padding tokens (torch.empty in its constructor) fixed to ones, as there."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Config, Qwen3Model

    transformer = ZImageTransformer2DModel(all_patch_size=(2,), all_f_patch_size=(1,), in_channels=16, dim=32,
                                           n_layers=2, n_refiner_layers=1, n_heads=2, n_kv_heads=2, norm_eps=1e-5,
                                           qk_norm=True, cap_feat_dim=16, rope_theta=256.0, t_scale=1000.0,
                                           axes_dims=[8, 4, 4], axes_lens=[256, 32, 32])
    with torch.no_grad():
        transformer.x_pad_token.fill_(1.0)
        transformer.cap_pad_token.fill_(1.0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 2,
                        up_block_types=["UpDecoderBlock2D"] * 2, block_out_channels=[32, 64], layers_per_block=1,
                        latent_channels=16, norm_num_groups=32, sample_size=32, scaling_factor=0.3611,
                        shift_factor=0.1159)
    tok = qwen_tokenizer()
    text = Qwen3Model(Qwen3Config(hidden_size=16, intermediate_size=16, num_hidden_layers=2, num_attention_heads=2,
                                  num_key_value_heads=2, vocab_size=len(tok), max_position_embeddings=512))
    return ZImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=text, tokenizer=tok,
                          transformer=transformer)


def build_wan():
    """WanPipeline with diffusers' test sizes (2 layers, heads 2 x 12, a base-3 Wan VAE: 8x in space, 4x in time) on
    a tiny random UMT5 encoder (the real model's class)."""
    from diffusers import AutoencoderKLWan, FlowMatchEulerDiscreteScheduler, WanPipeline, WanTransformer3DModel

    vae = AutoencoderKLWan(base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1,
                           temperal_downsample=[False, True, True])
    transformer = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12,
                                        in_channels=16, out_channels=16, text_dim=32, freq_dim=256, ffn_dim=32,
                                        num_layers=2, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
                                        rope_max_seq_len=32)
    from transformers import UMT5Config, UMT5EncoderModel

    text = UMT5EncoderModel(UMT5Config(d_model=32, d_ff=37, d_kv=8, num_layers=2, num_heads=4, vocab_size=64,
                                       decoder_start_token_id=0, pad_token_id=0, eos_token_id=1))
    return WanPipeline(tokenizer=t5_tokenizer(), text_encoder=text, vae=vae, transformer=transformer,
                       scheduler=FlowMatchEulerDiscreteScheduler(shift=7.0))


def build_ltx():
    """LTXPipeline with diffusers' test sizes (1 layer, 4 heads x 8, an 8-channel LTX VAE: 8x in space, 4x in time,
    causal encoder) on a tiny random T5 encoder."""
    from diffusers import (AutoencoderKLLTXVideo, FlowMatchEulerDiscreteScheduler, LTXPipeline,
                           LTXVideoTransformer3DModel)

    transformer = LTXVideoTransformer3DModel(in_channels=8, out_channels=8, patch_size=1, patch_size_t=1,
                                             num_attention_heads=4, attention_head_dim=8, cross_attention_dim=32,
                                             num_layers=1, caption_channels=32)
    vae = AutoencoderKLLTXVideo(in_channels=3, out_channels=3, latent_channels=8, block_out_channels=(8, 8, 8, 8),
                                decoder_block_out_channels=(8, 8, 8, 8), layers_per_block=(1, 1, 1, 1, 1),
                                decoder_layers_per_block=(1, 1, 1, 1, 1),
                                spatio_temporal_scaling=(True, True, False, False),
                                decoder_spatio_temporal_scaling=(True, True, False, False),
                                decoder_inject_noise=(False, False, False, False, False),
                                upsample_residual=(False, False, False, False), upsample_factor=(1, 1, 1, 1),
                                timestep_conditioning=False, patch_size=1, patch_size_t=1, encoder_causal=True,
                                decoder_causal=False)
    return LTXPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=t5_text(),
                       tokenizer=t5_tokenizer(), transformer=transformer)


#: family -> (builder, the preset it stands in for, call overrides small enough for CPU tests)
TWINS = {
    "flux": (build_flux, "flux-dev", {"height": 16, "width": 16, "num_inference_steps": 2, "max_sequence_length": 16}),
    "sd15": (build_sd15, "sd15", {"height": 32, "width": 32, "num_inference_steps": 2}),
    "sdxl": (build_sdxl, "sdxl", {"height": 32, "width": 32, "num_inference_steps": 2}),
    "pixart-sigma": (build_pixart_sigma, "pixart-sigma",
                     {"height": 16, "width": 16, "num_inference_steps": 2, "max_sequence_length": 16}),
    "sd3": (build_sd3, "sd3-medium", {"height": 16, "width": 16, "num_inference_steps": 2, "max_sequence_length": 16}),
    "sd3.5": (build_sd35, "sd3.5-medium",
              {"height": 16, "width": 16, "num_inference_steps": 2, "max_sequence_length": 16}),
    "sana": (build_sana, "sana", {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 16}),
    "sana-sprint": (build_sana_sprint, "sana-sprint",
                    {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 16}),
    "flux2": (build_flux2, "flux2-dev",
              {"height": 16, "width": 16, "num_inference_steps": 2, "max_sequence_length": 16}),
    # the byte-level twin tokenizer spends ~150 tokens on the system prompt the pipeline keeps: room for the prompt
    "qwenimage": (build_qwenimage, "qwen-image",
                  {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 256}),
    "zimage": (build_zimage, "z-image",
               {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 64}),
    "wan": (build_wan, "wan2.1-t2v-1.3b", {"height": 16, "width": 16, "num_inference_steps": 2,
                                           "max_sequence_length": 16, "num_frames": 9}),
    "ltx": (build_ltx, "ltx-video", {"height": 32, "width": 32, "num_inference_steps": 2, "max_sequence_length": 16,
                                     "num_frames": 9}),
}

#: the guidance scale tests give a family's twin (default 5.0: classifier-free guidance, two passes a step)
TWIN_GUIDANCE = {"flux": 1.5}
#: twins whose guidance is distilled into the denoiser (one pass a step whatever the guidance scale)
DISTILLED = frozenset({"flux", "sana-sprint", "flux2"})
#: twins whose random text path moves the decoded pixels by about one level only (tests compare latents instead)
WEAK_TEXT = frozenset({"flux2", "qwenimage"})


def twin_guidance(family: str) -> float:
    return TWIN_GUIDANCE.get(family, 5.0)


#: every other preset of configs/pipeline -> the twin of its family (its own guidance, steps and call arguments
#: are kept; only the size shrinks): adding a preset means adding it here or to TWINS
PRESET_TWINS = {"flux-schnell": "flux", "sd-turbo": "sd15", "ddpo-aesthetic": "sd15", "ddpo-alignment": "sd15",
                "ddpo-compressibility": "sd15", "ddpo-incompressibility": "sd15", "realvis-xl": "sdxl",
                "sd3.5-large": "sd3.5", "sana-sprint-4": "sana-sprint", "z-image-turbo": "zimage",
                "wan2.1-t2v-14b": "wan", "ltx-video-0.9.1": "ltx"}
EMBEDDED_PRESETS = ("shapes",)  # presets whose model ships inside the package (no twin needed)
OTHER_TWINS = ("hidream-i1",)  # presets whose twin is built in tests/twins_extra.py (save_hidream)


def save_twin(family: str, root: Path) -> Path:
    """Build the family's twin with fixed random weights and save it in diffusers layout under root."""
    torch.manual_seed(0)
    path = Path(root) / family
    if not (path / "model_index.json").exists():
        TWINS[family][0]().save_pretrained(path)
    return path


def save_clip(root: Path) -> Path:
    """A tiny random CLIPModel with its tokenizer and PIL image processor, saved like a hub checkpoint."""
    from transformers import CLIPConfig, CLIPModel

    try:
        from transformers import CLIPImageProcessorPil as Processor
    except ImportError:
        from transformers import CLIPImageProcessor as Processor
    out = root / "tiny-clip"
    if (out / "config.json").exists():
        return out
    torch.manual_seed(0)
    text = dict(bos_token_id=0, eos_token_id=1, pad_token_id=1, hidden_size=32, intermediate_size=37,
                num_attention_heads=4, num_hidden_layers=2, vocab_size=64)
    vision = dict(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2, image_size=32,
                  patch_size=8)
    CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).save_pretrained(out)
    clip_tokenizer().save_pretrained(out)
    Processor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(out)
    return out


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>"]
# A minimal chat template in Qwen's format (system-less; images as vision_start, image_pad, vision_end).
QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n"
    "{% if m['content'] is string %}{{ m['content'] }}{% else %}{% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def qwen_tokenizer():
    """A byte-level Qwen2 tokenizer (no merges) with Qwen's special tokens and a minimal chat template."""
    from transformers import Qwen2Tokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate(bytes_to_unicode().values())}
    for s in QWEN_SPECIALS:
        vocab[s] = len(vocab)
    tok = Qwen2Tokenizer(vocab=vocab, merges=[], eos_token="<|im_end|>", pad_token="<|endoftext|>")
    tok.add_special_tokens({"additional_special_tokens": QWEN_SPECIALS})
    tok.chat_template = QWEN_TEMPLATE
    return tok


def qwen25vl(tok):
    """A tiny random Qwen2.5-VL (2 layers, hidden 32, vision depth 2) for the tokenizer ``tok``."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    ids = {s: tok.convert_tokens_to_ids(s) for s in QWEN_SPECIALS}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"],
                         rope_scaling={"type": "mrope", "mrope_section": [1, 1, 2]}),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=4, out_hidden_size=32,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2, fullatt_block_indexes=[1],
                           window_size=56),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<|endoftext|>"])
    return Qwen2_5_VLForConditionalGeneration(cfg)


def save_qwen(root: Path) -> Path:
    """A tiny random Qwen2.5-VL with a byte-level tokenizer and PIL image processor, saved like a hub checkpoint
    (model, tokenizer with chat template, preprocessor)."""
    try:
        from transformers import Qwen2VLImageProcessorPil as Processor
    except ImportError:
        from transformers import Qwen2VLImageProcessor as Processor
    out = root / "tiny-qwen2.5-vl"
    if (out / "config.json").exists():
        return out
    tok = qwen_tokenizer()
    torch.manual_seed(0)
    qwen25vl(tok).save_pretrained(out)
    tok.save_pretrained(out)
    Processor(min_pixels=56 * 56, max_pixels=112 * 112).save_pretrained(out)
    return out
