"""``tts-serve``: a generation server (FastAPI + uvicorn) that keeps pipelines loaded for searches.

    tts-serve                                          # 127.0.0.1:8580, every pipeline preset by name
    tts-serve server.port=0 models.preload=[shapes]    # any free port (the URL is printed), shapes loaded
    TTS_SERVER_TOKEN=... tts-serve server.host=0.0.0.0 pipeline=sdxl pipeline.dtype=fp16

Searches point at it with ``tts-search pipeline.server=http://HOST:8580`` (tts.pipelines.remote). Endpoints:
``GET /`` (models available and loaded), ``GET /health`` (devices, loaded models, memory, queue depth),
``POST /models/{name}/load`` and ``/unload``, ``POST /generate`` (prompt or prompt embeddings, noise
lineages, call settings -> PNGs and NFEs, as tts.sampling.generate makes them locally) and ``POST /generate/stream``
(the same, as Server-Sent Events: queued, started, progress per denoising step, result or error).
Generation runs one batch at a time per device, fair across clients, same-model requests batched
(tts.app.scheduler); pipelines live in the model manager (tts.pipelines.models). A bad request gets a 4xx naming the
problem; a client that disconnects has its queued work cancelled. Any address but loopback needs a bearer
token from ``TTS_SERVER_TOKEN``; when it is set, every request must carry it.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import difflib
import hashlib
import io
import ipaddress
import json
import logging
import math
import os
import re
import secrets
import socket
import sys
import time

try:  # the serve extra
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
except ImportError:  # main() says what to install
    FastAPI = None

from ..sampling.generate import Embeds, Generator
from ..pipelines.models import ModelManager, ModelMemoryError, configure, preset_spec
from ..pipelines import PipelineConfigError, PipelineSpec
from ..pipelines.remote import CALL_SETTINGS, TOKEN_ENV
from .scheduler import DeviceQueue, Work
from ..core.validate import install_hint, is_int, is_number

log = logging.getLogger("tts.app.serve")
MAX_LINEAGE_DEPTH = 256
#: the shortest TTS_SERVER_TOKEN a server reachable from other machines accepts
MIN_TOKEN_CHARS = 16
EMBED_KEYS = frozenset({"prompt_embeds", "pooled_prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                        "negative_pooled_prompt_embeds", "negative_prompt_attention_mask"})


class RequestError(Exception):
    """A request the server refuses: HTTP ``status`` and a message naming the problem."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


@dataclasses.dataclass
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8580
    batch_size: int = 8
    max_candidates: int = 256
    max_steps: int = 1000
    max_body_mb: float = 64
    batch_wait_ms: float = 50
    #: web pages that may call this server from a browser (CORS), e.g. ``[http://localhost:3000]``
    allowed_origins: list = dataclasses.field(default_factory=list)
    #: names clients reach this server by besides its address, localhost and this machine's name (a proxy's)
    allowed_hosts: list = dataclasses.field(default_factory=list)

    def __post_init__(self):
        for key in ("allowed_origins", "allowed_hosts"):
            value = getattr(self, key)
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v for v in value):
                raise PipelineConfigError(f"server.{key} must be a list of strings, got {value!r}")
        for origin in self.allowed_origins:
            if not re.fullmatch(r"https?://[^/\s]+", origin):
                raise PipelineConfigError(f"server.allowed_origins: {origin!r} is not an origin "
                                          "(scheme://host[:port], no path), e.g. http://localhost:3000")
        for key in ("port", "batch_size", "max_candidates", "max_steps"):
            value = getattr(self, key)
            if not is_int(value) or value < (0 if key == "port" else 1):
                raise PipelineConfigError(f"server.{key} must be a {'non-negative' if key == 'port' else 'positive'} "
                                          f"integer, got {value!r}")
        if self.port > 65535:
            raise PipelineConfigError(f"server.port must be at most 65535 (0: any free port), got {self.port}")
        for key in ("max_body_mb", "batch_wait_ms"):
            value = getattr(self, key)
            if not is_number(value) or not 0 <= value < math.inf:
                raise PipelineConfigError(f"server.{key} must be a non-negative number, got {value!r}")

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclasses.dataclass(frozen=True)
class Payload:
    """What one work generates: the request's spec, its prompt (text or embeddings), its noises."""

    spec: PipelineSpec
    prompt: str | Embeds
    lineages: list


