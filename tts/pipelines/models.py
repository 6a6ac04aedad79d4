"""The model manager: one object owns the pipelines a process has loaded (the jobs of a multirun, tts-serve).

Pipelines stay loaded between uses, at most ``models.max_resident`` of them and, with
``models.max_memory_gb``, at most that many GB of weights (counted on the device they run on: GPU
memory on CUDA). When a pipeline needs room, the least recently used others are unloaded: dropped,
garbage-collected, and the CUDA cache emptied (the policy of keeping the last-used pipeline resident and
unloading others only when a large model needs the room or on out-of-memory). A pipeline in use is
never unloaded. An out-of-memory error while loading (here) or generating (tts.sampling.generate) unloads every
other pipeline and retries once; a second one raises ModelMemoryError, which names the settings that
lower memory. ``models.preload=[name, ...]`` loads pipeline presets (configs/pipeline/NAME.yaml) up front.
"""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import difflib
import gc
import json
import logging
import struct
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from .checks import PipelineConfigError
from ..core.validate import is_int, is_number

if TYPE_CHECKING:
    from . import LoadedPipeline, PipelineSpec

log = logging.getLogger(__name__)
T = TypeVar("T")
_DTYPE_BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}


class ModelMemoryError(PipelineConfigError):
    """Out of memory even with every other pipeline unloaded (a user error: one line naming the fix)."""


def is_oom(error: BaseException) -> bool:
    """An out-of-memory error of torch (CUDA, MPS) or the allocator behind it."""
    import torch

    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(error, oom) or (isinstance(error, RuntimeError) and "out of memory" in str(error).lower())


def empty_device_cache() -> None:
    """Free what was dropped: garbage-collect, then give cached CUDA/MPS blocks back."""
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    if getattr(torch, "mps", None) is not None and getattr(torch.backends, "mps", None) \
            and torch.backends.mps.is_available():
        torch.mps.empty_cache()


def weight_bytes(pipe) -> int:
    """Bytes of parameters and buffers of a loaded pipeline's modules (its resident weights)."""
    import torch

    total = 0
    for component in getattr(pipe, "components", {}).values():
        if isinstance(component, torch.nn.Module):
            total += sum(t.numel() * t.element_size() for t in (*component.parameters(), *component.buffers()))
    return total


def checkpoint_bytes(path: str, dtype: str) -> int:
    """Weights a checkpoint folder will take once loaded in ``dtype``, read from its safetensors headers
    (element counts; no tensor is read); other weight files count at their size; 0 when not a local folder."""
    root = Path(path)
    if not root.is_dir():
        return 0
    total = 0
    for file in root.glob("*/*"):
        if file.suffix == ".safetensors":
            with open(file, "rb") as f:
                header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
            for name, meta in header.items():
                if name != "__metadata__":
                    numel = 1
                    for n in meta["shape"]:
                        numel *= n
                    total += numel * _DTYPE_BYTES[dtype]
        elif file.suffix in (".bin", ".pt", ".ckpt"):
            total += file.stat().st_size
    return total


@dataclasses.dataclass
class Resident:
    """A loaded pipeline the manager owns."""

    key: tuple
    name: str
    loaded: "LoadedPipeline"
    bytes: int
    users: int = 0
    last_used: float = dataclasses.field(default_factory=time.monotonic)


