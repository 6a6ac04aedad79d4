"""Smoke test of scripts/benchmark_strategies.py: every strategy stays within its budget, the kept candidate is
judged by the exact checker, and the lockstep batching of in-loop searches gives the same outcomes as one prompt
at a time."""
import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_strategies", ROOT / "scripts" / "benchmark_strategies.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmark_strategies", mod)  # dataclasses resolve their module's annotations
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_budgets_judging_and_lockstep(tmp_path, capsys):
    bench = _script()
    argv = ["--prompts", "2", "--budgets", "20,40", "--steers", "criteria_met,reward", "--strategies",
            "random,prune,smc", "--group-budgets", "40", "--out", str(tmp_path)]
    together = bench.main(argv)
    alone = bench.main([*argv[:-2], "--no-lockstep"])
    text = capsys.readouterr().out
    assert "| prune |" in text and "Verifier hacking" in text and "command: python scripts/benchmark_strategies.py" in text
    assert "paired difference vs random [95% CI]" in text and "(n=2)" in text  # bootstrap intervals per cell
    assert {(o.strategy, o.steer, o.budget) for o in together} == {
        (s, v, b) for s in ("random", "prune", "smc") for v in ("criteria_met", "reward") for b in (20, 40)}
    for o in together:
        assert o.error is None, o
        assert 0 < o.nfe <= o.budget and o.correct in (0, 1) and 0 <= o.criteria_met <= 1
        assert o.final_scores >= 1 and (o.preview_scores > 0) == (o.strategy != "random")
    assert all(o.nfe == 40 for o in together if o.strategy == "smc" and o.budget == 40)  # its whole budget
    strip = lambda outs: sorted((dataclasses.replace(o, seconds=0.0, steer_score=None) for o in outs),  # noqa: E731
                                key=lambda o: (o.strategy, o.steer, o.budget, o.prompt))
    assert strip(together) == strip(alone)
    raw = json.loads((tmp_path / "results.json").read_text())
    assert len(raw["outcomes"]) == len(together) and (tmp_path / "strategies.png").stat().st_size > 0
