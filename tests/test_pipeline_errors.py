"""A checkpoint that cannot be had, or call arguments it does not take, fail in one line before any model loads.

Hub behaviour is exercised for real: ``HF_HOME`` in a temporary folder, ``HF_HUB_OFFLINE``, and ``HF_ENDPOINT``
pointed at a closed port or at a loopback HTTP server answering as the hub does (X-Error-Code headers).
"""
import http.server
import os
import shutil
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import compose, run_tts
from twins import save_twin

import tts.pipelines as pipelines
from tts.pipelines import PipelineConfigError, PipelineSpec

CHECK = """
import sys, time
from tts.pipelines import PipelineConfigError, PipelineSpec
spec = PipelineSpec(name="x", model_id=sys.argv[1], height=32, width=32, num_inference_steps=1, guidance_scale=1.0)
start = time.perf_counter()
try:
    source = spec.check()
    print("source", source.path, source.local_files_only)
except PipelineConfigError as e:
    print("error", e)
print("seconds", time.perf_counter() - start, "torch" in sys.modules)
"""
REPO = "tts-test/tiny-sd15"


def hub_env(hf_home, offline: bool, endpoint: str | None = None) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE_", "TRANSFORMERS_OFFLINE"))}
    env["HF_HOME"] = str(hf_home)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    if endpoint:
        env["HF_ENDPOINT"] = endpoint
    return env


