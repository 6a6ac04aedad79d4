"""The GPU check, one command: every GPU-only path of tts on one GPU, in under 10 minutes, written to docs/gpu.md.

    python scripts/gpu_check.py                     # on a machine with a CUDA GPU; writes docs/gpu.md
    python scripts/gpu_check.py --only sampler:flux,compile --dtypes bf16
    python scripts/gpu_check.py --device cpu --dtypes fp32 --only sampler:shapes --out /tmp/gpu.md  # the code path, on a CPU

On a machine without CUDA it says so and exits 0 (nothing is written). Checks, each in its own process (a crash,
an out-of-memory error or a hang fails that row only; every check gets a row: check, dtype, result, time):

- ``sampler:<case>``: the step-level sampler (tts.sampling.sampler) gives the pipeline call's images (max pixel
  difference within the dtype's tolerance) and NFEs, for every family's tiny random twin (tests/twins.py,
  tests/twins_extra.py: flux, flux with true CFG, sd15, sdxl, pixart-sigma, sd3, sd3.5, sana, sana-sprint, flux2,
  qwenimage with and without true CFG, zimage with and without its CFG options, hidream, and the video families
  wan and ltx, every frame compared) and the shapes model (without and with CFG), in fp16 and bf16: the golden
  test of tests/test_sampler.py (tests/test_video.py for video) on the GPU;
- ``nf4``: ``pipeline.quantize=nf4`` (bitsandbytes) loads the Flux twin with a 4-bit denoiser and generates;
- ``cpu-offload``: ``pipeline.cpu_offload=true`` gives the same images as the pipeline kept on the GPU;
- ``vae-tiling``: ``pipeline.vae_tiling=true`` decodes through the VAE's tiled path at a size that tiles;
- ``compile``: ``pipeline.compile=true`` (torch.compile of the denoiser) gives the uncompiled images;
- ``bench:batch``, ``bench:overhead``, ``bench:sampler``: scripts/benchmark_batch.py, benchmark_overhead.py and
  benchmark_sampler.py on the GPU (short repeats); their tables go into docs/gpu.md.

Exit status: 0 when every check passed (or there is no GPU), 1 when a check failed, 2 on a bad option.
"""
from __future__ import annotations

import argparse
import datetime
import difflib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "gpu.md"
PROMPT = "a red cube on the moon"
#: golden cases: (family, call arguments, guidance_scale or None for the twin's); as tests/test_sampler.py's CASES
SAMPLER_CASES = {
    "flux": ("flux", {}, None), "flux-true-cfg": ("flux", {"negative_prompt": "blurry", "true_cfg_scale": 4.0}, None),
    "sd15": ("sd15", {}, None), "sdxl": ("sdxl", {"guidance_rescale": 0.7}, None),
    "pixart-sigma": ("pixart-sigma", {}, None), "sd3": ("sd3", {}, None), "sd3.5": ("sd3.5", {}, None),
    "sana": ("sana", {}, None), "sana-sprint": ("sana-sprint", {}, None),
    "flux2": ("flux2", {}, None), "qwenimage": ("qwenimage", {}, None),
    "qwenimage-true-cfg": ("qwenimage", {"negative_prompt": " ", "true_cfg_scale": 4.0}, None),
    "zimage": ("zimage", {}, None), "zimage-cfg-options": ("zimage", {"cfg_truncation": 0.3, "cfg_normalization": 1.0},
                                                           None),
    "hidream": ("hidream", {}, None),
    "wan": ("wan", {}, None), "ltx": ("ltx", {}, None),  # video: every frame compared
    "shapes": ("shapes", {}, None), "shapes-cfg": ("shapes", {}, 1.5),
}
#: max pixel difference (of 255) between the sampler's and the pipeline call's images: fp32 as the CPU tests; half
#: precision rounds differently along the two paths' op orders
TOLERANCE = {"fp32": 1, "fp16": 6, "bf16": 12}
OTHER_CHECKS = {"nf4": "bf16", "cpu-offload": "fp16", "vae-tiling": "fp16", "compile": "fp16"}
BENCHMARKS = {
    "bench:batch": ("fp16", ["scripts/benchmark_batch.py", "--device", "{device}", "--dtype", "fp16", "--repeats", "3",
                             "--images", "32"]),
    "bench:overhead": ("fp32", ["scripts/benchmark_overhead.py", "--repeats", "3", "--overrides",
                                "pipeline.device={device}"]),
    "bench:sampler": ("fp32", ["scripts/benchmark_sampler.py", "--device", "{device}", "--repeats", "3"]),
}
CHECK_TIMEOUT_S = 150.0
TOTAL_BUDGET_S = 570.0  # the whole check stays under 10 minutes: later checks are reported as not run


