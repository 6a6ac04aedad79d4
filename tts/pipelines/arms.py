"""``search.pipelines``: the pipelines one search draws candidates from (presets, each with optional overrides), and
what an NFE costs on each, relative to the first.

An entry is a preset name (``shapes``) or a mapping ``{preset: shapes, guidance_scale: 1.5, cost_per_nfe: 1.0,
label: ...}``: the preset's settings changed by the other keys. Its label (what records and reports name) is the
preset's name, with the changed settings in brackets (``shapes[guidance_scale=1.5]``) unless ``label`` is given.

The charging rule: a candidate is charged its measured NFEs times its pipeline's cost per NFE, relative to the first
pipeline's (1.0 for the first). The cost is the declared ``cost_per_nfe`` if given; else 1.0 for the same checkpoint
as the first pipeline (same denoiser, other settings); else the ratio of the checkpoints' half-precision weights
(``weights_gb``, the families' ``WEIGHTS_GB``) when both are known; else 1.0 (tts-plan says it is a guess).
"""
from __future__ import annotations

import dataclasses
import difflib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # this package discovers its family modules by importing each: nothing from it at import time
    from . import PipelineSpec

SETTINGS = ("preset", "label", "cost_per_nfe")


@dataclasses.dataclass(frozen=True)
class PipelineArm:
    """One pipeline of a search over pipelines: its label, its spec, its cost per NFE and how that was found."""

    label: str
    spec: "PipelineSpec"
    cost: float = 1.0
    cost_rule: str = "first pipeline"


def parse_arms(entries, base: "PipelineSpec", key: str = "search.pipelines") -> list[PipelineArm]:
    """The arms of ``search.pipelines`` (validated: unknown presets and settings are one line with did-you-mean);
    every arm runs on ``base``'s device unless it says otherwise."""
    from . import PipelineConfigError
    from .models import preset_spec

    if isinstance(entries, (str, dict)) or not entries:
        raise PipelineConfigError(f"{key} must be a list of at least two pipeline presets (e.g. "
                                  f"{key}=[shapes,{{preset:shapes,guidance_scale:1.5}}]), got {entries!r}")
    arms: list[PipelineArm] = []
    for n, entry in enumerate(entries):
        node = {"preset": entry} if isinstance(entry, str) else dict(entry) if hasattr(entry, "items") else None
        if node is None or not isinstance(node.get("preset"), str):
            raise PipelineConfigError(f"{key}[{n}] must be a preset name or {{preset: NAME, setting: value}}, "
                                      f"got {entry!r}")
        overrides = {k: v for k, v in node.items() if k not in SETTINGS}
        _check_fields(overrides, f"{key}[{n}]")
        try:
            spec = preset_spec(node["preset"], **({"device": base.device} | overrides))
        except (TypeError, ValueError) as e:
            raise PipelineConfigError(f"{key}[{n}]: {e}") from None
        label = str(node.get("label") or _label(node["preset"], overrides))
        arms.append(PipelineArm(label, spec, *_cost(node, spec, arms[0].spec if arms else None, f"{key}[{n}]")))
    labels = [a.label for a in arms]
    dup = next((x for x in labels if labels.count(x) > 1), None)
    if dup is not None:
        raise PipelineConfigError(f"{key} names {dup!r} twice: give one of them other settings or a label")
    return arms


def _label(preset: str, overrides: dict) -> str:
    shown = {k: v for k, v in overrides.items() if k != "device"}
    return preset + (f"[{','.join(f'{k}={v}' for k, v in sorted(shown.items()))}]" if shown else "")


def _check_fields(overrides: dict, where: str) -> None:
    from . import PipelineConfigError, PipelineSpec

    fields = [f.name for f in dataclasses.fields(PipelineSpec)]
    for k in overrides:
        if k not in fields:
            close = difflib.get_close_matches(k, [*fields, *SETTINGS], n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise PipelineConfigError(f"{where}: unknown pipeline setting {k!r}{hint}")


def _cost(node: dict, spec: "PipelineSpec", first: "PipelineSpec | None", where: str) -> tuple[float, str]:
    from . import PipelineConfigError, weights_gb

    declared = node.get("cost_per_nfe")
    if declared is not None:
        if isinstance(declared, bool) or not isinstance(declared, (int, float)) or not declared > 0:
            raise PipelineConfigError(f"{where}.cost_per_nfe must be a positive number, got {declared!r}")
        return float(declared), "declared"
    if first is None:
        return 1.0, "first pipeline"
    if spec.model_id == first.model_id:
        return 1.0, "same checkpoint as the first"
    mine, theirs = weights_gb(spec.model_id), weights_gb(first.model_id)
    if mine and theirs:
        return mine / theirs, f"weights {mine:g} GB / {theirs:g} GB"
    return 1.0, "unknown (guessed 1.0: declare cost_per_nfe)"
