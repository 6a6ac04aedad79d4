"""Generation on tts-serve servers: ``pipeline.server=URL`` (or ``[URL1,URL2]``, used round-robin).

``RemoteGenerator`` has the local Generator's interface (``latent_shape``, ``generate``, ``close``): it
sends the prompt and the candidates' noise lineages with the pipeline's call settings; the server rebuilds
each noise from its lineage and returns PNGs and NFEs, so the search, its records and its images are those
of a local run. Connection failures, timeouts and 429/502/503/504 answers are retried on the next server
with exponential backoff (``pipeline.server_attempts`` tries); other 4xx answers fail at once. A request
that still fails raises ServerError, one line: the run stops and a rerun of its folder resumes. The bearer
token comes only from the environment variable ``TTS_SERVER_TOKEN``.
"""
from __future__ import annotations

import base64
import io
import itertools
import logging
import os
import time
import uuid
from typing import TYPE_CHECKING

from PIL import Image

from .checks import PipelineConfigError

if TYPE_CHECKING:
    from . import PipelineSpec

log = logging.getLogger(__name__)
TOKEN_ENV = "TTS_SERVER_TOKEN"
RETRY_STATUS = frozenset({408, 429, 502, 503, 504})
MAX_BACKOFF_S = 30.0
CHECK_TIMEOUT_S = 5.0
#: the pipeline settings a request carries (the server owns where and how else its model is loaded)
CALL_SETTINGS = ("height", "width", "num_inference_steps", "guidance_scale", "max_sequence_length", "call_args",
                 "dtype", "num_frames", "fps")
VIDEO_SETTINGS = ("num_frames", "fps")  # sent only when set (a server from before video takes requests without them)


class ServerError(PipelineConfigError):
    """Remote generation failed (server unreachable, refused the request, or kept failing)."""


def auth_headers() -> dict[str, str]:
    token = os.environ.get(TOKEN_ENV)
    return {"Authorization": f"Bearer {token}"} if token else {}


def call_settings(spec: PipelineSpec) -> dict:
    return {k: getattr(spec, k) for k in CALL_SETTINGS if k not in VIDEO_SETTINGS or getattr(spec, k) is not None}


def _detail(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return detail if isinstance(detail, str) else str(detail)[:300]


def check_servers(spec: PipelineSpec) -> None:
    """Every server answers (in seconds), accepts our token and serves ``spec.name``; else one line naming the fix."""
    import httpx

    for url in spec.server:
        try:
            r = httpx.get(f"{url}/", headers=auth_headers(), timeout=CHECK_TIMEOUT_S)
        except httpx.HTTPError as e:
            raise ServerError(f"cannot reach tts-serve at {url} ({type(e).__name__}: {e}): start it there "
                              f"(tts-serve server.port=...) or fix pipeline.server") from None
        if r.status_code == 401:
            raise ServerError(f"{url} refused the token: set {TOKEN_ENV} to the token the server was started with")
        if r.status_code != 200 or "models" not in r.text:
            raise ServerError(f"{url} is not a tts-serve server (GET / answered {r.status_code}); fix pipeline.server")
        available = r.json()["models"]["available"]
        if spec.name not in available:
            raise ServerError(f"{url} serves no pipeline {spec.name!r}; it serves: {', '.join(available)}")
        served = r.json()["models"].get("model_ids", {}).get(spec.name, spec.model_id)
        if served != spec.model_id:
            raise ServerError(f"{url} serves {spec.name!r} as {served!r}, not {spec.model_id!r}: search with "
                              f"pipeline.model_id={served}, or start tts-serve with pipeline={spec.name} "
                              f"pipeline.model_id={spec.model_id}")


class RemoteGenerator:
    """Generates on tts-serve servers, round-robin, with retries; the local Generator's interface."""

    def __init__(self, spec: PipelineSpec, client_id: str | None = None):
        import httpx

        self.spec, self.urls = spec, list(spec.server)
        self.client_id = client_id or uuid.uuid4().hex[:12]
        self._turn = itertools.cycle(range(len(self.urls)))
        self._http = httpx.Client(timeout=httpx.Timeout(spec.server_timeout_s, connect=CHECK_TIMEOUT_S),
                                  headers=auth_headers() | {"X-TTS-Client": self.client_id})
        shapes = set()
        for url in self.urls:  # the model is loaded on every server before the first batch
            info = self._send("POST", f"/models/{spec.name}/load", {"height": spec.height, "width": spec.width,
                                                                     "dtype": spec.dtype, "model_id": spec.model_id},
                              urls=[url])
            shapes.add(tuple(info["latent_shape"]))
            log.info("generating on %s: %s = %s", url, spec.name, info.get("model_id"))
        if len(shapes) > 1:
            raise ServerError(f"the servers of pipeline.server load different models for {spec.name!r} (latent "
                              f"shapes {sorted(shapes)}); point them at one checkpoint")
        self.latent_shape = shapes.pop()

    def close(self) -> None:
        self._http.close()

    def generate(self, prompt: str, lineages: list[dict]):
        """(images, NFEs per candidate, seconds) for one batch, generated on the next server."""
        start = time.perf_counter()
        body = {"model": self.spec.name, "model_id": self.spec.model_id, "prompt": prompt,
                "lineages": lineages} | call_settings(self.spec)
        out = self._send("POST", "/generate", body)
        if out.get("model_id", self.spec.model_id) != self.spec.model_id:
            raise ServerError(f"the server generated with {out['model_id']!r}, not pipeline.model_id="
                              f"{self.spec.model_id}: point pipeline.server at a server that serves it")
        if out.get("videos"):  # a video pipeline: each candidate as MP4 bytes (its PNG is the keyframe strip)
            from ..core.video import video_from_bytes

            images = [video_from_bytes(base64.b64decode(mp4)) for mp4 in out["videos"]]
        else:
            images = [Image.open(io.BytesIO(base64.b64decode(png))).convert("RGB") for png in out["images"]]
        if len(images) != len(lineages):
            raise ServerError(f"the server returned {len(images)} images for {len(lineages)} noises")
        return images, float(out["nfe"]), time.perf_counter() - start

    def _send(self, method: str, path: str, body: dict, urls: list[str] | None = None) -> dict:
        """The JSON answer of the first server that gives one, trying ``server_attempts`` times in all."""
        import httpx

        attempts, start, last = self.spec.server_attempts, time.monotonic(), ""
        for attempt in range(attempts):
            url = urls[attempt % len(urls)] if urls else self.urls[next(self._turn)]
            try:
                r = self._http.request(method, url + path, json=body)
            except httpx.HTTPError as e:
                last = f"{url}: {type(e).__name__}: {e}"
            else:
                if r.status_code == 200:
                    return r.json()
                if r.status_code not in RETRY_STATUS:
                    raise ServerError(f"{url} refused {path}: {r.status_code} {_detail(r)}")
                last = f"{url}: {r.status_code} {_detail(r)}"
            if attempt + 1 < attempts:
                wait = min(MAX_BACKOFF_S, 2.0 ** attempt)
                log.warning("generation server failed (%s); retry %d/%d in %.0f s", last, attempt + 1, attempts - 1,
                            wait)
                time.sleep(wait)
        raise ServerError(f"generation server failed {attempts} times over {time.monotonic() - start:.0f} s (last: "
                          f"{last}); finished candidates are saved: start the server again and rerun the same folder "
                          f"(hydra.run.dir=...) to resume")
