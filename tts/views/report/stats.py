"""What the tables and curves show: a run's settings in words, its totals (NFEs, verifier calls, cost, wall
time), group means, and each prompt's incumbent after each round against NFEs spent."""
from __future__ import annotations

import collections
import statistics
from pathlib import Path
from typing import Any

from ...core import runfolder as rf
from ...core.records import CandidateRecord
from ...prompts import DEFAULT_GROUP_TAGS
from ...search import better
from .runs import Run, _scored, best, folder_name, short_target

def strategy(config: dict) -> str:
    search = config.get("search")
    if isinstance(search, dict) and "_target_" in search:
        return short_target(search["_target_"])
    ttsf = config.get("search_args")
    return str(ttsf.get("search_method", "—")) if isinstance(ttsf, dict) else "—"


def budget(config: dict) -> str:
    """The search's own settings (rounds, schedule, neighbours, ...)."""
    search = config.get("search") if isinstance(config.get("search"), dict) else config.get("search_args")
    if not isinstance(search, dict):
        return "—"
    items = [f"{k}={v}" for k, v in search.items()
             if k not in ("_target_", "_partial_", "search_method") and f"search.{k}" not in rf.operational_paths(
                 search, "search")
             and v is not None and not isinstance(v, (dict, list))]
    return " ".join(items) or "—"


def pipeline_name(config: dict) -> str:
    p = config.get("pipeline")
    if isinstance(p, dict):
        return str(p.get("name") or p.get("model_id") or "—")
    return str(config.get("pretrained_model_name_or_path") or "—")


def wall_time(run: Run) -> float | None:
    """Seconds from the run's first file (config.json or an image) to its last write (manifests, summary, round
    JSONs): the run's wall time, model loading included; a resumed run's pause is included too."""
    starts, ends = [], []
    for path in [run.path / rf.CONFIG] + [p for r in run.records if (p := rf.run_file(run.path, r.image))]:
        starts += _mtime(path)
    for path in [run.path / rf.MANIFEST, *run.path.glob("manifests/*.jsonl"), run.path / rf.SUMMARY,
                 *run.path.glob("*.json")]:
        if path.name != rf.CONFIG:
            ends += _mtime(path)
    if not starts or not ends:
        return None
    return max(0.0, max(ends) - min(starts))


def _mtime(path: Path) -> list[float]:
    try:
        return [path.stat().st_mtime]
    except OSError:
        return []


def verifier_calls(run: Run) -> tuple[int, bool]:
    """API requests sent (retries included) when the verifier reports usage, else verification results recorded
    (every record but blocked ones, re-verifications of failed candidates included, plus in-loop preview
    scores); and which it is."""
    used = [r.usage for r in run.written if r.usage is not None]
    if used:
        return sum(u.requests for u in used), True
    return sum(r.status != "blocked" for r in run.written) + len(run.previews), False


def overview(run: Run, root: Path) -> dict[str, Any]:
    """One row of the runs table."""
    prompts = run.prompts()
    bests = [b for recs in prompts.values() if (b := best(recs, run.higher_is_better)) is not None]
    used = [r.usage for r in run.written if r.usage is not None]
    calls, requests = verifier_calls(run)
    wall = wall_time(run)
    busy = sum(r.timings.generate_s for r in run.records), sum(r.timings.verify_s for r in run.records)
    return {
        "folder": folder_name(run.path, root), "pipeline": pipeline_name(run.config),
        "verifier": run.verifier, "metric": run.metric, "strategy": strategy(run.config),
        "budget": budget(run.config), "prompts": len(prompts), "candidates": len(run.records),
        "failed": sum(r.status == "failed" for r in run.records),
        "blocked": sum(r.status not in ("ok", "failed") for r in run.records),
        "nfe": sum(r.nfe for r in run.records) if run.nfe_known else None,
        "calls": calls if run.nfe_known else None, "calls_are_requests": requests,
        "cost": sum(u.cost_usd for u in used) if used else None,
        "wall": wall, "generate_s": busy[0], "verify_s": busy[1],
        "mean_best": statistics.fmean(b.score for b in bests) if bests else None,
        "previews": len(run.previews),
    }


def group_tags(run: Run) -> tuple[str, ...]:
    """The prompt tags a run's summary groups by: ``prompts.tags`` in its config, else tts's defaults."""
    prompts = run.config.get("prompts")
    tags = prompts.get("tags") if isinstance(prompts, dict) else None
    return tuple(tags) if isinstance(tags, list) else DEFAULT_GROUP_TAGS


def group_means(run: Run) -> dict[str, dict[str, float]]:
    """Per tag value (``category=colors``): ``n`` and the mean of every metric of the run's verifier over the bests."""
    tags = group_tags(run)
    groups: dict[str, list[CandidateRecord]] = collections.defaultdict(list)
    for recs in run.prompts().values():
        b = best(recs, run.higher_is_better)
        if b is None:
            continue
        groups["all"].append(b)
        for tag, value in b.prompt_tags.items():
            if tag in tags:
                groups[f"{tag}={value}"].append(b)
    out = {}
    for name, bs in groups.items():
        values = collections.defaultdict(list)
        for b in bs:
            for metric, s in b.scores.get(b.verifier, {}).items():
                values[metric].append(s.score)
        out[name] = {"n": len(bs)} | {m: statistics.fmean(v) for m, v in values.items()}
    return out



