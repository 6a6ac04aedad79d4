"""What the grader verifiers (Gemini, OpenAI, Qwen2.5-VL) share: the answer schema, the grading prompt
template, image encoding, the retry policy for API calls, and :class:`ApiGrader`, the base of the API
graders (settings, key and package checks, one client and one semaphore per run).

The schema follows the reference project (tt-scale-flux's verifiers: the same six metric names) and
the paper's LLM grader (Ma et al. 2025, Sec. 4): six metrics, each an integer 0-10 with a short
explanation written *before* the score, so the score is conditioned on the reasoning and not the
other way round.
"""
from __future__ import annotations

import asyncio
import dataclasses
import email.utils
import io
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Awaitable, Callable

from PIL import Image
from pydantic import BaseModel, Field, ValidationError

from ..core import configtree
from ..core.records import MetricScore, Usage
from ..core.validate import check_number, check_positive_int
from .base import Verdict, Verifier

log = logging.getLogger(__name__)

METRICS = ("accuracy_to_prompt", "creativity_and_originality", "visual_quality_and_realism",
           "consistency_and_cohesion", "emotional_or_thematic_resonance", "overall_score")
TEMPLATE_NAME = "grading_prompt.txt"
PROMPT_SLOT = "{prompt}"


class MetricGrade(BaseModel):
    explanation: str
    score: int = Field(ge=0, le=10)


class Grades(BaseModel):
    """The structured answer every grader must give (property order: explanation before score)."""

    accuracy_to_prompt: MetricGrade
    creativity_and_originality: MetricGrade
    visual_quality_and_realism: MetricGrade
    consistency_and_cohesion: MetricGrade
    emotional_or_thematic_resonance: MetricGrade
    overall_score: MetricGrade

    def to_scores(self) -> dict[str, MetricScore]:
        return {m: MetricScore(explanation=getattr(self, m).explanation, score=float(getattr(self, m).score))
                for m in METRICS}


class AnswerError(Exception):
    """The grader answered, but not usefully (malformed JSON, schema violation, blocked, empty)."""


class FatalRequestError(Exception):
    """A request that retrying cannot fix (bad key, unknown model, bad request)."""


def parse_grades(text: str | None) -> Grades:
    """Validate the grader's JSON text against :class:`Grades` (bounds included); AnswerError otherwise."""
    if not text or not text.strip():
        raise AnswerError("empty answer")
    try:
        return Grades.model_validate_json(text)
    except ValidationError as e:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            raise AnswerError(f"malformed JSON: {text[:80]!r}") from None
        raise AnswerError(f"answer breaks the schema: {schema_error(e)}") from None


def schema_error(e: ValidationError) -> str:
    """The first validation error in one line: where (dotted path) and what."""
    first = e.errors()[0]
    return f"{'.'.join(map(str, first['loc'])) or '(root)'}: {first['msg']}"


# ---------------------------------------------------------------------------------------------- template

def templates_dir() -> Path:
    """The shipped grading templates: ``tts/verifiers_templates`` in a wheel, the checkout's ``verifiers/``."""
    return configtree.templates_dir(TEMPLATE_NAME)


def load_template(prompt_path: str | None) -> str:
    """Read a grading template; it must contain ``{prompt}`` where the image's prompt goes."""
    path = Path(prompt_path).expanduser() if prompt_path else templates_dir() / TEMPLATE_NAME
    if not path.exists():
        raise FileNotFoundError(f"verifier.prompt_path {str(path)!r} does not exist "
                                f"(the shipped template is verifiers/{TEMPLATE_NAME})")
    text = path.read_text()
    if PROMPT_SLOT not in text:
        raise ValueError(f"grading template {path} has no {PROMPT_SLOT} placeholder for the image's prompt")
    return text


#: what a grader is told when its image is a video's keyframe grid (tts.core.video.keyframe_grid)
VIDEO_PREAMBLE = ("The image shows a video generated from the prompt below: {frames} in time order, left to right, "
                  "then top to bottom, each labelled with its frame number. Grade the video as a whole: every frame, "
                  "and whether they stay consistent with each other and with the prompt over time.\n\n")


def fill_template(template: str, prompt: str, image=None) -> str:
    """The grading text for ``prompt``; for a video's keyframe grid, led by :data:`VIDEO_PREAMBLE`."""
    from ..core.video import GRID_KEY

    text = template.replace(PROMPT_SLOT, prompt)
    frames = getattr(image, "info", {}).get(GRID_KEY)
    return VIDEO_PREAMBLE.format(frames=frames) + text if frames else text


def video_as_grid(verifier, item):
    """What a grader is shown of a candidate: a video's labelled keyframe grid (``verifier.frames``; one request
    per video), an image as it is."""
    from ..core.video import is_video, keyframe_grid

    return keyframe_grid(item, verifier.frames) if is_video(item) else item


