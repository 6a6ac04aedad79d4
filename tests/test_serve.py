"""tts-serve on 127.0.0.1 in its own process, driven over real HTTP (httpx): results identical to local generation,
two concurrent clients batched into one call, SSE progress, bad requests, disconnects, the bearer token, a search
generating remotely (pixel-identical to a local run) and a server killed mid-run with the rerun resuming."""
import base64
import io
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import pytest
from conftest import TESTS, run_tts
from PIL import Image
from twins import save_twin

from tts.sampling.generate import Generator, make_generator
from tts.pipelines.models import preset_spec
from tts.core.noise import fresh, neighbor
from tts.pipelines import PipelineSpec
from tts.pipelines.remote import ServerError, check_servers
from tts.core.runfolder import final_records, read_manifest
from tts.app.scheduler import DeviceQueue, Work

FAST = ["pipeline.num_inference_steps=4", "search.rounds=2", "batch_size=4"]


def start_server(log_path, *overrides, env=None, timeout=180):
    """``tts-serve server.port=0 ...`` in its own process; returns (process, URL) once it prints its URL."""
    env = dict(os.environ if env is None else env, PYTHONUNBUFFERED="1")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tts.app.serve", *overrides], stdout=subprocess.PIPE, stderr=log,
                                env=env, text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if "serving on " in line:
                return proc, line.split("serving on ")[1].split()[0]
            if not line and proc.poll() is not None:
                break
    proc.kill()
    raise AssertionError(f"tts-serve did not start: {open(log_path).read()[-2000:]}")


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="module")
def server(twins_root, tmp_path_factory):
    twin = save_twin("sd15", twins_root)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc, url = start_server(log, "server.port=0", "server.max_body_mb=1", "server.batch_size=8",
                             "models.preload=[shapes]", "pipeline=sd15", f"pipeline.model_id={twin}",
                             "pipeline.device=cpu", "pipeline.height=32", "pipeline.width=32",
                             "pipeline.num_inference_steps=2")
    yield url
    stop(proc)


def pixels(image) -> np.ndarray:
    if isinstance(image, str):
        image = Image.open(io.BytesIO(base64.b64decode(image)))
    return np.asarray(image.convert("RGB"), dtype=np.int16)


def local(spec, prompt, lineages):
    gen = make_generator(spec)
    try:
        return gen.generate(prompt, lineages)[:2]
    finally:
        gen.close()


def body(prompt, lineages, model="shapes", **settings):
    return {"model": model, "prompt": prompt, "lineages": lineages} | settings


def read_events(response):
    """(event, data) pairs of a Server-Sent Events response, read as they arrive."""
    import json

    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            yield event, json.loads(line[6:])


@pytest.mark.slow
def test_generate_is_identical_to_local_generation(server, twins_root):
    lineages = [fresh(11), neighbor(fresh(11), 5, 0.95), fresh(12)]
    index = httpx.get(f"{server}/").json()
    assert {"shapes", "sd15", "flux-dev"} <= set(index["models"]["available"])
    assert index["models"]["loaded"] == ["shapes"]
    for model, spec, settings in [("shapes", preset_spec("shapes", num_inference_steps=3), {"num_inference_steps": 3}),
                                  ("sd15", PipelineSpec(name="sd15", model_id=str(save_twin("sd15", twins_root)),
                                                        height=32, width=32, num_inference_steps=2, guidance_scale=5.0,
                                                        device="cpu"), {"guidance_scale": 5.0, "dtype": "fp32"})]:
        r = httpx.post(f"{server}/generate", json=body("a red cube", lineages, model, **settings), timeout=300)
        assert r.status_code == 200, r.text
        images, nfe = local(spec, "a red cube", lineages)
        assert r.json()["nfe"] == nfe == spec.num_inference_steps * (2 if model == "sd15" else 1)
        assert all(np.array_equal(pixels(a), pixels(b)) for a, b in zip(r.json()["images"], images))
    loaded = httpx.post(f"{server}/models/sd15/load", json={"height": 32, "width": 32, "dtype": "fp32"}).json()
    gen = make_generator(spec)
    assert loaded["latent_shape"] == list(gen.latent_shape) == [4, 16, 16]
    gen.close()
    health = httpx.get(f"{server}/health").json()
    assert {m["name"] for m in health["loaded"]} == {"shapes", "sd15"} and health["queue"] == 0
    assert httpx.post(f"{server}/models/sd15/unload").json()["unloaded"] is True
    assert [m["name"] for m in httpx.get(f"{server}/health").json()["loaded"]] == ["shapes"]