@dataclass
class Row:
    check: str
    dtype: str
    result: str  # pass | FAIL | skipped | not run
    detail: str
    seconds: float
    output: str = ""  # a benchmark's table


# -- the checks (each runs in a worker process: ``--worker NAME``) ----------------------------------------------

def _spec(family: str, dtype: str, device: str, twins: Path, call_args=None, guidance=None, **settings):
    sys.path.insert(0, str(ROOT / "tests"))
    from tts.pipelines import PipelineSpec

    if family == "shapes":
        base = {"height": 32, "width": 32, "num_inference_steps": 4, "guidance_scale": guidance or 1.0}
        return PipelineSpec(name="shapes", model_id="tts://shapes-model", dtype=dtype, device=device,
                            **(base | settings))
    if family == "hidream":
        from twins_extra import save_hidream

        base = {"height": 128, "width": 128, "num_inference_steps": 2, "max_sequence_length": 16}
        return PipelineSpec(name="hidream-i1", model_id=str(save_hidream(twins)), dtype=dtype, device=device,
                            guidance_scale=guidance or 5.0, **(base | settings))
    from twins import TWINS, save_twin, twin_guidance

    _, preset, call = TWINS[family]
    return PipelineSpec(name=preset, model_id=str(save_twin(family, twins)), dtype=dtype, device=device,
                        guidance_scale=guidance or twin_guidance(family), call_args=call_args or {},
                        **(call | settings))


def _generate(spec, lineages=None):
    """(images, NFEs per image) of one pipeline call, the generator closed after."""
    from tts.sampling.generate import Generator
    from tts.core.noise import fresh

    gen = Generator(spec.load(), spec)
    try:
        images, nfe, _ = gen.generate(PROMPT, lineages or [fresh(1), fresh(2), fresh(3)])
    finally:
        gen.close()
    return images, nfe


def _max_diff(a, b) -> int:
    import numpy as np

    frames = lambda v: getattr(v, "frames", [v])  # noqa: E731 - a video: each of its frames
    return max(int(np.abs(np.asarray(x, dtype=int) - np.asarray(y, dtype=int)).max())
               for u, w in zip(a, b) for x, y in zip(frames(u), frames(w)))


def check_sampler(case: str, dtype: str, device: str, twins: Path) -> tuple[bool, str]:
    from tts.sampling.generate import Generator
    from tts.core.noise import fresh
    from tts.sampling.sampler import Sampler

    family, call_args, guidance = SAMPLER_CASES[case]
    spec = _spec(family, dtype, device, twins, call_args, guidance)
    gen = Generator(spec.load(), spec)
    sampler = Sampler(gen)
    lineages = [fresh(1), fresh(2), fresh(3)]
    try:
        golden, nfe, _ = gen.generate(PROMPT, lineages)
        images, traj = sampler.generate(PROMPT, lineages)
    finally:
        sampler.close()
        gen.close()
    diff, tol = _max_diff(images, golden), TOLERANCE[dtype]
    nfes_ok = traj.nfe.tolist() == [nfe] * len(lineages)
    ok = diff <= tol and nfes_ok and sampler.fallback is None
    return ok, (f"max pixel diff {diff}/255 (tolerance {tol}); {nfe:g} NFEs per image"
                f"{'' if nfes_ok else f', sampler counted {traj.nfe.tolist()}'}"
                f"{f'; fell back: {sampler.fallback}' if sampler.fallback else ''}")


def check_nf4(dtype: str, device: str, twins: Path) -> tuple[bool, str]:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False, "bitsandbytes is not installed: pip install 'tts-scaling[quant]'"
    spec = _spec("flux", dtype, device, twins, quantize="nf4")
    loaded = spec.load()
    four_bit = sum(type(m).__name__ == "Linear4bit" for m in loaded.denoiser.modules())
    images, nfe = _generate(spec)
    plain, _ = _generate(_spec("flux", dtype, device, twins))
    ok = four_bit > 0 and len(images) == 3
    return ok, f"{four_bit} 4-bit linear layers in the denoiser; max pixel diff to unquantized {_max_diff(images, plain)}/255"


