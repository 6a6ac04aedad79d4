"""tts-plan / tts-search --plan: candidates, NFEs, verifier calls, API cost and GPU-hours before a run, and
what the run then spent (summary.json) against it."""
import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
from conftest import PARTI, compose, needs_shared, run_tts

from tts.app import plan as planning
from tts.verifiers.loopback import LoopbackGrader
from tts.prompts import Prompt
from tts.verifiers.gemini import GeminiVerifier
from tts.verifiers.openai import OpenAIVerifier

KEY = "sk-test-Zq8xVt3LmN0pRs7Ku2Wy"
PROMPTS = ["a red circle", "a blue square", "a green triangle"]
TTS = [sys.executable, "-m", "tts"]


def prompt_file(tmp_path, n):
    path = tmp_path / f"prompts{n}.txt"
    path.write_text("\n".join(PROMPTS[:n]) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.parametrize("search", [["search.rounds=3"], ["search.rounds=2", "pipeline.guidance_scale=1.5"],
                                    ["search=zero-order", "search.rounds=3", "search.num_neighbors=3"]])
def test_the_plan_in_the_run_folder_matches_what_the_run_spent(search, tmp_path):
    over = ["pipeline.num_inference_steps=2", "batch_size=4", "prompts=file",
            f"prompts.path={prompt_file(tmp_path, 3)}", *search]
    summary = run_tts(over, tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "plan.json").read_text())
    per = plan["candidates_per_prompt"]
    if plan["exact"]:  # random search: every figure exact (guidance 1.5: two passes a step, NFEs measured)
        assert plan["candidates"] == summary["candidates"] == plan["verifier_calls"]
        assert plan["nfe"] == summary["nfe_total"]
    else:  # zero-order: restarts depend on scores; the plan brackets the run and its totals are the bound
        assert (per["min"], per["max"]) == (3 * 3 + 1, 3 * 4)
        assert 3 * per["min"] <= summary["candidates"] <= plan["candidates"] == 3 * per["max"]
        assert summary["nfe_total"] <= plan["nfe"]


@pytest.mark.slow
def test_api_cost_and_gpu_hours_planned_from_a_pilot_against_a_run(tmp_path, monkeypatch, capsys):
    """A pilot of one prompt measures requests, tokens and seconds per NFE; the plan for three prompts is
    compared with what the three-prompt run spent against the same (loopback) grading server."""
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    common = ["verifier=gemini", "pipeline.num_inference_steps=2", "search.rounds=3", "batch_size=4",
              "verifier.price_per_million_input_tokens=0.3", "verifier.price_per_million_output_tokens=2.5",
              "prompts=file"]
    with LoopbackGrader(api_key=KEY) as server:
        url = f"verifier.base_url={server.url}"
        run_tts([*common, url, f"prompts.path={prompt_file(tmp_path, 1)}"], tmp_path / "pilot")
        big = [*common, url, f"prompts.path={prompt_file(tmp_path, 3)}"]
        plan = planning.make_plan(compose([*big, f"plan.from_run={tmp_path / 'pilot'}"]))
        summary = run_tts(big, tmp_path / "run")
    api = plan["api"][0]
    spent = summary["usage"]
    assert plan["candidates"] == summary["candidates"] == 3 * 14 and plan["nfe"] == summary["nfe_total"]
    assert api["requests"] == spent["requests"] == 42 and "measured" in api["tokens_source"]
    assert api["cost_usd"] == pytest.approx(spent["cost_usd"], rel=0.10)
    assert api["input_tokens"] == pytest.approx(spent["input_tokens"], rel=0.10)
    from tts.core.runfolder import read_manifest

    generated_h = sum(r.timings.generate_s for r in read_manifest(tmp_path / "run")) / 3600
    assert plan["throughput_source"].startswith("measured in") and 1 / 3 < plan["gpu_hours"] / generated_h < 3
    with capsys.disabled():
        print(f"\nplan vs spent (3 prompts x 14 candidates): requests {api['requests']:.0f} / {spent['requests']}, "
              f"input tokens {api['input_tokens']:.0f} / {spent['input_tokens']}, cost ${api['cost_usd']:.6f} / "
              f"${spent['cost_usd']:.6f}, generation hours {plan['gpu_hours']:.6f} / {generated_h:.6f}")


def test_measured_throughput_runs_a_batch_of_the_pipeline():
    plan = planning.make_plan(compose(["plan.measure=true", "batch_size=4"]))
    assert plan["nfe_per_candidate"] == 10 and plan["s_per_nfe"] > 0 and plan["gpu_hours"] > 0
    assert plan["throughput_source"] == plan["nfe_source"] == "measured here: one batch of 4"


