"""Verifiers on videos, once for every verifier: a :class:`tts.core.video.Video` in a batch is scored on some of its
frames (``verifier.frames``: ``first,middle,last`` as tt-scale-flux, or N evenly spaced), each frame as an image,
and the frames' scores aggregated per metric (``verifier.frame_reduce``: ``mean``, or ``min``: the worst frame in
the metric's direction). :class:`tts.verifiers.base.Verifier` wraps every subclass's ``__init__`` (the two
settings, accepted by any verifier), ``score``, ``ascore`` and ``score_preview`` with these functions; a verifier
that scores whole videos itself (the ``temporal`` verifier) sets ``takes_video = True`` and gets them as they are.
"""
from __future__ import annotations

import functools
import inspect
import statistics

from ..core.records import MetricScore, Usage
from ..core.video import STRIP_FRAMES, VideoError, frame_indices, is_video, parse_frames

REDUCES = ("mean", "min")
DEFAULTS = {"frames": STRIP_FRAMES, "frame_reduce": "mean"}


def check_reduce(reduce: str) -> str:
    if reduce not in REDUCES:
        raise VideoError(f"verifier.frame_reduce must be one of {', '.join(REDUCES)}, got {reduce!r}")
    return reduce


def wrap_init(init):
    """``__init__`` that also takes ``frames`` and ``frame_reduce`` (keyword-only), validated at once."""
    @functools.wraps(init)
    def __init__(self, *args, frames=None, frame_reduce=None, **kwargs):
        if frames is not None:
            self.frames = parse_frames(frames)
        if frame_reduce is not None:
            self.frame_reduce = check_reduce(frame_reduce)
        init(self, *args, **kwargs)

    sig = inspect.signature(init)
    params = [p for p in sig.parameters.values() if p.name not in DEFAULTS]
    tail = [p for p in params if p.kind is p.VAR_KEYWORD]
    extra = [inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY, default=None) for k in DEFAULTS]
    __init__.__signature__ = sig.replace(parameters=[p for p in params if p.kind is not p.VAR_KEYWORD] + extra + tail)
    __init__.__tts_frames__ = True
    return __init__


def _spread(verifier, prompts: list[str], items: list) -> tuple[list[str], list, list[tuple[int, int] | None]]:
    """Each video's picked frames in place of the video (its prompt repeated); spans[i]: item i's frames."""
    flat_prompts, flat, spans = [], [], []
    for prompt, item in zip(prompts, items):
        if is_video(item) and not getattr(verifier, "takes_video", False):
            frames = [item.frames[i] for i in frame_indices(len(item), verifier.frames)]
            spans.append((len(flat), len(flat) + len(frames)))
            flat_prompts += [prompt] * len(frames)
            flat += frames
        else:
            spans.append(None)
            flat_prompts.append(prompt)
            flat.append(item)
    return flat_prompts, flat, spans


def _needs_spread(verifier, items) -> bool:
    return not getattr(verifier, "takes_video", False) and any(is_video(x) for x in items)


def _reduce_scores(verifier, per_frame: list[dict], reduce: str) -> dict:
    out = {}
    for metric in per_frame[0]:
        values = [s[metric].score for s in per_frame if metric in s]
        if reduce == "mean":
            value, note = statistics.fmean(values), f"mean of {len(values)} frames"
        else:
            worst = max if not verifier.higher_is_better(metric) else min
            value = worst(values)
            note = f"worst of {len(values)} frames (frame {values.index(value) + 1})"
        first = per_frame[0][metric].explanation
        out[metric] = MetricScore(score=value, explanation=note + (f"; first frame: {first}" if first else ""))
    return out


def _gather(verifier, results: list, spans) -> list:
    """One result per item: a video's frames' results reduced (a failed frame fails the video)."""
    from .verdict import Verdict, as_verdict

    merged, cursor = [], 0
    for span in spans:
        if span is None:
            merged.append(results[cursor])
            cursor += 1
            continue
        start, end = span
        verdicts = [as_verdict(r) for r in results[start:end]]
        cursor = end
        usage = None
        for v in verdicts:
            if v.usage is not None:
                usage = (usage or Usage()).add(v.usage)
        failed = next((v for v in verdicts if v.error is not None or v.scores is None), None)
        if failed is not None:
            merged.append(Verdict(error=failed.error or "a frame was not scored", usage=usage))
            continue
        members = {name: _reduce_scores(verifier, [v.members[name] for v in verdicts], verifier.frame_reduce)
                   for name in verdicts[0].members}
        merged.append(Verdict(scores=_reduce_scores(verifier, [v.scores for v in verdicts], verifier.frame_reduce),
                              usage=usage, members=members))
    return merged


def wrap_score(score):
    @functools.wraps(score)
    def wrapper(self, prompts, images, *args, **kwargs):
        if not _needs_spread(self, images):
            return score(self, prompts, images, *args, **kwargs)
        flat_prompts, flat, spans = _spread(self, prompts, images)
        return _gather(self, score(self, flat_prompts, flat, *args, **kwargs), spans)

    wrapper.__tts_frames__ = True
    return wrapper


def wrap_ascore(ascore):
    @functools.wraps(ascore)
    async def wrapper(self, prompts, images, *args, **kwargs):
        if not _needs_spread(self, images):
            return await ascore(self, prompts, images, *args, **kwargs)
        flat_prompts, flat, spans = _spread(self, prompts, images)
        return _gather(self, await ascore(self, flat_prompts, flat, *args, **kwargs), spans)

    wrapper.__tts_frames__ = True
    return wrapper


def wrap_class(cls) -> None:
    """Wrap the methods ``cls`` defines itself (never twice)."""
    for name, wrap in (("__init__", wrap_init), ("score", wrap_score), ("score_preview", wrap_score),
                       ("ascore", wrap_ascore)):
        method = cls.__dict__.get(name)
        if method is not None and callable(method) and not getattr(method, "__tts_frames__", False):
            setattr(cls, name, wrap(method))