def check_cpu_offload(dtype: str, device: str, twins: Path) -> tuple[bool, str]:
    on_gpu, _ = _generate(_spec("sd15", dtype, device, twins))
    offloaded, _ = _generate(_spec("sd15", dtype, device, twins, cpu_offload=True))
    diff, tol = _max_diff(offloaded, on_gpu), TOLERANCE[dtype]
    return diff <= tol, f"max pixel diff to the pipeline kept on {device}: {diff}/255 (tolerance {tol})"


def check_vae_tiling(dtype: str, device: str, twins: Path) -> tuple[bool, str]:
    size = {"height": 96, "width": 96}
    spec = _spec("sd15", dtype, device, twins, vae_tiling=True, **size)
    loaded = spec.load()
    vae, calls = loaded.pipe.vae, []
    original = vae.tiled_decode

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    vae.tiled_decode = counted
    try:
        tiled, _ = _generate(spec)
    finally:
        del vae.tiled_decode
    plain, _ = _generate(_spec("sd15", dtype, device, twins, **size))
    ok = bool(calls) and tiled[0].size == (96, 96)
    return ok, (f"tiled decode called {len(calls)} time(s); {tiled[0].size[0]}x{tiled[0].size[1]} images; max pixel "
                f"diff to untiled {_max_diff(tiled, plain)}/255 (tiles are blended)")


def check_compile(dtype: str, device: str, twins: Path) -> tuple[bool, str]:
    plain, _ = _generate(_spec("shapes", dtype, device, twins))
    spec = _spec("shapes", dtype, device, twins, compile=True)
    start = time.perf_counter()
    first, _ = _generate(spec)
    compiled_s = time.perf_counter() - start
    start = time.perf_counter()
    second, _ = _generate(spec)
    warm_s = time.perf_counter() - start
    diff, tol = max(_max_diff(first, plain), _max_diff(second, plain)), TOLERANCE[dtype]
    return diff <= tol, (f"max pixel diff to uncompiled {diff}/255 (tolerance {tol}); first call {compiled_s:.1f} s "
                         f"(compiling), then {warm_s:.2f} s")


def worker(name: str, dtype: str, device: str, twins: Path) -> dict:
    if name.startswith("sampler:"):
        ok, detail = check_sampler(name.split(":", 1)[1], dtype, device, twins)
    else:
        ok, detail = {"nf4": check_nf4, "cpu-offload": check_cpu_offload, "vae-tiling": check_vae_tiling,
                      "compile": check_compile}[name](dtype, device, twins)
    return {"ok": ok, "detail": detail}


# -- the driver -----------------------------------------------------------------------------------------------

def all_checks(dtypes: list[str], device: str = "cuda") -> list[tuple[str, str]]:
    """Every check with its dtype (on a CPU, where half precision is not what is checked, all in fp32)."""
    checks = [(f"sampler:{case}", dt) for case in SAMPLER_CASES for dt in dtypes]
    checks += [(name, "fp32" if device == "cpu" else dtype) for name, dtype in OTHER_CHECKS.items()]
    return checks + [(name, dtype) for name, (dtype, _) in BENCHMARKS.items()]


def _env() -> dict:
    env = dict(os.environ)
    env.pop("TORCHDYNAMO_DISABLE", None)  # the test suite's setting; torch.compile is checked here
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("HF_HUB_OFFLINE", "1")
    return env


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def run_one(name: str, dtype: str, device: str, twins: Path, timeout: float) -> Row:
    """One check in its own process: its row, whatever happens to it."""
    start = time.perf_counter()
    if name in BENCHMARKS:
        command = [sys.executable, *[a.format(device=device) for a in BENCHMARKS[name][1]]]
    else:
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", name, "--dtype", dtype,
                   "--device", device, "--twins", str(twins)]
    try:
        out = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return Row(name, dtype, "FAIL", f"timed out after {timeout:.0f} s", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    if name in BENCHMARKS:
        if out.returncode != 0:
            return Row(name, dtype, "FAIL", f"exit {out.returncode}: {_last_line(out.stderr)}", seconds)
        return Row(name, dtype, "pass", _last_line(out.stdout), seconds, out.stdout.strip())
    result = next((json.loads(line[7:]) for line in reversed(out.stdout.splitlines()) if line.startswith("RESULT ")),
                  None)
    if result is None:
        return Row(name, dtype, "FAIL", f"exit {out.returncode}: {_last_line(out.stderr) or 'no result'}", seconds)
    skipped = result["detail"].startswith("bitsandbytes is not installed")
    return Row(name, dtype, "skipped" if skipped else "pass" if result["ok"] else "FAIL", result["detail"], seconds)


def run_all(checks: list[tuple[str, str]], device: str, twins: Path, timeout: float = CHECK_TIMEOUT_S,
            budget: float = TOTAL_BUDGET_S, echo=print) -> list[Row]:
    rows, start = [], time.perf_counter()
    for name, dtype in checks:
        if time.perf_counter() - start > budget:
            rows.append(Row(name, dtype, "not run", f"the {budget:.0f} s budget was spent", 0.0))
        else:
            left = budget - (time.perf_counter() - start)
            rows.append(run_one(name, dtype, device, twins, min(timeout, max(left, 1.0))))
        r = rows[-1]
        echo(f"{r.check:<22} {r.dtype:<5} {r.result:<8} {r.seconds:6.1f} s  {r.detail}")
    return rows


def describe(device: str) -> str:
    import diffusers
    import torch

    if device.startswith("cuda"):
        props = torch.cuda.get_device_properties(torch.device(device))
        what = f"{props.name} ({props.total_memory / 2 ** 30:.0f} GiB), CUDA {torch.version.cuda}"
    else:
        import platform

        what = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores; no GPU)"
    return f"{what}, torch {torch.__version__}, diffusers {diffusers.__version__}"