@pytest.mark.slow
def test_prompt_embeddings_give_the_prompts_images(server):
    from safetensors.torch import save

    spec = preset_spec("shapes", num_inference_steps=2)
    gen = Generator(spec.load(), spec)
    embeds = {k: v.contiguous() for k, v in gen.encode("a blue square").items()}
    gen.close()
    payload = {"model": "shapes", "prompt_embeds": base64.b64encode(save(embeds)).decode(), "lineages": [fresh(3)],
               "num_inference_steps": 2}
    by_embeds = httpx.post(f"{server}/generate", json=payload, timeout=120).json()["images"]
    by_text = httpx.post(f"{server}/generate", json=body("a blue square", [fresh(3)], num_inference_steps=2),
                         timeout=120).json()["images"]
    assert np.array_equal(pixels(by_embeds[0]), pixels(by_text[0]))


@pytest.mark.slow
def test_sse_progress_is_read_by_a_client(server):
    with httpx.stream("POST", f"{server}/generate/stream", timeout=120,
                      json=body("a green circle", [fresh(1), fresh(2)], num_inference_steps=3)) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        events = list(read_events(r))
    names = [e for e, _ in events]
    assert names[0] == "queued" and names[1] == "started" and names[-1] == "result"
    assert [d["step"] for e, d in events if e == "progress"] == [1, 2, 3]
    plain = httpx.post(f"{server}/generate", json=body("a green circle", [fresh(1), fresh(2)], num_inference_steps=3),
                       timeout=120).json()
    assert events[-1][1]["images"] == plain["images"] and events[-1][1]["nfe"] == 3


@pytest.mark.slow
def test_bad_requests_get_a_4xx_naming_the_problem(server):
    cases = [
        (body("x", [fresh(1)], model="shapez"), 404, "did you mean 'shapes'"),
        (body("x", [{"kind": "fresh", "seed": -1}]), 422, "lineages[0]: seed must be an integer"),
        (body("x", [{"kind": "neighbor", "seed": 2, "threshold": 1.5, "pivot": fresh(1)}]), 422,
         "threshold must lie strictly between 0 and 1"),
        (body("x", [{"kind": "spiral", "seed": 1}]), 422, "kind must be 'fresh' or 'neighbor'"),
        (body("x", [fresh(1)], height=4096, width=4096), 422, "exceed pipeline.max_resolution"),
        (body("x", [fresh(1)], num_inference_steps=100000), 422, "exceeds this server's cap"),
        (body("x", [fresh(1)], call_args={"etaa": 0.5}), 422, "did you mean 'eta'"),
        (body("x", []), 422, "lineages must be a list of 1 to"),
        (body("", [fresh(1)]), 422, "prompt must be a non-empty string"),
        (body("x", [fresh(1)]) | {"prompt_embeds": "AAAA"}, 422, "exactly one of prompt"),
        ({"model": "shapes", "prompt_embeds": "bm90IHNhZmV0ZW5zb3Jz", "lineages": [fresh(1)]}, 422, "safetensors"),
        (body("x", [fresh(1)], height=48, width=48), 422, "ShapesPipeline makes 32x32 images"),
    ]
    for payload, status, message in cases:
        r = httpx.post(f"{server}/generate", json=payload, timeout=120)
        assert (r.status_code, message in r.json()["detail"]) == (status, True), (payload, r.text)
    r = httpx.post(f"{server}/generate", content=b"{not json", headers={"Content-Type": "application/json"}, timeout=30)
    assert r.status_code == 400 and "not JSON" in r.json()["detail"]
    r = httpx.post(f"{server}/generate", json=body("x" * (2 * 1024 * 1024), [fresh(1)]), timeout=30)
    assert r.status_code == 413 and "server.max_body_mb" in r.json()["detail"]
    assert httpx.post(f"{server}/models/nope/load").status_code == 404
    assert httpx.get(f"{server}/health").json()["status"] == "ok"  # alive after all of them


def _stream_until(url, payload, event, ready: threading.Event, out: list):
    with httpx.stream("POST", f"{url}/generate/stream", json=payload, timeout=600) as r:
        for name, data in read_events(r):
            out.append((name, data))
            if name == event:
                ready.set()


