"""The package's layers (docs/architecture.md) hold: import-linter's layers contract in pyproject.toml, imports
inside functions included and nothing ignored, is kept by the code, and an upward import breaks it."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT = shutil.which("lint-imports", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")


def lint(root: Path) -> subprocess.CompletedProcess:
    assert LINT, "lint-imports not found: pip install -e '.[test]' (it brings import-linter)"
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run([LINT, "--no-cache", "--no-logo", str(ROOT / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=120)


def test_every_import_points_down_the_layers():
    out = lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_the_contract_ignores_nothing():
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "[tool.importlinter]" in text and 'type = "layers"' in text
    assert "ignore_imports" not in text and "exclude_type_checking_imports" not in text


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path):
    for path in (ROOT / "tts").rglob("*.py"):  # the package's code only (no model weights)
        copy = tmp_path / path.relative_to(ROOT)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_bytes(path.read_bytes())
    noise = tmp_path / "tts" / "core" / "noise.py"
    noise.write_text(noise.read_text(encoding="utf-8") + "\n\ndef _upward():\n    from ..app import cli  # noqa: F401\n",
                     encoding="utf-8")
    out = lint(tmp_path)
    assert out.returncode != 0
    assert "tts.core is not allowed to import tts.app" in out.stdout
    assert "tts.core.noise -> tts.app.cli" in out.stdout
