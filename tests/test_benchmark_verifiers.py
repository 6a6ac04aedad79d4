"""Smoke test of scripts/benchmark_verifiers.py on cheap verifiers: a row per requested config with a positive
time measured against the embedded shapes model, API rows said not measurable, bad names refused in one line."""
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_verifiers", ROOT / "scripts" / "benchmark_verifiers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("benchmark_verifiers", mod)  # dataclasses resolve their module's annotations
    spec.loader.exec_module(mod)
    return mod


def test_a_row_per_requested_verifier_with_its_measured_cost(capsys):
    bench = _script()
    bench.main(["--only", "shapes,compressibility,openai", "--repeats", "1", "--local-batch", "2", "--no-sd"])
    out = capsys.readouterr().out
    assert out.startswith("python scripts/benchmark_verifiers.py --only shapes,compressibility,openai")
    rows = {line.split("|")[1].strip(" `"): [c.strip() for c in line.split("|")[1:-1]]
            for line in out.splitlines() if line.startswith("| `")}
    assert set(rows) == {"shapes", "compressibility", "openai"}
    for name in ("shapes", "compressibility"):
        seconds, per_shapes_image = float(rows[name][3]), float(rows[name][4])
        assert seconds > 0 and per_shapes_image > 0, rows[name]
        assert rows[name][2].endswith("higher is better")
    assert rows["compressibility"][2].startswith("`compressibility`")
    assert "API call per image" in rows["openai"][3] and rows["openai"][4] == "-"
    assert "one shapes image (configs/pipeline/shapes.yaml, 10 steps):" in out


def test_every_shipped_verifier_config_has_a_way_to_be_costed():
    bench = _script()
    for name in bench.config_names():
        assert name in bench.INFO, f"{name}: add what it measures and its parity to INFO"
        assert (name in bench.LOCAL or name in bench.MODEL_BUILDERS or name in bench.API
                or name in ("vqascore", "qwen", "ensemble", "custom")), name


def test_an_unknown_name_is_one_line_naming_the_close_one(capsys):
    bench = _script()
    with pytest.raises(SystemExit) as e:
        bench.parse(["--only", "shapes,imagerewad"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "error: no verifier config 'imagerewad'" in err and "did you mean 'imagereward'" in err
    assert "Traceback" not in err
