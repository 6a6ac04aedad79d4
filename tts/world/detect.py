"""Find and judge the objects of a shapes-world image: colour segmentation, connected components,
shape classification, positions; then check a prompt's requirements against them (GenEval-style)."""
from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image

from .grammar import COLOURS, PromptSpec
from .scenes import RESOLUTION, Obj, side

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_NAMES = list(COLOURS)
FOREGROUND_DISTANCE = 70.0  # a pixel this far (RGB) from the background is part of an object
PALETTE_DISTANCE = 100.0  # ... and is labelled with the nearest palette colour if within this distance
MIN_AREA = 8  # smaller components are noise
BIG_SIDE = 11  # a component whose longer side is at least this is "big"


def components(mask: np.ndarray) -> list[np.ndarray]:
    """4-connected components of a boolean mask, as arrays of (row, col) pixels."""
    seen = np.zeros_like(mask, dtype=bool)
    out = []
    h, w = mask.shape
    for r0, c0 in zip(*np.nonzero(mask)):
        if seen[r0, c0]:
            continue
        stack, pix = [(r0, c0)], []
        seen[r0, c0] = True
        while stack:
            r, c = stack.pop()
            pix.append((r, c))
            for rr, cc in ((r - 1, c), (r + 1, c), (r, c - 1), (r, c + 1)):
                if 0 <= rr < h and 0 <= cc < w and mask[rr, cc] and not seen[rr, cc]:
                    seen[rr, cc] = True
                    stack.append((rr, cc))
        out.append(np.array(pix))
    return out


def _classify(pix: np.ndarray) -> str:
    rows, cols = pix[:, 0], pix[:, 1]
    r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
    h, w = r1 - r0 + 1, c1 - c0 + 1
    fill = len(pix) / (h * w)
    widths = np.bincount(rows - r0, minlength=h)
    k = max(1, h // 4)
    top, bottom = widths[:k].mean(), widths[-k:].mean()
    if top < 0.6 * bottom and fill < 0.75:
        return "triangle"
    return "square" if fill >= 0.88 else "circle"


def segment(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(foreground mask: far from the background, the median border colour; H x W x colours palette distances)."""
    arr = np.asarray(image.convert("RGB").resize((RESOLUTION, RESOLUTION)), dtype=np.float32)
    border = np.concatenate([arr[0], arr[-1], arr[:, 0], arr[:, -1]])
    fg = np.linalg.norm(arr - np.median(border, axis=0), axis=-1) > FOREGROUND_DISTANCE
    return fg, np.linalg.norm(arr[..., None, :] - _PALETTE, axis=-1)


def detect(image: Image.Image) -> list[Obj]:
    """The objects in an image: one per connected region of a single palette colour."""
    fg, dist = segment(image)
    label = np.where(fg & (dist.min(-1) < PALETTE_DISTANCE), dist.argmin(-1), -1)
    objects = []
    for ci, name in enumerate(_NAMES):
        for pix in components(label == ci):
            if len(pix) < MIN_AREA:
                continue
            r0, c0 = pix.min(0)
            r1, c1 = pix.max(0) + 1
            size = "big" if max(r1 - r0, c1 - c0) >= BIG_SIDE else "small"
            objects.append(Obj(_classify(pix), name, size, float(c0), float(r0), float(c1), float(r1)))
    return objects


@dataclasses.dataclass
class Verdict:
    """The requirements of a prompt checked against an image's objects."""

    met: list[str]
    failed: list[str]

    @property
    def correct(self) -> float:
        return float(not self.failed)

    @property
    def criteria_met(self) -> float:
        return len(self.met) / max(1, len(self.met) + len(self.failed))

    def explanation(self) -> str:
        if not self.failed:
            return f"all {len(self.met)} requirements met"
        return "failed: " + "; ".join(self.failed)


def check(spec: PromptSpec, objects: list[Obj], relation_margin: float = 1.0) -> Verdict:
    """Check every requirement: each phrase's exact count, nothing else, and the relation."""
    met, failed = [], []
    for g in spec.groups:
        n = sum(g.matches(o) for o in objects)
        (met if n == g.count else failed).append(f"{g.words(article=False)}: want {g.count}, found {n}")
    total = len(objects)
    (met if total == spec.n_objects else failed).append(f"objects in all: want {spec.n_objects}, found {total}")
    if spec.relation:
        a = [o for o in objects if spec.groups[0].matches(o)]
        b = [o for o in objects if spec.groups[1].matches(o)]
        req = f"{spec.groups[0].words()} {spec.relation} {spec.groups[1].words()}"
        if len(a) == 1 and len(b) == 1 and side(a[0], b[0], spec.relation) >= relation_margin:
            met.append(req)
        else:
            failed.append(req + (" (not so placed)" if len(a) == 1 and len(b) == 1 else " (objects not found once each)"))
    return Verdict(met, failed)
