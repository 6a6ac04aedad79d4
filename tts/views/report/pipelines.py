"""A search over several pipelines in the report (``search.pipelines``, docs/search-over-models.md): per prompt the
pipelines side by side (each one's best candidate, its score, the candidates and NFEs spent there, the router's
choice), and per prompt tag how often each pipeline made the prompt's best."""
from __future__ import annotations

import collections
import json
from pathlib import Path

from ...core.records import CandidateRecord
from .page import Images
from .markup import esc
from .runs import Run, best


def labels(run: Run) -> list[str]:
    """The run's pipelines in the order they first appear (empty: a search of one pipeline)."""
    return list(dict.fromkeys(r.pipeline for r in run.records if r.pipeline))


def per_prompt(run: Run) -> list[dict]:
    """One row per prompt: for each pipeline its best record, candidates and NFEs; the winner; the route."""
    by_prompt: dict[str, list[CandidateRecord]] = collections.defaultdict(list)
    for r in run.records:
        by_prompt[r.prompt].append(r)
    rows = []
    for prompt, recs in by_prompt.items():
        cells = {}
        for label in labels(run):
            mine = [r for r in recs if r.pipeline == label]
            cells[label] = {"best": best(mine, run.higher_is_better), "candidates": len(mine),
                            "nfe": sum(r.nfe for r in mine)}
        top = best(recs, run.higher_is_better)
        rows.append({"prompt": prompt, "tags": recs[0].prompt_tags, "cells": cells,
                     "winner": top.pipeline if top else None, "route": route(run.path, recs[0].prompt_hash)})
    return rows


def route(root: Path, prompt_hash: str) -> dict | None:
    path = Path(root) / "routes" / f"{prompt_hash}.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def wins(run: Run) -> dict[str, collections.Counter]:
    """{"tag=value" (and "all"): Counter(pipeline: prompts whose best it made)}."""
    out: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for row in per_prompt(run):
        if row["winner"] is None:
            continue
        out["all"][row["winner"]] += 1
        for k, v in row["tags"].items():
            out[f"{k}={v}"][row["winner"]] += 1
    return out


def side_by_side(run: Run, images: Images) -> str:
    """The pipelines of one run side by side, per prompt (the winner's cell marked)."""
    names = labels(run)
    out = [f"<h3>{esc(run.label)}</h3><div class='wide'><table class='pipelines'><thead><tr><th>prompt</th>",
           *(f"<th>{esc(x)}</th>" for x in names), "<th>router</th></tr></thead><tbody>"]
    for row in per_prompt(run):
        out.append(f"<tr><th>{esc(row['prompt'])}</th>")
        for x in names:
            cell, mark = row["cells"][x], " class='winner'" if row["winner"] == x else ""
            top = cell["best"]
            img = f"<img src='{esc(images(run.path, top.image))}' alt='' width='64'><br>" if top else ""
            score = "—" if top is None else f"{top.score:.3g}"
            out.append(f"<td{mark}>{img}{score}<br><small>{cell['candidates']} cand., {cell['nfe']:g} NFEs</small></td>")
        r = row["route"]
        out.append(f"<td><small>{esc(', '.join(r['chosen']) + ': ' + r['reason']) if r else '—'}</small></td></tr>")
    out.append("</tbody></table></div>")
    return "".join(out)


def wins_table(run: Run) -> str:
    """Per prompt tag: how often each pipeline made the prompt's best."""
    names, counts = labels(run), wins(run)
    out = [f"<table class='wins'><thead><tr><th>{esc(run.label)}: tag</th>", *(f"<th>{esc(x)}</th>" for x in names),
           "</tr></thead><tbody>"]
    for tag in ["all", *sorted(k for k in counts if k != "all")]:
        c = counts[tag]
        out.append(f"<tr><th>{esc(tag)}</th>" + "".join(f"<td>{c.get(x, 0)}/{sum(c.values())}</td>" for x in names)
                   + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def section(runs: list[Run], images: Images) -> str:
    """The report's "Pipelines" section, or "" when no run searched over several pipelines."""
    over = [r for r in runs if labels(r)]
    if not over:
        return ""
    body = "".join(wins_table(r) + side_by_side(r, images) for r in over)
    return ("<section id='pipelines'><h2>Pipelines</h2><p class='note'>A search over several pipelines "
            "(search.pipelines): how often each pipeline made a prompt's best, per prompt tag; then per prompt each "
            "pipeline's best candidate, its score, and the candidates and NFEs (charged) spent there; the prompt's "
            f"best is marked; the router's choice and reason at the end.</p>{body}</section>")
