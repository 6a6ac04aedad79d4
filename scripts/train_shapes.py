"""Train the embedded shapes-world model from scratch (seeded, resumable, CPU-friendly).

    python scripts/train_shapes.py --threads 2     # 3,600 steps, about 55 min on 2 CPU cores
    python scripts/train_shapes.py --threads 2     # run again after a stop: resumes from the checkpoint
    python scripts/train_shapes.py --device cuda   # the same recipe on a GPU

A pixel-space DDPM (Ho et al. 2020) with v-prediction (Salimans & Ho 2022, sec. 4: plain MSE on v, which
weights the x0 error by SNR + 1, so the high-noise steps where the text decides colours, shapes and layout
get a real gradient; epsilon-MSE weights them by SNR, almost zero) and a cosine schedule,
with a UNet2DConditionModel (cross-attention at 16x16 and 8x8, plus the attention-pooled caption
added to the timestep embedding) and a small CLIPTextModel over a word-level vocabulary, trained
jointly on procedurally rendered scenes of in-distribution prompts (held-out combinations never
drawn), with 10% caption dropout for classifier-free guidance. The defaults are the recipe of the
committed model; the exported DDIM scheduler uses trailing timestep spacing (sampling starts at t=999). The EMA weights are exported in diffusers layout
to ``tts/assets/shapes-model`` every ``--export-every`` steps, so a stop at any time leaves a model.
Every batch is a pure function of (seed, step), so resuming reproduces the same data stream.
"""
from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import os
import pathlib
import sys
import time

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts.world.grammar import VOCAB  # noqa: E402
from tts.world.scenes import RESOLUTION, render, sample_training_spec  # noqa: E402

log = logging.getLogger("train_shapes")
MAX_TOKENS = 16


def build_tokenizer():
    from tokenizers import Tokenizer, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]"] + VOCAB)}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   model_max_length=MAX_TOKENS)


