"""Throughput of tts's generator at batch sizes 1, 2, 4, 8 (images per second, and the ratio to batch 1).

    python scripts/benchmark_batch.py                       # the embedded shapes model on this machine
    python scripts/benchmark_batch.py --model black-forest-labs/FLUX.1-dev --height 1024 --width 1024 \
        --steps 30 --guidance 3.5 --dtype bf16 --device cuda --images 16

Batch sizes are interleaved (each repeat times every batch size once, in rotating order) and the
median of the repeats is reported, so machine noise hits all of them alike.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tts.app.cli import config_dir  # noqa: E402
from tts.sampling.generate import make_generator  # noqa: E402
from tts.core.noise import fresh  # noqa: E402
from tts.pipelines import PipelineSpec  # noqa: E402

PRESET = yaml.safe_load((config_dir() / "pipeline" / "shapes.yaml").read_text())  # default steps and guidance


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tts://shapes-model")
    p.add_argument("--prompt", default="two red circles and a blue triangle")
    p.add_argument("--height", type=int, default=32)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=PRESET["num_inference_steps"], help="default: the shapes preset's")
    p.add_argument("--guidance", type=float, default=PRESET["guidance_scale"], help="default: the shapes preset's")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=32, help="images per measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--batches", default="1,2,4,8")
    args = p.parse_args(argv)
    spec = PipelineSpec(name="bench", model_id=args.model, height=args.height, width=args.width,
                        num_inference_steps=args.steps, guidance_scale=args.guidance, dtype=args.dtype,
                        device=args.device)
    gen = make_generator(spec)
    batches = [int(b) for b in args.batches.split(",")]
    gen.generate(args.prompt, [fresh(0)] * max(batches))  # warm-up
    times = {b: [] for b in batches}
    for rep in range(args.repeats):
        for b in batches[rep % len(batches):] + batches[:rep % len(batches)]:
            if spec.resolve_device().type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for s in range(0, args.images, b):
                gen.generate(args.prompt, [fresh(s + i) for i in range(min(b, args.images - s))])
            if spec.resolve_device().type == "cuda":
                torch.cuda.synchronize()
            times[b].append(time.perf_counter() - start)
    base = args.images / statistics.median(times[batches[0]])
    print(f"command: python scripts/benchmark_batch.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"model {args.model}, {args.height}x{args.width}, {args.steps} steps, guidance {args.guidance}, "
          f"{args.dtype} on {spec.resolve_device()} ({torch.get_num_threads()} CPU threads); "
          f"median of {args.repeats} interleaved repeats of {args.images} images\n")
    print("| batch | img/s | vs batch 1 |\n|---|---|---|")
    for b in batches:
        ips = args.images / statistics.median(times[b])
        print(f"| {b} | {ips:.2f} | {ips / base - 1:+.0%} |")


if __name__ == "__main__":
    main()