# -- validation -----------------------------------------------------------------------------------------------

def check_lineage(lineage, where: str) -> None:
    """A noise lineage as tts.core.noise describes it (fresh, or neighbour of a pivot), iteratively, to a bounded depth."""
    node = lineage
    for _ in range(MAX_LINEAGE_DEPTH):
        if not isinstance(node, dict):
            raise RequestError(422, f"{where}: a lineage is an object, got {type(node).__name__}")
        seed = node.get("seed")
        if not is_int(seed) or not 0 <= seed < 2 ** 63:
            raise RequestError(422, f"{where}: seed must be an integer in [0, 2**63), got {seed!r}")
        kind = node.get("kind")
        if kind == "fresh":
            if set(node) != {"kind", "seed"}:
                raise RequestError(422, f"{where}: a fresh lineage has only kind and seed, got {sorted(node)}")
            return
        if kind != "neighbor":
            raise RequestError(422, f"{where}: kind must be 'fresh' or 'neighbor', got {kind!r}")
        tau = node.get("threshold")
        if not is_number(tau) or not 0 < tau < 1:
            raise RequestError(422, f"{where}: threshold must lie strictly between 0 and 1, got {tau!r}")
        if set(node) != {"kind", "seed", "threshold", "pivot"}:
            raise RequestError(422, f"{where}: a neighbor lineage has kind, seed, threshold and pivot, got "
                                    f"{sorted(node)}")
        node, where = node["pivot"], f"{where}.pivot"
    raise RequestError(422, f"{where}: lineage deeper than {MAX_LINEAGE_DEPTH} pivots")


def decode_embeds(text) -> Embeds:
    """``prompt_embeds``: base64 of a safetensors file with the family's encoding outputs (batch size 1)."""
    from safetensors.torch import load

    if not isinstance(text, str):
        raise RequestError(422, "prompt_embeds must be a base64 string of a safetensors file")
    try:
        raw = base64.b64decode(text, validate=True)
        tensors = load(raw)
    except Exception as e:  # noqa: BLE001 - any undecodable upload is the client's error
        raise RequestError(422, f"prompt_embeds is not base64 of a safetensors file ({type(e).__name__}: "
                                f"{e})") from None
    if "prompt_embeds" not in tensors or not set(tensors) <= EMBED_KEYS:
        raise RequestError(422, f"prompt_embeds must hold prompt_embeds and only {', '.join(sorted(EMBED_KEYS))}; "
                                f"got {', '.join(sorted(tensors))}")
    if any(t.ndim == 0 or t.shape[0] != 1 for t in tensors.values()):
        raise RequestError(422, "prompt_embeds tensors must have batch size 1 (the server repeats them)")
    return Embeds(hashlib.sha256(raw).hexdigest(), tensors)


