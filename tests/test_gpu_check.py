"""scripts/gpu_check.py: without CUDA it says so and exits 0, writing nothing; its checks' code runs on a CPU
(fp32), each check isolated in its own process so a failing one leaves the others' rows intact."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_without_a_gpu_it_says_so_and_exits_0(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--out", str(tmp_path / "gpu.md")], capture_output=True,
                         text=True, env=os.environ | {"CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("no GPU: CUDA is not available") and not (tmp_path / "gpu.md").exists()


def test_an_unknown_check_is_refused_with_the_closest_name(tmp_path):
    out = subprocess.run([sys.executable, str(SCRIPT), "--only", "sampler:flx"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode != 0 and "no check 'sampler:flx'; did you mean 'sampler:flux'?" in out.stderr


def test_every_check_gets_a_row_and_a_failure_stops_none(tmp_path):
    gc = _module()
    checks = gc.all_checks(["fp16", "bf16"])
    assert {c for c, _ in checks} >= {f"sampler:{f}" for f in ("flux", "sd15", "sdxl", "pixart-sigma", "sd3", "hidream",
                                                                 "shapes")} | {"nf4", "cpu-offload", "vae-tiling",
                                                                               "compile", "bench:batch", "bench:overhead",
                                                                               "bench:sampler"}
    assert {d for c, d in checks if c.startswith("sampler:")} == {"fp16", "bf16"}
    lines = []
    rows = gc.run_all([("sampler:no-such-family", "fp32"), ("sampler:shapes", "fp32"), ("sampler:sd15", "fp32")],
                      "cpu", tmp_path / "twins", timeout=120, echo=lines.append)
    assert [(r.check, r.result) for r in rows] == [("sampler:no-such-family", "FAIL"), ("sampler:shapes", "pass"),
                                                   ("sampler:sd15", "pass")]
    assert "KeyError" in rows[0].detail and "max pixel diff 0/255" in rows[1].detail and len(lines) == 3
    doc = tmp_path / "gpu.md"
    gc.write_doc(doc, rows, gc.describe("cpu"), 12.0, "python scripts/gpu_check.py --device cpu")
    text = doc.read_text()
    assert "**CPU (" in text and "2 of 3 checks passed" in text
    assert "| sampler:shapes | fp32 | pass: max pixel diff 0/255 (tolerance 1); 4 NFEs per image |" in text
