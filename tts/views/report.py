"""``tts-report PATH``: one static HTML page of a run folder, a multirun folder, or any folder of runs.

The page (``PATH/report.html``, or ``-o FILE``) holds every style, script and plot inline and links the images
relatively (``--embed`` puts them in the page), so the folder can be zipped and opened anywhere, offline:

- **Runs**: one row per run (pipeline, verifier and metric, strategy, budget, prompts, candidates, failed and
  blocked, NFEs, verifier calls, cost, wall time, mean best score); a run is named by the settings that tell
  it apart from the others (Hydra style: ``search=zero-order search.rounds=3``).
- **Groups**: the mean of each prompt's best, per prompt tag value (``category=...``, ``split=...``), per run.
- **Score against NFEs**: for every metric of every verifier, the value of each prompt's incumbent (the best
  candidate so far by the searched metric) after each round, against NFEs spent on that prompt; per prompt
  (thin) and averaged (thick), runs overlaid. Solid lines are the metric a run searched on, dashed lines other
  metrics of the same candidates: verifier hacking shows as a dashed line falling while a solid one rises
  (Ma et al. 2025, arXiv 2501.09732, section 5).
- **In-loop previews**: scores a strategy recorded during denoising (``previews.jsonl``), when a run has them.
- **Prompts**: per prompt, each run's best image and its round-by-round bests side by side, scores and
  explanations on hover and below; paged (``--per-page``), filtered and ordered in the page; images load lazily.
- **Failed and blocked candidates** with their reasons.

Plots are drawn by matplotlib as SVG (the ``report`` extra). Run folders are found as tts-collage
finds them: a folder with ``manifest.jsonl`` (every candidate), or round JSONs only (tt-scale-flux; each
round's best is then the only score known, and NFEs are not recorded).
"""
from __future__ import annotations

import argparse
import base64
import collections
import html
import io
import json
import math
import os
import statistics
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from . import collage
from ..core import runfolder as rf
from ..prompts import DEFAULT_GROUP_TAGS
from ..core.records import CandidateRecord, MetricScore
from ..search import best_record, better
from ..core.validate import install_hint

PREVIEWS = "previews.jsonl"
REPORT = "report.html"
ASSETS = Path(__file__).with_name("report_assets")
INSTALL_HINT = f"tts-report draws its plots with matplotlib: {install_hint('report')} (or pip install matplotlib)"
#: Okabe-Ito colours (distinct under colour-blindness), then matplotlib's tab10 for more runs.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442",
           "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
#: Keys of config.json that never tell runs apart.
IGNORED_KEYS = frozenset({"tts_version", "output_root"})
#: Per-prompt lines are drawn up to this many prompts per run; beyond, the interquartile band.
MAX_PROMPT_LINES = 20
#: Explanations of every round's best are in the page up to this many prompts; beyond, the run's best only.
MAX_PROMPTS_EXPLAINED = 50
EXPLANATION_CHARS = 600
MAX_PROBLEMS_LISTED = 200


class ReportError(RuntimeError):
    """Input tts-report cannot use (the message says what to do)."""


# -- reading runs ------------------------------------------------------------------------------------------

@dataclass
class Run:
    """One run folder: its final records (one per candidate), every record written, config and previews."""

    path: Path
    records: list[CandidateRecord]
    written: list[CandidateRecord]
    config: dict
    source: str = "manifest"
    previews: list[dict] = field(default_factory=list)
    label: str = ""
    colour: str = PALETTE[0]

    @property
    def verifier(self) -> str:
        return self.records[0].verifier if self.records else "—"

    @property
    def metric(self) -> str:
        return self.records[0].choice_of_metric if self.records else "score"

    @property
    def higher_is_better(self) -> bool:
        """The searched metric's direction, as its verifier class (config.json) declares it."""
        return collage.direction(self.path, self.metric) > 0

    @property
    def nfe_known(self) -> bool:
        return self.source == "manifest"

    def prompts(self) -> dict[str, list[CandidateRecord]]:
        """Candidates per prompt, prompts in their list order, candidates by round and index."""
        out: dict[str, list[CandidateRecord]] = {}
        for r in sorted(self.records, key=lambda r: (r.prompt_index, r.round, r.index)):
            out.setdefault(r.prompt, []).append(r)
        return out


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


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def read_previews(run: Path) -> list[dict]:
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


