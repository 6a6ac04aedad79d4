"""Initial noises as pure functions of numbers stored in each candidate's record.

A noise is described by its lineage, a small JSON dict:

* ``{"kind": "fresh", "seed": s}``: standard normal drawn from ``torch.Generator().manual_seed(s)``
  on the CPU in float32 (so it is the same on every device and dtype);
* ``{"kind": "neighbor", "seed": s, "threshold": tau, "pivot": <lineage>}``: the zero-order
  neighbour of the pivot (Ma et al. 2025, Sec. 3.2; tt-scale-flux): with u = x/|x| and v drawn from
  seed s, w = normalize(v - (v.u)u), the neighbour is |x|(tau u + sqrt(1 - tau^2) w). It has
  cosine exactly tau with the pivot and the same norm;
* ``{"kind": "stored", "seed": <origin's seed>, "file": "noises/<sha256[:16]>.npy", "sha256": h, "origin": <lineage>, "iteration": k}``:
  a noise no seed describes (gradient noise optimisation, tts.search.noise_opt: the k-th iterate from
  ``origin``), saved exactly (float32 ``.npy``) in the run folder and read back from it (``root``: the run
  folder; the digest is checked), so tts-replay regenerates the candidate bit for bit.

Seeds are derived with SHA-256 from (run seed, prompt hash, round, index, purpose), so they never
depend on global RNG state, batch size or process.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import torch

#: the run folder's subfolder of stored noises (``stored`` lineages)
STORED_DIR = "noises"


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


def store(noise: torch.Tensor, root: Path, origin: dict, iteration: int) -> dict:
    """Save ``noise`` (float32, exactly) under ``root``/noises/ and return its ``stored`` lineage."""
    data = noise.detach().to("cpu", torch.float32).contiguous().numpy()
    digest = hashlib.sha256(data.tobytes() + repr(data.shape).encode()).hexdigest()
    name = f"{STORED_DIR}/{digest[:16]}.npy"
    path = Path(root) / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        with open(tmp, "wb") as f:
            np.save(f, data)
        os.replace(tmp, path)
    return {"kind": "stored", "seed": int(origin.get("seed", 0)), "file": name, "sha256": digest, "origin": origin,
            "iteration": int(iteration)}


def _load_stored(lineage: dict, shape, root: Path | None) -> torch.Tensor:
    if root is None:
        raise ValueError(f"the stored noise {lineage.get('file')!r} is read from its run folder: pass the run folder")
    path = Path(root) / str(lineage["file"])
    if not path.is_file():
        raise ValueError(f"stored noise {path} is missing: copy the run folder's {STORED_DIR}/ with it")
    data = np.load(path, allow_pickle=False)
    if hashlib.sha256(data.tobytes() + repr(data.shape).encode()).hexdigest() != lineage["sha256"]:
        raise ValueError(f"stored noise {path} does not match its record's sha256: the file was changed")
    if tuple(data.shape) != tuple(shape):
        raise ValueError(f"stored noise {path} has shape {tuple(data.shape)}, the pipeline's latents {tuple(shape)}")
    return torch.from_numpy(data.copy())


def make_noise(lineage: dict, shape, root: Path | None = None) -> torch.Tensor:
    """The float32 CPU tensor of ``shape`` that ``lineage`` describes (``root``: the run folder, for ``stored``)."""
    if lineage["kind"] == "stored":
        return _load_stored(lineage, shape, root)
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
