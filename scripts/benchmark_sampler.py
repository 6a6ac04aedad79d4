"""Wall time of the step-level sampler (tts.sampling.sampler) against the pipeline call, for the same images.

    python scripts/benchmark_sampler.py                         # shapes model, preset settings, batch 8
    python scripts/benchmark_sampler.py --model sd15 --steps 10 # a tiny random twin (tests/twins.py)
    python scripts/benchmark_sampler.py --device cuda --batch 32

A = tts.sampling.generate.Generator.generate: one diffusers pipeline call per batch (tts's default path).
B = tts.sampling.sampler.Sampler.generate: the same batch stepped by the sampler (deterministic, no search acting),
decoded the same way. Both share one loaded pipeline and the prompt's cached embeddings; they alternate
(A B, B A, ...), after one warm-up each, and the medians are compared: wall time, and the process's CPU time
(all threads), which a machine shared with other jobs disturbs less, and the wall time spent outside the
denoiser's forward (hooks around it): each path's own overhead. The warm-up checks that the images are the
same (max pixel difference).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from tts.sampling.generate import Generator  # noqa: E402
from tts.core.noise import fresh  # noqa: E402
from tts.pipelines import PipelineSpec  # noqa: E402
from tts.sampling.sampler import Sampler  # noqa: E402


def make_spec(model: str, steps: int | None, device: str, root: Path) -> PipelineSpec:
    if model == "shapes":
        return PipelineSpec(name="shapes", model_id="tts://shapes-model", height=32, width=32, device=device,
                            num_inference_steps=steps or 10, guidance_scale=1.0)
    from twins import TWINS, save_twin

    _, preset, call = TWINS[model]
    call = {**call, "num_inference_steps": steps or call["num_inference_steps"]}
    return PipelineSpec(name=preset, model_id=str(save_twin(model, root)), dtype="fp32", device=device,
                        guidance_scale=1.5 if model == "flux" else 5.0, **call)


class DenoiserClock:
    """Wall seconds spent inside the denoiser's forward (synchronised on CUDA)."""

    def __init__(self, module):
        self.inside, self._start = 0.0, 0.0
        self.hooks = [module.register_forward_pre_hook(self._enter), module.register_forward_hook(self._leave)]

    def _sync(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def _enter(self, *args):
        self._sync()
        self._start = time.perf_counter()

    def _leave(self, *args):
        self._sync()
        self.inside += time.perf_counter() - self._start


def timed(fn, clock: DenoiserClock) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds of this process, wall seconds outside the denoiser)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start, cpu, clock.inside = time.perf_counter(), time.process_time(), 0.0
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    wall = time.perf_counter() - start
    return wall, time.process_time() - cpu, wall - clock.inside


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="shapes",
                   help="shapes, or a twin of tests/twins.py: flux sd15 sdxl pixart-sigma sd3")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        spec = make_spec(args.model, args.steps, args.device, Path(tmp))
        gen = Generator(spec.load(), spec)
        sampler = Sampler(gen)
        prompt, lineages = "a red circle left of a blue square", [fresh(i) for i in range(args.batch)]
        call = lambda: gen.generate(prompt, lineages)[0]  # noqa: E731
        stepped = lambda: sampler.generate(prompt, lineages)[0]  # noqa: E731
        diff = max(int(np.abs(np.asarray(a, dtype=int) - np.asarray(b, dtype=int)).max())
                   for a, b in zip(call(), stepped()))  # also the warm-up
        times, clock = {"call": [], "stepped": []}, DenoiserClock(gen.loaded.denoiser)
        for rep in range(args.repeats):
            for name in (("call", "stepped") if rep % 2 == 0 else ("stepped", "call")):
                times[name].append(timed(call if name == "call" else stepped, clock))
        sampler.close()
        gen.close()
    wall, cpu, outside = ({k: statistics.median(t[j] for t in v) for k, v in times.items()} for j in range(3))
    on_cuda = spec.resolve_device().type == "cuda"
    device = torch.cuda.get_device_name() if on_cuda else f"CPU, {torch.get_num_threads()} threads"
    print(f"command: python scripts/benchmark_sampler.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{args.model}: batch {args.batch}, {spec.num_inference_steps} steps, guidance {spec.guidance_scale}, "
          f"{args.repeats} alternating repeats, {device}; max pixel difference {diff}/255\n")
    print("| path | median wall s | median CPU s | median s outside the denoiser | wall of each run (s) |\n"
          "|---|---|---|---|---|")
    for name, label in (("call", "pipeline call (Generator)"), ("stepped", "step-level sampler")):
        print(f"| {label} | {wall[name]:.4f} | {cpu[name]:.4f} | {outside[name]:.4f} | "
              f"{', '.join(f'{t[0]:.3f}' for t in times[name])} |")
    paired = statistics.median(b[0] / a[0] for a, b in zip(times["call"], times["stepped"]))
    print(f"\nstepped / call: wall {wall['stepped'] / wall['call']:.3f} (median of the {args.repeats} paired ratios "
          f"{paired:.3f}), CPU {cpu['stepped'] / cpu['call']:.3f}")


if __name__ == "__main__":
    main()