def build_models(width: int, tokenizer, text_dim: int = 64, top_attention: bool = False, text_time: bool = False):
    """The UNet and text encoder. ``top_attention`` adds cross-attention (only) at full resolution;
    ``text_time`` adds the attention-pooled caption to the timestep embedding (diffusers'
    ``addition_embed_type="text"``, as in unCLIP/Kandinsky), a global conditioning path beside cross-attention."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    top_down, top_up = ("CrossAttnDownBlock2D", "CrossAttnUpBlock2D") if top_attention else ("DownBlock2D", "UpBlock2D")
    extra = {"addition_embed_type": "text", "addition_embed_type_num_heads": 4} if text_time else {}

    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=text_dim, intermediate_size=2 * text_dim, num_hidden_layers=2,
        num_attention_heads=4, max_position_embeddings=MAX_TOKENS, pad_token_id=0, bos_token_id=0, eos_token_id=0))
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION, in_channels=3, out_channels=3, layers_per_block=1,
        block_out_channels=(width, 2 * width, 2 * width),
        down_block_types=(top_down, "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", top_up),
        only_cross_attention=(top_attention, False, False),
        cross_attention_dim=text_dim, attention_head_dim=8, norm_num_groups=16, **extra)
    return unet, text_encoder


def batch(seed: int, step: int, size: int, dropout: float):
    """Images in [-1, 1] and captions for one training step: a pure function of (seed, step)."""
    rng = np.random.default_rng([seed, step])
    images, captions = [], []
    for _ in range(size):
        spec = sample_training_spec(rng)
        img, _ = render(spec, rng, allow_held_out=False)
        images.append(np.asarray(img, dtype=np.float32) / 127.5 - 1)
        captions.append("" if rng.random() < dropout else spec.text())
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2), captions


def betas(shift: float = 1.0) -> list[float]:
    """The cosine schedule (Nichol & Dhariwal 2021) with its SNR divided by ``shift`` at every step.

    At 32x32 the world's large flat objects stay visible in the noise up to t ~ 0.9 of the plain cosine
    schedule, so a model trained on it reads layout and colours from the initial noise instead of the
    text. Shifting the SNR down (Hoogeboom et al. 2023, "simple diffusion", sec. 3.1; Esser et al. 2024,
    sec. 5.3.2, whose shift 3 is an SNR factor of 9) makes the high-noise steps, where the text must
    decide the composition, truly noisy."""
    from diffusers import DDPMScheduler

    base = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    snr = base / (1 - base) / shift
    bar = snr / (1 + snr)
    out = torch.cat([1 - bar[:1], 1 - bar[1:] / bar[:-1]]).clamp(max=0.999)
    return out.tolist()


def export(out: pathlib.Path, unet, text_encoder, tokenizer, meta: dict, spacing: str = "leading",
           prediction: str = "epsilon", shift: float = 1.0):
    """Write the pipeline in diffusers layout (atomically: a temp folder renamed over the old one)."""
    from diffusers import DDIMScheduler

    from tts.world.pipeline import ShapesPipeline

    schedule = {"beta_schedule": "squaredcos_cap_v2"} if shift == 1 else {"trained_betas": betas(shift)}
    scheduler = DDIMScheduler(num_train_timesteps=1000, **schedule, clip_sample=True,
                              set_alpha_to_one=True, prediction_type=prediction, timestep_spacing=spacing)
    pipe = ShapesPipeline(unet=unet, text_encoder=text_encoder, tokenizer=tokenizer, scheduler=scheduler)
    tmp = out.with_name(out.name + ".tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    (tmp / "training.json").write_text(json.dumps(meta, indent=2))
    if out.exists():
        old = out.with_name(out.name + ".old")
        os.replace(out, old)
        os.replace(tmp, out)
        import shutil
        shutil.rmtree(old)
    else:
        os.replace(tmp, out)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=pathlib.Path, default=ROOT / "tts" / "assets" / "shapes-model")
    p.add_argument("--ckpt", type=pathlib.Path, default=ROOT / "outputs" / "train_shapes" / "checkpoint.pt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3600, help="train this many steps in all (the schedule ends there)")
    p.add_argument("--minutes", type=float, default=57.0, help="stop after this much wall time in this run")
    p.add_argument("--stop-after", type=int, default=None, help="stop this run at this step (the schedule still ends at --steps)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--width", type=int, default=32, help="UNet channels at the top level")
    p.add_argument("--text-dim", type=int, default=128, help="text encoder width (2 layers)")
    p.add_argument("--timestep-spacing", default="trailing", choices=("leading", "trailing"),
                   help="the exported DDIM scheduler's spacing (trailing starts sampling at t=999)")
    p.add_argument("--top-attention", action="store_true", help="cross-attention at 32x32 too")
    p.add_argument("--text-time", action=argparse.BooleanOptionalAction, default=True,
                   help="pooled caption added to the timestep embedding")
    p.add_argument("--prediction", default="v_prediction", choices=("v_prediction", "epsilon"),
                   help="what the UNet predicts (the exported scheduler's prediction_type)")
    p.add_argument("--schedule-shift", type=float, default=9.0,
                   help="divide the cosine schedule's SNR by this (1: the plain cosine schedule)")
    p.add_argument("--snr-gamma", type=float, default=0.0,
                   help="min-SNR loss weighting (Hang et al. 2023); 0 = plain MSE on the prediction target")
    p.add_argument("--device", default="cpu")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--min-lr-ratio", type=float, default=0.05, help="final learning rate as a share of --lr")
    p.add_argument("--dropout", type=float, default=0.1, help="caption dropout (for classifier-free guidance)")
    p.add_argument("--ema", type=float, default=0.999)
    p.add_argument("--export-every", type=int, default=200)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from diffusers import DDPMScheduler

    tokenizer = build_tokenizer()
    unet, text_encoder = build_models(args.width, tokenizer, args.text_dim, args.top_attention, args.text_time)
    unet.to(args.device), text_encoder.to(args.device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    ema_unet, ema_text = copy.deepcopy(unet).requires_grad_(False), copy.deepcopy(text_encoder).requires_grad_(False)
    step = 0
    if args.ckpt.exists():
        state = torch.load(args.ckpt, weights_only=False, map_location=args.device)
        check_recipe(args, state.get("recipe"))
        for m, k in ((unet, "unet"), (text_encoder, "text"), (ema_unet, "ema_unet"), (ema_text, "ema_text"), (opt, "opt")):
            m.load_state_dict(state[k])
        step = state["step"]
        torch.set_rng_state(state["torch_rng"].cpu())
        log.info("resumed from %s at step %d", args.ckpt, step)
    n_unet = sum(p.numel() for p in unet.parameters())
    n_text = sum(p.numel() for p in text_encoder.parameters())
    log.info("unet %.2fM params, text encoder %.2fM params", n_unet / 1e6, n_text / 1e6)
    noise_sched = DDPMScheduler(num_train_timesteps=1000, trained_betas=betas(args.schedule_shift))
    alphas = noise_sched.alphas_cumprod.to(args.device)
    start, losses = time.time(), []
    stop = min(args.steps, args.stop_after or args.steps)
    while step < stop and time.time() - start < args.minutes * 60:
        lr = learning_rate(args, step)
        for g in opt.param_groups:
            g["lr"] = lr
        x0, captions = batch(args.seed, step, args.batch_size, args.dropout)
        ids = tokenizer(captions, padding="max_length", max_length=MAX_TOKENS, truncation=True,
                        return_tensors="pt").input_ids.to(args.device)
        x0 = x0.to(args.device)
        t = torch.randint(0, 1000, (x0.shape[0],)).to(args.device)
        eps = torch.randn(x0.shape).to(args.device)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * eps
        pred = unet(xt, t, encoder_hidden_states=text_encoder(ids)[0]).sample
        target = a.sqrt() * eps - (1 - a).sqrt() * x0 if args.prediction == "v_prediction" else eps
        loss = loss_fn(pred, target, a.flatten(), args.snr_gamma, args.prediction)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        step += 1
        decay = min(args.ema, (1 + step) / (10 + step))
        with torch.no_grad():
            for src, dst in ((unet, ema_unet), (text_encoder, ema_text)):
                torch._foreach_lerp_(list(dst.parameters()), list(src.parameters()), 1 - decay)
        losses.append(loss.item())
        if step % 50 == 0:
            log.info("step %d loss %.4f (%.1f s/step)", step, float(np.mean(losses[-50:])),
                     (time.time() - start) / max(1, len(losses)))
        if step % args.export_every == 0:
            save(args, step, unet, text_encoder, ema_unet, ema_text, opt, tokenizer, n_unet, n_text)
    save(args, step, unet, text_encoder, ema_unet, ema_text, opt, tokenizer, n_unet, n_text)
    log.info("stopped at step %d after %.1f min", step, (time.time() - start) / 60)


RECIPE = ("seed", "steps", "batch_size", "width", "text_dim", "top_attention", "text_time", "prediction", "schedule_shift", "snr_gamma", "lr",
          "min_lr_ratio", "dropout", "ema")


def recipe(args) -> dict:
    """The settings a resumed run must share with the checkpoint (device, threads, time may differ)."""
    return {k: getattr(args, k) for k in RECIPE}


def check_recipe(args, saved: dict | None) -> None:
    diff = {k: (v, getattr(args, k)) for k, v in (saved or {}).items() if getattr(args, k) != v}
    if diff:
        flags = ", ".join(f"--{k.replace('_', '-')} {old} (asked {new})" for k, (old, new) in diff.items())
        raise SystemExit(f"{args.ckpt} was trained with {flags}; resume with the same settings, "
                         f"or pass another --ckpt to start afresh")


def loss_fn(pred, target, alpha_bar, snr_gamma: float, prediction: str = "epsilon"):
    """MSE on the target (noise or v); with ``snr_gamma`` > 0 each sample is weighted
    min(SNR, gamma) / SNR for epsilon, min(SNR, gamma) / (SNR + 1) for v (Min-SNR weighting,
    Hang et al. 2023, sec. 3.4), i.e. min(SNR, gamma) on the x0 error either way."""
    per_sample = ((pred - target) ** 2).mean(dim=(1, 2, 3))
    if snr_gamma > 0:
        snr = alpha_bar / (1 - alpha_bar)
        per_sample = per_sample * torch.clamp(snr, max=snr_gamma) / (snr + (prediction == "v_prediction"))
    return per_sample.mean()


def learning_rate(args, step: int) -> float:
    """Linear warm-up over 200 steps, then cosine decay to ``--min-lr-ratio`` of the peak at ``--steps``."""
    warm = min(1.0, (step + 1) / 200)
    progress = min(1.0, step / max(1, args.steps))
    return args.lr * warm * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def save(args, step, unet, text_encoder, ema_unet, ema_text, opt, tokenizer, n_unet, n_text):
    args.ckpt.parent.mkdir(parents=True, exist_ok=True)
    state = {"unet": unet.state_dict(), "text": text_encoder.state_dict(), "ema_unet": ema_unet.state_dict(),
             "ema_text": ema_text.state_dict(), "opt": opt.state_dict(), "step": step,
             "torch_rng": torch.get_rng_state(), "recipe": recipe(args)}
    torch.save(state, args.ckpt.with_suffix(".tmp"))
    os.replace(args.ckpt.with_suffix(".tmp"), args.ckpt)
    meta = {"step": step, "seed": args.seed, "batch_size": args.batch_size, "width": args.width, "text_dim": args.text_dim, "top_attention": args.top_attention, "text_time": args.text_time, "prediction": args.prediction, "schedule_shift": args.schedule_shift, "snr_gamma": args.snr_gamma, "device": args.device, "timestep_spacing": args.timestep_spacing, "lr": args.lr, "min_lr_ratio": args.min_lr_ratio, "steps_planned": args.steps,
            "caption_dropout": args.dropout, "ema": args.ema, "unet_params": n_unet, "text_encoder_params": n_text,
            "command": "python scripts/train_shapes.py " + " ".join(sys.argv[1:])}
    export(args.out, ema_unet, ema_text, tokenizer, meta, args.timestep_spacing, args.prediction, args.schedule_shift)


if __name__ == "__main__":
    main()
