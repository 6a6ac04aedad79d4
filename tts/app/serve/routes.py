"""The HTTP endpoints (FastAPI) over a :class:`GenerationService`: ``GET /``, ``GET /health``, ``POST
/models/{name}/load`` and ``/unload``, ``POST /generate`` and ``POST /generate/stream`` (Server-Sent Events)."""
from __future__ import annotations

import asyncio
import json

from ...pipelines import PipelineConfigError
from ...pipelines.models import ModelMemoryError
from .guards import BearerToken, SameSite
from .validation import RequestError
from .service import GenerationService

try:  # the serve extra
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
except ImportError:  # main() says what to install
    FastAPI = None


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
    videos = [mp4 for r in results for mp4 in r.get("videos", [])]  # video pipelines: MP4 bytes per candidate
    return {"images": [png for r in results for png in r["images"]], "nfe": results[0]["nfe"],
            "seconds": sum(r["seconds"] for r in results), "batch": max(r["batch"] for r in results),
            "latent_shape": results[0]["latent_shape"], "model_id": results[0]["model_id"]} | (
        {"videos": videos} if videos else {})