# -- curves -------------------------------------------------------------------------------------------------

MetricId = tuple[str, str]



#: A judge's curve is named ``judge <label>`` (tts.run.judge): scores of the same images by a verifier that did not steer.
JUDGE = "judge "


def metric_ids(run: Run) -> list[MetricId]:
    """Every (verifier, metric) in the run's scores, the searched one first, then each judge's metric."""
    ids = {(run.verifier, run.metric): None}
    for r in run.records:
        for v, metrics in r.scores.items():
            for m in metrics:
                ids.setdefault((v, m))
    for r in run.records:
        for label, j in r.judges.items():
            if j.status == "ok":
                ids.setdefault((JUDGE + label, j.choice_of_metric))
    return list(ids)


def judge_values(record: CandidateRecord) -> dict[MetricId, float]:
    """The judges' scores of a candidate, each judge's chosen metric."""
    return {(JUDGE + label, j.choice_of_metric): j.score for label, j in record.judges.items()
            if j.status == "ok" and j.score is not None}


def judge_rows(run: Run) -> list[dict[str, Any]]:
    """Per judge of a run: its metric and direction, candidates judged and failed, its mean over each prompt's
    kept candidate and over every judged candidate, the steering metric's mean over the same kept candidates,
    and what an API judge cost."""
    kept = [b for recs in run.prompts().values() if (b := best(recs, run.higher_is_better)) is not None]
    labels = sorted({label for r in run.records for label in r.judges})
    rows = []
    for label in labels:
        judged = [r.judges[label] for r in run.records if label in r.judges]
        ok = [j for j in judged if j.status == "ok" and j.score is not None]
        on_kept = [(b, b.judges[label]) for b in kept if label in b.judges and b.judges[label].status == "ok"]
        used = [j.usage for j in judged if j.usage is not None]
        rows.append({
            "judge": label, "verifier": judged[0].verifier, "metric": judged[0].choice_of_metric,
            "higher_is_better": judged[0].higher_is_better, "judged": len(ok), "failed": len(judged) - len(ok),
            "kept_n": len(on_kept),
            "kept_mean": statistics.fmean(j.score for _, j in on_kept) if on_kept else None,
            "all_mean": statistics.fmean(j.score for j in ok) if ok else None,
            "steering_mean": statistics.fmean(b.score for b, _ in on_kept) if on_kept else None,
            "cost": sum(u.cost_usd for u in used) if used else None,
        })
    return rows


def prompt_curve(records: list[CandidateRecord], higher_is_better: bool = True
                 ) -> list[tuple[float, dict[MetricId, float]]]:
    """After each round: NFEs spent on the prompt so far, and every metric of the incumbent (the best so far by
    the searched metric; rounds before any verified candidate are left out)."""
    points, spent, incumbent = [], 0.0, None
    by_round: dict[int, list[CandidateRecord]] = collections.defaultdict(list)
    for r in records:
        by_round[r.round].append(r)
    for k in sorted(by_round):
        spent += sum(r.nfe for r in by_round[k])
        for r in sorted(by_round[k], key=lambda r: r.index):
            if _scored(r) and (incumbent is None or better(r.score, incumbent.score, higher_is_better)):
                incumbent = r
        if incumbent is not None:
            values = {(v, m): s.score for v, ms in incumbent.scores.items() for m, s in ms.items()}
            values.setdefault((incumbent.verifier, incumbent.choice_of_metric), incumbent.score)
            values |= judge_values(incumbent)
            points.append((spent, values))
    return points


def mean_curve(curves: list[list[tuple[float, dict]]], mid: MetricId, q: float | None = None
               ) -> tuple[list[float], list[float]]:
    """Point k: the mean NFEs after k rounds and the mean (or quantile ``q``) of the metric over prompts."""
    xs, ys = [], []
    for k in range(max((len(c) for c in curves), default=0)):
        at = [c[k] for c in curves if len(c) > k and mid in c[k][1]]
        if not at:
            continue
        values = sorted(p[1][mid] for p in at)
        xs.append(statistics.fmean(p[0] for p in at))
        ys.append(statistics.fmean(values) if q is None else values[min(len(values) - 1, int(q * len(values)))])
    return xs, ys


def metric_names(runs: list[Run]) -> dict[MetricId, str]:
    """Every metric of every run, named by its metric alone unless two verifiers share the name."""
    ids: dict[MetricId, None] = {}
    for run in runs:  # searched metrics first
        ids.setdefault((run.verifier, run.metric))
    for run in runs:
        for mid in metric_ids(run):
            ids.setdefault(mid)
    counts = collections.Counter(m for _, m in ids)
    return {(v, m): m if counts[m] == 1 and not v.startswith(JUDGE) else f"{v} / {m}" for v, m in ids}