# ---------------------------------------------------------------------------------------------- images

def encode_image(image: Image.Image, max_side: int, image_format: str, quality: int = 90) -> tuple[bytes, str]:
    """Downscale so the longer side is at most ``max_side`` (never upscale) and encode; (bytes, mime type)."""
    image = image.convert("RGB")
    if max(image.size) > max_side:
        scale = max_side / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if image_format == "jpeg":
        image.save(buf, format="JPEG", quality=quality)
        return buf.getvalue(), "image/jpeg"
    image.save(buf, format="PNG")
    return buf.getvalue(), "image/png"


def check_image_args(max_side, image_format) -> None:
    check_positive_int("verifier.max_side (pixels)", max_side, minimum=16)
    if image_format not in ("png", "jpeg"):
        raise ValueError(f"verifier.image_format must be 'png' or 'jpeg', got {image_format!r}")


# ---------------------------------------------------------------------------------------------- retries

@dataclasses.dataclass
class RetryPolicy:
    """Per-request timeout; exponential backoff with jitter on 429 / 5xx / timeouts / dropped connections
    and unusable answers (a 200 whose body is not JSON or not the API's schema, malformed or off-schema
    grades, blocks, refusals); a server's Retry-After (or retry-after-ms) wins over the computed delay."""

    max_attempts: int = 4
    timeout_s: float = 60.0
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0

    def __post_init__(self):
        check_positive_int("verifier.max_attempts", self.max_attempts)
        check_number("verifier.timeout_s (seconds)", self.timeout_s, 0.0, lo_open=True)
        for name in ("backoff_s", "max_backoff_s"):
            check_number(f"verifier.{name} (seconds)", getattr(self, name), 0.0)

    def delay(self, attempt: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff_s * 4)
        return min(self.max_backoff_s, self.backoff_s * 2 ** (attempt - 1)) * (0.5 + rng.random() / 2)


def retry_after_seconds(headers) -> float | None:
    """Seconds a server asked us to wait: ``retry-after-ms``, ``Retry-After`` in seconds or as an HTTP date."""
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def classify(exc: BaseException) -> tuple[bool, str, float | None]:
    """(retryable, reason, retry_after) for an exception raised by an API client or by answer parsing."""
    if isinstance(exc, AnswerError):
        return True, str(exc), None
    if isinstance(exc, json.JSONDecodeError):  # only a server's body is decoded inside an attempt
        return True, f"response body is not JSON ({exc.msg} at char {exc.pos}): {exc.doc[:60]!r}", None
    if isinstance(exc, ValidationError):  # a client validating the API's response envelope
        return True, f"response body breaks the API's schema: {schema_error(exc)}", None
    if isinstance(exc, FatalRequestError):
        return False, str(exc), None
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return True, "timed out", None
    status = getattr(exc, "status_code", None) or getattr(exc, "code", None)
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if isinstance(status, int):
        reason = f"HTTP {status}: {str(exc)[:160]}"
        if status == 429 or status == 408 or status >= 500:
            return True, reason, retry_after_seconds(headers)
        return False, reason, None
    name = type(exc).__name__.lower()
    module = type(exc).__module__
    if (isinstance(exc, (ConnectionError, OSError)) or "connection" in name or "timeout" in name
            or module.startswith(("httpx", "httpcore", "aiohttp", "h11"))):
        return True, f"connection error: {type(exc).__name__}: {str(exc)[:120]}", None
    return False, f"{type(exc).__name__}: {str(exc)[:160]}", None


async def with_retries(attempt_fn: Callable[[], Awaitable], policy: RetryPolicy, rng: random.Random,
                       slots: asyncio.Semaphore):
    """Call ``attempt_fn`` until it returns, a fatal error, or ``max_attempts``; (result or None, reasons).

    Each attempt holds one of ``slots`` (requests in flight) only while it runs, not while backing off.
    """
    reasons: list[str] = []
    for attempt in range(1, policy.max_attempts + 1):
        try:
            async with slots:
                return await asyncio.wait_for(attempt_fn(), policy.timeout_s), reasons
        except asyncio.CancelledError:
            raise
        except Exception as e:  # noqa: BLE001 - every failure is classified and recorded
            retryable, reason, retry_after = classify(e)
            reasons.append(reason)
            if not retryable or attempt == policy.max_attempts:
                break
            wait = policy.delay(attempt, retry_after, rng)
            log.info("attempt %d failed (%s); retrying in %.2f s", attempt, reason, wait)
            await asyncio.sleep(wait)
    return None, reasons


