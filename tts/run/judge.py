"""Judges: verifiers that score a run's saved candidates after the search, without steering it (issue 29; Ma et
al. 2025's cross-verifier view: search with one verifier, judge with the others).

``judges=[clip,aesthetic]`` (tts-search, after the search) and ``tts-judge RUN judges=[...]`` (any run folder,
tt-scale-flux's too) both come here: :func:`build_judges` composes and checks every judge before anything loads
(names of ``configs/verifier``, or ``{name: clip, label: clip-b, device: cpu}`` with options);
:func:`judge_run` scores each prompt's kept candidate (``scope="best"``) or every candidate (``"all"``) from
its saved image, in batches, through ``Verifier.score`` (API judges retry, bound their requests in flight and
account their cost exactly as they do when they verify), appends a :class:`JudgeRecord` per candidate and judge
to ``judges.jsonl``, and puts the per-judge means into ``summary.json``. What ``judges.jsonl`` already holds is
not scored again, so a judge added later scores only what it lacks and a killed run loses nothing.
"""
from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import logging
import math
import os
import socket
import statistics
import time
from pathlib import Path
from typing import Any

from ..core import configtree
from ..core import runfolder as rf
from ..core.records import CandidateRecord, JudgeRecord, Usage
from ..search import best_record
from ..verifiers.base import Verdict, Verifier, as_verdict
from .summaryfile import update_summary

log = logging.getLogger("tts")

SCOPES = ("best", "all")
#: The keys of a judge given as a mapping that are not the verifier's options.
OWN_KEYS = ("name", "label")


class JudgeError(ValueError):
    """A judge setting or a run folder tts-judge cannot use (one line naming the fix)."""


@dataclasses.dataclass
class Judge:
    """One judge: its label (the key of its scores), the verifier, and its settings (what it computes)."""

    label: str
    verifier: Verifier
    config: dict


@dataclasses.dataclass
class JudgeSettings:
    """``judges`` of config.yaml (and tts-judge's command line): which judges, over which candidates."""

    judges: list[Judge]
    scope: str = "best"
    batch_size: int = 8
    concurrency: int | None = None  # batches in flight; None: enough for each judge's max_concurrency


# -- composing -------------------------------------------------------------------------------------------------------

def settings_from_config(node: Any) -> JudgeSettings | None:
    """``config["judges"]`` (``{use: [...], scope: best, batch_size: 8, concurrency: auto}``) built and checked;
    None when no judge is asked for."""
    if not node:
        return None
    if isinstance(node, (list, tuple)):  # judges=[...] given as the list itself
        node = {"use": list(node)}
    if not isinstance(node, dict):
        raise JudgeError(f"judges must be a list of verifier names, e.g. judges=[clip,aesthetic]; got {node!r}")
    unknown = sorted(set(node) - {"use", "scope", "batch_size", "concurrency"})
    if unknown:
        raise JudgeError(f"unknown key judges.{unknown[0]}{configtree.suggest(unknown[0], ['use', 'scope', 'batch_size', 'concurrency']).replace(chr(39), chr(39) + 'judges.', 1)} "
                         "(keys: judges.use, judges.scope, judges.batch_size, judges.concurrency)")
    use = node.get("use") or []
    if not use:
        return None
    return JudgeSettings(build_judges(use), check_scope(node.get("scope", "best")),
                         _positive(node.get("batch_size", 8), "judges.batch_size"),
                         None if node.get("concurrency") in (None, "auto")
                         else _positive(node.get("concurrency"), "judges.concurrency"))


def check_scope(scope: Any) -> str:
    if scope not in SCOPES:
        raise JudgeError(f"judges.scope={scope!r}{configtree.suggest(scope, SCOPES)} choices: best (each prompt's "
                         "kept candidate), all (every candidate)")
    return str(scope)


