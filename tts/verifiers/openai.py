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

import base64
import json
import logging

from pydantic import BaseModel, ValidationError

from ..core.records import Usage
from . import grading
from .base import Verdict

log = logging.getLogger(__name__)
KEY_VAR = "OPENAI_API_KEY"


class OpenAIVerifier(grading.ApiGrader):
    name = "openai"
    package = ("openai", "the openai package", "openai")
    key_vars = (KEY_VAR,)

    def __init__(self, model_name: str = "gpt-4o-mini", choice_of_metric: str | None = "overall_score",
                 prompt_path: str | None = None, max_side: int = 768, image_format: str = "png",
                 image_detail: str = "auto", max_concurrency: int = 8, max_attempts: int = 4, timeout_s: float = 60.0,
                 backoff_s: float = 1.0, max_backoff_s: float = 30.0, base_url: str | None = None,
                 max_output_tokens: int | None = None, price_per_million_input_tokens: float = 0.0,
                 price_per_million_output_tokens: float = 0.0, seed: int = 0):
        super().__init__(model_name, choice_of_metric, prompt_path, max_side, image_format, max_concurrency,
                         max_attempts, timeout_s, backoff_s, max_backoff_s, base_url, max_output_tokens,
                         price_per_million_input_tokens, price_per_million_output_tokens, seed)
        if image_detail not in ("auto", "low", "high"):
            raise ValueError(f"verifier.image_detail must be auto, low or high, got {image_detail!r}")
        self.image_detail = image_detail

    async def _open_client(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(api_key=self.api_key(), base_url=self.base_url or None, max_retries=0,
                           timeout=self.policy.timeout_s)

    async def _close_client(self) -> None:
        await self._client.close()

    async def _grade(self, prompt: str, image) -> Verdict:
        data, mime = grading.encode_image(image, self.max_side, self.image_format)
        url = f"data:{mime};base64,{base64.b64encode(data).decode()}"
        messages = [{"role": "user", "content": [
            {"type": "text", "text": grading.fill_template(self.template, prompt, image)},
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