def failure_reason(reasons: list[str], max_attempts: int) -> str:
    tries = len(reasons)
    last = reasons[-1] if reasons else "unknown error"
    return f"{last} (after {tries} attempt{'s' if tries != 1 else ''}" + (
        f" of {max_attempts})" if tries < max_attempts else ")")


def verdict(grades: Grades | None, reasons: list[str], usage: Usage, policy: RetryPolicy, prices: tuple[float, float]):
    """The candidate's Verdict after its attempts: the grades, or the last reason it failed; usage priced."""
    spent = cost(usage, *prices)
    if grades is None:
        return Verdict(error=failure_reason(reasons, policy.max_attempts), usage=spent)
    return Verdict(scores=grades.to_scores(), usage=spent)


def cost(usage: Usage, price_in: float, price_out: float) -> Usage:
    """Fill in ``cost_usd`` from prices per million input / output tokens."""
    return usage.model_copy(update={"cost_usd": (usage.input_tokens * price_in + usage.output_tokens * price_out) / 1e6})


# ---------------------------------------------------------------------------------------------- API graders

class ApiGrader(Verifier):
    """The base of the API graders: their shared settings, the key and package checks, the client's
    lifetime (opened in ``setup`` on the verifier's own event loop, closed by ``close``) and one
    semaphore bounding requests in flight. A subclass names its ``package`` and ``key_vars`` and
    implements ``_open_client()``, ``_close_client()`` (coroutines) and ``_grade(prompt, image)``."""

    metrics = METRICS
    is_async = True
    #: (importable module, its name in the error, its pip name)
    package: tuple[str, str, str] = ("", "", "")
    #: environment variables holding the key, first found wins
    key_vars: tuple[str, ...] = ()
    operational_keys = ("base_url", "max_concurrency", "max_attempts", "timeout_s", "backoff_s",
                        "max_backoff_s", "price_per_million_input_tokens", "price_per_million_output_tokens")

    #: a video is graded in one request, on its labelled keyframe grid (video_as_grid), not frame by frame
    takes_video = True

    def __init__(self, model_name: str, choice_of_metric: str | None, prompt_path: str | None, max_side: int,
                 image_format: str, max_concurrency: int, max_attempts: int, timeout_s: float, backoff_s: float,
                 max_backoff_s: float, base_url: str | None, max_output_tokens: int | None,
                 price_per_million_input_tokens: float, price_per_million_output_tokens: float, seed: int):
        super().__init__(choice_of_metric)
        check_image_args(max_side, image_format)
        self.max_concurrency = check_positive_int("verifier.max_concurrency", max_concurrency)
        self.model_name, self.prompt_path, self.max_side, self.image_format = model_name, prompt_path, max_side, image_format
        self.base_url, self.max_output_tokens = base_url, max_output_tokens
        self.policy = RetryPolicy(max_attempts, timeout_s, backoff_s, max_backoff_s)
        self.prices = tuple(float(check_number(f"verifier.price_per_million_{kind}_tokens", price, 0.0, math.inf,
                                               hi_open=True))
                            for kind, price in (("input", price_per_million_input_tokens),
                                                ("output", price_per_million_output_tokens)))
        self.template = load_template(prompt_path)
        self._rng = random.Random(seed)
        self._client = self._slots = None

    def check(self) -> None:
        module, what, pip_name = self.package
        try:
            __import__(module)
        except ImportError:
            raise ImportError(f"verifier={self.name} needs {what}: pip install {pip_name}") from None
        if not self.api_key():
            names = self.key_vars[0] + (f" (or {', '.join(self.key_vars[1:])})" if len(self.key_vars) > 1 else "")
            raise ValueError(f"verifier={self.name} needs an API key: set {names} in the environment "
                             "(keys are never read from configs or written to disk)")

    def api_key(self) -> str | None:
        return next((os.environ[v] for v in self.key_vars if os.environ.get(v)), None)

    def setup(self) -> None:
        self.check()
        self.run_async(self._open())

    async def _open(self) -> None:
        self._client = await self._open_client()
        self._slots = asyncio.Semaphore(self.max_concurrency)

    def close(self) -> None:
        """Close the client's connections on its own event loop, then stop the loop."""
        if self._client is not None and getattr(self, "_loop", None) is not None:
            self.run_async(self._close_client())
        self._client = None
        super().close()

    async def ascore(self, prompts, images):
        if self._client is None:
            await self._open()
        shown = [video_as_grid(self, item) for item in images]  # a video: one request, its keyframe grid
        return list(await asyncio.gather(*(self._grade(p, img) for p, img in zip(prompts, shown))))

    async def _open_client(self):
        raise NotImplementedError

    async def _close_client(self) -> None:
        raise NotImplementedError

    async def _grade(self, prompt: str, image) -> Verdict:
        raise NotImplementedError
