"""ShapesRewardModel: a small learned, noise-aware reward for the shapes world.

It reads a 32x32 image, the prompt and a noise level and predicts what the exact checker would say of the
final image: ``criteria_met`` (the fraction of the prompt's requirements met) and the probability that the
image is ``correct``. Like the learned rewards real searches are steered by (ImageReward, Xu et al. 2023;
PickScore, Kirstain et al. 2023) it is trained on labelled images and is right only on average; like
TTSnap's noise-aware reward (arXiv 2511.22242) it is also trained on x0 previews from intermediate
denoising steps, with the noise level as an input, so it can score previews as well as final images.

Architecture (version 3): a CNN (with pixel coordinates as extra channels, CoordConv, Liu et al. 2018) turns
the image into a 16x16 feature map, shifted by an embedding of the noise level. The prompt is read with the
world's parser (tts.world.grammar): each phrase becomes a query, the sum of embeddings of its colour, shape
and size (a phrase that names no colour or size uses an "any" embedding; one more query asks for every
object), so unseen colour-shape pairs are composed from seen parts. Each query modulates the feature map
(FiLM, Perez et al. 2018) and a 1x1 head turns it into a density map whose sum is the predicted number of
matching objects, trained against the checker's objects (density-map counting, Lempitsky & Zisserman 2010;
text-queried, as CLIP-Count, Jiang et al. 2023). Per phrase the predicted count is compared with the asked
count, the density centroids of the two phrases of a relation are compared along its axis, and a small MLP
over these comparisons (summed over phrases, Deep Sets, Zaheer et al. 2017), the noise level and pooled
image features gives the two logits. A diffusers ``ModelMixin``/``ConfigMixin``: saved and loaded with
``save_pretrained`` / ``from_pretrained`` like the world's UNet (weights in ``tts/assets/shapes-reward``;
trained by ``scripts/train_reward.py``).
"""
from __future__ import annotations

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from PIL import Image
from torch import nn

from .grammar import COLOURS, HELD_OUT_PAIRS, MAX_OBJECTS, RELATIONS, SHAPES, SIZES, parse

#: objects kept per image by encode_objects (the checker rarely finds more than MAX_OBJECTS + 4 in a sample)
MAX_FOUND = 12
#: phrases per prompt (each names at least one object)
MAX_GROUPS = MAX_OBJECTS
_COLOURS = list(COLOURS)


def encode_objects(objects) -> np.ndarray:
    """(MAX_FOUND, 5) float32: colour, shape and size index and centre (x, y, pixels) of each object the checker
    found (tts.world.detect.detect), -1 rows after the last."""
    out = np.full((MAX_FOUND, 5), -1.0, np.float32)
    for i, o in enumerate(objects[:MAX_FOUND]):
        out[i] = (_COLOURS.index(o.colour), SHAPES.index(o.shape), SIZES.index(o.size), o.cx, o.cy)
    return out


