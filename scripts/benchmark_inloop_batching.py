r"""In-loop searches of many prompts: their steps batched across prompts vs one prompt at a time (issue 26 item 3).

    OMP_NUM_THREADS=1 python scripts/benchmark_inloop_batching.py --prompts 24 --budget 160 --repeats 1

Each in-loop strategy (prune, smc, paths, beam, evolution, from configs/search/ with ``search.nfe_budget`` set) runs
on the same prompts of the shapes bench (tts.world.bench, an even spread over its categories) on the shapes
preset, its previews scored by the exact checker (verifier=shapes), seeded as tts-search seeds them, in two modes:

* **alone**: one prompt at a time, ``search(engine)`` (what tts-search does with ``batch_size=1``);
* **batched**: every prompt's search driven together by tts.sampling.batching.StepDriver, their steps stacked
  into denoiser calls of ``--batch-size`` rows (what tts-search does with ``batch_size`` > 1).

Both include decoding the finals. The modes alternate (batched first on even repeats, alone first on odd), the
table gives the median wall time of each and the ratio alone / batched, and checks that both modes gave every
prompt the same paths and NFEs. Prints a Markdown table with the date and the command.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from tts.core.configtree import config_dir  # noqa: E402
from tts.core.noise import derive_seed  # noqa: E402
from tts.core.runfolder import prompt_hash  # noqa: E402
from tts.pipelines import PipelineSpec  # noqa: E402
from tts.run.inloop import PreviewLog  # noqa: E402
from tts.sampling.batching import StepDriver  # noqa: E402
from tts.sampling.generate import make_generator  # noqa: E402
from tts.sampling.particles import Engine, sampler_options  # noqa: E402
from tts.sampling.sampler import Sampler  # noqa: E402
from tts.world.bench import build  # noqa: E402

STRATEGIES = ("prune", "smc", "paths", "beam", "evolution")


def instantiate(kind: str, name: str, **overrides):
    import hydra.utils

    cfg = yaml.safe_load((config_dir() / kind / f"{name}.yaml").read_text())
    return hydra.utils.instantiate({**cfg, **overrides})


def prompts(n: int) -> list[str]:
    suite = build(0)
    step = (len(suite) - 1) / max(1, n - 1)
    return [suite[round(k * step)].text for k in range(n)]  # an even spread over the category-ordered suite


def searches(gen, verifier, name: str, texts: list[str], budget: int, seed: int):
    """Per prompt: (engine, strategy), built as tts-search builds them (seeds, sampler options, preview scorer)."""
    out = []
    for text in texts:
        phash = prompt_hash(text)
        strategy = instantiate("search", name, nfe_budget=budget)(
            seed_fn=lambda r, i, purpose, phash=phash: derive_seed(seed, phash, r, i, purpose), context=None)
        out.append((Engine(Sampler(gen, sampler_options(strategy.eta)), text, PreviewLog(verifier, text, phash),
                           budget), strategy))
    return out


def summary(engine, result) -> tuple:
    finals = engine.finish(result)
    engine.sampler.close()
    return tuple((f.id, repr(f.path), f.nfe) for f in finals) + (engine.spent,)


def run_alone(gen, verifier, name, texts, budget, seed) -> tuple[float, list]:
    start, out = time.perf_counter(), []
    for text in texts:  # one engine at a time, as tts-search with batch_size 1
        (engine, strategy), = searches(gen, verifier, name, [text], budget, seed)
        out.append(summary(engine, strategy.search(engine)))
    return time.perf_counter() - start, out


def run_batched(gen, verifier, name, texts, budget, seed, batch_size) -> tuple[float, list, int]:
    start = time.perf_counter()
    pairs = searches(gen, verifier, name, texts, budget, seed)
    driver = StepDriver(batch_size)
    results = driver.run([(e, s.requests(e)) for e, s in pairs])
    out = [summary(e, r) for (e, _), r in zip(pairs, results)]
    return time.perf_counter() - start, out, driver.calls


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--budget", type=int, default=160, help="search.nfe_budget per prompt")
    p.add_argument("--batch-size", type=int, default=64, help="rows per denoiser call when batched")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.manual_seed(0)
    gen = make_generator(instantiate("pipeline", "shapes", device="cpu"))
    verifier = instantiate("verifier", "shapes")
    verifier.setup()
    texts = prompts(args.prompts)
    names = [s for s in args.strategies.split(",") if s]
    times = {(n, m): [] for n in names for m in ("alone", "batched")}
    same, calls = {}, {}
    for r in range(args.repeats):
        for name in names:
            modes = ("batched", "alone") if r % 2 == 0 else ("alone", "batched")
            got = {}
            for mode in modes:
                if mode == "alone":
                    seconds, got[mode] = run_alone(gen, verifier, name, texts, args.budget, args.seed)
                else:
                    seconds, got[mode], calls[name] = run_batched(gen, verifier, name, texts, args.budget, args.seed,
                                                                  args.batch_size)
                times[name, mode].append(seconds)
                print(f"# repeat {r + 1}: {name} {mode} {seconds:.1f} s", file=sys.stderr, flush=True)
            same[name] = same.get(name, True) and got["alone"] == got["batched"]
    lines = table(args, argv, names, times, same, calls)
    print("\n".join(lines))
    return lines


def table(args, argv, names, times, same, calls) -> list[str]:
    command = "OMP_NUM_THREADS=1 python scripts/benchmark_inloop_batching.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    lines = [f"{datetime.date.today().isoformat()}, {torch.get_num_threads()} CPU thread(s), {args.prompts} shapes-bench "
             f"prompts, {args.budget} NFEs per prompt, batched: {args.batch_size} rows per denoiser call, "
             f"{args.repeats} repeat(s) interleaved (medians)", "", f"command: `{command}`", "",
             "| strategy | one prompt at a time (s) | batched across prompts (s) | ratio | batched sampler runs | "
             "same paths and NFEs |", "|---|---|---|---|---|---|"]
    for n in names:
        alone, batched = statistics.median(times[n, "alone"]), statistics.median(times[n, "batched"])
        lines.append(f"| {n} | {alone:.1f} | {batched:.1f} | {alone / batched:.2f}x | {calls[n]} | "
                     f"{'yes' if same[n] else 'no'} |")
    return lines


if __name__ == "__main__":
    main()
