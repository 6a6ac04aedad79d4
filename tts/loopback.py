"""A grading server on 127.0.0.1 that speaks the Gemini ``generateContent`` and OpenAI
``chat/completions`` wire protocols (FIELD-NOTES section 4), for tests, benchmarks and offline
try-outs of the API verifiers with their real clients.

It grades deterministically from the image it receives (``score_image``: how much of the image is
saturated colour, 0-10, the same for all six metrics), answers after a fixed latency, reports token
usage, and can inject faults per image and attempt: 429 with or without Retry-After, 500, 503, slow
answers, malformed JSON, schema-breaking answers, safety blocks, dropped connections.

    python -m tts.loopback --port 8765 --latency 0.5
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
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np
from PIL import Image

METRICS = ("accuracy_to_prompt", "creativity_and_originality", "visual_quality_and_realism",
           "consistency_and_cohesion", "emotional_or_thematic_resonance", "overall_score")
FAULTS = ("429", "429-retry-after", "500", "503", "slow", "malformed", "schema", "safety", "drop")
OUTPUT_TOKENS = 60
GEMINI_PATH = re.compile(r"^/(v1|v1beta|v1alpha)/models/([^/:]+):generateContent$")


def score_image(image: Image.Image) -> int:
    """0-10: the share of clearly coloured pixels (HSV saturation > 0.35), times 10, rounded."""
    hsv = np.asarray(image.convert("HSV"), dtype=np.float32)
    return int(round(10 * float((hsv[..., 1] > 0.35 * 255).mean())))


def input_tokens(image_bytes: bytes, text: str) -> int:
    """The server's token count for a request: a fixed share per image byte and per word."""
    return 85 + len(image_bytes) // 64 + len(text.split())


def grades_json(score: int) -> str:
    return json.dumps({m: {"explanation": f"{m.replace('_', ' ')}: {score}/10 by colour coverage", "score": score}
                       for m in METRICS})


class LoopbackGrader:
    """Run the server in a background thread: ``with LoopbackGrader(latency_s=1.0) as server: ...``.

    ``faults(image_key, attempt) -> fault name or None`` decides each answer (attempt counts from 1 per
    image). ``stats`` counts requests, answers, faults and the tokens reported in answers; ``max_inflight``
    is the most requests that were being handled at once.
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
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            match = GEMINI_PATH.match(self.path.split("?")[0])
            if match:
                protocol, key = "gemini", self.headers.get("x-goog-api-key")
                image, text = _gemini_request(body)
            elif self.path.split("?")[0].endswith("/chat/completions"):
                protocol, key = "openai", (self.headers.get("authorization") or "").removeprefix("Bearer ")
                image, text = _openai_request(body)
            else:
                return self._send(404, {"error": {"code": 404, "message": f"no route {self.path}"}})
            if server.api_key is not None and key != server.api_key:
                return self._send(401, {"error": {"code": 401, "message": "API key not valid", "status": "UNAUTHENTICATED"}})
            if image is None:
                return self._send(400, {"error": {"code": 400, "message": "no image in the request"}})
            image_key = hashlib.sha256(image).hexdigest()[:16]
            attempt = server.next_attempt(image_key)
            fault = server.faults(image_key, attempt) if server.faults else None
            with server.lock:
                server.events.append((image_key, attempt, fault or "ok"))
                server.stats[f"fault:{fault}" if fault else "ok"] += 1
            time.sleep(server.latency_s)
            self._answer(protocol, fault, image, text)

        def _answer(self, protocol, fault, image, text):
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
            if fault == "slow":
                time.sleep(server.slow_s)
            tokens_in = input_tokens(image, text)
            with server.lock:
                server.stats["answers"] += 1
                server.stats["input_tokens"] += tokens_in
                server.stats["output_tokens"] += OUTPUT_TOKENS
            content = {"malformed": '{"accuracy_to_prompt": {"explanation": "cut sho',
                       "schema": json.dumps({"overall_score": {"explanation": "only one metric", "score": 42}}),
                       }.get(fault) or grades_json(score_image(Image.open(io.BytesIO(image))))
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
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def _gemini_request(body: dict) -> tuple[bytes | None, str]:
    image, texts = None, []
    for content in body.get("contents", []):
        for part in content.get("parts", []):
            inline = part.get("inlineData") or part.get("inline_data")
            if inline:
                image = _b64decode(inline["data"])
            if part.get("text"):
                texts.append(part["text"])
    return image, " ".join(texts)


def _openai_request(body: dict) -> tuple[bytes | None, str]:
    image, texts = None, []
    for message in body.get("messages", []):
        content = message.get("content")
        for part in content if isinstance(content, list) else [{"type": "text", "text": content or ""}]:
            if part.get("type") == "image_url":
                image = _b64decode(part["image_url"]["url"].split(",", 1)[1])
            elif part.get("type") == "text":
                texts.append(part.get("text", ""))
    return image, " ".join(texts)


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