def _known(name: str, registry: dict) -> None:
    if name not in registry:
        close = difflib.get_close_matches(name, list(registry), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RequestError(404, f"unknown model {name!r}{hint} available: {', '.join(sorted(registry))}")


# -- the service --------------------------------------------------------------------------------------------

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
        pngs = []
        for image in images:
            buf = io.BytesIO()
            image.save(buf, format="PNG")
            pngs.append(base64.b64encode(buf.getvalue()).decode())
        out, start = [], 0
        for w in works:
            n = len(w.payload.lineages)
            out.append({"images": pngs[start:start + n], "nfe": nfe, "seconds": seconds, "batch": len(lineages),
                        "latent_shape": list(shape), "model_id": spec.model_id})
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
            shape = loaded.family.latent_shape(loaded.pipe, spec.height, spec.width)
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


# -- HTTP -------------------------------------------------------------------------------------------------

def _error_status(error: BaseException) -> tuple[int, str]:
    if isinstance(error, RequestError):
        return error.status, str(error)
    if isinstance(error, ModelMemoryError):
        return 507, str(error)
    if isinstance(error, (PipelineConfigError, ValueError, TypeError)):
        return 422, f"the pipeline refused the request: {error}"
    return 500, f"generation failed: {type(error).__name__}: {error}"


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def create_app(service: GenerationService, token: str | None = None):
    """The FastAPI app over ``service``; with ``token``, every request must carry ``Authorization: Bearer``."""
    app = FastAPI(title="tts-serve", docs_url=None, redoc_url=None, openapi_url=None)
    limit = int(service.settings.max_body_mb * 1024 * 1024)
    expected = f"Bearer {token}".encode() if token else None

    if expected is not None:
        app.add_middleware(BearerToken, expected=expected)
    origins = [o.rstrip("/").lower() for o in service.settings.allowed_origins]
    if origins:  # a front end's page may call the server from a browser (preflight answered before the token)
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", "X-TTS-Client"])
    app.add_middleware(SameSite, settings=service.settings, origins=frozenset(origins))

    @app.exception_handler(RequestError)
    async def refused(request: Request, e: RequestError):
        return JSONResponse({"detail": str(e)}, status_code=e.status)

    async def read_json(request: Request) -> dict:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise RequestError(413, f"request body of {int(length)} bytes exceeds server.max_body_mb "
                                    f"({service.settings.max_body_mb})")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestError(413, f"request body exceeds server.max_body_mb ({service.settings.max_body_mb})")
        if not body:
            return {}
        try:
            data = json.loads(body)
        except RecursionError:
            raise RequestError(400, "the body's JSON nests too deeply") from None
        except ValueError as e:
            raise RequestError(400, f"the body is not JSON: {e}") from None
        if not isinstance(data, dict):
            raise RequestError(422, "the body must be a JSON object")
        return data

    def client_of(request: Request) -> str:
        given = request.headers.get("x-tts-client", "")[:64]
        return given or (f"{request.client.host}:{request.client.port}" if request.client else "anonymous")

    @app.get("/")
    async def index():
        return service.index()

    @app.get("/health")
    async def health():
        return service.health()

    @app.post("/models/{name}/load")
    async def load(name: str, request: Request):
        body = await read_json(request)
        try:
            return await run_in_threadpool(service.load, name, body)
        except RequestError:
            raise
        except Exception as e:  # noqa: BLE001 - a model that cannot load is reported, the server lives on
            status, message = _error_status(e)
            return JSONResponse({"detail": message}, status_code=status)

    @app.post("/models/{name}/unload")
    async def unload(name: str):
        return await run_in_threadpool(service.unload, name)

    @app.post("/generate")
    async def generate(request: Request):
        queue, works = service.works(await read_json(request), client_of(request))
        queue.submit(works)
        futures = [asyncio.wrap_future(w.future) for w in works]
        pending = set(futures)
        while pending:
            _, pending = await asyncio.wait(pending, timeout=0.2)
            if pending and await request.is_disconnected():
                queue.cancel(works)
                return JSONResponse({"detail": "client disconnected"}, status_code=499)
        return _merge(futures)

    @app.post("/generate/stream")
    async def generate_stream(request: Request):
        loop, events = asyncio.get_running_loop(), asyncio.Queue()

        def on_event(name: str, data: dict) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (name, data))

        queue, works = service.works(await read_json(request), client_of(request), on_event)
        ahead = queue.submit(works)

        async def stream():
            finished = False
            try:
                yield sse("queued", {"ahead": ahead, "candidates": sum(w.rows for w in works)})
                done = asyncio.ensure_future(asyncio.gather(*(asyncio.wrap_future(w.future) for w in works)))
                while not done.done() or not events.empty():
                    get = asyncio.ensure_future(events.get())
                    await asyncio.wait({get, done}, return_when=asyncio.FIRST_COMPLETED)
                    if get.done():
                        yield sse(*get.result())
                    else:
                        get.cancel()
                finished = True
                try:
                    yield sse("result", _merge([done]))
                except Exception as e:  # noqa: BLE001 - the error goes to this client as an event
                    status, message = _error_status(e)
                    yield sse("error", {"status": status, "detail": message})
            finally:
                if not finished:
                    queue.cancel(works)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    return app