def records_from_round_jsons(run: Path, config: dict) -> list[CandidateRecord]:
    """A folder without a manifest (tt-scale-flux): each round's best, scored, and its other images, unscored;
    no NFEs. The verifier's name comes from a tt-scale-flux config (``verifier_args.name``) where there is one."""
    args = config.get("verifier_args")
    verifier = str(args.get("name") or "round JSON") if isinstance(args, dict) else "round JSON"
    out = []
    for n, pr in enumerate(collage.read_round_jsons(run)):
        for k in sorted(pr.rounds):
            for i, c in enumerate(pr.rounds[k]):
                scores = {} if c.score is None else {verifier: {pr.metric: MetricScore(score=c.score)}}
                out.append(CandidateRecord(
                    prompt=pr.prompt, prompt_index=n, prompt_hash=rf.prompt_hash(pr.prompt), round=k, index=i,
                    seed=c.seed, noise={}, nfe=0.0, status="ok", verifier=verifier, choice_of_metric=pr.metric,
                    score=c.score, scores=scores, image=c.image.name))
    return out


def load_run(path: Path, written: list[CandidateRecord] | None = None) -> Run:
    """A run folder as the report sees it (``written``: records instead of the folder's manifest)."""
    path = Path(path)
    config = _read_json(path / rf.CONFIG)
    if written is None and (path / rf.MANIFEST).is_file():
        written = rf.read_manifest(path)
    if written is None:
        records = records_from_round_jsons(path, config)
        return Run(path, records, records, config, "round JSONs", read_previews(path))
    return Run(path, rf.final_records(written), written, config, "manifest", read_previews(path))


def load_runs(root: Path) -> list[Run]:
    """Every run under ``root`` (itself included) with a candidate; unreadable ones skipped with one warning."""
    runs = []
    for path in collage.find_runs(root):
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


# -- what the tables show ------------------------------------------------------------------------------------

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


def metric_ids(run: Run) -> list[MetricId]:
    """Every (verifier, metric) in the run's scores, the searched one first."""
    ids = {(run.verifier, run.metric): None}
    for r in run.records:
        for v, metrics in r.scores.items():
            for m in metrics:
                ids.setdefault((v, m))
    return list(ids)


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


# -- plots -----------------------------------------------------------------------------------------------------

def _matplotlib():
    try:
        import matplotlib
        import matplotlib.lines
        import matplotlib.ticker
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(INSTALL_HINT) from None
    return matplotlib, Figure


def metric_names(runs: list[Run]) -> dict[MetricId, str]:
    """Every metric of every run, named by its metric alone unless two verifiers share the name."""
    ids: dict[MetricId, None] = {}
    for run in runs:  # searched metrics first
        ids.setdefault((run.verifier, run.metric))
    for run in runs:
        for mid in metric_ids(run):
            ids.setdefault(mid)
    counts = collections.Counter(m for _, m in ids)
    return {(v, m): m if counts[m] == 1 else f"{v} / {m}" for v, m in ids}


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _grid(n: int, figure_cls, width: float = 3.6, height: float = 2.7):
    cols = min(3, n)
    rows = math.ceil(n / cols)
    fig = figure_cls(figsize=(width * cols, height * rows + 0.5), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def scores_figure(runs: list[Run]) -> str | None:
    """Small multiples, one per metric: incumbent value against NFEs, per prompt and averaged, runs overlaid."""
    matplotlib, Figure = _matplotlib()
    plotted = [r for r in runs if r.nfe_known]
    if not plotted:
        return None
    names = metric_names(plotted)
    curves = {id(r): [c for recs in r.prompts().values() if (c := prompt_curve(recs, r.higher_is_better))]
              for r in plotted}
    with matplotlib.rc_context(_style("scores")):
        fig, axes = _grid(len(names), Figure)
        for ax, (mid, name) in zip(axes, names.items()):
            for run in plotted:
                _plot_run(ax, run, curves[id(run)], mid)
            ax.set_title(name)
            ax.set_xlabel("NFEs per prompt")
            ax.grid(alpha=0.3)
            if any(c[-1][0] / max(c[0][0], 1e-9) > 8 for cs in curves.values() for c in cs if c[0][0] > 0):
                ax.set_xscale("log", base=2)
                ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda x, _: f"{x:g}"))
        handles = [matplotlib.lines.Line2D([], [], color=r.colour, lw=2, marker="o", ms=4, label=r.label)
                   for r in plotted]
        if len(handles) > 1:
            fig.legend(handles=handles, loc="outside lower center", ncols=min(3, len(handles)), frameon=False)
        return _svg(fig)


