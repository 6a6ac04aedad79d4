"""A grading server on 127.0.0.1 that speaks the Gemini ``generateContent`` and OpenAI
``chat/completions`` wire protocols (Google's Gemini API reference, ``models.generateContent``;
OpenAI's API reference, ``chat/completions``), for tests, benchmarks and offline
try-outs of the API verifiers with their real clients.

It grades deterministically from the images it receives (``score_image``: how much of the image is
saturated colour, 0-10, the same for every metric), answers after a fixed latency, reports token
usage, and can inject faults per request content and attempt: 429 with or without Retry-After, 500,
503, slow answers, malformed JSON, schema-breaking answers, safety blocks, dropped connections, and
200 answers whose body is not JSON or not the API's response schema.

The answer takes the shape of the response schema the client sends (Gemini
``generationConfig.responseSchema`` or ``responseJsonSchema``, OpenAI ``response_format`` of type
``json_schema``): an array schema gets a list with one item per image in the request, an object
schema one object, each filled from the schema (integers and numbers take the score, strings an
explanation); without a schema, the six-metric grading object.

    python -m tts.verifiers.loopback --port 8765 --latency 0.5
    GEMINI_API_KEY=x tts-search verifier=gemini verifier.base_url=http://127.0.0.1:8765
    OPENAI_API_KEY=x tts-search verifier=openai verifier.base_url=http://127.0.0.1:8765/v1
"""
from __future__ import annotations

import argparse
import base64
import collections
import hashlib
import io
import json
import re
import select
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
from PIL import Image

from .grading import METRICS

OUTPUT_TOKENS = 60
GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):generateContent$")