@pytest.mark.slow
def test_two_concurrent_clients_share_one_call_and_a_disconnect_cancels_queued_work(server):
    before = httpx.get(f"{server}/health").json()["devices"].get("cpu", {"rows": 0, "cancelled": 0})
    started, blocker = threading.Event(), []
    hold = threading.Thread(target=_stream_until, args=(server, body("blocker", [fresh(0)], num_inference_steps=300),
                                                        "started", started, blocker))
    hold.start()
    assert started.wait(120)
    results = {}

    def client(name, seeds):
        r = httpx.post(f"{server}/generate", json=body(f"a {name} square", [fresh(s) for s in seeds],
                                                       num_inference_steps=2),
                       headers={"X-TTS-Client": name}, timeout=600)
        results[name] = r.json()

    clients = [threading.Thread(target=client, args=(n, s)) for n, s in (("red", (1, 2)), ("blue", (3, 4)))]
    for t in clients:
        t.start()
    deadline = time.monotonic() + 30
    while httpx.get(f"{server}/health").json()["queue"] < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    # a client that gives up while queued (timeout: the connection closes), and an SSE reader that leaves
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server}/generate", json=body("gone", [fresh(9)] * 3, num_inference_steps=3), timeout=1.0)
    with httpx.stream("POST", f"{server}/generate/stream", timeout=60,
                      json=body("gone too", [fresh(8)] * 2, num_inference_steps=3)) as r:
        assert next(read_events(r))[0] == "queued"
    health = httpx.get(f"{server}/health").json()
    assert health["devices"]["cpu"]["busy"], "the blocker finished too early for this test to mean anything"
    for t in (*clients, hold):
        t.join(600)
    after = httpx.get(f"{server}/health").json()["devices"]["cpu"]
    assert results["red"]["batch"] == results["blue"]["batch"] == 4  # one pipeline call for both clients
    assert after["cancelled"] - before["cancelled"] == 2
    assert after["rows"] - before["rows"] == 1 + 4  # the blocker and the two clients; nothing of the cancelled
    spec = preset_spec("shapes", num_inference_steps=2)
    for name, seeds in (("red", (1, 2)), ("blue", (3, 4))):
        images, nfe = local(spec, f"a {name} square", [fresh(s) for s in seeds])
        assert results[name]["nfe"] == nfe == 2
        # batched with another client's rows: the same images, up to one level of rounding
        assert all(np.abs(pixels(a) - pixels(b)).max() <= 1 for a, b in zip(results[name]["images"], images))


def test_queue_serves_clients_in_turn_and_batches_same_settings():
    gate, order = threading.Event(), []

    def run_batch(works):
        gate.wait(10)
        order.append([w.payload for w in works])
        return [w.payload for w in works]

    queue = DeviceQueue("test", run_batch, batch_size=2)
    first = Work("a", ("k",), "a0", 1)
    queue.submit([first])
    deadline = time.monotonic() + 10
    while queue.depth and time.monotonic() < deadline:  # a0 is running, held at the gate
        time.sleep(0.01)
    works = [Work("a", ("k",), f"a{i}", 1) for i in range(1, 4)] + [Work("b", ("k",), "b0", 1),
                                                                     Work("c", ("other",), "c0", 1)]
    queue.submit(works)
    gone = Work("d", ("k",), "d0", 1)
    queue.submit([gone])
    assert queue.cancel([gone]) == 1 and gone.future.cancelled()
    gate.set()
    assert [w.future.result(10) for w in works] == ["a1", "a2", "a3", "b0", "c0"]
    # a's oldest with b's (same settings), then c (the next client's own settings), then a's rest
    assert order == [["a0"], ["a1", "b0"], ["c0"], ["a2", "a3"]]
    assert queue.counters.cancelled == 1 and queue.counters.rows == 6


def test_queue_waits_briefly_for_a_recently_active_client():
    order = []
    queue = DeviceQueue("test", lambda works: order.append([w.payload for w in works]) or [None] * len(works),
                        batch_size=4, batch_wait_s=5.0)
    first = [Work("a", ("k",), "a0", 1), Work("b", ("k",), "b0", 1)]
    queue.submit(first)
    for w in first:
        w.future.result(10)
    start = time.monotonic()
    second = [Work("a", ("k",), "a1", 1), Work("b", ("k",), "b1", 1)]
    queue.submit(second[:1])
    time.sleep(0.3)  # b, answered with a, asks again a little later: it still joins a's batch
    queue.submit(second[1:])
    for w in second:
        w.future.result(10)
    assert order == [["a0", "b0"], ["a1", "b1"]] and time.monotonic() - start < 4


