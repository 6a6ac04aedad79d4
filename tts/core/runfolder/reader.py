"""The one reader of run folders, shared by tts-report, tts-collage, tts-replay and ``tts.load_run``.

:func:`read_run` reads any run folder into a :class:`RunData`: the typed records of its manifest (every one
written, and the final one per candidate), or, in a folder without a manifest (tt-scale-flux's, or tts's before
the manifest), records made from its round JSONs (each round's best scored, its other images unscored, no
NFEs); and ``config.json``, ``summary.json``, ``plan.json``, ``previews.jsonl`` and ``searches.jsonl`` (empty
when absent). :func:`read_round_jsons` gives a folder's round JSONs with their image files, per prompt.
"""
from __future__ import annotations

import collections
import dataclasses
import importlib
import json
import logging
import math
import re
from pathlib import Path
from typing import Callable

from ..records import CandidateRecord, MetricScore, SearchRecord
from .judgements import attach_judgements, read_judgements
from .manifest import final_records, read_manifest, read_searches
from .paths import CONFIG, MANIFEST, MANIFESTS, PLAN, PREVIEWS, SUMMARY, prompt_hash, run_file

log = logging.getLogger("tts.core.runfolder")

#: Round JSONs: ``<stem>_i@<round>_s@<best seed>.json`` (tt-scale-flux, tts); ``<stem>_i@<round>.json`` (older tts).
ROUND_JSON_FILE = re.compile(r"(prompt@.+?_hash@[^_]+)_i@(\d+)(?:_s@(\d+))?\.json")
IMAGE = re.compile(r"(prompt@.+?_hash@[^_]+)_i@(\d+)_s@(\d+)\.png")

Warn = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One image of a run: its file, round, seed, and score (None when the folder has no score for it)."""

    image: Path
    round: int
    seed: int
    score: float | None
    index: int = 0
    lineage: str | None = None  # in-loop candidates: "p<particle> from p<parent>" (resampled copies share a seed)


@dataclasses.dataclass
class RoundJsonPrompt:
    """One prompt's round JSONs in a folder: its text, file stem and metric, and per round its images (the
    round's best first, scored; then its other images, unscored)."""

    prompt: str
    stem: str
    metric: str
    rounds: dict[int, list[Candidate]] = dataclasses.field(default_factory=lambda: collections.defaultdict(list))


@dataclasses.dataclass
class RunData:
    """A run folder read back: its final records (one per candidate), every record written (retries too),
    config.json, where the records came from (``manifest`` or ``round JSONs``), the in-loop preview scores,
    summary.json and plan.json (empty when absent), and the in-loop searches (searches.jsonl)."""

    path: Path
    records: list[CandidateRecord]
    written: list[CandidateRecord]
    config: dict
    source: str = "manifest"
    previews: list[dict] = dataclasses.field(default_factory=list)
    summary: dict = dataclasses.field(default_factory=dict)
    plan: dict = dataclasses.field(default_factory=dict)
    searches: dict[str, SearchRecord] = dataclasses.field(default_factory=dict)

    @property
    def verifier(self) -> str:
        return self.records[0].verifier if self.records else "—"

    @property
    def metric(self) -> str:
        return self.records[0].choice_of_metric if self.records else "score"

    @property
    def higher_is_better(self) -> bool:
        """The searched metric's direction, as its verifier class (config.json) declares it (higher when unknown)."""
        return metric_direction(self.path, self.records[0].choice_of_metric if self.records else "") > 0

    @property
    def nfe_known(self) -> bool:
        return self.source == "manifest"

    def prompts(self) -> dict[str, list[CandidateRecord]]:
        """Candidates per prompt, prompts in their list order, candidates by round and index."""
        out: dict[str, list[CandidateRecord]] = {}
        for r in sorted(self.records, key=lambda r: (r.prompt_index, r.round, r.index)):
            out.setdefault(r.prompt, []).append(r)
        return out

    def fields(self) -> dict:
        """The fields, to build a front end's own view of the run (``View(**data.fields(), label=...)``)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(RunData)}


# -- finding runs ------------------------------------------------------------------------------------------------

def has_manifest(path: Path) -> bool:
    """The folder's candidates are in a manifest (``manifest.jsonl`` or the per-writer ``manifests/``)."""
    return (path / MANIFEST).is_file() or (path / MANIFESTS).is_dir()