def _positive(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise JudgeError(f"{key} must be a positive integer, got {value!r}")
    return value


def build_judges(spec: Any) -> list[Judge]:
    """Every judge of ``spec`` (a list of names or ``{name: ..., label: ..., <option>: ...}``) built and checked
    (``check()``: packages, API keys), nothing loaded; one line naming the fix for anything wrong."""
    if isinstance(spec, str):
        spec = [s.strip() for s in spec.strip("[]").split(",") if s.strip()]
    if not isinstance(spec, (list, tuple)) or not spec:
        raise JudgeError("judges needs at least one verifier, e.g. judges=[clip,aesthetic] (choices: "
                         f"{', '.join(configtree.choices('verifier'))})")
    judges = [_build(item) for item in spec]
    labels = collections.Counter(j.label for j in judges)
    twice = [k for k, n in labels.items() if n > 1]
    if twice:
        raise JudgeError(f"judge {twice[0]!r} is given twice: label one of them, e.g. "
                         f"{{name:{judges[0].config.get('name', twice[0])},label:{twice[0]}-2,...}}")
    return judges


def _build(item: Any) -> Judge:
    options = dict(item) if isinstance(item, dict) else {"name": item}
    name = options.pop("name", None)
    if not isinstance(name, str) or not name:
        raise JudgeError(f"a judge given with options needs its verifier's name: {{name:clip,...}}; got {item!r}")
    valid = configtree.choices("verifier")
    if name not in valid:
        raise JudgeError(f"unknown judge {name!r}{configtree.suggest(name, valid)} choices: {', '.join(valid)}")
    label = str(options.pop("label", name))
    node = configtree.option("verifier", name)
    keys = {str(k) for k in node if not str(k).startswith("_")} | _keywords(rf.target_class(node.get("_target_")))
    for key in options:
        if key not in keys:
            raise JudgeError(f"unknown option {key!r} for judge {name!r}{configtree.suggest(key, keys)} "
                             f"(options: {', '.join(sorted(keys | set(OWN_KEYS)))})")
    node |= options
    verifier = _instantiate(node, label)
    try:
        verifier.check()
    except (ValueError, ImportError) as e:
        raise JudgeError(f"judge {label!r}: {e}") from None
    operational = set(getattr(verifier, "operational_keys", ()))
    config = {"name": name} | {k: v for k, v in node.items() if k not in operational}
    return Judge(label, verifier, config)


def _keywords(cls) -> set[str]:
    import inspect

    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return set()
    return {p for p, v in params.items() if v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)}


def _instantiate(node: dict, label: str) -> Verifier:
    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    try:
        verifier = instantiate(node)
    except InstantiationException as e:
        cause = e.__cause__ or e
        raise JudgeError(f"judge {label!r}: {cause}") from None
    except ValueError as e:
        raise JudgeError(f"judge {label!r}: {e}") from None
    if not isinstance(verifier, Verifier):
        raise JudgeError(f"judge {label!r} built a {type(verifier).__name__}, not a tts Verifier")
    return verifier


# -- judging ---------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class JudgeOutcome:
    """What one judging of a folder did: per judge, candidates scored now, failed now, and already judged."""

    scored: dict[str, int] = dataclasses.field(default_factory=dict)
    failed: dict[str, int] = dataclasses.field(default_factory=dict)
    kept: dict[str, int] = dataclasses.field(default_factory=dict)
    summary: dict = dataclasses.field(default_factory=dict)


def candidates(data: rf.RunData, scope: str) -> list[CandidateRecord]:
    """The candidates a scope judges, with a readable image: each prompt's kept candidate (``best``; the run's
    best by its steering metric, in its direction), or every candidate that was not blocked (``all``)."""
    if scope == "best":
        picked = [b for recs in data.prompts().values() if (b := best_record(recs, data.higher_is_better))]
    else:
        picked = [r for r in data.records if r.status != "blocked"]
    out = []
    for r in picked:
        path = rf.run_file(data.path, r.image)
        if path is not None and path.is_file():
            out.append(r)
    return out


