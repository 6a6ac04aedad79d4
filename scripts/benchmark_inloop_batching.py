r"""In-loop searches of many prompts: their steps batched across prompts vs one prompt at a time (issue 26 item 3).

    OMP_NUM_THREADS=1 python scripts/benchmark_inloop_batching.py --prompts 24 --budget 160 --repeats 1 \
        --rows 4,8,16,32,64,128

Each in-loop strategy (prune, smc, paths, beam, evolution, from configs/search/ with ``search.nfe_budget`` set) runs
on the same prompts of the shapes bench (tts.world.bench, an even spread over its categories) on the shapes
preset, its previews scored by the exact checker (verifier=shapes), seeded as tts-search seeds them, in two modes:

* **alone**: one prompt at a time, ``search(engine)`` (what tts-search does with ``batch_size=1``);
* **batched**: every prompt's search driven together by tts.sampling.batching.StepDriver, their steps stacked
  into denoiser calls of ``--batch-size`` rows (what tts-search does with ``batch_size`` > 1).

Both include decoding the finals. The modes alternate (batched first on even repeats, alone first on odd); the
table gives the median wall-clock and CPU time of each and the ratios alone / batched (on a shared machine the CPU
time of this one-thread process is the steadier measure), and checks that both modes gave every prompt the same
paths and NFEs; ``--rows`` adds the denoiser's CPU time per row at several rows per call. Prints Markdown tables
with the date and the command.
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

def clock() -> tuple[float, float]:
    """(wall clock, this process's CPU time) in seconds: on a shared machine the CPU time of a one-thread
    process is the steadier of the two (other processes' load stretches the wall clock)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    now = clock()
    return now[0] - start[0], now[1] - start[1]


def run_alone(gen, verifier, name, texts, budget, seed) -> tuple[tuple[float, float], list]:
    start, out = clock(), []
    for text in texts:  # one engine at a time, as tts-search with batch_size 1
        (engine, strategy), = searches(gen, verifier, name, [text], budget, seed)
        out.append(summary(engine, strategy.search(engine)))
    return since(start), out


def run_batched(gen, verifier, name, texts, budget, seed, batch_size) -> tuple[tuple[float, float], list, int]:
    start = clock()
    pairs = searches(gen, verifier, name, texts, budget, seed)
    driver = StepDriver(batch_size)
    results = driver.run([(e, s.requests(e)) for e, s in pairs])
    out = [summary(e, r) for (e, _), r in zip(pairs, results)]
    return since(start), out, driver.calls


def main(argv=None) -> list[str]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--budget", type=int, default=160, help="search.nfe_budget per prompt")
    p.add_argument("--batch-size", type=int, default=64, help="rows per denoiser call when batched")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rows", default="", help="also time the denoiser per row at these rows per call "
                   "(e.g. 4,8,16,32,64,128: where it is cheapest per row on this machine)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    gen = make_generator(instantiate("pipeline", "shapes", device="cpu"))
    verifier = instantiate("verifier", "shapes")
    verifier.setup()
    texts = prompts(args.prompts)
    names = [s for s in args.strategies.split(",") if s]
    times = {(n, m): [] for n in names for m in ("alone", "batched")}
    same, calls = {}, {}
    for r in range(args.repeats if names else 0):
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
                print(f"# repeat {r + 1}: {name} {mode} {seconds[0]:.1f} s wall, {seconds[1]:.1f} s CPU",
                      file=sys.stderr, flush=True)
            same[name] = same.get(name, True) and got["alone"] == got["batched"]
    lines = table(args, argv, names, times, same, calls)
    if args.rows:
        lines += ["", *rows_table(gen, [int(n) for n in args.rows.split(",")])]
    print("\n".join(lines))
    return lines


def table(args, argv, names, times, same, calls) -> list[str]:
    command = "OMP_NUM_THREADS=1 python scripts/benchmark_inloop_batching.py " + " ".join(
        sys.argv[1:] if argv is None else argv)
    lines = [f"{datetime.date.today().isoformat()}, {torch.get_num_threads()} CPU thread(s), {args.prompts} "
             f"shapes-bench prompts, {args.budget} NFEs per prompt, batched: {args.batch_size} rows per denoiser "
             f"call, {args.repeats} repeat(s) interleaved (medians)", "", f"command: `{command}`", ""]
    if not names:
        return lines
    lines += ["| strategy | one prompt at a time: wall (CPU) s | batched across prompts: wall (CPU) s | "
              "wall-clock ratio | CPU-time ratio | batched sampler runs | same paths and NFEs |",
              "|---|---|---|---|---|---|---|"]
    for n in names:
        alone = [statistics.median(t[i] for t in times[n, "alone"]) for i in (0, 1)]
        batched = [statistics.median(t[i] for t in times[n, "batched"]) for i in (0, 1)]
        lines.append(f"| {n} | {alone[0]:.1f} ({alone[1]:.1f}) | {batched[0]:.1f} ({batched[1]:.1f}) | "
                     f"{alone[0] / batched[0]:.2f}x | {alone[1] / batched[1]:.2f}x | {calls[n]} | "
                     f"{'yes' if same[n] else 'no'} |")
    return lines


def rows_table(gen, rows: list[int]) -> list[str]:
    """CPU milliseconds per row of one denoiser call (the best of 3) at each number of rows per call."""
    from tts.core.noise import fresh

    sampler = Sampler(gen, sampler_options(0.0))
    per_row = []
    for n in rows:
        traj = sampler.start("two red circles", [fresh(i) for i in range(n)])
        sampler.predict(traj)  # warm
        best = float("inf")
        for _ in range(3):
            start = time.process_time()
            sampler.predict(traj)
            best = min(best, time.process_time() - start)
        per_row.append(f"{best * 1000 / n:.1f}")
    sampler.close()
    return ["| rows per denoiser call | " + " | ".join(map(str, rows)) + " |", "|---" * (len(rows) + 1) + "|",
            "| CPU ms per row | " + " | ".join(per_row) + " |"]


if __name__ == "__main__":
    main()
