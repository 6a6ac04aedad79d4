"""The runs a report shows: run folders read (tts.core.runfolder.read_run) and named by the settings that tell
them apart, each with a colour."""
from __future__ import annotations

import collections
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ...core import runfolder as rf
from ...core.records import CandidateRecord
from ...search import best_record

PREVIEWS = rf.PREVIEWS
#: Okabe-Ito colours (distinct under colour-blindness), then matplotlib's tab10 for more runs.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
           "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
#: Keys of config.json that never tell runs apart.
IGNORED_KEYS = frozenset({"tts_version", "output_root"})



class ReportError(RuntimeError):
    """Input tts-report cannot use (the message says what to do)."""


@dataclass
class Run(rf.RunData):
    """One run folder as tts.core.runfolder reads it (final records, every record written, config, previews,
    summary, ...), with the label and colour the report shows it by."""

    label: str = ""
    colour: str = PALETTE[0]


def _scored(r: CandidateRecord) -> bool:
    return r.status == "ok" and r.score is not None


def best(records: Iterable[CandidateRecord], higher_is_better: bool = True) -> CandidateRecord | None:
    """The best verified candidate in the metric's direction, as summary.json picks it (tts.search.best_record)."""
    return best_record(records, higher_is_better)


def round_bests(records: list[CandidateRecord], higher_is_better: bool = True) -> dict[int, CandidateRecord]:
    """Each round's best verified candidate."""
    by_round: dict[int, list[CandidateRecord]] = collections.defaultdict(list)
    for r in records:
        by_round[r.round].append(r)
    return {k: b for k in sorted(by_round) if (b := best(by_round[k], higher_is_better)) is not None}


def load_run(path: Path, written: list[CandidateRecord] | None = None) -> Run:
    """A run folder as the report sees it (``written``: records instead of the folder's manifest)."""
    return Run(**rf.read_run(Path(path), written, warn).fields())


def load_runs(root: Path) -> list[Run]:
    """Every run under ``root`` (itself included) with a candidate; unreadable ones skipped with one warning."""
    runs = []
    for path in rf.find_runs(root):
        try:
            run = load_run(path)
        except (RuntimeError, ValueError) as e:  # a manifest from a newer tts
            warn(f"skipped {path}: {str(e).splitlines()[0]}")
            continue
        if run.records:
            runs.append(run)
        else:
            warn(f"skipped {path}: no candidate recorded yet")
    return runs


def warn(message: str) -> None:
    print(f"tts-report: warning: {message}", file=sys.stderr)



# -- naming runs -------------------------------------------------------------------------------------------

def _flat(config: Any, prefix: str = "") -> dict[str, Any]:
    """``{"search.rounds": 4, ...}``; lists kept whole; operational keys left out."""
    if not isinstance(config, dict):
        return {prefix: config}
    out, operational = {}, rf.operational_paths(config, prefix)  # what components declare (tts.core.runfolder)
    for k, v in config.items():
        if k in IGNORED_KEYS or k == "_partial_" or (f"{prefix}.{k}" if prefix else str(k)) in operational:
            continue
        out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
    return out


def short_target(target: Any) -> str:
    """``tts.search.zero_order.ZeroOrderSearch`` -> ``zero-order`` (the module is the config's option name)."""
    parts = str(target).split(".")
    return (parts[-2] if len(parts) >= 2 else parts[-1]).replace("_", "-")


def _setting(key: str, value: Any) -> str:
    if key.endswith("._target_"):
        return f"{key[:-len('._target_')]}={short_target(value)}"
    if key == "pipeline.name":
        return f"pipeline={value}"
    text = value if isinstance(value, str) else json.dumps(value)
    return f"{key}={text if len(text) <= 40 else text[:37] + '...'}"


def label_runs(runs: list[Run], root: Path) -> None:
    """Name each run by the settings that tell it apart (Hydra override style), else by its folder; give each a
    colour. Shown: settings every run has, with differing values; a group's other settings only where runs with
    the same option of that group differ in them (so ``pipeline=sdxl`` does not drag its height along); of
    settings that always agree with each other (``prompt`` and ``prompts.text``), the first."""
    flats = [_flat(r.config) for r in runs]
    common = set.intersection(*(set(f) for f in flats)) if flats else set()
    differing = sorted(k for k in common if len({_key(f[k]) for f in flats}) > 1)
    shown, seen_values = [], set()
    for k in differing:
        group = k.partition(".")[0]
        option = next((f"{group}.{o}" for o in ("_target_", "name") if f"{group}.{o}" in differing), None)
        if option and k != option and not _varies_within(flats, option, k):
            continue
        values = tuple(_key(f[k]) for f in flats)
        if values not in seen_values:
            seen_values.add(values)
            shown.append(k)
    count: collections.Counter = collections.Counter()
    for n, (run, flat) in enumerate(zip(runs, flats)):
        run.label = " ".join(_setting(k, flat[k]) for k in shown) or folder_name(run.path, root)
        count[run.label] += 1
        run.colour = PALETTE[n % len(PALETTE)]
    for run in runs:
        if count[run.label] > 1:
            run.label = f"{run.label} ({folder_name(run.path, root)})"


def _key(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _varies_within(flats: list[dict], option: str, key: str) -> bool:
    """Two runs with the same value of ``option`` differ in ``key``."""
    values: dict[str, set] = collections.defaultdict(set)
    for f in flats:
        values[_key(f[option])].add(_key(f[key]))
    return any(len(v) > 1 for v in values.values())


def folder_name(path: Path, root: Path) -> str:
    rel = os.path.relpath(path, root)
    return path.name if rel == "." else rel

