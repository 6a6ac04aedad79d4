"""Initial noises as pure functions of numbers stored in each candidate's record.

A noise is described by its lineage, a small JSON dict:

* ``{"kind": "fresh", "seed": s}``: standard normal drawn from ``torch.Generator().manual_seed(s)``
  on the CPU in float32 (so it is the same on every device and dtype);
* ``{"kind": "neighbor", "seed": s, "threshold": tau, "pivot": <lineage>}``: the zero-order
  neighbour of the pivot (Ma et al. 2025, Sec. 3.2; tt-scale-flux): with u = x/|x| and v drawn from
  seed s, w = normalize(v - (v.u)u), the neighbour is |x|(tau u + sqrt(1 - tau^2) w). It has
  cosine exactly tau with the pivot and the same norm.

Seeds are derived with SHA-256 from (run seed, prompt hash, round, index, purpose), so they never
depend on global RNG state, batch size or process.
"""
from __future__ import annotations

import hashlib
import json
import math

import torch


def derive_seed(*parts) -> int:
    """A 32-bit seed from any JSON-serialisable parts (stable across machines and Python versions)."""
    digest = hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).digest()
    return int.from_bytes(digest[:4], "big")


def fresh(seed: int) -> dict:
    return {"kind": "fresh", "seed": int(seed)}


def neighbor(pivot: dict, seed: int, threshold: float) -> dict:
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}")
    return {"kind": "neighbor", "seed": int(seed), "threshold": float(threshold), "pivot": pivot}


def _randn(seed: int, shape) -> torch.Tensor:
    return torch.randn(tuple(shape), generator=torch.Generator("cpu").manual_seed(int(seed)), dtype=torch.float32)


def make_noise(lineage: dict, shape) -> torch.Tensor:
    """The float32 CPU tensor of ``shape`` that ``lineage`` describes."""
    if lineage["kind"] == "fresh":
        return _randn(lineage["seed"], shape)
    if lineage["kind"] == "neighbor":
        x = make_noise(lineage["pivot"], shape).double()
        v = _randn(lineage["seed"], shape).double()
        tau = lineage["threshold"]
        norm = x.norm()
        u = x / norm
        w = v - (v.flatten() @ u.flatten()) * u
        w = w / w.norm()
        return (norm * (tau * u + math.sqrt(1.0 - tau * tau) * w)).float()
    raise ValueError(f"unknown noise kind {lineage.get('kind')!r}")


def step_noise_seed(lineage: dict) -> int:
    """The seed of the noise a scheduler draws itself at every step (consistency sampling, e.g. Sana-Sprint's
    SCM), one per candidate: derived from its initial noise, so the candidate replays from its lineage."""
    return derive_seed(lineage, "step-noise")


def step_noise_generators(seeds, draws: int = 0, shape=None) -> list[torch.Generator]:
    """One CPU generator per row, seeded with ``seeds``, each past ``draws`` draws of ``shape`` (one row's noise):
    the state a pipeline call's per-row generators are in before its step ``draws``."""
    generators = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    for g in generators:
        for _ in range(draws):
            torch.randn(tuple(shape), generator=g, dtype=torch.float32)
    return generators