@pytest.mark.slow
def test_token_is_required_when_set_and_off_loopback(tmp_path):
    env = dict(os.environ)
    env.pop("TTS_SERVER_TOKEN", None)
    refused = subprocess.run([sys.executable, "-m", "tts.app.serve", "server.host=0.0.0.0", "server.port=0"], env=env,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "set TTS_SERVER_TOKEN" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1
    proc, url = start_server(tmp_path / "serve.log", "server.port=0", env=env | {"TTS_SERVER_TOKEN": "s3cret"})
    try:
        assert httpx.get(f"{url}/health").status_code == 401
        assert httpx.get(f"{url}/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.post(f"{url}/generate", headers={"Authorization": "Bearer s3cret"}, timeout=120,
                        json=body("a red circle", [fresh(1)], num_inference_steps=2))
        assert ok.status_code == 200 and len(ok.json()["images"]) == 1
        spec = preset_spec("shapes", server=url)
        with pytest.MonkeyPatch.context() as mp:
            mp.delenv("TTS_SERVER_TOKEN", raising=False)
            with pytest.raises(ServerError, match="set TTS_SERVER_TOKEN"):
                check_servers(spec)
            mp.setenv("TTS_SERVER_TOKEN", "s3cret")
            check_servers(spec)
    finally:
        stop(proc)


@pytest.mark.slow
def test_search_on_a_server_is_pixel_identical_to_a_local_search(server, tmp_path):
    run_tts(FAST, tmp_path / "local")
    run_tts(FAST + [f"++pipeline.server=[{server},{server}]"], tmp_path / "remote")
    local_records, remote_records = read_manifest(tmp_path / "local"), read_manifest(tmp_path / "remote")
    assert len(remote_records) == 6
    for a, b in zip(local_records, remote_records):
        assert (a.key, a.seed, a.noise, a.score, a.nfe, a.image) == (b.key, b.seed, b.noise, b.score, b.nfe, b.image)
        assert np.array_equal(pixels(Image.open(tmp_path / "local" / a.image)),
                              pixels(Image.open(tmp_path / "remote" / b.image)))
    hp = ["search=human-preference", "search/frontend=scripted", "search.frontend.simulate_top_k=2", "search.rounds=2",
          "search.per_round=4", "pipeline.num_inference_steps=2"]
    run_tts(hp, tmp_path / "hp-local")
    run_tts(hp + [f"++pipeline.server={server}"], tmp_path / "hp-remote")
    hp_local, hp_remote = read_manifest(tmp_path / "hp-local"), read_manifest(tmp_path / "hp-remote")
    assert len(hp_remote) == 8 and [(r.noise, r.score) for r in hp_local] == [(r.noise, r.score) for r in hp_remote]
    with pytest.raises(ServerError, match="serves no pipeline 'flux-deev'"):
        check_servers(PipelineSpec(name="flux-deev", model_id="x/y", height=8, width=8, num_inference_steps=1,
                                   guidance_scale=1.0, server=server))
    dead = _free_port()
    with pytest.raises(ServerError, match=f"cannot reach tts-serve at http://127.0.0.1:{dead}"):
        check_servers(preset_spec("shapes", server=f"http://127.0.0.1:{dead}"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_server_killed_mid_run_stops_the_search_and_the_rerun_resumes(tmp_path):
    port, run = _free_port(), tmp_path / "run"
    serve_args = [f"server.port={port}", "models.preload=[shapes]"]
    env = dict(os.environ, PYTHONPATH=f"{TESTS / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env.pop("TTS_SERVER_TOKEN", None)
    search = ["verifier._target_=tts_test_plugins.SleepyVerifier", "~verifier.choice_of_metric",
              "pipeline.num_inference_steps=2", "search.rounds=3", "batch_size=2", f"hydra.run.dir={run}",
              f"++pipeline.server=http://127.0.0.1:{port}", "++pipeline.server_attempts=2"]
    command = [sys.executable, "-c", "from tts.app.cli import main; main()", *search]
    server, _ = start_server(tmp_path / "serve1.log", *serve_args, env=env)
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / "manifest.jsonl").exists() and len((run / "manifest.jsonl").read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    server.send_signal(signal.SIGKILL)
    server.wait()
    output, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2, output[-3000:]
    assert "Traceback" not in output and "generation server failed 2 times" in output and "resume" in output
    before = {r.key: r for r in final_records(read_manifest(run)) if r.status == "ok"}
    assert 4 <= len(before) < 14
    mtimes = {k: (run / r.image).stat().st_mtime_ns for k, r in before.items()}
    server, _ = start_server(tmp_path / "serve2.log", *serve_args, env=env)
    try:
        rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    finally:
        stop(server)
    assert rerun.returncode == 0, (rerun.stdout + rerun.stderr)[-3000:]
    after = [r for r in read_manifest(run) if r.status == "ok"]
    assert len(after) == len({r.key for r in after}) == 2 + 4 + 8  # nothing finished was scored twice
    for k, r in before.items():
        assert (run / r.image).stat().st_mtime_ns == mtimes[k]  # nor regenerated
    gen = make_generator(preset_spec("shapes", num_inference_steps=2))
    for r in after[:4] + after[-2:]:
        [image], _, _ = gen.generate(r.prompt, [r.noise])
        # the server and this process may run torch on different thread counts: float sums then differ in their
        # last bits, so a pixel may round one level apart (tts-replay's own tolerance); a wrong noise is far off
        assert np.abs(pixels(image) - pixels(Image.open(run / r.image))).max() <= 1
    gen.close()
