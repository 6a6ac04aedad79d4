"""The generation service: the pipelines a server offers, requests turned into queued works, one pipeline call per
batch, loading and unloading, and what ``GET /`` and ``GET /health`` report."""
from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import time

from ...core.video import is_video, mp4_bytes
from ...pipelines import PipelineConfigError, PipelineSpec, latent_shape
from ...pipelines.models import ModelManager
from ...pipelines.remote import CALL_SETTINGS
from ...sampling.generate import Embeds, Generator
from ..scheduler import DeviceQueue, Work
from .validation import RequestError, _known, check_lineage, decode_embeds
from .settings import ServerSettings

@dataclasses.dataclass(frozen=True)
class Payload:
    """What one work generates: the request's spec, its prompt (text or embeddings), its noises."""

    spec: PipelineSpec
    prompt: str | Embeds
    lineages: list


class GenerationService:
    """The pipelines a server offers (by name), its device queues, and the batch function they run."""

    def __init__(self, registry: dict[str, PipelineSpec], models: ModelManager, settings: ServerSettings,
                 default: str = "shapes"):
        self.registry, self.models, self.settings, self.default = registry, models, settings, default
        self.queues: dict[str, DeviceQueue] = {}
        self._checked: dict[tuple, PipelineSpec] = {}
        self.started = time.time()

    def spec_for(self, name: str, settings: dict) -> PipelineSpec:
        """The server's pipeline ``name`` with the request's call settings, validated (cached per settings)."""
        _known(name, self.registry)
        unknown = sorted(set(settings) - set(CALL_SETTINGS))
        if unknown:
            raise RequestError(422, f"unknown setting {unknown[0]!r}; settings: {', '.join(CALL_SETTINGS)}")
        steps = settings.get("num_inference_steps")
        if isinstance(steps, int) and steps > self.settings.max_steps:
            raise RequestError(422, f"num_inference_steps={steps} exceeds this server's cap "
                                    f"({self.settings.max_steps})")
        key = (name, json.dumps(settings, sort_keys=True, default=repr))
        if key not in self._checked:
            base = self.registry[name]
            try:
                spec = dataclasses.replace(base, **settings)
                spec.check()
            except (PipelineConfigError, TypeError) as e:
                raise RequestError(422, str(e)) from None
            if len(self._checked) > 1024:
                self._checked.clear()
            self._checked[key] = spec
        return self._checked[key]

    def queue_for(self, spec: PipelineSpec) -> DeviceQueue:
        device = spec.resolve_device()
        if device.type == "cuda" and device.index is None:
            import torch

            device = torch.device("cuda", torch.cuda.current_device())
        name = str(device)
        if name not in self.queues:
            self.queues[name] = DeviceQueue(name, self.run_batch, self.settings.batch_size,
                                            self.settings.batch_wait_ms / 1000)
        return self.queues[name]

    def works(self, body: dict, client: str, on_event=lambda name, data: None) -> tuple[DeviceQueue, list[Work]]:
        """A /generate body as works for its device's queue (split into batch_size rows), validated."""
        model = body.get("model")
        if not isinstance(model, str):
            raise RequestError(422, "model (a pipeline name, see GET /) is required")
        unknown = sorted(set(body) - {"model", "model_id", "prompt", "prompt_embeds", "lineages", *CALL_SETTINGS})
        if unknown:
            raise RequestError(422, f"unknown field {unknown[0]!r}; fields: model, model_id, prompt or prompt_embeds, "
                                    f"lineages, {', '.join(CALL_SETTINGS)}")
        self.check_model_id(model, body)
        spec = self.spec_for(model, {k: body[k] for k in CALL_SETTINGS if k in body})
        if ("prompt" in body) == ("prompt_embeds" in body):
            raise RequestError(422, "give exactly one of prompt (text) and prompt_embeds")
        if "prompt" in body:
            prompt = body["prompt"]
            if not isinstance(prompt, str) or not prompt.strip():
                raise RequestError(422, "prompt must be a non-empty string")
            kind: tuple = ("text",)
        else:
            prompt = decode_embeds(body["prompt_embeds"])
            kind = ("embeds", tuple(sorted((k, tuple(t.shape), str(t.dtype)) for k, t in prompt.tensors.items())))
        lineages = body.get("lineages")
        if not isinstance(lineages, list) or not 1 <= len(lineages) <= self.settings.max_candidates:
            raise RequestError(422, f"lineages must be a list of 1 to {self.settings.max_candidates} noise lineages")
        for i, lineage in enumerate(lineages):
            check_lineage(lineage, f"lineages[{i}]")
        key = (spec.load_key, model, json.dumps({k: getattr(spec, k) for k in CALL_SETTINGS}, sort_keys=True,
                                                default=repr), kind)
        size = self.settings.batch_size
        works = [Work(client, key, Payload(spec, prompt, lineages[i:i + size]), len(lineages[i:i + size]), on_event)
                 for i in range(0, len(lineages), size)]
        return self.queue_for(spec), works

    def run_batch(self, works: list[Work]) -> list[dict]:
        """One pipeline call for the works (same model and settings); their images and NFEs, in order."""
        spec = works[0].payload.spec
        prompts = [w.payload.prompt for w in works for _ in w.payload.lineages]
        lineages = [n for w in works for n in w.payload.lineages]
        for w in works:
            w.on_event("started", {"batch": len(lineages)})

        def on_step(done: int, steps: int) -> None:
            for w in works:
                w.on_event("progress", {"step": done, "steps": steps})

        with self.models.use(spec) as loaded:
            spec._apply_memory_options(loaded.pipe)
            generator = Generator(loaded, spec, self.models)
            try:
                shape = generator.latent_shape
                images, nfe, seconds = generator.generate(prompts, lineages, on_step)
            finally:
                generator.close()
        pngs, mp4s = [], []
        for image in images:
            buf = io.BytesIO()
            image.save(buf, format="PNG")  # a video: its keyframe strip
            pngs.append(base64.b64encode(buf.getvalue()).decode())
            if is_video(image):
                mp4s.append(base64.b64encode(mp4_bytes(image)).decode())
        out, start = [], 0
        for w in works:
            n = len(w.payload.lineages)
            out.append({"images": pngs[start:start + n], "nfe": nfe, "seconds": seconds, "batch": len(lineages),
                        "latent_shape": list(shape), "model_id": spec.model_id}
                       | ({"videos": mp4s[start:start + n]} if mp4s else {}))
            start += n
        return out

    def check_model_id(self, name: str, body: dict) -> None:
        """A request naming the checkpoint it wants (``model_id``) gets it or a 409: a server never generates
        with another model than the one the client records."""
        _known(name, self.registry)
        asked, served = body.get("model_id"), self.registry[name].model_id
        if asked is not None and asked != served:
            raise RequestError(409, f"this server serves {name!r} as {served!r}, not {asked!r}: start tts-serve with "
                                    f"pipeline={name} pipeline.model_id={asked}, or search with "
                                    f"pipeline.model_id={served}")

    def load(self, name: str, body: dict) -> dict:
        _known(name, self.registry)
        unknown = sorted(set(body) - {"height", "width", "dtype", "model_id"})
        if unknown:
            raise RequestError(422, f"unknown field {unknown[0]!r}; fields: height, width, dtype, model_id")
        self.check_model_id(name, body)
        spec = self.spec_for(name, {k: body[k] for k in ("height", "width", "dtype") if k in body})
        start = time.perf_counter()
        with self.models.use(spec) as loaded:
            shape = latent_shape(loaded.family, loaded.pipe, spec)
        return {"name": name, "loaded": True, "model_id": spec.model_id, "latent_shape": list(shape),
                "seconds": round(time.perf_counter() - start, 3)}

    def unload(self, name: str) -> dict:
        """Unload every loaded copy of ``name`` (one per dtype a client asked for)."""
        _known(name, self.registry)
        try:
            count = sum(self.models.unload(r.key) for r in self.models.resident() if r.name == name)
        except PipelineConfigError as e:
            raise RequestError(409, str(e)) from None
        return {"name": name, "unloaded": count > 0}

    def index(self) -> dict:
        model_ids = {n: s.model_id for n, s in sorted(self.registry.items())}
        return {"service": "tts-serve", "models": {"available": sorted(self.registry), "loaded": self.models.names(),
                                                   "model_ids": model_ids},
                "batch_size": self.settings.batch_size}

    def health(self) -> dict:
        return {"status": "ok", "uptime_s": round(time.time() - self.started, 1),
                "device": str(self.registry[self.default].resolve_device()),
                "queue": sum(q.depth for q in self.queues.values()),
                "devices": {name: {"queue": q.depth, "busy": q.busy} | dataclasses.asdict(q.counters)
                            for name, q in self.queues.items()},
                "loaded": [{"name": r.name, "model_id": r.key[0], "device": str(r.loaded.device),
                            "weights_gb": round(r.bytes / 1e9, 4), "in_use": r.users > 0}
                           for r in self.models.resident()],
                "memory": memory_report(), "max_resident": self.models.max_resident,
                "max_memory_gb": self.models.max_memory_gb}


def memory_report() -> dict:
    """Process resident memory and, on CUDA, each GPU's allocated, reserved and total memory (GB)."""
    import torch

    out = {}
    try:
        with open("/proc/self/statm") as f:
            out["process_rss_gb"] = round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9, 3)
    except OSError:
        pass
    if torch.cuda.is_available():
        out["cuda"] = {f"cuda:{i}": {"allocated_gb": round(torch.cuda.memory_allocated(i) / 1e9, 3),
                                     "reserved_gb": round(torch.cuda.memory_reserved(i) / 1e9, 3),
                                     "total_gb": round(torch.cuda.get_device_properties(i).total_memory / 1e9, 3)}
                       for i in range(torch.cuda.device_count())}
    return out

