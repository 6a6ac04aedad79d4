"""Human-preference search with a verifier as the simulated person vs random search, same images shown.

    python scripts/benchmark_human_preference.py                       # 12 bench prompts x 2 seeds, 4 rounds x 8
    python scripts/benchmark_human_preference.py --prompts 6 --seeds 1 --verifier shapes-proxy

The simulated person is the run's verifier (``search/frontend=scripted search.frontend.simulate_top_k=2``):
each round it picks the 2 candidates it scores highest, and human-preference search proposes the
next round near them (screened by its ridge value model, 25% fresh exploration). Random search
shows the same number of fresh noises per round. Both run through tts's own loop on the embedded
shapes model (in-process, one loaded pipeline), on an even spread of in-distribution bench prompts.
Reported: the mean over prompts and seeds of the best score of that verifier among the images
shown so far, after each round, and for the exact checker's success of that best image.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hydra import compose, initialize_config_dir  # noqa: E402

from tts.app.cli import build_job, config_dir  # noqa: E402
from tts.run.loop import run_search  # noqa: E402
from tts.core.runfolder import read_manifest  # noqa: E402
from tts.verifiers.shapes import ShapesVerifier  # noqa: E402
from tts.world.bench import build  # noqa: E402

METHODS = {"human-preference (simulated)": ["search=human-preference", "search/frontend=scripted",
                                            "search.frontend.simulate_top_k=2"],
           "random": ["search=random", "search.schedule=constant"]}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=12)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--per-round", type=int, default=8)
    p.add_argument("--verifier", default="shapes", help="the simulated person (a verifier config name)")
    args = p.parse_args(argv)
    bench = [q for q in build() if q.tags["split"] == "in_dist"]
    prompts = [bench[round(i * (len(bench) - 1) / max(1, args.prompts - 1))] for i in range(args.prompts)]
    exact = ShapesVerifier()
    curves = {m: [[] for _ in range(args.rounds)] for m in METHODS}
    success = {m: [] for m in METHODS}
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        for seed in range(args.seeds):
            for qi, prompt in enumerate(prompts):
                for name, search in METHODS.items():
                    cfg = compose(config_name="config", overrides=[
                        f"verifier={args.verifier}", *search, f"search.rounds={args.rounds}",
                        f"search.per_round={args.per_round}", f"seed={seed}", f"prompt='{prompt.text}'"])
                    run_dir = Path(tmp) / f"{seed}-{qi}-{name.split()[0]}"
                    run_search(build_job(cfg, run_dir))
                    records = [r for r in read_manifest(run_dir) if r.status == "ok"]
                    for r_ in range(args.rounds):
                        curves[name][r_].append(max(r.score for r in records if r.round <= r_ + 1))
                    best = max(records, key=lambda r: (r.score, -r.round, -r.index))
                    from PIL import Image

                    verdict = exact.score([prompt.text], [Image.open(run_dir / best.image).convert("RGB")])[0]
                    success[name].append(verdict["correct"].score)
                print(f"seed {seed} prompt {qi + 1}/{len(prompts)} done", flush=True)
    metric = cfg.verifier.choice_of_metric
    print(f"\n`python scripts/benchmark_human_preference.py --prompts {args.prompts} --seeds {args.seeds} "
          f"--rounds {args.rounds} --per-round {args.per_round} --verifier {args.verifier}`\n")
    print(f"Mean best {args.verifier}.{metric} among the images shown so far ({args.prompts} prompts x "
          f"{args.seeds} seeds), and exact success of the final best:\n")
    header = " | ".join(f"after {r + 1} ({(r + 1) * args.per_round} images)" for r in range(args.rounds))
    print(f"| method | {header} | success of best |")
    print("|---|" + "---|" * (args.rounds + 1))
    for name in METHODS:
        cells = " | ".join(f"{statistics.fmean(v):.3f}" for v in curves[name])
        print(f"| {name} | {cells} | {100 * statistics.fmean(success[name]):.0f}% |")


if __name__ == "__main__":
    main()