def score_image(image: Image.Image) -> int:
    """0-10: the share of clearly coloured pixels (HSV saturation > 0.35), times 10, rounded."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
    return int(round(10 * float((hsv[..., 1] > 0.35 * 255).mean())))


def input_tokens(images: list[bytes], text: str) -> int:
    """The server's token count for a request: 85 per image, one per 64 image bytes, one per word."""
    return sum(85 + len(data) // 64 for data in images) + len(text.split())


GRADES_SCHEMA = {"type": "object", "properties": {
    m: {"type": "object", "properties": {"explanation": {"type": "string"}, "score": {"type": "integer"}}}
    for m in METRICS}}


def answer_json(schema: dict | None, scores: list[int]) -> str:
    """The answer's JSON text in the shape of ``schema``: a list with one item per image for an array
    schema, else one object for the first image; the six-metric grading object without a schema."""
    schema = schema if isinstance(schema, dict) and schema else GRADES_SCHEMA
    top = _resolve(schema, schema)
    if _kind(top) == "array":
        return json.dumps([_fill(top.get("items") or {}, schema, s, ()) for s in scores])
    return json.dumps(_fill(top, schema, scores[0], ()))


def _resolve(schema: dict, root: dict) -> dict:
    """Follow a local ``$ref`` and take the first non-null branch of anyOf / oneOf / allOf."""
    for _ in range(32):
        if "$ref" in schema:
            node = root
            for part in schema["$ref"].removeprefix("#/").split("/"):
                node = node.get(part, {}) if part else node
            schema = node
        elif any(k in schema for k in ("anyOf", "oneOf", "allOf", "any_of")):
            branches = next(schema[k] for k in ("anyOf", "oneOf", "allOf", "any_of") if k in schema)
            schema = next((b for b in branches if _kind(b) != "null"), branches[0] if branches else {})
        else:
            break
    return schema


def _kind(schema: dict) -> str:
    """The schema's type in lower case (Gemini sends OBJECT, JSON Schema object); object if it has properties."""
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    return str(kind).lower() if kind else ("object" if "properties" in schema else "")


def _fill(schema: dict, root: dict, score: int, path: tuple[str, ...]):
    """A value that satisfies ``schema``: the score for numbers (clamped to its bounds), an explanation for strings."""
    schema = _resolve(schema if isinstance(schema, dict) else {}, root)
    if len(path) > 16:  # a recursive schema: stop where null is the least wrong answer
        return None
    if schema.get("enum"):
        return schema["enum"][0]
    kind = _kind(schema)
    if kind == "object":
        props = schema.get("properties") or {}
        order = schema.get("propertyOrdering") or schema.get("property_ordering") or []
        return {k: _fill(props[k], root, score, (*path, k)) for k in dict.fromkeys([*order, *props]) if k in props}
    if kind == "array":
        return [_fill(schema.get("items") or {}, root, score, (*path, "item"))]
    if kind in ("integer", "number"):
        low, high = schema.get("minimum", score), schema.get("maximum", score)
        return int(min(max(score, low), high)) if kind == "integer" else float(min(max(score, low), high))
    if kind == "boolean":
        return score >= 5
    if kind == "null":
        return None
    label = next((p for p in reversed(path) if p != "explanation"), "grade")
    return f"{label.replace('_', ' ')}: {score}/10 by colour coverage"


class LoopbackGrader:
    """Run the server in a background thread: ``with LoopbackGrader(latency_s=1.0) as server: ...``.

    ``faults(image_key, attempt) -> fault name or None`` decides each answer: ``image_key`` is the sha256
    (16 hex digits) of the request's image bytes, ``attempt`` counts from 1 per key, so a plan is a function
    of what is asked, not of the order in which concurrent requests arrive. A ``slow`` answer is held for
    ``slow_s`` seconds or until the client hangs up (a client that timed out); then nothing is sent.
    ``stats`` counts requests, answers, faults and the tokens reported in answers actually sent;
    ``events`` lists (image_key, attempt, fault or "ok"); ``max_inflight`` is the most requests that
    were being handled at once.
    """

    def __init__(self, latency_s: float = 0.0, faults: Callable[[str, int], str | None] | None = None,
                 api_key: str | None = None, host: str = "127.0.0.1", port: int = 0, slow_s: float = 5.0,
                 retry_after_s: float = 0.05):
        self.latency_s, self.faults, self.api_key, self.slow_s = latency_s, faults, api_key, slow_s
        self.retry_after_s = retry_after_s
        self.lock = threading.Lock()
        self.stats: collections.Counter = collections.Counter()
        self.attempts: collections.Counter = collections.Counter()
        self.events: list[tuple[str, int, str]] = []
        self.inflight = self.max_inflight = 0
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="loopback-grader", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> "LoopbackGrader":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def next_attempt(self, key: str) -> int:
        with self.lock:
            self.attempts[key] += 1
            return self.attempts[key]


def _handler(server: LoopbackGrader):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_POST(self):
            with server.lock:
                server.inflight += 1
                server.max_inflight = max(server.max_inflight, server.inflight)
                server.stats["requests"] += 1
            try:
                self._handle()
            except (BrokenPipeError, ConnectionResetError):
                pass
            finally:
                with server.lock:
                    server.inflight -= 1

        def _handle(self):
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                match = GEMINI_PATH.match(self.path.split("?")[0])
                if match:
                    protocol, key = "gemini", self.headers.get("x-goog-api-key")
                    images, text, schema = _gemini_request(body)
                elif self.path.split("?")[0].endswith("/chat/completions"):
                    protocol, key = "openai", (self.headers.get("authorization") or "").removeprefix("Bearer ")
                    images, text, schema = _openai_request(body)
                else:
                    return self._send(404, {"error": {"code": 404, "message": f"no route {self.path}"}})
            except (ValueError, TypeError, AttributeError, KeyError, IndexError) as e:
                return self._send(400, {"error": {"code": 400, "message": f"malformed request: {e}"}})
            if server.api_key is not None and key != server.api_key:
                return self._send(401, {"error": {"code": 401, "message": "API key not valid", "status": "UNAUTHENTICATED"}})
            if not images:
                return self._send(400, {"error": {"code": 400, "message": "no image in the request"}})
            image_key = hashlib.sha256(b"".join(images)).hexdigest()[:16]
            attempt = server.next_attempt(image_key)
            fault = server.faults(image_key, attempt) if server.faults else None
            with server.lock:
                server.events.append((image_key, attempt, fault or "ok"))
                server.stats[f"fault:{fault}" if fault else "ok"] += 1
            time.sleep(server.latency_s)
            self._answer(protocol, fault, images, text, schema)

        def _client_hung_up(self, seconds: float) -> bool:
            """Wait up to ``seconds`` for the client to close the connection; True if it did."""
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                if select.select([self.connection], [], [], left)[0]:
                    try:
                        return self.connection.recv(1, socket.MSG_PEEK) == b""
                    except OSError:
                        return True
            return False

        def _answer(self, protocol, fault, images, text, schema):
            if fault == "body-not-json":
                return self._send_raw(200, b'{"candidates": [{"cont' if protocol == "gemini" else b'{"choices": [{"')
            if fault == "body-off-schema":
                return self._send(200, {"candidates": [{"content": {"parts": "not a list"}}]} if protocol == "gemini"
                                  else {"choices": [{"message": "not an object", "finish_reason": "stop"}]})
            if fault == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            if fault in ("429", "429-retry-after", "500", "503"):
                code = int(fault[:3])
                headers = {"Retry-After": f"{server.retry_after_s:g}"} if fault == "429-retry-after" else {}
                return self._send(code, {"error": {"code": code, "message": f"injected {fault}",
                                                   "status": "RESOURCE_EXHAUSTED" if code == 429 else "UNAVAILABLE"}},
                                  headers)
            if fault == "slow" and self._client_hung_up(server.slow_s):
                self.close_connection = True
                return
            tokens_in = input_tokens(images, text)
            with server.lock:
                server.stats["answers"] += 1
                server.stats["input_tokens"] += tokens_in
                server.stats["output_tokens"] += OUTPUT_TOKENS
            content = {"malformed": '{"accuracy_to_prompt": {"explanation": "cut sho',
                       "schema": json.dumps({"overall_score": {"explanation": "only one metric", "score": 42}}),
                       }.get(fault) or answer_json(schema, [score_image(Image.open(io.BytesIO(i))) for i in images])
            if protocol == "gemini":
                usage = {"promptTokenCount": tokens_in, "candidatesTokenCount": OUTPUT_TOKENS,
                         "totalTokenCount": tokens_in + OUTPUT_TOKENS}
                if fault == "safety":
                    return self._send(200, {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": usage})
                return self._send(200, {"candidates": [{"content": {"role": "model", "parts": [{"text": content}]},
                                                        "finishReason": "STOP", "index": 0}], "usageMetadata": usage})
            message = ({"role": "assistant", "content": None, "refusal": "I can't help with that."} if fault == "safety"
                       else {"role": "assistant", "content": content, "refusal": None})
            return self._send(200, {
                "id": "chatcmpl-loopback", "object": "chat.completion", "created": int(time.time()), "model": "loopback",
                "choices": [{"index": 0, "message": message, "finish_reason": "stop", "logprobs": None}],
                "usage": {"prompt_tokens": tokens_in, "completion_tokens": OUTPUT_TOKENS,
                          "total_tokens": tokens_in + OUTPUT_TOKENS}})

        def _send(self, code: int, payload: dict, headers: dict | None = None):
            self._send_raw(code, json.dumps(payload).encode(), headers)

        def _send_raw(self, code: int, data: bytes, headers: dict | None = None):
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _gemini_request(body: dict) -> tuple[list[bytes], str, dict | None]:
    """(images in order, the text, the response schema) of a generateContent body."""
    images, texts = [], []
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                images.append(_b64decode(inline["data"]))
            if part.get("text"):
                texts.append(part["text"])
    config = body.get("generationConfig") or body.get("generation_config") or {}
    schema = next((config[k] for k in ("responseJsonSchema", "response_json_schema", "responseSchema",
                                       "response_schema") if config.get(k)), None)
    return images, " ".join(texts), schema


def _openai_request(body: dict) -> tuple[list[bytes], str, dict | None]:
    """(images in order, the text, the response schema) of a chat-completions body."""
    images, texts = [], []
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else [{"type": "text", "text": content or ""}]:
            if part.get("type") == "image_url":
                url = part["image_url"]["url"]
                if not url.startswith("data:"):
                    raise ValueError("image_url must be a data: URL (the loopback server fetches nothing)")
                images.append(_b64decode(url.split(",", 1)[1]))
            elif part.get("type") == "text":
                texts.append(part.get("text", ""))
    response_format = body.get("response_format") or {}
    schema = None
    if response_format.get("type") == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
    return images, " ".join(texts), schema


def _b64decode(data: str) -> bytes:
    """Standard or URL-safe base64, padded or not (google-genai sends URL-safe)."""
    data = data.replace("-", "+").replace("_", "/")
    return base64.b64decode(data + "=" * (-len(data) % 4))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    args = p.parse_args(argv)
    with LoopbackGrader(latency_s=args.latency, port=args.port) as server:
        print(f"loopback grader on {server.url} (Gemini: base_url={server.url}; OpenAI: base_url={server.url}/v1); "
              "Ctrl-C stops", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
