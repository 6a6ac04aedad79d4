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

from pydantic import BaseModel, ValidationError

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

    def close(self) -> None:
        """Close the client's connections on its own event loop, then stop the loop."""
        if self._client is not None and getattr(self, "_loop", None) is not None:
            self.run_async(self._client.close())
        self._client = None
        super().close()

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
            used = _envelope(_Usage, body.get("usage") or {})
            usage[0] = usage[0].add(Usage(input_tokens=used.prompt_tokens or 0,
                                          output_tokens=used.completion_tokens or 0))
            return grading.parse_grades(_answer_text(_envelope(_Body, body)))

        grades, reasons = await grading.with_retries(attempt, self.policy, self._rng, self._slots)
        return grading.verdict(grades, reasons, usage[0], self.policy, self.prices)


class _Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class _Message(BaseModel):
    content: str | None = None
    refusal: str | None = None


class _Choice(BaseModel):
    message: _Message | None = None
    finish_reason: str | None = None


class _Body(BaseModel):
    """The part of a chat-completions response body the grader reads (extra fields ignored)."""

    choices: list[_Choice] | None = None


def _json_body(text: str) -> dict:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise grading.AnswerError(f"response body is not JSON ({e.msg} at char {e.pos}): {text[:60]!r}") from None
    if not isinstance(body, dict):
        raise grading.AnswerError(f"response body is not a JSON object: {text[:60]!r}")
    return body


def _envelope(model: type[BaseModel], data):
    """``data`` validated as ``model``; AnswerError (retried) naming the first field that breaks it."""
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise grading.AnswerError(
            f"response body breaks the chat-completions schema: {grading.schema_error(e)}") from None


def _answer_text(body: _Body) -> str:
    """The first choice's content, or AnswerError naming why there is none (refusal, filter, cut short)."""
    if not body.choices:
        raise grading.AnswerError("no choice in the answer")
    choice = body.choices[0]
    message = choice.message or _Message()
    if message.refusal:
        raise grading.AnswerError(f"refused: {message.refusal[:120]}")
    if choice.finish_reason == "content_filter":
        raise grading.AnswerError("blocked by the content filter")
    if choice.finish_reason == "length":
        raise grading.AnswerError("answer cut off at max tokens")
    return message.content or ""