def write_doc(path: Path, rows: list[Row], device_line: str, seconds: float, command: str) -> None:
    passed = sum(r.result == "pass" for r in rows)
    lines = ["# GPU check", "",
             f"`{command}` on **{device_line}**, {datetime.date.today().isoformat()}: {passed} of {len(rows)} checks "
             f"passed in {seconds / 60:.1f} minutes. Each check runs in its own process (scripts/gpu_check.py says "
             "what each one checks); the sampler tolerances are the largest pixel differences (of 255) allowed "
             f"between the sampler's and the pipeline call's images: {', '.join(f'{k} {v}' for k, v in TOLERANCE.items())}.",
             "", "| check | dtype | result | time (s) |", "|---|---|---|---|"]
    for r in rows:
        detail = r.detail.replace("|", "\\|")
        lines.append(f"| {r.check} | {r.dtype} | {r.result}{': ' + detail if detail else ''} | {r.seconds:.1f} |")
    for r in rows:
        if r.output:
            lines += ["", f"## {r.check}", "", "```text", r.output, "```"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _select(only: str | None, dtypes: list[str], device: str) -> list[tuple[str, str]]:
    checks = all_checks(dtypes, device)
    if not only:
        return checks
    names = {n for n, _ in checks} | {n.split(":")[0] for n, _ in checks}
    wanted = [w.strip() for w in only.split(",") if w.strip()]
    for w in wanted:
        if w not in names:
            close = difflib.get_close_matches(w, sorted(names), n=1)
            raise SystemExit(f"error: no check {w!r}{f'; did you mean {close[0]!r}?' if close else ''} "
                             f"(checks: {', '.join(sorted(names))})")
    return [(n, d) for n, d in checks if n in wanted or n.split(":")[0] in wanted]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cuda:N; cpu runs the checks' code on the CPU")
    p.add_argument("--dtypes", default="fp16,bf16", help="the sampler checks' dtypes (default: fp16,bf16)")
    p.add_argument("--only", default=None, help="comma-separated checks or kinds (sampler, sampler:flux, nf4, bench)")
    p.add_argument("--out", type=Path, default=DOC, help="the table (default: docs/gpu.md)")
    p.add_argument("--check-timeout", type=float, default=CHECK_TIMEOUT_S)
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--dtype", default="fp16", help=argparse.SUPPRESS)
    p.add_argument("--twins", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args.dtype, args.device, args.twins)), flush=True)
        return 0
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    bad = [d for d in dtypes if d not in TOLERANCE]
    if bad:
        print(f"error: --dtypes takes {', '.join(TOLERANCE)}, got {bad[0]!r}", file=sys.stderr)
        return 2
    checks = _select(args.only, dtypes, args.device)
    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print("no GPU: CUDA is not available on this machine (torch.cuda.is_available() is False), so there is "
                  f"nothing to check; {args.out} is left as it is. Run this on a machine with an NVIDIA GPU.")
            return 0
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tts-gpu-check-") as tmp:
        rows = run_all(checks, args.device, Path(tmp), args.check_timeout)
    command = " ".join(["python scripts/gpu_check.py", *(sys.argv[1:] if argv is None else argv)])
    write_doc(args.out, rows, describe(args.device), time.perf_counter() - start, command)
    print(f"wrote {args.out}")
    return 0 if all(r.result in ("pass", "skipped") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
