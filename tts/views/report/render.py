"""The report's HTML: the runs, groups and problems tables, and the whole page (style and script inline from
tts/views/report_assets)."""
from __future__ import annotations

import json
import time
from pathlib import Path

from .markup import esc
from .. import collage
from ...core import runfolder as rf
from .page import Images, page_data
from .plots import MAX_PROMPT_LINES, previews_figure, scores_figure
from .runs import Run, label_runs
from .stats import group_means, judge_rows, overview

ASSETS = Path(__file__).resolve().parents[1] / "report_assets"
MAX_PROBLEMS_LISTED = 200



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


def judges_table(runs: list[Run]) -> str | None:
    """Per run and judge (tts.run.judge; judges.jsonl): the judge's metric and direction, its mean over each
    prompt's kept candidate beside the steering metric's mean over the same candidates, its mean over every
    candidate it judged, how many it judged and failed, and what it cost."""
    rows = [(run, row) for run in runs for row in judge_rows(run)]
    if not rows:
        return None
    head = ("run", "judge", "metric", "mean of kept", "steering mean of kept", "mean of all judged", "judged",
            "failed", "cost (USD)")
    out = ["<div class='wide'><table class='judges'><thead><tr>", *(f"<th>{h}</th>" for h in head),
           "</tr></thead><tbody>"]
    for run, row in rows:
        arrow = "&uarr;" if row["higher_is_better"] else "&darr;"
        fmt = lambda v: "—" if v is None else collage.fmt(v)  # noqa: E731
        cells = [f"<span class='chip' style='background:{run.colour}'></span>{esc(run.label)}",
                 f"judge {esc(row['judge'])}<br><small>{esc(row['verifier'])}</small>",
                 f"{esc(row['metric'])} {arrow}", f"{fmt(row['kept_mean'])} <small>n={row['kept_n']}</small>",
                 f"{fmt(row['steering_mean'])}<br><small>{esc(run.metric)}</small>", fmt(row["all_mean"]),
                 _num(row["judged"]), _num(row["failed"]), "—" if row["cost"] is None else f"{row['cost']:.4f}"]
        out += ["<tr>", *(f"<td>{c}</td>" for c in cells), "</tr>"]
    out.append("</tbody></table></div>")
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
    judges = judges_table(runs)
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
        "<a href='#judges'>judges</a>" if judges else "", "<a href='#scores'>scores</a>" if scores else "", "<a href='#previews'>previews</a>" if previews else "",
        "<a href='#prompts'>prompts</a><a href='#problems'>failed and blocked</a></nav></header><main>",
        f"<section id='runs'><h2>Runs</h2>{runs_table(runs, rows)}</section>",
        f"<section id='groups'><h2>Groups</h2><p class='note'>Mean of each prompt's best by the run's searched "
        f"metric (n prompts); every metric on hover.</p>{groups}</section>" if groups else "",
    ]
    if judges:
        parts.append("<section id='judges'><h2>Judges</h2><p class='note'>Verifiers that scored the saved candidates "
                     "without steering the search (tts-judge, judges=[...]): each judge's mean over each prompt's "
                     "kept candidate beside the steering metric's mean over the same candidates (&uarr; higher is "
                     f"better, &darr; lower).</p>{judges}</section>")
    if scores:
        parts.append(
            "<section id='scores'><h2>Score against NFEs</h2><figure class='plot'>" + scores +
            "<figcaption>Each metric of the incumbent (each prompt's best so far by the searched metric) after "
            "each round, against NFEs spent on the prompt: thin lines per prompt (bands: middle half of prompts, "
            f"beyond {MAX_PROMPT_LINES} prompts), thick lines the mean. Solid: the metric the run searched on; "
            "dashed: other metrics of the same images, so a dashed line falling while a solid one rises is "
            "verifier hacking. Panels named 'judge ...': a judge's score of the same incumbents (it did not steer; "
            "with judges.scope=best only each prompt's kept candidate is judged, the last point)." + (f" Not plotted (no NFEs recorded): {esc(', '.join(no_nfe))}." if no_nfe else "")
            + "</figcaption></figure></section>")
    if previews:
        parts.append("<section id='previews'><h2>In-loop previews</h2><figure class='plot'>" + previews +
                     "<figcaption>Scores an in-loop strategy recorded during denoising (previews.jsonl), mean over "
                     "candidates per step.</figcaption></figure></section>")
    from .pipelines import section as pipelines_section  # search.pipelines: side by side, wins per tag

    parts.append(pipelines_section(runs, images))
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