def _plot_run(ax, run: Run, curves: list, mid: MetricId) -> None:
    style = "-" if mid == (run.verifier, run.metric) else "--"
    xs, ys = mean_curve(curves, mid)
    if not xs:
        return
    if len(curves) <= MAX_PROMPT_LINES:
        for c in curves:
            pts = [(x, v[mid]) for x, v in c if mid in v]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], style, color=run.colour, lw=0.8, alpha=0.3)
    else:
        _, lo = mean_curve(curves, mid, 0.25)
        _, hi = mean_curve(curves, mid, 0.75)
        ax.fill_between(xs, lo, hi, color=run.colour, alpha=0.12, lw=0)
    ax.plot(xs, ys, style, color=run.colour, lw=2, marker="o", ms=4)


def previews_figure(runs: list[Run]) -> str | None:
    """Mean in-loop preview score against denoising step, per run and metric."""
    with_previews = [r for r in runs if r.previews]
    if not with_previews:
        return None
    matplotlib, Figure = _matplotlib()
    with matplotlib.rc_context(_style("previews")):
        fig = Figure(figsize=(6, 3.2), layout="constrained")
        ax = fig.subplots()
        for run in with_previews:
            by_metric: dict[str, dict[float, list[float]]] = collections.defaultdict(
                lambda: collections.defaultdict(list))
            for p in run.previews:
                by_metric[str(p.get("metric") or run.metric)][p["step"]].append(p["score"])
            for n, (metric, steps) in enumerate(sorted(by_metric.items())):
                xs = sorted(steps)
                label = run.label if len(by_metric) == 1 else f"{run.label} · {metric}"
                ax.plot(xs, [statistics.fmean(steps[x]) for x in xs], ("-", "--", ":", "-.")[n % 4],
                        color=run.colour, lw=2, marker="o", ms=3, label=label)
        ax.set_xlabel("denoising step")
        ax.set_ylabel("mean preview score")
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, loc="best")
        return _svg(fig)


def _style(figure: str) -> dict:
    """Text as text (small, searchable SVG); ids salted per figure, so two plots in one page share none."""
    return {"svg.fonttype": "none", "svg.hashsalt": f"tts-report-{figure}", "font.size": 9, "axes.titlesize": 10,
            "font.family": "sans-serif", "axes.spines.top": False, "axes.spines.right": False}


# -- the page's data ---------------------------------------------------------------------------------------------

class Strings:
    """A table of distinct strings, so repeated explanations are written once."""

    def __init__(self):
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        if not text:
            return -1
        text = text if len(text) <= EXPLANATION_CHARS else text[:EXPLANATION_CHARS - 3] + "..."
        if text not in self._index:
            self._index[text] = len(self.items)
            self.items.append(text)
        return self._index[text]


class Images:
    """An image's address in the page: relative to the page's folder, or the file itself (``--embed``)."""

    def __init__(self, page_dir: Path, embed: bool):
        self.page_dir, self.embed = page_dir.resolve(), embed
        self._folders: dict[Path, str] = {}

    def __call__(self, folder: Path, name: str) -> str:
        if rf.run_file(folder, name) is None:  # a tampered record: nothing outside the run folder is shown
            return ""
        if self.embed:
            try:
                return "data:image/png;base64," + base64.b64encode((folder / name).read_bytes()).decode()
            except OSError:
                return ""
        if folder not in self._folders:
            rel = Path(os.path.relpath(folder.resolve(), self.page_dir))
            self._folders[folder] = "".join(urllib.parse.quote(part, safe="@") + "/" for part in rel.parts
                                            if part != ".")
        return self._folders[folder] + "/".join(urllib.parse.quote(part, safe="@") for part in name.split("/"))


