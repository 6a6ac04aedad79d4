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
import sys
from pathlib import Path

from ...core import runfolder as rf
from .page import EXPLANATION_CHARS, MAX_PROMPTS_EXPLAINED, Images, Strings, page_data
from .plots import INSTALL_HINT, MAX_PROMPT_LINES, _matplotlib, previews_figure, scores_figure
from .render import ASSETS, MAX_PROBLEMS_LISTED, esc, groups_table, problems_table, render, runs_table
from .runs import (IGNORED_KEYS, PALETTE, PREVIEWS, ReportError, Run, best, folder_name, label_runs, load_run,
                   load_runs, round_bests, short_target, warn)
from .stats import (MetricId, budget, group_means, group_tags, mean_curve, metric_ids, metric_names, overview,
                    pipeline_name, prompt_curve, strategy, verifier_calls, wall_time)

REPORT = "report.html"



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


