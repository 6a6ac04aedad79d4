"""The wheel carries the config tree (as tts/configs) and the embedded model, so tts-search works installed."""
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_configs_and_embedded_model(tmp_path):
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    [wheel] = tmp_path.glob("tts_scaling-*.whl")  # the distribution is tts-scaling; the package inside is tts
    names = set(zipfile.ZipFile(wheel).namelist())
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    assert "\nName: tts-scaling\n" in zipfile.ZipFile(wheel).read(metadata).decode()
    shipped = {p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml")}
    assert {f"tts/configs/{n}" for n in shipped} <= names
    assert "tts/assets/shapes-model/model_index.json" in names
    assert {"tts/assets/shapes-reward/config.json", "tts/assets/shapes-reward/diffusion_pytorch_model.safetensors"} <= names
    assert {"tts/views/report_assets/report.css", "tts/views/report_assets/report.js"} <= names  # tts-report's inline assets
    assert "tts/verifiers_templates/grading_prompt.txt" in names  # the API / Qwen graders' default prompt
    assert any(n.startswith("tts/assets/shapes-model/unet/") and n.endswith(".safetensors") for n in names)
    assert not any(n.startswith(("outputs/", "tests/")) for n in names)