def page_data(runs: list[Run], images: Images) -> dict:
    """What the page's script draws the prompts from: runs, metric names, strings, and per prompt each run's
    round bests (image, score, seed, every metric; explanations for the run's best, or all while few prompts)."""
    names = metric_names(runs)
    index = {mid: n for n, mid in enumerate(names)}
    strings = Strings()
    per_run = [run.prompts() for run in runs]
    order: dict[str, tuple] = {}
    for n, prompts in enumerate(per_run):
        for p, recs in prompts.items():
            order.setdefault(p, (recs[0].prompt_index, n, recs[0].prompt_tags))
    explain_all = len(order) <= MAX_PROMPTS_EXPLAINED
    out = []
    for prompt, (pidx, _, tags) in sorted(order.items(), key=lambda kv: kv[1][:2]):
        rows = []
        for n, (run, prompts) in enumerate(zip(runs, per_run)):
            recs = prompts.get(prompt)
            bests = round_bests(recs, run.higher_is_better) if recs else {}
            if not bests:
                continue
            top = best(bests.values(), run.higher_is_better)
            srcs = [images(run.path, b.image) for b in bests.values()]
            prefix = os.path.commonprefix(srcs) if len(srcs) > 1 and not images.embed else ""
            tiles = [[k, src[len(prefix):], b.score, b.seed,
                      [[index[(v, m)], s.score, strings(s.explanation) if explain_all or b is top else -1]
                       for v, ms in b.scores.items() for m, s in ms.items() if (v, m) in index]]
                     for (k, b), src in zip(bests.items(), srcs)]
            rows.append({"run": n, "best": list(bests).index(top.round), "pre": prefix, "tiles": tiles})
        out.append({"text": prompt, "n": pidx, "tags": _tags(tags), "runs": rows})
    return {"runs": [{"label": r.label, "colour": r.colour, "metric": index[(r.verifier, r.metric)]} for r in runs],
            "metrics": list(names.values()), "strings": strings.items, "prompts": out}


def _tags(tags: dict) -> str:
    return " · ".join(f"{k}={v}" for k, v in tags.items() if v not in (None, ""))


# -- HTML ----------------------------------------------------------------------------------------------------------

def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "—"
    return f"{value:,.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def runs_table(runs: list[Run], rows: list[dict]) -> str:
    head = ("run", "pipeline", "verifier, metric", "strategy", "budget", "prompts", "candidates", "failed",
            "blocked", "NFEs", "verifier calls", "cost (USD)", "wall time", "mean best")
    with_previews = any(r["previews"] for r in rows)
    out = ["<div class='wide'><table class='runs'><thead><tr>", *(f"<th>{h}</th>" for h in head),
           "<th>previews</th>" if with_previews else "", "</tr></thead><tbody>"]
    for run, row in zip(runs, rows):
        calls = ("API requests sent, retries included" if row["calls_are_requests"]
                 else "verification results recorded (no API usage reported)")
        wall = (f"from file times: first file written to last; records' timings: generation "
                f"{row['generate_s']:.1f} s, verification {row['verify_s']:.1f} s (overlapping)")
        folder = f"<br><small>{esc(row['folder'])}</small>" if row["folder"] != run.label else ""
        cells = [f"<span class='chip' style='background:{run.colour}'></span>{esc(run.label)}{folder}",
                 esc(row["pipeline"]), f"{esc(row['verifier'])}<br><small>{esc(row['metric'])}</small>",
                 esc(row["strategy"]), esc(row["budget"]),
                 _num(row["prompts"]), _num(row["candidates"]), _num(row["failed"]), _num(row["blocked"]),
                 _num(row["nfe"]), f"<span title='{esc(calls)}'>{_num(row['calls'])}</span>",
                 "—" if row["cost"] is None else f"{row['cost']:.4f}",
                 f"<span title='{esc(wall)}'>{_duration(row['wall'])}</span>",
                 "—" if row["mean_best"] is None else collage.fmt(row["mean_best"])]
        if with_previews:
            cells.append(_num(row["previews"]))
        out += ["<tr>", *(f"<td>{c}</td>" for c in cells), "</tr>"]
    out.append("</tbody></table></div>")
    return "".join(out)


