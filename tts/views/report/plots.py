"""The report's plots, drawn by matplotlib as SVG (the ``report`` extra): score against NFEs, in-loop previews."""
from __future__ import annotations

import collections
import io
import math
import statistics

from ...core.validate import install_hint
from .runs import ReportError, Run
from .stats import MetricId, mean_curve, metric_names, prompt_curve

INSTALL_HINT = f"tts-report draws its plots with matplotlib: {install_hint('report')} (or pip install matplotlib)"
#: Per-prompt lines are drawn up to this many prompts per run; beyond, the interquartile band.
MAX_PROMPT_LINES = 20



def _matplotlib():
    try:
        import matplotlib
        import matplotlib.lines
        import matplotlib.ticker
        from matplotlib.figure import Figure
    except ImportError:
        raise ReportError(INSTALL_HINT) from None
    return matplotlib, Figure


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