def is_run(path: Path) -> bool:
    """A folder with a manifest or round JSONs."""
    return has_manifest(path) or any(ROUND_JSON_FILE.fullmatch(p.name) for p in path.glob("*.json"))


def find_runs(path: Path) -> list[Path]:
    """Folders under ``path`` (itself included) with a manifest or round JSONs."""
    path = Path(path)
    found = {p.parent for p in path.rglob(MANIFEST)}
    found |= {p.parent for p in path.rglob("*.json") if ROUND_JSON_FILE.fullmatch(p.name)}
    return sorted(found)


# -- the files ------------------------------------------------------------------------------------------------------

def read_json(path: Path) -> dict:
    """A JSON object from a file; ``{}`` when it is absent, unreadable or not an object."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def read_previews(run: Path, warn: Warn = log.warning) -> list[dict]:
    """``previews.jsonl``: one object per line with ``step`` and ``score`` (and ``prompt``/``prompt_hash``,
    ``round``, ``index``, ``metric``); other lines are skipped with one warning."""
    path = run / PREVIEWS
    if not path.is_file():
        return []
    out, bad = [], 0
    for line in path.read_bytes().split(b"\n"):
        if not line.strip():
            continue
        try:
            doc = json.loads(line.decode("utf-8"))
            if not isinstance(doc, dict):
                raise ValueError
            doc["step"], doc["score"] = float(doc["step"]), float(doc["score"])
            if not (math.isfinite(doc["step"]) and math.isfinite(doc["score"])):
                raise ValueError
            out.append(doc)
        except (UnicodeDecodeError, ValueError, KeyError, TypeError):
            bad += 1
    if bad:
        warn(f"{path}: skipped {bad} line{'s' if bad > 1 else ''} without a numeric step and score")
    return out


def metric_direction(run: Path, metric: str) -> float:
    """-1 when the run's verifier (config.json's ``verifier._target_``) declares ``metric`` lower-is-better, else 1."""
    try:
        target = json.loads((run / CONFIG).read_text(encoding="utf-8"))["verifier"]["_target_"]
        module, _, name = target.rpartition(".")
        cls = getattr(importlib.import_module(module), name)
    except Exception:  # noqa: BLE001 - no config or an unimportable class: the reference's rule, higher is better
        return 1.0
    return -1.0 if metric in getattr(cls, "lower_is_better", ()) else 1.0


# -- round JSONs (tt-scale-flux) --------------------------------------------------------------------------------

def _resolve(run: Path, stem: str, round_: int, doc: dict) -> Path:
    """The best image of a round JSON: ``best_img_path``'s file name in ``run`` (it may be relative to another
    working directory, or absolute on another machine), else the name made from the best seed."""
    name = re.split(r"[\\/]", doc.get("best_img_path") or "")[-1]
    name = "" if run_file(run, name) is None else name
    if name and (run / name).exists():
        return run / name
    seed = doc.get("best_noise_seed")
    return run / (f"{stem}_i@{round_}_s@{seed}.png" if seed is not None else name or f"{stem}_i@{round_}.png")


def _round_best(run: Path, path: Path, stem: str, round_: int) -> tuple[str, str, Candidate | None]:
    """A round JSON's prompt, metric and best candidate (None when the round has no score)."""
    doc = json.loads(path.read_text())
    score = doc["best_score"]["score"]
    seed = doc.get("best_noise_seed")
    prompt = str(doc.get("prompt") or stem.split("@", 1)[1].rsplit("_hash@", 1)[0].replace("_", " "))
    metric = str(doc.get("choice_of_metric") or "score")
    if score is None:
        return prompt, metric, None
    return prompt, metric, Candidate(_resolve(run, stem, round_, doc), round_,
                                     -1 if seed is None else int(seed), float(score))


