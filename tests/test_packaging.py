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
    assert "tts/search/frontends/web_assets/page.html" in names  # the web front-end's page
    assert {"tts/views/report/__main__.py", "tts/app/serve/__main__.py", "tts/core/runfolder/reader.py"} <= names
    assert "tts/verifiers_templates/grading_prompt.txt" in names  # the API / Qwen graders' default prompt
    assert any(n.startswith("tts/assets/shapes-model/unet/") and n.endswith(".safetensors") for n in names)
    assert not any(n.startswith(("outputs/", "tests/")) for n in names)


def test_install_hints_name_an_install_that_works():
    """Hints for extras name this checkout (editable install) or the distribution's own name, never 'tts[...]'
    (on the package index 'tts' is an unrelated text-to-speech project)."""
    import re
    from pathlib import Path

    from tts.core.validate import install_hint

    root = Path(__file__).resolve().parents[1]
    assert install_hint("report") == f"pip install -e '{root}[report]'"
    offenders = [f"{p.relative_to(root)}:{i}" for p in (root / "tts").rglob("*.py")
                 for i, line in enumerate(p.read_text().splitlines(), 1) if re.search(r"install[^\n]*'tts\[", line)]
    assert not offenders, offenders


def test_importing_tts_shows_no_third_party_import_notices():
    """transformers' "requires torchvision ... falling back" notice (and bitsandbytes' kernels-community warning,
    where bitsandbytes is installed) stay off once tts is imported."""
    import importlib.util
    import subprocess
    import sys

    code = ("import tts\nfrom transformers import CLIPImageProcessor, SiglipImageProcessor\n"
            "CLIPImageProcessor, SiglipImageProcessor\n")
    if importlib.util.find_spec("bitsandbytes"):
        code += "import bitsandbytes\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-1000:]
    assert "torchvision" not in done.stderr and "gemm_4bit" not in done.stderr, done.stderr[-1000:]


def test_every_console_script_names_a_function_that_imports():
    """[project.scripts] entries (tts-report is tts.views.report:main, a package since the split) resolve."""
    import importlib
    import re

    scripts = (ROOT / "pyproject.toml").read_text().partition("[project.scripts]")[2].partition("\n[")[0]
    targets = dict(re.findall(r'^([\w-]+) = "([\w.]+:\w+)"', scripts, re.M))
    assert {"tts-report", "tts-serve", "tts-collage", "tts-replay"} <= set(targets)
    for name, target in targets.items():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), name
