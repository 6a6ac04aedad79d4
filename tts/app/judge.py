"""``tts-judge RUN judges=[clip,aesthetic] [judges.scope=all]``: judge an existing run folder (any tts run, or a
tt-scale-flux one) from its saved images, without generating anything (docs/judges.md).

Each judge (a verifier of ``configs/verifier``, or ``{name:clip,label:clip-b,device:cpu}``) scores each prompt's
kept candidate (``judges.scope=best``, the default) or every candidate (``all``); scores go to ``RUN/judges.jsonl``
and their means to ``summary.json``'s ``judges``; ``tts-report RUN`` then shows them beside the steering scores.
Resumable and incremental: what ``judges.jsonl`` holds is not scored again (failed judgements are retried).
Exit status: 0 when every asked judgement is in the folder, 1 when some failed, 2 for input it cannot use.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from ..core import configtree
from ..core import runfolder as rf
from ..run import judge as judging

KEYS = ("judges", "judges.use", "judges.scope", "judges.batch_size", "judges.concurrency")


def spelled(argv: list[str]) -> list[str]:
    """tts-search's command line with ``judges=[...]`` as the config key it sets (``judges.use=[...]``)."""
    return [f"judges.use={a.partition('=')[2]}" if a.lstrip("+").startswith("judges=") else a for a in argv]


def parse_overrides(args: list[str]) -> dict[str, Any]:
    """``judges=[...]``, ``judges.scope=all``, ... read as Hydra reads them, into config.yaml's ``judges`` mapping."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    node: dict[str, Any] = {}
    for arg in args:
        key, sep, _ = arg.partition("=")
        if not sep:
            raise judging.JudgeError(f"{arg!r} is not key=value: give the judges as judges=[clip,aesthetic]")
        if key not in KEYS:
            raise judging.JudgeError(f"unknown key {key!r}{configtree.suggest(key, KEYS)} (keys: {', '.join(KEYS)})")
        try:
            [parsed] = OverridesParser.create().parse_overrides([arg])
        except HydraException:
            raise judging.JudgeError(f"cannot read {arg!r}: write it as judges=[clip,{{name:aesthetic,device:cpu}}]"
                                     ) from None
        value = parsed.value()
        node["use" if key in ("judges", "judges.use") else key.split(".", 1)[1]] = _plain(value)
    if not node.get("use"):
        raise judging.JudgeError("name the judges: tts-judge RUN judges=[clip,aesthetic] (choices: "
                                 f"{', '.join(configtree.choices('verifier'))})")
    return node


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def check_run(path: Path) -> None:
    if not path.is_dir():
        raise judging.JudgeError(f"{path} is not a folder: give a run folder (tts-search's, or tt-scale-flux's)")
    if not rf.is_run(path):
        raise judging.JudgeError(f"{path} is not a run folder (no {rf.MANIFEST} and no round JSONs "
                                 "prompt@..._i@<round>_s@<seed>.json); give the folder of one run")


def format_outcome(outcome: judging.JudgeOutcome) -> str:
    """One line per judge: what was scored now, and its mean over each prompt's kept candidate."""
    lines = []
    for label in outcome.scored:
        s = (outcome.summary.get("judges") or {}).get(label, {})
        metric, g = s.get("choice_of_metric"), (s.get("groups") or {}).get("all") or {}
        mean = f"{g[metric]:.4f} over {g['n']} kept candidates" if metric in g else "no kept candidate judged"
        cost = s.get("usage") or {}
        extra = f"; {cost['requests']} requests, ${cost['cost_usd']:.4f}" if cost else ""
        lines.append(f"{label}: {outcome.scored[label]} judged now, {outcome.kept[label]} already, "
                     f"{outcome.failed[label]} failed; {metric} mean {mean}{extra}")
    return "\n".join(lines)


def run(path: Path, args: list[str]) -> judging.JudgeOutcome:
    check_run(path)
    settings = judging.settings_from_config(parse_overrides(args))
    return judging.judge_run(path, settings)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="tts-judge", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="a run folder")
    p.add_argument("overrides", nargs="*", help="judges=[clip,aesthetic] judges.scope=best|all judges.batch_size=N "
                   "judges.concurrency=N|auto")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        outcome = run(args.run, args.overrides)
    except judging.JudgeError as e:
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt:
        print(f"\ninterrupted: finished judgements are in {args.run / rf.JUDGES}; rerun the same command to go on",
              file=sys.stderr)
        raise SystemExit(130) from None
    print(format_outcome(outcome))
    if any(outcome.failed.values()):
        first = next(j for (_, _), j in rf.read_judgements(args.run).items() if j.status != "ok")
        print(f"error: {sum(outcome.failed.values())} judgements failed ({first.error}); rerun the same command to "
              "retry only those", file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