def judge_run(path: Path | str, settings: JudgeSettings) -> JudgeOutcome:
    """Score the scope's candidates of the folder ``path`` with each judge, skipping what ``judges.jsonl`` already
    holds (failed ones are retried); then write the per-judge means into ``summary.json``."""
    path = Path(path)
    data = rf.read_run(path)
    if not data.records:
        raise JudgeError(f"{path} holds no candidates to judge (a run folder has {rf.MANIFEST} or round JSONs "
                         "prompt@..._i@<round>_s@<seed>.json)")
    targets = candidates(data, settings.scope)
    if not targets:
        raise JudgeError(f"{path} has no saved image of a {'kept' if settings.scope == 'best' else ''} candidate "
                         "to judge (nothing was verified, or the images are gone)")
    judged = rf.read_judgements(path)
    outcome = JudgeOutcome()
    for judge in settings.judges:
        _check_same_judge(path, judge, judged)
        todo = [r for r in targets if (r.image, judge.label) not in judged
                or judged[(r.image, judge.label)].status != "ok"]
        outcome.kept[judge.label] = len(targets) - len(todo)
        records = _score_all(path, judge, todo, settings) if todo else []
        outcome.scored[judge.label] = sum(r.status == "ok" for r in records)
        outcome.failed[judge.label] = sum(r.status != "ok" for r in records)
    outcome.summary = refresh_summary(path)
    return outcome


def _check_same_judge(path: Path, judge: Judge, judged: dict) -> None:
    """A label already in the folder with other settings (another model, another metric) is refused."""
    before = next((r for (_, label), r in judged.items() if label == judge.label and r.status == "ok"), None)
    if before is not None and before.config and before.config != _plain(judge.config):
        diff = sorted(k for k in set(before.config) | set(judge.config)
                      if before.config.get(k) != _plain(judge.config).get(k))
        raise JudgeError(f"judge {judge.label!r} of {path} was run with other settings ({', '.join(diff)}): give this "
                         f"one its own label, e.g. judges=[{{name:{judge.config['name']},label:{judge.label}-2,...}}]")


def _plain(value):
    import json

    return json.loads(json.dumps(value, default=str))


def workers(verifier: Verifier, batch_size: int, concurrency: int | None) -> int:
    """Batches in flight: the set value, or enough for the verifier's ``max_concurrency`` requests (the rule of
    tts.run.loop.SearchJob.verify_workers)."""
    if concurrency is not None:
        return concurrency
    limit = getattr(verifier, "max_concurrency", None)
    if isinstance(limit, int) and not isinstance(limit, bool) and limit > 0:
        return max(2, math.ceil(limit / batch_size))
    return 2


def _score_all(path: Path, judge: Judge, todo: list[CandidateRecord], settings: JudgeSettings) -> list[JudgeRecord]:
    batches = [todo[i:i + settings.batch_size] for i in range(0, len(todo), settings.batch_size)]
    log.info("judge %s: %d candidates of %s", judge.label, len(todo), path)
    judge.verifier.setup()
    out: list[JudgeRecord] = []
    try:
        with cf.ThreadPoolExecutor(workers(judge.verifier, settings.batch_size, settings.concurrency),
                                   thread_name_prefix=f"judge-{judge.label}") as pool:
            for records in pool.map(lambda batch: _score_batch(path, judge, batch), batches):
                out += records
    finally:
        judge.verifier.close()
    return out


def _score_batch(path: Path, judge: Judge, batch: list[CandidateRecord]) -> list[JudgeRecord]:
    """Score one batch from its saved images and append a record per candidate (a failure is recorded)."""
    from ..core.video import load_candidate
    from .verify import finite_verdict

    start = time.perf_counter()
    try:
        images = [load_candidate(rf.run_file(path, r.image)) for r in batch]  # a video: its MP4's frames
        verdicts = [as_verdict(v) for v in judge.verifier.score([r.prompt for r in batch], images)]
        if len(verdicts) != len(batch):
            raise RuntimeError(f"the judge returned {len(verdicts)} results for {len(batch)} images")
    except Exception as e:  # noqa: BLE001 - a judge's failure is recorded (and retried by the next run), never raised
        log.warning("judge %s failed for %d candidates: %s", judge.label, len(batch), e)
        verdicts = [Verdict(error=f"{type(e).__name__}: {e}")] * len(batch)
    seconds = (time.perf_counter() - start) / len(batch)
    records = []
    for r, v in zip(batch, verdicts):
        rec = _record(judge, r, finite_verdict(v), seconds)
        rf.append_judgement(path, rec)
        records.append(rec)
    return records


