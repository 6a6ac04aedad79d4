"""ShapesRewardModel: a small learned, noise-aware reward for the shapes world.

It reads a 32x32 image, the prompt and a noise level and predicts what the exact checker would say of the
final image: ``criteria_met`` (the fraction of the prompt's requirements met) and the probability that the
image is ``correct``. Like the learned rewards real searches are steered by (ImageReward, Xu et al. 2023;
PickScore, Kirstain et al. 2023) it is trained on labelled images and is right only on average; like
TTSnap's noise-aware reward (arXiv 2511.22242) it is also trained on x0 previews from intermediate
denoising steps, with the noise level as an input, so it can score previews as well as final images.

Architecture: a 3-stage CNN turns the image into an 8x8 grid of tokens; the prompt's words (the world's
vocabulary, tts.world.grammar.VOCAB) become tokens of their own; with one token for the noise level and a
summary token they pass through a 2-layer transformer encoder (Vaswani et al. 2017), whose summary token
feeds two heads. A diffusers ``ModelMixin``/``ConfigMixin``: saved and loaded with ``save_pretrained`` /
``from_pretrained`` like the world's UNet (weights in ``tts/assets/shapes-reward``; trained by
``scripts/train_reward.py``).
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image
from torch import nn

from .grammar import COLOURS, SHAPES, SIZES, VOCAB, tokenize

MAX_WORDS = 24
PAD, UNKNOWN = 0, 1


def encode_words(prompts: list[str]) -> torch.Tensor:
    """Word ids (0 pad, 1 unknown, then VOCAB's order), ``MAX_WORDS`` per prompt."""
    index = {w: i + 2 for i, w in enumerate(VOCAB)}
    ids = torch.zeros(len(prompts), MAX_WORDS, dtype=torch.long)
    for row, prompt in enumerate(prompts):
        words = [index.get(w, UNKNOWN) for w in tokenize(prompt)][:MAX_WORDS]
        ids[row, :len(words)] = torch.tensor(words, dtype=torch.long)
    return ids


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> (N, 3, H, W) float in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def _stage(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU(), nn.Conv2d(cout, cout, 3, padding=1), nn.GELU())


def _coords(x: torch.Tensor) -> torch.Tensor:
    """``x`` with two channels of pixel coordinates in [-1, 1] appended (CoordConv, Liu et al. 2018)."""
    n, _, h, w = x.shape
    ys = torch.linspace(-1, 1, h, device=x.device, dtype=x.dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=x.device, dtype=x.dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    return torch.cat([x, xs, ys], 1)


#: auxiliary targets (scene_targets): object counts per colour x shape and per shape x size, and the mean
#: centre (x, y) of each colour x shape present
N_KINDS = len(COLOURS) * len(SHAPES)
N_AUX = N_KINDS + len(SHAPES) * len(SIZES) + 2 * N_KINDS


def scene_targets(objects) -> np.ndarray:
    """The auxiliary targets of a scene (tts.world.detect objects): counts / 4, centres / 32, and a mask of the
    kinds present for the centres (the last N_KINDS values)."""
    colours, sizes = list(COLOURS), list(SIZES)
    counts, size_counts = np.zeros(N_KINDS), np.zeros(len(SHAPES) * len(SIZES))
    centres = np.zeros((N_KINDS, 2))
    for o in objects:
        k = colours.index(o.colour) * len(SHAPES) + SHAPES.index(o.shape)
        counts[k] += 1
        size_counts[SHAPES.index(o.shape) * len(SIZES) + sizes.index(o.size)] += 1
        centres[k] += (o.cx / 32, o.cy / 32)
    present = counts > 0
    centres[present] /= counts[present, None]
    return np.concatenate([counts / 4, size_counts / 4, centres.ravel(), present.astype(float)]).astype(np.float32)


class ShapesRewardModel(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 64, text_width: int = 64, resolution: int = 32,
                 vocab_size: int = len(VOCAB) + 2, max_words: int = MAX_WORDS):
        super().__init__()
        self.stage1 = _stage(3, width // 2)
        self.stage2 = _stage(width // 2 + 2, width)
        self.stage3 = _stage(width + 2, width)
        self.words = nn.Embedding(vocab_size, text_width, padding_idx=PAD)
        self.gru = nn.GRU(text_width, text_width, batch_first=True, bidirectional=True)
        self.film2 = nn.Linear(2 * text_width, 2 * width)  # FiLM (Perez et al. 2018): text scales and shifts
        self.film3 = nn.Linear(2 * text_width, 2 * width)  # the image features channel by channel
        self.aux = nn.Linear(2 * width, N_AUX)
        self.noise = nn.Sequential(nn.Linear(1, width), nn.GELU(), nn.Linear(width, width))
        self.head = nn.Sequential(nn.Linear(2 * width + width + 2 * text_width + N_AUX, 128), nn.GELU(),
                                  nn.Linear(128, 2))

    def _text(self, word_ids: torch.Tensor) -> torch.Tensor:
        lengths = (word_ids != PAD).sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(self.words(word_ids), lengths, batch_first=True,
                                                   enforce_sorted=False)
        _, h = self.gru(packed)
        return torch.cat([h[0], h[1]], -1)

    @staticmethod
    def _film(x: torch.Tensor, film: torch.Tensor) -> torch.Tensor:
        gamma, beta = film[:, :, None, None].chunk(2, 1)
        return x * (1 + gamma) + beta

    def forward(self, pixels: torch.Tensor, word_ids: torch.Tensor, noise_level: torch.Tensor,
                return_aux: bool = False):
        """(N, 2) logits: criteria_met (sigmoid: the fraction) and correct (sigmoid: its probability);
        ``pixels`` in [-1, 1], ``noise_level`` (N,) in [0, 1] (0: a final image). With ``return_aux`` also the
        predicted scene (scene_targets' values without the mask)."""
        text = self._text(word_ids)
        x = nn.functional.max_pool2d(self.stage1(pixels), 2)
        x = self._film(self.stage2(_coords(x)), self.film2(text))
        x = self.stage3(_coords(nn.functional.max_pool2d(x, 2)))
        scene = self.aux(torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1))
        x = self._film(x, self.film3(text))
        pooled = torch.cat([x.mean((2, 3)), x.amax((2, 3))], 1)
        level = self.noise(noise_level.view(-1, 1).to(pooled.dtype))
        logits = self.head(torch.cat([pooled, level, text, scene], 1))
        return (logits, scene) if return_aux else logits

    @torch.no_grad()
    def predict(self, prompts: list[str], images: list[Image.Image], noise_level: float | list[float] = 0.0,
                batch_size: int = 256) -> tuple[list[float], list[float]]:
        """(criteria_met, p_correct) per image."""
        levels = [float(noise_level)] * len(images) if isinstance(noise_level, (int, float)) else list(noise_level)
        met, correct = [], []
        for s in range(0, len(images), batch_size):
            logits = self(to_pixels(images[s:s + batch_size]).to(self.device, self.dtype),
                          encode_words(prompts[s:s + batch_size]).to(self.device),
                          torch.tensor(levels[s:s + batch_size], device=self.device)).float().sigmoid()
            met += logits[:, 0].tolist()
            correct += logits[:, 1].tolist()
        return met, correct
