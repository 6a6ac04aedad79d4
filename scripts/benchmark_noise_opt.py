r"""Gradient noise optimisation (search=noise-opt) and tree search (search=tree) vs random search at equal NFEs on
the shapes world (issue 32).

    OMP_NUM_THREADS=1 python scripts/benchmark_noise_opt.py --prompts 12 --budget 160 --out outputs/bench-noise-opt
    OMP_NUM_THREADS=1 python scripts/benchmark_noise_opt.py --suite-seed 1 --strategies noise-opt \
        --set noise-opt.lr=1 --out outputs/tune-noise-opt          # tuning: a suite drawn apart from the bench

The searches are steered by the learned ``shapes-reward`` (noise-opt through its differentiable
``score_tensor``), on ``--prompts`` prompts of the shapes bench (``num_prompts=N``: stratified by category), at
``--budget`` NFEs per prompt (random: best of budget / 10; noise-opt: k gradient steps with (3k + 1) x 10 <= budget,
a backward pass charged as two forwards; tree: rollouts until none fits). Each prompt's kept candidate (best by shapes-reward) is judged by the
exact checker (``shapes``: ``correct``). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

import tts  # noqa: E402
from tts.verifiers.shapes import ShapesVerifier  # noqa: E402
from tts.world.bench import ShapesBench  # noqa: E402


def judge(results) -> tuple[float, float]:
    """(share of prompts whose kept image is correct, mean criteria_met) by the exact checker."""
    checker = ShapesVerifier(choice_of_metric="correct")
    scores = checker.score([r.prompt for r in results], [r.best.image for r in results])
    return (sum(s["correct"].score for s in scores) / len(scores),
            sum(s["criteria_met"].score for s in scores) / len(scores))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--budget", type=float, default=160)
    p.add_argument("--strategies", default="random,noise-opt,tree")
    p.add_argument("--suite-seed", type=int, default=0, help="0: the bench; 1: the tuning suite")
    p.add_argument("--set", action="append", default=[], metavar="STRATEGY.KEY=VALUE",
                   help="a strategy option (e.g. noise-opt.lr=1); repeatable")
    p.add_argument("--out", type=Path, default=Path("outputs/bench-noise-opt"))
    args = p.parse_args(argv)
    texts = [q.text for q in ShapesBench(seed=args.suite_seed).subset(args.prompts)]  # prompts=shapes-bench num_prompts=N
    options: dict[str, dict] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        name, _, option = key.partition(".")
        options.setdefault(name, {})[option] = json.loads(value) if value[:1] in "-0123456789[{tfn" else value
    print(f"suite seed {args.suite_seed}, budget {args.budget:g} NFEs per prompt, options {options or 'defaults'}")
    print("| strategy | NFEs/prompt | prompts | correct (exact checker) | criteria_met | candidates/prompt | s |")
    print("|---|---|---|---|---|---|---|")
    for name in args.strategies.split(","):
        start = time.perf_counter()
        results = tts.search("shapes", texts, verifier="shapes-reward", strategy=name, nfe_budget=args.budget,
                             run_dir=args.out / name, strategy_options=options.get(name))
        correct, met = judge(results)
        nfe = sum(r.nfe for r in results) / len(results)
        cands = sum(len(r.candidates) for r in results) / len(results)
        print(f"| {name} | {nfe:g} | {len(results)} | {correct:.0%} ({round(correct * len(results))}/{len(results)}) "
              f"| {met:.3f} | {cands:g} | {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
