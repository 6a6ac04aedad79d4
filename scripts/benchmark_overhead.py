"""Overhead of tts-search over a bare loop calling the same pipeline for the same candidates.

    python scripts/benchmark_overhead.py                  # embedded shapes model, random search (30 candidates)
    python scripts/benchmark_overhead.py --overrides search.rounds=5 batch_size=4

A = tts's search as tts-search runs it after Hydra has composed the config (tts.app.cli.run: validation,
run folder, one PNG + manifest record per candidate, round JSONs, summary), in a fresh folder each time.
B = a bare loop a researcher would write: for each round's batch, call the pipeline with the prompt and
the same initial noises, score with the same verifier, save the PNGs. Both share one loaded pipeline.
A and B alternate; the medians of the repeats are compared.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from hydra import compose, initialize_config_dir  # noqa: E402

from tts.app.cli import build_job, config_dir, run  # noqa: E402
from tts.core.noise import make_noise  # noqa: E402
from tts.search.protocols import make_strategy  # noqa: E402
from tts.core.runfolder import prompt_hash  # noqa: E402


def bare_loop(job, out: Path) -> None:
    loaded = job.pipeline.load()
    pipe, spec = loaded.pipe, job.pipeline
    shape = loaded.family.latent_shape(pipe, spec.height, spec.width)
    for prompt in job.prompts:
        strategy = make_strategy(job.search_factory, job.seed, prompt_hash(prompt.text))
        while noises := strategy.ask():
            for s in range(0, len(noises), job.batch_size):
                chunk = noises[s:s + job.batch_size]
                latents = torch.stack([make_noise(n, shape) for n in chunk])
                images = pipe(prompt=[prompt.text] * len(chunk), latents=latents, height=spec.height, width=spec.width,
                              num_inference_steps=spec.num_inference_steps, guidance_scale=spec.guidance_scale).images
                job.verifier.score([prompt.text] * len(chunk), images)
                for n, img in zip(chunk, images):
                    img.save(out / f"{n['seed']}.png")
            strategy.tell([])  # random search: later rounds do not depend on scores


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--overrides", nargs="*", default=[])
    args = p.parse_args(argv)
    overrides = ["search=random", *args.overrides]
    with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
        cfg = compose(config_name="config", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        job = build_job(cfg, tmp / "probe")
        job.pipeline.load().pipe.set_progress_bar_config(disable=True)
        bare_loop(job, tmp)  # warm-up (loads the pipeline once for both)
        a, b = [], []
        for rep in range(args.repeats):
            for which in ((0, 1) if rep % 2 == 0 else (1, 0)):
                start = time.perf_counter()
                if which == 0:
                    run(cfg, tmp / f"tts-{rep}")
                else:
                    (tmp / f"bare-{rep}").mkdir()
                    bare_loop(build_job(cfg, tmp / "probe"), tmp / f"bare-{rep}")
                (a if which == 0 else b).append(time.perf_counter() - start)
    ma, mb = statistics.median(a), statistics.median(b)
    n = sum(2 ** r for r in range(1, cfg.search.rounds + 1)) * len(job.prompts)
    print(f"command: python scripts/benchmark_overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{n} candidates per run, batch {cfg.batch_size}, {args.repeats} alternating repeats, "
          f"{torch.get_num_threads()} CPU threads\n")
    print("| path | median s | all runs (s) |\n|---|---|---|")
    print(f"| tts search (tts.app.cli.run) | {ma:.2f} | {', '.join(f'{x:.2f}' for x in a)} |")
    print(f"| bare diffusers loop | {mb:.2f} | {', '.join(f'{x:.2f}' for x in b)} |")
    print(f"\noverhead of tts over the bare loop: {ma / mb - 1:+.1%}")


if __name__ == "__main__":
    main()
