"""Gemini as an LLM grader (Ma et al. 2025, Sec. 4 "Verifiers": the six-metric grader), through the
official ``google-genai`` client's async API with structured output into :class:`grading.Grades`.

One request per image, at most ``max_concurrency`` in flight across the whole run; each retried on
429 / 5xx / timeouts / dropped connections / unusable answers (see ``grading.RetryPolicy``), and a
candidate that still fails is returned as a failed :class:`Verdict` with its reason. Key from
``GEMINI_API_KEY`` (or ``GOOGLE_API_KEY``); base URL from ``base_url`` or ``GOOGLE_GEMINI_BASE_URL``.
"""
from __future__ import annotations

import logging

from ..core.records import Usage
from . import grading
from .base import Verdict

log = logging.getLogger(__name__)
KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


class GeminiVerifier(grading.ApiGrader):
    name = "gemini"
    package = ("google.genai", "google-genai", "google-genai")
    key_vars = KEY_VARS
    operational_keys = (*grading.ApiGrader.operational_keys, "api_version")

    def __init__(self, model_name: str = "gemini-2.5-flash", choice_of_metric: str | None = "overall_score",
                 prompt_path: str | None = None, max_side: int = 768, image_format: str = "png",
                 max_concurrency: int = 8, max_attempts: int = 4, timeout_s: float = 60.0, backoff_s: float = 1.0,
                 max_backoff_s: float = 30.0, base_url: str | None = None, api_version: str = "v1beta",
                 max_output_tokens: int | None = None, price_per_million_input_tokens: float = 0.0,
                 price_per_million_output_tokens: float = 0.0, seed: int = 0):
        super().__init__(model_name, choice_of_metric, prompt_path, max_side, image_format, max_concurrency,
                         max_attempts, timeout_s, backoff_s, max_backoff_s, base_url, max_output_tokens,
                         price_per_million_input_tokens, price_per_million_output_tokens, seed)
        self.api_version = api_version

    async def _open_client(self):
        from google import genai
        from google.genai import types

        options = types.HttpOptions(api_version=self.api_version, base_url=self.base_url or None)
        return genai.Client(api_key=self.api_key(), http_options=options)

    async def _close_client(self) -> None:
        await self._client.aio.aclose()

    async def _grade(self, prompt: str, image) -> Verdict:
        from google.genai import types

        data, mime = grading.encode_image(image, self.max_side, self.image_format)
        contents = [types.Part.from_bytes(data=data, mime_type=mime), grading.fill_template(self.template, prompt, image)]
        config = types.GenerateContentConfig(response_mime_type="application/json", response_schema=grading.Grades,
                                             max_output_tokens=self.max_output_tokens)
        usage = [Usage()]

        async def attempt():
            usage[0] = usage[0].add(Usage(requests=1))
            response = await self._client.aio.models.generate_content(
                model=self.model_name, contents=contents, config=config)
            meta = response.usage_metadata
            if meta is not None:
                usage[0] = usage[0].add(Usage(input_tokens=meta.prompt_token_count or 0,
                                              output_tokens=meta.candidates_token_count or 0))
            return grading.parse_grades(_answer_text(response))

        grades, reasons = await grading.with_retries(attempt, self.policy, self._rng, self._slots)
        return grading.verdict(grades, reasons, usage[0], self.policy, self.prices)


def _answer_text(response) -> str:
    """The answer's text, or AnswerError naming why there is none (blocked, no candidate, cut short)."""
    feedback = getattr(response, "prompt_feedback", None)
    if feedback is not None and getattr(feedback, "block_reason", None):
        raise grading.AnswerError(f"blocked by safety filters: {_enum_name(feedback.block_reason)}")
    candidates = response.candidates or []
    if not candidates:
        raise grading.AnswerError("no candidate in the answer")
    reason = _enum_name(getattr(candidates[0], "finish_reason", None))
    parts = getattr(candidates[0].content, "parts", None) or []
    text = "".join(p.text for p in parts if getattr(p, "text", None))
    if reason in ("SAFETY", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY", "RECITATION"):
        raise grading.AnswerError(f"blocked by safety filters: finish_reason {reason}")
    if not text and reason == "MAX_TOKENS":
        raise grading.AnswerError("answer cut off at max_output_tokens")
    return text


def _enum_name(value) -> str | None:
    return None if value is None else getattr(value, "name", str(value))