def encode_prompts(prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(groups, relation): groups (N, MAX_GROUPS, 4) long of (count, colour, shape, size), attributes 1-based
    with 0 for "any" and count 0 for an absent phrase; relation (N,) long, 0 none, else 1 + RELATIONS' index.
    Raises tts.world.grammar.PromptError for a prompt outside the world's grammar."""
    groups = torch.zeros(len(prompts), MAX_GROUPS, 4, dtype=torch.long)
    relation = torch.zeros(len(prompts), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        spec = parse(prompt)
        for g, group in enumerate(spec.groups):
            groups[row, g] = torch.tensor([group.count, _COLOURS.index(group.colour) + 1 if group.colour else 0,
                                           SHAPES.index(group.shape) + 1,
                                           SIZES.index(group.size) + 1 if group.size else 0])
        relation[row] = RELATIONS.index(spec.relation) + 1 if spec.relation else 0
    return groups, relation


def to_pixels(images: list[Image.Image]) -> torch.Tensor:
    """PIL images -> (N, 3, H, W) float in [-1, 1]."""
    arr = np.stack([np.asarray(im.convert("RGB"), dtype=np.float32) for im in images])
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0


def _stage(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.GELU(),
                         nn.Conv2d(cout, cout, 3, padding=dilation, dilation=dilation), nn.GELU())


def _grid(n: int, h: int, w: int, device, dtype) -> torch.Tensor:
    """(n, 2, h, w) pixel-centre coordinates (x, y) in [-1, 1]."""
    ys = torch.linspace(-1, 1, h, device=device, dtype=dtype).view(1, 1, h, 1).expand(n, 1, h, w)
    xs = torch.linspace(-1, 1, w, device=device, dtype=dtype).view(1, 1, 1, w).expand(n, 1, h, w)
    return torch.cat([xs, ys], 1)


def _coords(x: torch.Tensor) -> torch.Tensor:
    """``x`` with two channels of pixel coordinates in [-1, 1] appended (CoordConv, Liu et al. 2018)."""
    return torch.cat([x, _grid(x.shape[0], x.shape[2], x.shape[3], x.device, x.dtype)], 1)


def held_out_free(queries: torch.Tensor) -> torch.Tensor:
    """Queries (..., 3) of (colour, shape, size) with any held-out colour-shape pair's colour set to "any"
    (training never names a held-out pair)."""
    out = queries.clone()
    for colour, shape in HELD_OUT_PAIRS:
        hit = (out[..., 0] == _COLOURS.index(colour) + 1) & (out[..., 1] == SHAPES.index(shape) + 1)
        out[..., 0][hit] = 0
    return out


class ShapesRewardModel(ModelMixin, ConfigMixin):
    @register_to_config
    def __init__(self, width: int = 48, query_width: int = 48, resolution: int = 32, version: int = 3):
        super().__init__()
        self.stage1 = _stage(3, width // 2)
        self.stage2 = _stage(width // 2 + 2, width)
        self.stage3 = _stage(width + 2, width, dilation=2)
        self.noise = nn.Sequential(nn.Linear(1, width), nn.GELU(), nn.Linear(width, width))
        self.colour = nn.Embedding(len(COLOURS) + 1, query_width)  # index 0: any colour
        self.shape = nn.Embedding(len(SHAPES) + 1, query_width)  # index 0: any shape (the "every object" query)
        self.size = nn.Embedding(len(SIZES) + 1, query_width)
        self.film = nn.Linear(query_width, 2 * width)
        self.density = nn.Sequential(nn.Conv2d(width, width, 1), nn.GELU(), nn.Conv2d(width, 1, 1))
        nn.init.constant_(self.density[-1].bias, -5.0)  # start near zero objects
        self.phrase = nn.Sequential(nn.Linear(4, 32), nn.GELU(), nn.Linear(32, 32))
        self.relation = nn.Embedding(len(RELATIONS) + 1, 8)
        self.pool = nn.Linear(2 * width, 16)
        self.level = nn.Linear(width, 16)
        self.head = nn.Sequential(nn.Linear(32 + 4 + 8 + 2 * (len(RELATIONS) + 1) + 16 + 16, 64), nn.GELU(),
                                  nn.Linear(64, 2))

    def features(self, pixels: torch.Tensor, noise_level: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(16x16 feature map, noise-level embedding)."""
        level = self.noise(noise_level.view(-1, 1).to(pixels.dtype))
        x = nn.functional.max_pool2d(self.stage1(pixels), 2)
        x = self.stage2(_coords(x)) + level[:, :, None, None]
        return self.stage3(_coords(x)), level

    def densities(self, feats: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """(N, Q, h, w) density maps of the objects each query (N, Q, 3: colour, shape, size; 0 any) asks for."""
        q = self.colour(queries[..., 0]) + self.shape(queries[..., 1]) + self.size(queries[..., 2])
        gamma, beta = self.film(q).chunk(2, -1)
        x = feats[:, None] * (1 + gamma[..., None, None]) + beta[..., None, None]
        n, k = queries.shape[:2]
        return nn.functional.softplus(self.density(x.flatten(0, 1))).view(n, k, *feats.shape[2:])

    def forward(self, pixels: torch.Tensor, groups: torch.Tensor, relation: torch.Tensor, noise_level: torch.Tensor,
                extra_queries: torch.Tensor | None = None):
        """(N, 2) logits: criteria_met (sigmoid: the fraction) and correct (sigmoid: its probability);
        ``pixels`` in [-1, 1], ``groups``/``relation`` from encode_prompts, ``noise_level`` (N,) in [0, 1]
        (0: a final image). With ``extra_queries`` (N, Q, 3) also the density maps of the prompt's phrases,
        of every object, and of those queries (N, MAX_GROUPS + 1 + Q, h, w), for training."""
        feats, level = self.features(pixels, noise_level)
        anything = torch.zeros_like(groups[:, :1, 1:])
        queries = torch.cat([groups[..., 1:], anything] + ([extra_queries] if extra_queries is not None else []), 1)
        maps = self.densities(feats, queries)
        counts = maps.sum((2, 3))
        logits = self.head(torch.cat([self._phrases(groups, counts), self._relation(relation, maps),
                                      self.pool(torch.cat([feats.mean((2, 3)), feats.amax((2, 3))], 1)),
                                      self.level(level)], 1))
        return (logits, maps) if extra_queries is not None else logits

    def _phrases(self, groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        """Each phrase's predicted count against its asked count (summed over phrases), and the same for every
        object against the objects the prompt asks for in all."""
        asked = groups[..., 0].to(counts.dtype)
        present = (asked > 0).to(counts.dtype)
        diff = counts[:, :MAX_GROUPS] - asked
        phrase = self.phrase(torch.stack([diff, diff * diff, counts[:, :MAX_GROUPS] / 4, asked / 4], -1))
        total, want = counts[:, MAX_GROUPS], asked.sum(1)
        d = total - want
        return torch.cat([(phrase * present[..., None]).sum(1), torch.stack([d, d * d, total / 4, want / 4], 1)], 1)

    def _relation(self, relation: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
        """The relation's embedding and the offset (x, y) of phrase 0's density centroid from phrase 1's, once
        plain and once routed to the relation's own slots (zero without a relation)."""
        grid = _grid(1, maps.shape[2], maps.shape[3], maps.device, maps.dtype)[0]
        mass = maps[:, :2].sum((2, 3)).clamp(min=1e-3)
        centre = torch.einsum("nkhw,chw->nkc", maps[:, :2], grid) / mass[..., None]
        offset = (centre[:, 0] - centre[:, 1]) * (relation > 0).to(maps.dtype)[:, None]
        slots = nn.functional.one_hot(relation, len(RELATIONS) + 1).to(maps.dtype)
        routed = (slots[:, :, None] * offset[:, None, :]).flatten(1)
        return torch.cat([self.relation(relation), routed], 1)

    @torch.no_grad()
    def predict(self, prompts: list[str], images: list[Image.Image], noise_level: float | list[float] = 0.0,
                batch_size: int = 256) -> tuple[list[float], list[float]]:
        """(criteria_met, p_correct) per image."""
        levels = [float(noise_level)] * len(images) if isinstance(noise_level, (int, float)) else list(noise_level)
        met, correct = [], []
        for s in range(0, len(images), batch_size):
            groups, relation = encode_prompts(prompts[s:s + batch_size])
            logits = self(to_pixels(images[s:s + batch_size]).to(self.device, self.dtype), groups.to(self.device),
                          relation.to(self.device), torch.tensor(levels[s:s + batch_size], device=self.device))
            logits = logits.float().sigmoid()
            met += logits[:, 0].tolist()
            correct += logits[:, 1].tolist()
        return met, correct


def density_targets(objects: torch.Tensor, queries: torch.Tensor, size: int = 16, sigma: float = 1.0,
                    resolution: int = 32) -> torch.Tensor:
    """(N, Q, size, size) target density maps: for each object (N, MAX_FOUND, 5 from encode_objects) that a query
    (N, Q, 3) matches, a Gaussian of mass 1 at its centre on the size x size grid."""
    valid = objects[..., 0] >= 0
    attrs = objects[..., :3].long() + 1  # 1-based like the queries
    q = queries[:, :, None, :]  # (N, Q, 1, 3)
    o = attrs[:, None, :, :]  # (N, 1, M, 3)
    match = (((q == 0) | (q == o)).all(-1) & valid[:, None, :]).to(objects.dtype)  # (N, Q, M)
    cells = (torch.arange(size, dtype=objects.dtype) + 0.5) * resolution / size
    gx = torch.exp(-((cells[None, None, :] - objects[..., 3:4]) * size / resolution) ** 2 / (2 * sigma ** 2))
    gy = torch.exp(-((cells[None, None, :] - objects[..., 4:5]) * size / resolution) ** 2 / (2 * sigma ** 2))
    blob = gy[..., :, None] * gx[..., None, :]  # (N, M, size, size)
    blob = blob / blob.sum((-1, -2), keepdim=True).clamp(min=1e-6)
    return torch.einsum("nqm,nmhw->nqhw", match, blob)