class SameSite:
    """ASGI middleware against other web sites (a page a user visits, DNS rebinding): the Host header must name
    this server (its address, localhost, this machine, ``server.allowed_hosts``), an Origin, when sent, must be
    this server's or one of ``server.allowed_origins``, and a POST's body must be ``application/json`` (which no
    page can send to another site without a CORS preflight, refused here)."""

    def __init__(self, app, settings: ServerSettings, origins: frozenset[str]):
        self.app, self.origins = app, origins
        self.hosts = {"localhost", "127.0.0.1", "::1", settings.host.lower().strip("[]"), socket.gethostname().lower(),
                      socket.getfqdn().lower()} | {h.lower() for h in settings.allowed_hosts}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            problem = self.problem(scope)
            if problem is not None:
                await JSONResponse({"detail": problem[1]}, status_code=problem[0])(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def problem(self, scope) -> tuple[int, str] | None:
        headers = {}
        for k, v in scope.get("headers") or []:
            headers.setdefault(k.decode("latin-1").lower(), v.decode("latin-1"))
        server = scope.get("server") or ("", 0)
        hosts = self.hosts | {str(server[0]).lower()}
        host = _host_name(headers.get("host", ""))
        if host not in hosts:
            return 403, (f"Host {headers.get('host', '')[:80]!r} is not this server's name (DNS rebinding?); reach it "
                         "by its address, or add the name to server.allowed_hosts")
        origin = headers.get("origin")
        if origin is not None:
            parts = origin.rstrip("/").lower()
            same = re.fullmatch(r"https?://([^/]+)", parts)
            own = same is not None and _host_name(same.group(1)) in hosts and _port(same.group(1)) == server[1]
            if not own and parts not in self.origins:
                return 403, (f"requests from Origin {origin[:80]!r} are not accepted; to let a front end's page call "
                             "this server, start it with server.allowed_origins=[<its origin>]")
        kind = headers.get("content-type", "").split(";")[0].strip().lower()
        bodyless = "content-type" not in headers and headers.get("content-length", "0") == "0" \
            and "transfer-encoding" not in headers
        if scope.get("method") == "POST" and kind != "application/json" and not bodyless:
            return 415, "POST bodies must be application/json (Content-Type: application/json)"
        return None


def _host_name(value: str) -> str:
    """A Host header's (or an origin's host:port) name, lower case, without port, brackets or a trailing dot."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[1:value.find("]")] if "]" in value else value
    return value.rpartition(":")[0].rstrip(".") if value.count(":") == 1 else value.rstrip(".")


def _port(value: str) -> int | None:
    tail = value.rpartition("]")[2] if value.startswith("[") else value
    port = tail.rpartition(":")[2] if ":" in tail else ""
    return int(port) if port.isdigit() else None


class BearerToken:
    """ASGI middleware: every HTTP request must carry ``Authorization: Bearer <token>`` (plain ASGI, so that
    endpoints still see client disconnects)."""

    def __init__(self, app, expected: bytes):
        self.app, self.expected = app, expected

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not secrets.compare_digest(given, self.expected):
                refused = JSONResponse({"detail": f"missing or wrong bearer token: send Authorization: Bearer "
                                                  f"${TOKEN_ENV}"}, status_code=401)
                await refused(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _merge(futures) -> dict:
    """The works' results as one answer (raising the first error as RequestError for the HTTP layer)."""
    results = []
    for f in futures:
        try:
            result = f.result()
        except RequestError:
            raise
        except Exception as e:  # noqa: BLE001
            raise RequestError(*_error_status(e)) from None
        results.extend(result if isinstance(result, list) else [result])
    return _merge_results(results)


def _merge_results(results: list[dict]) -> dict:
    return {"images": [png for r in results for png in r["images"]], "nfe": results[0]["nfe"],
            "seconds": sum(r["seconds"] for r in results), "batch": max(r["batch"] for r in results),
            "latent_shape": results[0]["latent_shape"], "model_id": results[0]["model_id"]}


# -- the command ------------------------------------------------------------------------------------------

def compose(argv: list[str]):
    """The server config (configs/serve.yaml) with Hydra-style overrides; pipeline settings the preset's YAML
    does not list are accepted (``pipeline.cpu_offload=true``)."""
    from hydra import compose as hydra_compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from ..core.configtree import config_dir

    fields = {f.name for f in dataclasses.fields(PipelineSpec)}
    overrides = []
    for arg in argv:
        key = arg.partition("=")[0]
        if key.startswith("pipeline.") and key.split(".")[1] in fields and not arg.startswith("+"):
            arg = "++" + arg
        overrides.append(arg)
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        return hydra_compose(config_name="serve", overrides=overrides)


def build_registry(pipeline_node) -> tuple[dict[str, PipelineSpec], str]:
    """Every pipeline preset by name, the configured ``pipeline`` (with its overrides) replacing its namesake."""
    from omegaconf import OmegaConf

    from ..core.configtree import choices

    registry = {}
    for name in choices("pipeline"):
        try:
            registry[name] = preset_spec(name)
        except PipelineConfigError as e:
            log.warning("pipeline preset %s is not served: %s", name, e)
    settings = OmegaConf.to_container(pipeline_node, resolve=True)
    settings.pop("_target_", None)
    spec = PipelineSpec(**settings)
    if spec.server:
        raise PipelineConfigError("tts-serve generates itself: drop pipeline.server")
    spec.check()
    registry[spec.name] = spec
    return registry, spec.name


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise PipelineConfigError(f"cannot listen on {host}:{port} ({e.strerror}): pick another server.port "
                                  "(0: any free port) or stop what holds it") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def prepare(argv: list[str]):
    """Config, token check, registry, socket, preloading: everything before serving, each failure one line."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        cfg = compose(argv)
    except (HydraException, OmegaConfBaseException) as e:
        raise PipelineConfigError(str(e).splitlines()[0] + " (keys: server.host, server.port, server.batch_size, "
                                  "server.batch_wait_ms, server.max_candidates, server.max_steps, server.max_body_mb, "
                                  "server.allowed_origins, server.allowed_hosts, "
                                  "models.max_resident, models.max_memory_gb, models.preload, pipeline.*)") from None
    try:
        settings = ServerSettings(**OmegaConf.to_container(cfg.server, resolve=True))
    except TypeError as e:
        raise PipelineConfigError(f"server: {e}") from None
    token = os.environ.get(TOKEN_ENV) or None
    if not settings.loopback and not token:
        raise PipelineConfigError(f"server.host={settings.host} is reachable from other machines: set {TOKEN_ENV} "
                                  "(clients send it as a bearer token) or bind server.host=127.0.0.1")
    if not settings.loopback and len(token) < MIN_TOKEN_CHARS:
        raise PipelineConfigError(f"{TOKEN_ENV} has {len(token)} characters; beyond loopback it needs at least "
                                  f"{MIN_TOKEN_CHARS}: set it to e.g. the output of python -c 'import secrets; "
                                  "print(secrets.token_urlsafe(32))'")
    registry, default = build_registry(cfg.pipeline)
    sock = bind(settings.host, settings.port)
    try:
        models = configure(OmegaConf.to_container(cfg.models, resolve=True), registry)
    except BaseException:
        sock.close()
        raise
    return GenerationService(registry, models, settings, default), token, sock


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in argv):
        print(__doc__)
        return
    if FastAPI is None:
        print(f"tts-serve: error: the server needs FastAPI and uvicorn: {install_hint('serve')}", file=sys.stderr)
        sys.exit(2)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        service, token, sock = prepare(argv)
    except (PipelineConfigError, ValueError, FileNotFoundError) as e:
        print(f"tts-serve: error: {e}", file=sys.stderr)
        sys.exit(2)
    import uvicorn

    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"tts-serve: serving on http://{shown}:{port} (models: {', '.join(sorted(service.registry))}; loaded: "
          f"{', '.join(service.models.names()) or 'none'}; batch_size {service.settings.batch_size}"
          f"{'; bearer token required' if token else ''})", flush=True)
    server = uvicorn.Server(uvicorn.Config(create_app(service, token), log_level="warning", access_log=False))
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
