"""What tts-search prints when a run ends: the summary table, the next commands, and the one line of a run
none of whose candidates was verified."""
from __future__ import annotations

from pathlib import Path

from ..core import runfolder as rf


def verified(summary: dict) -> int:
    """Candidates the verifier scored (neither failed nor blocked)."""
    return summary["candidates"] - summary["failed"] - summary.get("blocked", 0)


def next_steps(run_dir: Path) -> str:
    return (f"next: tts-collage {shell(run_dir)}   (each prompt's candidates round by round)\n"
            f"      tts-report {shell(run_dir)}    (an HTML report: scores, best images, costs)")


def shell(path: Path) -> str:
    import shlex

    return shlex.quote(str(path))


def first_error(run_dir: Path) -> str:
    """The first failed candidate's error, shortened (the run folder's log has every one)."""
    error = next((r.error for r in rf.final_records(rf.read_manifest(run_dir)) if r.status == "failed" and r.error),
                 None)
    if not error:
        return f"see {run_dir / 'tts-search.log'}"
    error = error.strip().splitlines()[-1] if error.strip() else error
    return f"first: {error[:160]}{'...' if len(error) > 160 else ''}"


def nothing_verified(summary: dict, run_dir: Path) -> str:
    """The one line of a run none of whose candidates was verified: why, and how to rerun."""
    n, failed, blocked = summary["candidates"], summary["failed"], summary.get("blocked", 0)
    if n == 0:
        return "no candidate was generated; nothing to summarise"
    rerun = f"rerun the same command with hydra.run.dir={shell(run_dir)}"
    if failed:
        return (f"no candidate was verified: {failed} of {n} failed ({first_error(run_dir)}); fix the cause, then "
                f"{rerun} to verify them again (images are kept)")
    return (f"no candidate was verified: all {blocked} were blocked (safety checker or black images); change the "
            f"prompt or set safety.rewrite=true or safety.fallback_pipeline=..., then {rerun}")


def format_summary(summary: dict, run_dir: Path) -> str:
    metrics = sorted({m for g in summary["groups"].values() for m in g if m != "n"})
    usage = summary.get("usage")
    cost = (f"; verifier: {usage['requests']} requests, {usage['input_tokens']} input + {usage['output_tokens']} "
            f"output tokens, about ${usage['cost_usd']:.4f}" if usage else "")
    blocked = f"{summary['blocked']} blocked (safety checker or black image), " if summary.get("blocked") else ""
    lines = [f"run folder: {run_dir}", f"{summary['candidates']} candidates, {summary['failed']} failed, {blocked}"
             f"{summary['nfe_total']:.0f} NFEs{cost}" + ("; mean of each prompt's best:" if summary["groups"] else "")]
    if not summary["groups"]:
        return "\n".join(lines)
    lines += ["| group | n | " + " | ".join(metrics) + " |", "|---|---|" + "---|" * len(metrics)]
    for name, g in summary["groups"].items():
        lines.append(f"| {name} | {g['n']} | " + " | ".join(f"{g.get(m, float('nan')):.3f}" for m in metrics) + " |")
    return "\n".join(lines + stopping_lines(summary))


def stopping_lines(summary: dict) -> list[str]:
    """search.stop_at / study_nfe_budget: how many prompts reached the threshold, and the NFEs a prompt spent."""
    ctq = summary.get("cost_to_quality")
    if not ctq or not ctq.get("nfe_per_prompt"):
        return []
    nfe = ctq["nfe_per_prompt"]
    reached = (f"{ctq['reached']} of {ctq['n']} prompts reached stop_at={ctq['stop_at']:g}; "
               if ctq.get("stop_at") is not None else "")
    study = f" (study_nfe_budget={ctq['study_nfe_budget']:g})" if ctq.get("study_nfe_budget") is not None else ""
    return [f"{reached}NFEs a prompt: mean {nfe['mean']:.1f}, median {nfe['median']:.0f}, max {nfe['max']:.0f}{study}"]