def groups_table(runs: list[Run]) -> str | None:
    """Rows: tag values; columns: runs; cells: the mean best of the run's searched metric (all metrics on hover)."""
    means = [group_means(r) for r in runs]
    names = sorted({g for m in means for g in m if g != "all"})
    if not names:
        return None
    out = ["<table class='groups'><thead><tr><th>group</th>",
           *(f"<th><span class='chip' style='background:{r.colour}'></span>{esc(r.label)}<br>"
             f"<small>{esc(r.metric)}</small></th>" for r in runs), "</tr></thead><tbody>"]
    for name in ["all", *names]:
        out.append(f"<tr><th>{esc(name)}</th>")
        for run, m in zip(runs, means):
            g = m.get(name)
            if not g or run.metric not in g:
                out.append("<td>—</td>")
                continue
            title = " · ".join(f"{k} {collage.fmt(v)}" for k, v in g.items() if k != "n")
            out.append(f"<td title='{esc(title)}'>{collage.fmt(g[run.metric])} <small>n={g['n']}</small></td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def problems_table(runs: list[Run], images: Images) -> str:
    """Failed and blocked candidates (every status but ok) with their reasons, at most MAX_PROBLEMS_LISTED a run."""
    out, total = [], 0
    for run in runs:
        bad = [r for r in sorted(run.records, key=lambda r: (r.prompt_index, r.round, r.index)) if r.status != "ok"]
        total += len(bad)
        for r in bad[:MAX_PROBLEMS_LISTED]:
            path = rf.run_file(run.path, r.image)
            linked = path is not None and path.is_file() and not images.embed
            image = f"<a href='{esc(images(run.path, r.image))}'>image</a>" if linked else ""
            out.append(f"<tr class='{esc(r.status)}'><td><span class='chip' style='background:{run.colour}'></span>"
                       f"{esc(run.label)}</td><td>{esc(r.prompt)}</td><td>{r.round}</td><td>{r.index}</td>"
                       f"<td>{r.seed}</td><td><b>{esc(r.status)}</b></td>"
                       f"<td>{esc(r.error or 'no reason recorded')}</td>"
                       f"<td>{image}</td></tr>")
        if len(bad) > MAX_PROBLEMS_LISTED:
            out.append(f"<tr><td colspan='8'>... and {len(bad) - MAX_PROBLEMS_LISTED} more in {esc(run.label)} "
                       f"(every one is in {esc(run.path / rf.MANIFEST)})</td></tr>")
    if not total:
        return "<p id='no-problems'>None: every candidate was verified.</p>"
    head = "".join(f"<th>{h}</th>" for h in ("run", "prompt", "round", "index", "seed", "status", "reason", ""))
    return f"<table class='problems'><thead><tr>{head}</tr></thead><tbody>{''.join(out)}</tbody></table>"


def _asset(name: str) -> str:
    return (ASSETS / name).read_text(encoding="utf-8")


def _json_for_script(data: dict) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<``, so no ``</script>`` can end it early."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def render(root: Path, runs: list[Run], page_dir: Path, per_page: int = 20, embed: bool = False,
           title: str | None = None) -> str:
    """The whole page."""
    label_runs(runs, root)
    images = Images(page_dir, embed)
    rows = [overview(r, root) for r in runs]
    scores, previews, groups = scores_figure(runs), previews_figure(runs), groups_table(runs)
    data = page_data(runs, images) | {"perPage": per_page}
    title = title or f"tts report · {root.resolve().name}"
    n_prompts = len(data["prompts"])
    no_nfe = [r.label for r in runs if not r.nfe_known]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>{esc(title)}</title><style>{_asset('report.css')}</style></head><body>",
        f"<header><h1>{esc(title)}</h1><p class='meta'>{esc(root.resolve())} · {len(runs)} run"
        f"{'s' if len(runs) != 1 else ''} · {n_prompts} prompt{'s' if n_prompts != 1 else ''} · "
        f"{sum(r['candidates'] for r in rows):,} candidates · made {time.strftime('%Y-%m-%d %H:%M')}</p>",
        "<nav><a href='#runs'>runs</a>", "<a href='#groups'>groups</a>" if groups else "",
        "<a href='#scores'>scores</a>" if scores else "", "<a href='#previews'>previews</a>" if previews else "",
        "<a href='#prompts'>prompts</a><a href='#problems'>failed and blocked</a></nav></header><main>",
        f"<section id='runs'><h2>Runs</h2>{runs_table(runs, rows)}</section>",
        f"<section id='groups'><h2>Groups</h2><p class='note'>Mean of each prompt's best by the run's searched "
        f"metric (n prompts); every metric on hover.</p>{groups}</section>" if groups else "",
    ]
    if scores:
        parts.append(
            "<section id='scores'><h2>Score against NFEs</h2><figure class='plot'>" + scores +
            "<figcaption>Each metric of the incumbent (each prompt's best so far by the searched metric) after "
            "each round, against NFEs spent on the prompt: thin lines per prompt (bands: middle half of prompts, "
            f"beyond {MAX_PROMPT_LINES} prompts), thick lines the mean. Solid: the metric the run searched on; "
            "dashed: other metrics of the same images, so a dashed line falling while a solid one rises is "
            "verifier hacking." + (f" Not plotted (no NFEs recorded): {esc(', '.join(no_nfe))}." if no_nfe else "")
            + "</figcaption></figure></section>")
    if previews:
        parts.append("<section id='previews'><h2>In-loop previews</h2><figure class='plot'>" + previews +
                     "<figcaption>Scores an in-loop strategy recorded during denoising (previews.jsonl), mean over "
                     "candidates per step.</figcaption></figure></section>")
    parts += [
        "<section id='prompts'><h2>Prompts</h2><p class='note'>Per run: its best (left), then each round's best; "
        "scores and explanations on hover, the best's explanation below.</p>",
        "<div class='controls'><input id='filter' type='search' placeholder='filter prompts and tags'>"
        "<select id='order'><option value='list'>prompt order</option><option value='spread'>runs differ most"
        "</option><option value='low'>lowest best first</option></select>"
        "<button id='prev' type='button'>&larr; previous</button><span id='page-info'></span>"
        "<button id='next' type='button'>next &rarr;</button></div><div id='prompt-list'></div></section>",
        f"<section id='problems'><h2>Failed and blocked candidates</h2>{problems_table(runs, images)}</section>",
        "</main>",
        f"<script type='application/json' id='report-data'>{_json_for_script(data)}</script>",
        f"<script>{_asset('report.js')}</script></body></html>",
    ]
    return "".join(parts)