def read_round_jsons(run: Path, warn: Warn = log.warning) -> list[RoundJsonPrompt]:
    """A folder's round JSONs (each round's best, scored) plus its other candidate images (unscored), per prompt;
    a file that is not a round JSON is skipped with one warning."""
    by_stem: dict[str, RoundJsonPrompt] = {}
    bests: dict[tuple[str, int], Candidate] = {}
    for path in sorted(run.glob("*.json")):
        m = ROUND_JSON_FILE.fullmatch(path.name)
        if not m:
            continue
        stem, round_ = m.group(1), int(m.group(2))
        try:
            prompt, metric, best = _round_best(run, path, stem, round_)
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            warn(f"skipped {path} (not a round JSON: {e!r})")
            continue
        by_stem.setdefault(stem, RoundJsonPrompt(prompt, stem, metric))
        if best and ((stem, round_) not in bests or best.score > bests[(stem, round_)].score):
            bests[(stem, round_)] = best
    for (stem, round_), best in bests.items():
        by_stem[stem].rounds[round_].append(best)
    for path in sorted(run.glob("*.png")):
        m = IMAGE.fullmatch(path.name)
        key = (m.group(1), int(m.group(2))) if m else None
        if key in bests and path != bests[key].image:
            by_stem[key[0]].rounds[key[1]].append(Candidate(path, key[1], int(m.group(3)), None))
    return [pr for pr in by_stem.values() if pr.rounds]


def round_json_records(run: Path, config: dict, warn: Warn = log.warning) -> list[CandidateRecord]:
    """A folder without a manifest (tt-scale-flux): each round's best, scored, and its other images, unscored;
    no NFEs. The verifier's name comes from a tt-scale-flux config (``verifier_args.name``) where there is one."""
    args = config.get("verifier_args")
    verifier = str(args.get("name") or "round JSON") if isinstance(args, dict) else "round JSON"
    out = []
    for n, pr in enumerate(read_round_jsons(run, warn)):
        for k in sorted(pr.rounds):
            for i, c in enumerate(pr.rounds[k]):
                scores = {} if c.score is None else {verifier: {pr.metric: MetricScore(score=c.score)}}
                out.append(CandidateRecord(
                    prompt=pr.prompt, prompt_index=n, prompt_hash=prompt_hash(pr.prompt), round=k, index=i,
                    seed=c.seed, noise={}, nfe=0.0, status="ok", verifier=verifier, choice_of_metric=pr.metric,
                    score=c.score, scores=scores, image=c.image.name))
    return out


# -- the run -------------------------------------------------------------------------------------------------------

def read_run(path: Path | str, written: list[CandidateRecord] | None = None, warn: Warn = log.warning) -> RunData:
    """A run folder's records (``written``: records instead of the folder's manifest), config, previews,
    summary, plan and in-loop searches. A manifest from a newer tts raises RunFolderError (upgrade)."""
    path = Path(path)
    config = read_json(path / CONFIG)
    if written is None and has_manifest(path):
        written = read_manifest(path)
    extra = {"previews": read_previews(path, warn), "summary": read_json(path / SUMMARY),
             "plan": read_json(path / PLAN), "searches": read_searches(path)}
    judged = read_judgements(path, warn)
    if written is None:
        records = round_json_records(path, config, warn)
        attach_judgements(records, judged)
        return RunData(path, records, records, config, "round JSONs", **extra)
    records = final_records(written)
    attach_judgements(records, judged)
    return RunData(path, records, written, config, "manifest", **extra)


def read_run_config(run: Path) -> dict:
    """``config.json`` for a tool that needs it: ``{}`` when it is not a JSON object; ValueError naming the file
    when it is absent or unreadable."""
    path = run / CONFIG
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ValueError(f"{path} is unreadable ({e})") from None
    return config if isinstance(config, dict) else {}


def records_for_image(run: Path, image: str) -> list[CandidateRecord]:
    """Every manifest record of one candidate image (retries too, in the order written)."""
    return [r for r in read_manifest(run) if r.image == image and run_file(run, r.image)]