def test_token_estimates_follow_the_providers_published_rules():
    parts = SimpleNamespace(prompts=[Prompt("a cat")], pipeline=SimpleNamespace(width=1024, height=1024))
    text = planning.estimate_input_tokens(OpenAIVerifier(model_name="gpt-4o", max_side=1024, image_detail="low"), parts)
    assert planning.estimate_input_tokens(OpenAIVerifier(model_name="gpt-4o", max_side=1024), parts) == text - 85 + 765
    assert planning.estimate_input_tokens(OpenAIVerifier(model_name="gpt-4o-mini"), parts) == text - 85 + 2833 + 4 * 5667
    assert planning.estimate_input_tokens(GeminiVerifier(), parts) == text - 85 + 258


@needs_shared
def test_the_plan_command_sizes_a_partiprompts_sweep_without_a_model_or_a_key(tmp_path):
    args = ["pipeline=flux-dev", "verifier=gemini", "prompts=file", f"prompts.path={PARTI}", "prompts.column=Prompt",
            "search.schedule=constant", "search.per_round=32", "search.rounds=3", "shard.count=8",
            "shard.index=range(8)", "plan.s_per_nfe=0.25"]
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path)}
    outs = [subprocess.run([sys.executable, "-m", "tts.app.plan", *args], capture_output=True, text=True, timeout=120,
                           env=env, cwd=tmp_path),
            subprocess.run([*TTS, "--plan", *args], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)]
    for out in outs:
        assert out.returncode == 0, out.stderr[-2000:]
        assert "plan: 1,632 prompts on 8 shards (204 each at most), 96 candidates per prompt" in out.stdout
        assert "| NFEs | 2,880 | 4,700,160 |" in out.stdout  # the paper's 2,880 NFEs a prompt
        assert "| GPU-hours | 0.20 | 326.40 |" in out.stdout and "| wall hours |  | 40.80 |" in out.stdout
    assert outs[0].stdout == outs[1].stdout and list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("arg,says", [("plan.s_per_nfe=-1", "plan.s_per_nfe must be a positive number"),
                                      ("shard.count=0", "shard.count must be an integer >= 1"),
                                      ("search.rounds=3,5", "error:"),
                                      ("plan.from_run=/nonexistent", "no run folder with candidates there")])
def test_bad_plan_input_is_one_line(arg, says, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tts.app.plan", arg], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 2 and says in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1


#: the current presets -> (NFEs per candidate from their model cards' settings, weights in memory, GB)
CURRENT_PRESETS = {"flux2-dev": (50, 112), "qwen-image": (100, 58), "z-image": (100, 20.5), "z-image-turbo": (9, 20.5),
                   "sana": (40, 9), "sana-sprint": (2, 9), "sana-sprint-4": (4, 9), "sd3.5-large": (56, 27.5),
                   "sd3.5-medium": (80, 16)}


@pytest.mark.parametrize("preset", list(CURRENT_PRESETS))
def test_plan_knows_the_current_presets_offline(preset):
    """Offline and not cached (HF_HUB_OFFLINE=1 in the tests), the family is guessed from the model id: NFEs
    follow each family's guidance (distilled: one pass; true CFG and Z-Image's CFG: two), weights from the table."""
    plan = planning.make_plan(compose([f"pipeline={preset}", "prompt=a red cube", "search.rounds=1"]))
    nfe, weights = CURRENT_PRESETS[preset]
    assert plan["nfe_per_candidate"] == nfe and plan["weights_gb"] == weights
    assert f"| weights in memory (GB) |  | ~{weights:g} |" in planning.format_plan(plan)


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["flux2-dev", "qwen-image", "z-image", "z-image-turbo", "sana", "sana-sprint",
                                    "sd3.5-medium"])
def test_planned_nfes_are_what_the_twin_spends(preset, twins_root):
    """On the tiny twin of the preset's family (read from its model_index.json), the planned NFEs per candidate
    equal what the pipeline call measures, with the preset's own guidance and call arguments (steps cut to 2)."""
    from twins import PRESET_TWINS, TWINS, save_twin

    from tts.core.noise import fresh
    from tts.sampling.generate import Generator

    family = PRESET_TWINS.get(preset) or next(f for f, (_, p, _) in TWINS.items() if p == preset)
    small = TWINS[family][2]
    cfg = compose([f"pipeline={preset}", f"pipeline.model_id={save_twin(family, twins_root)}", "pipeline.dtype=fp32",
                   "pipeline.device=cpu", "prompt=a red cube", "search.rounds=1",
                   *(f"pipeline.{k}={v}" for k, v in small.items())])
    plan = planning.make_plan(cfg)
    spec = planning._parts(cfg, None).pipeline
    gen = Generator(spec.load(), spec)
    try:
        _, measured, _ = gen.generate("a red cube", [fresh(1)])
    finally:
        gen.close()
    assert plan["nfe_per_candidate"] == measured and plan["weights_gb"] is None  # a twin is in no presets table