def write_report(path: Path, output: Path | None = None, per_page: int = 20, embed: bool = False,
                 title: str | None = None) -> Path:
    """Write the report of every run under ``path``; return the page's path."""
    path = Path(path)
    if not path.is_dir():
        raise ReportError(f"{path} is not a folder: give a run folder, a multirun folder, or a folder holding runs")
    _matplotlib()
    runs = load_runs(path)
    if not runs:
        raise ReportError(f"no run with candidates under {path} (a run folder has {rf.MANIFEST} or round JSONs "
                          "prompt@..._i@<round>_s@<seed>.json)")
    output = Path(output) if output else path / REPORT
    if output.is_dir():
        output = output / REPORT
    page = render(path, runs, output.parent, per_page, embed, title)
    output.parent.mkdir(parents=True, exist_ok=True)
    rf.atomic_write_bytes(output, page.encode("utf-8"))
    return output


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="tts-report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("path", type=Path, help="a run folder, a multirun folder, or any folder holding runs")
    p.add_argument("-o", "--output", type=Path, help=f"the page to write (default PATH/{REPORT})")
    p.add_argument("--per-page", type=int, default=20, help="prompts per page of the prompts section (default 20)")
    p.add_argument("--embed", action="store_true",
                   help="put the images in the page (one file to share; large for big runs)")
    p.add_argument("--title", help="the page's title")
    args = p.parse_args(argv)
    try:
        if args.per_page < 1:
            raise ReportError(f"--per-page must be at least 1, got {args.per_page}")
        print(write_report(args.path, args.output, args.per_page, args.embed, args.title))
    except (ReportError, OSError) as e:
        print(f"tts-report: error: {e}", file=sys.stderr)
        raise SystemExit(2 if isinstance(e, ReportError) else 1) from None


if __name__ == "__main__":
    main()