class ModelManager:
    """Owns loaded pipelines: LRU unloading under a count and a memory budget, out-of-memory recovery."""

    def __init__(self, max_resident: int = 1, max_memory_gb: float | None = None):
        self.max_resident, self.max_memory_gb = 1, None
        self.resident_map: collections.OrderedDict[tuple, Resident] = collections.OrderedDict()  # LRU first
        self._lock = threading.RLock()       # the map; held briefly
        self._load_lock = threading.Lock()   # one load at a time
        self.configure(max_resident, max_memory_gb)

    def configure(self, max_resident: int = 1, max_memory_gb: float | None = None) -> None:
        if not is_int(max_resident) or max_resident < 1:
            raise PipelineConfigError(f"models.max_resident must be a positive integer, got {max_resident!r}")
        if max_memory_gb is not None and (not is_number(max_memory_gb)
                                          or max_memory_gb <= 0):
            raise PipelineConfigError(f"models.max_memory_gb must be a positive number or null, got {max_memory_gb!r}")
        self.max_resident, self.max_memory_gb = max_resident, max_memory_gb
        with self._lock:
            self._evict(need_slots=0, need_bytes=0, keep=None)

    # -- what is loaded ---------------------------------------------------------------------------------
    def resident(self) -> list[Resident]:
        """Loaded pipelines, least recently used first."""
        with self._lock:
            return list(self.resident_map.values())

    def names(self) -> list[str]:
        return [r.name for r in self.resident()]

    def is_loaded(self, spec: "PipelineSpec") -> bool:
        return spec.load_key in self.resident_map

    # -- loading and unloading --------------------------------------------------------------------------
    def load(self, spec: "PipelineSpec") -> "LoadedPipeline":
        """The pipeline for ``spec``, loaded (making room first) unless resident; marked most recently used."""
        with self.use(spec) as loaded:
            return loaded

    @contextlib.contextmanager
    def use(self, spec: "PipelineSpec"):
        """The loaded pipeline, pinned (never unloaded) for the duration of the ``with`` block; afterwards, idle
        pipelines beyond the limits (loaded while one was pinned) are unloaded, least recently used first, the
        most recently used one kept."""
        resident = self._acquire(spec)
        try:
            yield resident.loaded
        finally:
            with self._lock:
                resident.users -= 1
                self._evict(need_slots=0, need_bytes=0, keep=next(reversed(self.resident_map), None))

    def unload(self, spec_or_key) -> bool:
        """Unload one pipeline now (False when it is not loaded); one in use is refused."""
        key = spec_or_key if isinstance(spec_or_key, tuple) else spec_or_key.load_key
        with self._lock:
            resident = self.resident_map.get(key)
            if resident is None:
                return False
            if resident.users:
                raise PipelineConfigError(f"{resident.name} is generating; unload it when the queue is idle")
            self._drop(resident)
        empty_device_cache()
        return True

    def unload_others(self, keep: tuple | None) -> int:
        """Unload every pipeline not in use except ``keep`` (the out-of-memory retry)."""
        with self._lock:
            dropped = [r for k, r in list(self.resident_map.items()) if k != keep and not r.users]
            for r in dropped:
                self._drop(r)
        empty_device_cache()
        return len(dropped)

    def retry_on_oom(self, fn: Callable[[], T], keep: tuple | None, what: str, name: str, device) -> T:
        """``fn()``; on out-of-memory, unload the other pipelines and call it once more; then ModelMemoryError."""
        try:
            return fn()
        except Exception as e:  # noqa: BLE001 - only out-of-memory is handled, the rest re-raised
            if not is_oom(e):
                raise
            log.warning("out of memory %s %s on %s: unloading the other pipelines and retrying once", what, name,
                        device)
        dropped = self.unload_others(keep)
        try:
            return fn()
        except Exception as e:  # noqa: BLE001
            if not is_oom(e):
                raise
            empty_device_cache()
            raise ModelMemoryError(self.memory_message(what, name, device, dropped)) from None

    def memory_message(self, what: str, name: str, device, dropped: int) -> str:
        others = f" after unloading {dropped} other pipeline{'s' * (dropped != 1)}" if dropped else ""
        return (f"out of memory on {device} {what} {name}{others}: lower batch_size or pipeline.height/width, or "
                f"use pipeline.cpu_offload=true, pipeline.quantize=nf4 or pipeline.dtype=bf16; keep fewer pipelines "
                f"loaded with models.max_resident (now {self.max_resident}) or models.max_memory_gb (now "
                f"{self.max_memory_gb})")

    # -- internals --------------------------------------------------------------------------------------
    def _acquire(self, spec: "PipelineSpec") -> Resident:
        key = spec.load_key
        with self._lock:
            resident = self.resident_map.get(key)
            if resident is not None:
                return self._touch(resident)
        with self._load_lock:
            with self._lock:  # loaded by another thread while this one waited
                resident = self.resident_map.get(key)
                if resident is not None:
                    return self._touch(resident)
            source = spec.check()
            estimate = checkpoint_bytes(source.path, spec.dtype) if self.max_memory_gb else 0
            with self._lock:
                self._evict(need_slots=1, need_bytes=estimate, keep=None)
            empty_device_cache()
            loaded = self.retry_on_oom(lambda: spec._load(source), None, "loading", spec.name, spec.resolve_device())
            resident = Resident(key, spec.name, loaded, weight_bytes(loaded.pipe))
            with self._lock:
                self.resident_map[key] = resident
                self._evict(need_slots=0, need_bytes=0, keep=key)
                log.info("loaded %s (%.2f GB of weights; resident: %s)", spec.name, resident.bytes / 1e9,
                         ", ".join(self.names()))
                return self._touch(resident)

    def _touch(self, resident: Resident) -> Resident:
        resident.users += 1
        resident.last_used = time.monotonic()
        self.resident_map.move_to_end(resident.key)
        return resident

    def _evict(self, need_slots: int, need_bytes: int, keep: tuple | None) -> None:
        """Drop least-recently-used idle pipelines until ``need_slots`` more fit the count and ``need_bytes``
        more fit the memory budget (under the map lock)."""
        budget = self.max_memory_gb * 1e9 if self.max_memory_gb else None
        for resident in list(self.resident_map.values()):
            over_count = len(self.resident_map) + need_slots > self.max_resident
            used = sum(r.bytes for r in self.resident_map.values())
            over_bytes = budget is not None and used + need_bytes > budget
            if not (over_count or over_bytes):
                return
            if resident.key != keep and not resident.users:
                log.info("unloading %s (least recently used) to make room", resident.name)
                self._drop(resident)

    def _drop(self, resident: Resident) -> None:
        del self.resident_map[resident.key]
        resident.loaded.embeds.clear()