def _record(judge: Judge, r: CandidateRecord, v: Verdict, seconds: float) -> JudgeRecord:
    metric = judge.verifier.choice_of_metric
    ok = v.error is None and v.scores is not None and metric in v.scores
    return JudgeRecord(
        judge=judge.label, verifier=judge.verifier.name, config=_plain(judge.config), choice_of_metric=metric,
        higher_is_better=judge.verifier.higher_is_better(), image=r.image, prompt=r.prompt,
        prompt_hash=r.prompt_hash, round=r.round, index=r.index, status="ok" if ok else "failed",
        error=None if ok else (v.error or f"no {metric!r} in the judge's answer"),
        score=v.scores[metric].score if ok else None, scores=v.scores if ok else {}, usage=v.usage,
        verify_s=seconds, worker=f"{socket.gethostname()}_{os.getpid()}")


# -- the summary -----------------------------------------------------------------------------------------------------

def judge_summary(data: rf.RunData) -> dict:
    """summary.json's ``judges``: per judge its metric and direction, the means of every metric it returned over
    each prompt's kept candidate (``groups``: overall and per prompt tag value, as the steering summary groups),
    over every judged candidate (``candidates``), failed judgements and what API judges cost."""
    labels = sorted({label for r in data.records for label in r.judges})
    kept = {id(b) for recs in data.prompts().values() if (b := best_record(recs, data.higher_is_better))}
    steering_groups = data.summary.get("groups") if isinstance(data.summary.get("groups"), dict) else None
    out = {}
    for label in labels:
        judged = [(r, r.judges[label]) for r in data.records if label in r.judges]
        ok = [(r, j) for r, j in judged if j.status == "ok"]
        first = judged[0][1]
        groups: dict[str, list] = collections.defaultdict(list)
        for r, j in ok:
            if id(r) not in kept:
                continue
            groups["all"].append(j)
            for tag, value in r.prompt_tags.items():
                name = f"{tag}={value}"
                if steering_groups is None or name in steering_groups:
                    groups[name].append(j)
        usage = [j.usage for _, j in judged if j.usage is not None]
        total = Usage()
        for u in usage:
            total = total.add(u)
        out[label] = {
            "verifier": first.verifier, "choice_of_metric": first.choice_of_metric,
            "higher_is_better": first.higher_is_better, "judged": len(ok),
            "failed": len(judged) - len(ok), "usage": total.model_dump() if usage else None,
            "groups": {k: _means(v) for k, v in sorted(groups.items())},
            "candidates": _means([j for _, j in ok]),
        }
    return out


def _means(judgements: list[JudgeRecord]) -> dict:
    values = collections.defaultdict(list)
    for j in judgements:
        for metric, s in j.scores.items():
            values[metric].append(s.score)
    return {"n": len(judgements)} | {m: statistics.fmean(v) for m, v in sorted(values.items())}


def summary_lines(summary: dict) -> list[str]:
    """One line per judge of a summary: its mean over the kept candidates."""
    out = []
    for label, s in (summary.get("judges") or {}).items():
        g, metric = (s.get("groups") or {}).get("all") or {}, s.get("choice_of_metric")
        mean = f"{g[metric]:.4f}" if metric in g else "—"
        out.append(f"judge {label}: {metric} mean {mean} over {g.get('n', 0)} kept candidates "
                   f"({s.get('judged', 0)} judged, {s.get('failed', 0)} failed)")
    return out


def refresh_summary(path: Path | str) -> dict:
    """Put the folder's judges (judges.jsonl) into summary.json's ``judges``; the updated summary."""
    data = rf.read_run(Path(path))
    return update_summary(Path(path), judges=judge_summary(data))
