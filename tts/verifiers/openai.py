"""OpenAI (or any server speaking its chat-completions protocol) as an LLM grader (Ma et al. 2025,
Sec. 4: the six-metric grader), through the official ``openai`` client: ``AsyncOpenAI`` and
``chat.completions.parse`` with :class:`grading.Grades` as the structured response format.

One request per image, at most ``max_concurrency`` in flight across the whole run; the client's own
retries are off and ``grading.RetryPolicy`` decides (429 / 5xx / timeouts / dropped connections /
unusable answers, Retry-After and retry-after-ms honoured). The raw body is read so that tokens are
counted even for answers that then fail validation. Key from ``OPENAI_API_KEY``; base URL from
``base_url`` or ``OPENAI_BASE_URL``.
"""
from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import random

from ..records import Usage
from . import grading
from .base import Verdict, Verifier

log = logging.getLogger(__name__)
KEY_VAR = "OPENAI_API_KEY"


class OpenAIVerifier(Verifier):
    name = "openai"
    metrics = grading.METRICS
    is_async = True

    def __init__(self, model_name: str = "gpt-4o-mini", choice_of_metric: str | None = "overall_score",
                 prompt_path: str | None = None, max_side: int = 768, image_format: str = "png",
                 image_detail: str = "auto", max_concurrency: int = 8, max_attempts: int = 4, timeout_s: float = 60.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, base_url: str | None = None,
                 max_output_tokens: int | None = None, price_per_million_input_tokens: float = 0.0,
                 price_per_million_output_tokens: float = 0.0, seed: int = 0):
        super().__init__(choice_of_metric)
        grading.check_image_args(max_side, image_format)
        grading.check_concurrency(max_concurrency)
        if image_detail not in ("auto", "low", "high"):
            raise ValueError(f"verifier.image_detail must be auto, low or high, got {image_detail!r}")
        self.model_name, self.prompt_path, self.max_side, self.image_format = model_name, prompt_path, max_side, image_format
        self.image_detail, self.max_concurrency, self.base_url = image_detail, max_concurrency, base_url
        self.max_output_tokens = max_output_tokens
        self.policy = grading.RetryPolicy(max_attempts, timeout_s, backoff_s, max_backoff_s)
        self.prices = (float(price_per_million_input_tokens), float(price_per_million_output_tokens))
        self.template = grading.load_template(prompt_path)
        self._rng = random.Random(seed)
        self._client = self._slots = None

    def check(self) -> None:
        try:
            import openai  # noqa: F401
        except ImportError:
            raise ImportError("verifier=openai needs the openai package: pip install openai") from None
        if not os.environ.get(KEY_VAR):
            raise ValueError(f"verifier=openai needs an API key: set {KEY_VAR} in the environment "
                             "(keys are never read from configs or written to disk)")

    def setup(self) -> None:
        self.check()
        for name in ("httpx", "httpx2", "openai"):
            logging.getLogger(name).setLevel(logging.WARNING)
        self.run_async(self._open())

    async def _open(self) -> None:
        from openai import AsyncOpenAI

        self._client = AsyncOpenAI(api_key=os.environ[KEY_VAR], base_url=self.base_url or None, max_retries=0,
                                   timeout=self.policy.timeout_s)
        self._slots = asyncio.Semaphore(self.max_concurrency)

    async def ascore(self, prompts, images):
        if self._client is None:
            await self._open()
        return list(await asyncio.gather(*(self._grade(p, img) for p, img in zip(prompts, images))))

    async def _grade(self, prompt: str, image) -> Verdict:
        data, mime = grading.encode_image(image, self.max_side, self.image_format)
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        messages = [{"role": "user", "content": [
            {"type": "text", "text": grading.fill_template(self.template, prompt)},
            {"type": "image_url", "image_url": {"url": url, "detail": self.image_detail}}]}]
        extra = {} if self.max_output_tokens is None else {"max_completion_tokens": self.max_output_tokens}
        usage = [Usage()]

        async def attempt():
            usage[0] = usage[0].add(Usage(requests=1))
            raw = await self._client.chat.completions.with_raw_response.parse(
                model=self.model_name, messages=messages, response_format=grading.Grades, **extra)
            body = _json_body(raw.text)
            used = body.get("usage") or {}
            usage[0] = usage[0].add(Usage(input_tokens=int(used.get("prompt_tokens") or 0),
                                          output_tokens=int(used.get("completion_tokens") or 0)))
            return grading.parse_grades(_answer_text(body))

        grades, reasons = await grading.with_retries(attempt, self.policy, self._rng, self._slots)
        return grading.verdict(grades, reasons, usage[0], self.policy, self.prices)


def _json_body(text: str) -> dict:
    try:
        body = json.loads(text)
    except json.JSONDecodeError:
        raise grading.AnswerError(f"response body is not JSON: {text[:80]!r}") from None
    if not isinstance(body, dict):
        raise grading.AnswerError("response body is not a JSON object")
    return body


def _answer_text(body: dict) -> str:
    """The first choice's content, or AnswerError naming why there is none (refusal, filter, cut short)."""
    choices = body.get("choices") or []
    if not choices:
        raise grading.AnswerError("no choice in the answer")
    choice = choices[0]
    message = choice.get("message") or {}
    if message.get("refusal"):
        raise grading.AnswerError(f"refused: {str(message['refusal'])[:120]}")
    if choice.get("finish_reason") == "content_filter":
        raise grading.AnswerError("blocked by the content filter")
    if choice.get("finish_reason") == "length":
        raise grading.AnswerError("answer cut off at max tokens")
    return message.get("content") or ""