def check(model_id: str, env: dict) -> tuple[str, float]:
    """(what PipelineSpec.check() said, its seconds) in a fresh process with this environment."""
    out = subprocess.run([sys.executable, "-c", CHECK, model_id], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    said, seconds = out.stdout.strip().splitlines()[-2:]
    assert seconds.endswith("False")  # no torch needed to find a checkpoint
    return said, float(seconds.split()[1])


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FakeHub:
    """A loopback HTTP server answering every request with one status and headers, counting requests."""

    def __init__(self, status: int = 200, headers: dict | None = None, stall_s: float = 0.0):
        self.requests: list[str] = []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_HEAD(self):
                hub.requests.append(f"{self.command} {self.path}")
                time.sleep(stall_s)
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_HEAD

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def probes(hub: FakeHub) -> list[str]:
    """The requests tts made (huggingface_hub also fetches its agent-harness registry, /api/agent-harnesses)."""
    return [r for r in hub.requests if "/api/agent-harnesses" not in r]


def cache_twin(hf_home, twins_root, repo_id: str = REPO):
    """The sd15 twin laid out in a Hugging Face cache (models--owner--name/snapshots/<sha>, refs/main)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    sha = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(save_twin("sd15", twins_root), repo / "snapshots" / sha)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(sha)
    return repo / "snapshots" / sha


def test_flux_dev_offline_and_not_cached_fails_in_one_line(tmp_path):
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "tts.app.cli", "pipeline=flux-dev", f"hydra.run.dir={tmp_path / 'run'}"],
                         env=hub_env(tmp_path / "hf", offline=True), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    seconds = time.perf_counter() - start
    lines = (out.stdout + out.stderr).strip().splitlines()
    assert out.returncode == 2, lines
    assert ("black-forest-labs/FLUX.1-dev is not in the local Hugging Face cache (HF_HUB_OFFLINE=1): download it "
            "first with `hf download black-forest-labs/FLUX.1-dev` on a machine with network, or point "
            "pipeline.model_id at a local folder") in lines[-1]
    assert len(lines) <= 2 and not any("Traceback" in ln or "Retrying" in ln for ln in lines), lines
    print(f"tts-search pipeline=flux-dev offline: {seconds:.1f} s, {len(lines)} lines")


def test_unreachable_hub_fails_fast_naming_the_fix(tmp_path):
    said, seconds = check("black-forest-labs/FLUX.1-dev",
                          hub_env(tmp_path, offline=False, endpoint=f"http://127.0.0.1:{closed_port()}"))
    assert said.startswith("error black-forest-labs/FLUX.1-dev is not in the local Hugging Face cache and the hub "
                           "at http://127.0.0.1:"), said
    assert "is unreachable" in said and "hf download black-forest-labs/FLUX.1-dev" in said
    assert seconds < 5, (said, seconds)


def test_hub_that_never_answers_is_cut_off(tmp_path):
    hub = FakeHub(stall_s=30)
    try:
        said, seconds = check("owner/model", hub_env(tmp_path, offline=False, endpoint=hub.url))
    finally:
        hub.close()
    assert "is unreachable" in said or "gave no answer" in said, said
    assert seconds < pipelines.checks.PROBE_TIMEOUT_S + 3 and len(probes(hub)) == 1


@pytest.mark.parametrize("status,headers,expected", [
    (401, {"X-Error-Code": "GatedRepo"}, "owner/model is gated on http://127.0.0.1:"),
    (403, {}, "(403): set HF_TOKEN to a read token and accept the model's licence at http://127.0.0.1:"),
    (401, {"X-Error-Code": "RepoNotFound"}, "no model repo owner/model: check the id (a private repo needs HF_TOKEN)"),
    (404, {"X-Error-Code": "EntryNotFound"}, "has no model_index.json: it is not a diffusers pipeline repo"),
    (500, {}, "answered 500 for owner/model"),
])
def test_hub_refusals_name_the_fix(status, headers, expected, tmp_path):
    hub = FakeHub(status, headers)
    try:
        said, _ = check("owner/model", hub_env(tmp_path, offline=False, endpoint=hub.url))
    finally:
        hub.close()
    assert said.startswith("error owner/model is not in the local Hugging Face cache and ") and expected in said, said
    assert probes(hub) == ["HEAD /owner/model/resolve/main/model_index.json"]  # one request, no retries
    if headers.get("X-Error-Code") == "GatedRepo":
        assert "/owner/model and set HF_TOKEN to a read token of that account" in said


def test_offline_finds_a_cached_snapshot_and_refuses_a_partial_one(tmp_path, twins_root):
    snapshot = cache_twin(tmp_path / "hf", twins_root)
    said, seconds = check(REPO, hub_env(tmp_path / "hf", offline=True))
    assert said == f"source {REPO} True" and seconds < 5
    shutil.rmtree(snapshot / "unet")
    said, _ = check(REPO, hub_env(tmp_path / "hf", offline=True))
    assert said.startswith(f"error {REPO} is only partly in the local Hugging Face cache (HF_HUB_OFFLINE=1; "
                           "missing: unet): download it first with `hf download"), said


@pytest.mark.slow
def test_cached_model_loads_from_the_cache_when_the_hub_is_unreachable(tmp_path, twins_root):
    cache_twin(tmp_path / "hf", twins_root)
    out = subprocess.run([sys.executable, "-m", "tts.app.cli", "pipeline=sd15", f"pipeline.model_id={REPO}",
                          "pipeline.dtype=fp32", "pipeline.device=cpu", "pipeline.height=32", "pipeline.width=32",
                          "pipeline.num_inference_steps=2", "verifier=compressibility", "search.rounds=1",
                          "prompt=a blue sphere", f"hydra.run.dir={tmp_path / 'run'}"],
                         env=hub_env(tmp_path / "hf", offline=False, endpoint=f"http://127.0.0.1:{closed_port()}"),
                         cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    said = out.stdout + out.stderr
    assert "is unreachable (" in said and f"); loading {REPO} from the local Hugging Face cache" in said
    assert "Retrying" not in said


def test_embedded_model_never_touches_the_hub(tmp_path):
    hub = FakeHub(500)
    try:
        out = subprocess.run([sys.executable, "-m", "tts.app.cli", "search.rounds=1", f"hydra.run.dir={tmp_path / 'run'}"],
                             env=hub_env(tmp_path / "hf", offline=False, endpoint=hub.url), cwd=tmp_path,
                             capture_output=True, text=True, timeout=600)
    finally:
        hub.close()
    assert out.returncode == 0, out.stderr[-3000:]
    assert hub.requests == []


@pytest.mark.parametrize("model_id,expected", [
    ("{tmp}/empty", "{tmp}/empty has no model_index.json: not a diffusers pipeline folder"),
    ("{tmp}/missing", "pipeline.model_id={tmp}/missing: no such folder"),
    ("not a/hub id!", "pipeline.model_id='not a/hub id!' is neither a local folder nor a hub id (owner/name)"),
])
def test_local_folders_are_checked_first(model_id, expected, tmp_path):
    (tmp_path / "empty").mkdir()
    spec = PipelineSpec(name="x", model_id=model_id.format(tmp=tmp_path), height=32, width=32, num_inference_steps=1,
                        guidance_scale=1.0)
    with pytest.raises(PipelineConfigError) as e:
        spec.check()
    assert str(e.value).startswith(expected.format(tmp=tmp_path))


def twin_spec(family: str, root, call_args: dict, guidance_scale: float = 5.0) -> PipelineSpec:
    return PipelineSpec(name=family, model_id=str(save_twin(family, root)), height=32, width=32,
                        num_inference_steps=1, guidance_scale=guidance_scale, call_args=call_args)


@pytest.mark.parametrize("family,call_args,guidance,expected", [
    ("sd15", {"negative_promt": "x"}, 5.0, "pipeline.call_args.negative_promt: StableDiffusionPipeline takes no such "
                                           "argument; did you mean 'negative_prompt'? accepted: clip_skip, "),
    ("sd15", {"negative_prompt_2": "x"}, 5.0, "did you mean 'negative_prompt'?"),
    ("sd15", {"negative_prompt": "x"}, 1.0, "pipeline.call_args.negative_prompt acts only with classifier-free "
                                            "guidance: set pipeline.guidance_scale > 1 (it is 1.0)"),
    ("flux", {"negative_prompt": "x"}, 3.5, "Flux takes a negative prompt only with true classifier-free guidance: "
                                            "add +pipeline.call_args.true_cfg_scale=4"),
    ("flux", {"true_cfg_scale": 4.0}, 3.5, "pipeline.call_args.true_cfg_scale acts only with a negative prompt"),
    ("flux", {"negative_prompt_2": "x", "true_cfg_scale": 4.0}, 3.5, "negative_prompt_2 needs pipeline.call_args."
                                                                     "negative_prompt"),
])
def test_call_args_are_checked_against_the_pipeline_before_loading(family, call_args, guidance, expected, twins_root):
    spec = twin_spec(family, twins_root, call_args, guidance)
    before = set(pipelines._CACHE)
    with pytest.raises(PipelineConfigError) as e:
        spec.load()
    assert expected in str(e.value) and "\n" not in str(e.value)
    assert set(pipelines._CACHE) == before  # nothing loaded


@pytest.mark.parametrize("key,expected", [
    ("latents", "initial noises come from the search"),
    ("generator", "seed="),
    ("num_images_per_prompt", "use batch_size="),
    ("prompt_embeds", "tts encodes the prompt once"),
    ("negative_prompt_embeds", "give the text (pipeline.call_args.negative_prompt)"),
    ("output_type", "PIL images"),
    ("num_inference_steps", "use pipeline.num_inference_steps="),
    ("prompt", "prompt= or prompts="),
])
def test_call_args_tts_sets_itself_are_refused(key, expected, tmp_path):
    with pytest.raises(Exception) as e:
        run_tts([f"+pipeline.call_args.{key}=1"], tmp_path)
    assert f"pipeline.call_args.{key} is set by tts itself: " in str(e.value) and expected in str(e.value)


def test_call_args_come_from_hydra_as_a_plain_dict_and_other_keys_are_pointed_there():
    import hydra

    spec = hydra.utils.instantiate(compose(["pipeline=sdxl", "+pipeline.call_args.negative_prompt='blurry, dark'",
                                            "+pipeline.call_args.eta=null"]).pipeline)
    assert spec.call_args == {"negative_prompt": "blurry, dark"} and type(spec.call_args) is dict  # null: default
    with pytest.raises(Exception) as e:
        hydra.utils.instantiate(compose(["pipeline=sdxl", "+pipeline.negative_prompt=blurry"]).pipeline)
    assert ("pipeline.negative_prompt is not a pipeline setting: arguments of the pipeline call go in "
            "pipeline.call_args (+pipeline.call_args.negative_prompt=...)") in str(e.value)
    with pytest.raises(PipelineConfigError, match="pipeline.call_args must map argument names to values"):
        PipelineSpec(name="x", model_id="x/y", height=8, width=8, num_inference_steps=1, guidance_scale=1.0,
                     call_args="blurry")
