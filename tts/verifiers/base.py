"""The verifier interface: score a batch of (prompt, image) pairs into per-metric scores.

Every verifier subclasses :class:`Verifier` and implements ``score(prompts, images)`` (blocking) or
``ascore(prompts, images)`` (a coroutine; API verifiers), returning, for each pair, either a dict
``{metric: MetricScore(score, explanation)}`` holding *all* its metrics, or a :class:`Verdict`
(scores or the reason it failed, what it cost, and member verifiers' scores for ensembles).
``choice_of_metric`` names the metric that search optimises: maximises, unless the verifier lists it
in ``lower_is_better`` (then ``higher_is_better(metric)`` is False and search minimises it).
``operational_keys`` names the constructor settings that change how it runs, not what it computes
(a resumed run folder may change them). Construction must be cheap; ``check()``
runs before anything expensive (missing API keys, missing packages); heavy models load in
``setup()``, which the loop calls once, after the config has been validated.

Async verifiers run on one event loop per verifier, in a background thread, so clients and
semaphores created in ``setup`` bound the requests in flight across all the loop's worker threads.
"""
from __future__ import annotations

import asyncio
import difflib
import threading
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from PIL import Image

from .frames import DEFAULTS, wrap_class
from .verdict import Scores, Verdict, as_verdict  # noqa: F401 - as_verdict: imported from here

if TYPE_CHECKING:
    import torch



class VerifierError(ValueError):
    pass


class Verifier:
    #: Short name used in the run folder path and in records.
    name: str = "verifier"
    #: Every metric this verifier returns.
    metrics: tuple[str, ...] = ()
    #: True when ``ascore`` is the native implementation (concurrent requests).
    is_async: bool = False
    #: Metrics for which a smaller value is better (a loss, a distance); every other metric is maximised.
    lower_is_better: frozenset[str] = frozenset()
    #: Constructor settings a resumed run folder may change (how it runs, not what it computes).
    operational_keys: tuple[str, ...] = ("device",)
    #: Videos (tts.core.video.Video): the frames scored (``first,middle,last`` or a count N, evenly spaced) and
    #: how their scores combine (``mean``, ``min``: the worst frame); every verifier takes both as keywords
    #: (tts.verifiers.frames). ``takes_video``: the verifier scores whole videos itself.
    frames: str | int = DEFAULTS["frames"]
    frame_reduce: str = DEFAULTS["frame_reduce"]
    takes_video: bool = False

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        wrap_class(cls)

    def __init__(self, choice_of_metric: str | None = None):
        choice_of_metric = choice_of_metric or (self.metrics[0] if self.metrics else None)
        if choice_of_metric not in self.metrics:
            close = difflib.get_close_matches(str(choice_of_metric), self.metrics, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise VerifierError(f"verifier {self.name!r} has no metric {choice_of_metric!r}{hint} "
                                f"choices: {', '.join(self.metrics)}")
        self.choice_of_metric = choice_of_metric

    def higher_is_better(self, metric: str | None = None) -> bool:
        """The direction of ``metric`` (the chosen one by default): True when a larger score is better."""
        return (metric or self.choice_of_metric) not in self.lower_is_better

    def check(self) -> None:
        """Raise a clear error if this verifier cannot run here (API key, package); nothing expensive."""

    def setup(self) -> None:
        """Load models / open clients. Called once before the first batch."""

    def check_prompt(self, prompt: str) -> None:
        """Raise a clear error for a prompt this verifier cannot judge (called before any generation)."""

    def score(self, prompts: list[str], images: list[Image.Image]) -> list[Scores | Verdict]:
        if self.is_async:
            return self.run_async(self.ascore(prompts, images))
        raise NotImplementedError(f"{type(self).__name__} implements neither score() nor ascore()")

    async def ascore(self, prompts: list[str], images: list[Image.Image]) -> list[Scores | Verdict]:
        return await asyncio.to_thread(self.score, prompts, images)

    def run_async(self, coro):
        """Run a coroutine on this verifier's own event loop (started on first use) and wait for it."""
        lock = self.__dict__.setdefault("_loop_lock", threading.Lock())
        with lock:
            if getattr(self, "_loop", None) is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name=f"{self.name}-loop", daemon=True).start()
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        """Release clients and the event loop (the loop calls it at the end of a run)."""
        loop = getattr(self, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
            self._loop = None


wrap_class(Verifier)  # its own __init__ and score (the async path) take videos too


@runtime_checkable
class DifferentiableVerifier(Protocol):
    """A verifier whose chosen metric is a differentiable function of the image (clip, pickscore, aesthetic,
    shapes-reward), for gradient-based search: ``score_tensor(prompts, images)`` takes ``images`` as a float
    tensor (B, 3, H, W), RGB in [0, 1], on any device, and returns the ``choice_of_metric`` of each image as a
    (B,) tensor that carries gradients to ``images`` (the prompts are constants). It equals ``score()``'s value
    for the same pixels, up to the resampling of images whose size is not the model's input size (PIL's
    filter there, torch's bicubic here). Call ``setup()`` first. A backward pass costs about 3 forwards
    (Ma et al. 2025)."""

    def score_tensor(self, prompts: list[str], images: "torch.Tensor") -> "torch.Tensor": ...


def is_differentiable(verifier) -> bool:
    """The verifier offers ``score_tensor`` (see :class:`DifferentiableVerifier`)."""
    return isinstance(verifier, DifferentiableVerifier)