_MANAGER = ModelManager()


def manager() -> ModelManager:
    """The process's model manager (tts-search jobs and tts-serve share it)."""
    return _MANAGER


def preset_spec(name: str, **overrides) -> "PipelineSpec":
    """The pipeline preset configs/pipeline/NAME.yaml as a PipelineSpec (one line naming the choices if unknown)."""
    import yaml

    from ..core.configtree import choices, config_dir
    from . import PipelineSpec

    path = config_dir() / "pipeline" / f"{name}.yaml"
    if not path.is_file():
        valid = choices("pipeline")
        close = difflib.get_close_matches(str(name), valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PipelineConfigError(f"unknown pipeline {name!r}{hint} choices: {', '.join(valid)}")
    node = yaml.safe_load(path.read_text(encoding="utf-8"))
    return PipelineSpec(**({k: v for k, v in node.items() if k != "_target_"} | overrides))


def configure(node, specs: dict[str, "PipelineSpec"] | None = None) -> ModelManager:
    """Apply a ``models`` config block (max_resident, max_memory_gb, preload) to the process's manager and
    preload the named pipelines (``specs`` first, then the presets); idempotent across multirun jobs."""
    settings = dict(node or {})
    unknown = sorted(set(settings) - {"max_resident", "max_memory_gb", "preload"})
    if unknown:
        raise PipelineConfigError(f"unknown key models.{unknown[0]} (keys: max_resident, max_memory_gb, preload)")
    preload = list(settings.get("preload") or [])
    max_resident = settings.get("max_resident", 1)
    if is_int(max_resident) and len(preload) > max_resident:
        raise PipelineConfigError(f"models.preload names {len(preload)} pipelines but models.max_resident="
                                  f"{max_resident} "
                            f"keeps only {max_resident} loaded: raise models.max_resident to {len(preload)}")
    mgr = manager()
    mgr.configure(max_resident, settings.get("max_memory_gb"))
    resolved = [(specs or {}).get(name) or preset_spec(name) for name in preload]
    for spec in resolved:
        spec.check()
    for spec in resolved:
        mgr.load(spec)
    return mgr
