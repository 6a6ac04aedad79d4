"""The table of docs/benchmarks.md's "Stop when good enough": for each run folder (same prompts), the share of
prompts whose best candidate reaches the threshold, with its 95% bootstrap interval over prompts, the paired
difference against the first folder, and the NFEs spent per prompt (mean, median, 90th percentile).

    python scripts/stopping_table.py --threshold 1 LABEL=RUN_FOLDER LABEL=RUN_FOLDER ...

Success is read from each folder's records (the best score of each prompt, in the metric's direction, against
``--threshold``); NFEs are the sum over each prompt's records (what its search paid for). Intervals:
tts.core.stats (10,000 resamples, seed 0).
"""
from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tts.core import runfolder as rf  # noqa: E402
from tts.core.stats import bootstrap_paired, bootstrap_rate  # noqa: E402
from tts.search import best_record  # noqa: E402
from tts.search.protocols import Budget  # noqa: E402


def per_prompt(run: Path, threshold: float) -> dict[str, tuple[bool, float]]:
    """Prompt -> (its best reaches the threshold, NFEs spent on it)."""
    records = rf.final_records(rf.read_manifest(run))
    up = not records or rf.metric_direction(run, records[0].choice_of_metric) > 0
    groups = collections.defaultdict(list)
    for r in records:
        groups[r.prompt].append(r)
    hit = Budget(stop_at=threshold)
    return {p: (hit.reached(getattr(best_record(rs, up), "score", None), up), sum(r.nfe for r in rs))
            for p, rs in groups.items()}


def quantile(values: list[float], f: float) -> float:
    values = sorted(values)
    x = f * (len(values) - 1)
    lo = int(x)
    return values[lo] + (values[min(lo + 1, len(values) - 1)] - values[lo]) * (x - lo)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="LABEL=RUN_FOLDER (the first is the reference of the paired differences)")
    ap.add_argument("--threshold", type=float, default=1.0)
    args = ap.parse_args(argv)
    runs = [(label, per_prompt(Path(path), args.threshold)) for label, _, path in (a.rpartition("=") for a in args.runs)]
    ref_label, ref = runs[0]
    prompts = sorted(ref)
    print(f"| search | prompts | success % [95% CI] | vs {ref_label}, points [95% CI] | NFEs per prompt: mean | median | p90 |")
    print("|---|---|---|---|---|---|---|")
    for label, rows in runs:
        if sorted(rows) != prompts:
            raise SystemExit(f"error: {label} holds other prompts than {ref_label}; compare runs over the same prompts")
        ok = [rows[p][0] for p in prompts]
        nfe = [rows[p][1] for p in prompts]
        diff = "—" if label == ref_label else bootstrap_paired(ok, [ref[p][0] for p in prompts]).text()
        print(f"| {label} | {len(prompts)} | {bootstrap_rate(ok).text()} | {diff} | {sum(nfe) / len(nfe):.1f} | "
              f"{quantile(nfe, 0.5):.0f} | {quantile(nfe, 0.9):.0f} |")


if __name__ == "__main__":
    main()
