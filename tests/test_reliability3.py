"""Reliability, round 3: a non-finite score never wedges a run, a run never adopts a stranger's folder, no
claim waits forever, the server refuses other sites, readers stay inside the run folder, sizes are bounded
up front, and bad values are one-line errors. Each test fails without the guarantee it checks."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TESTS, compose, run_tts

from tts.core import runfolder as rf
from tts.core.records import CandidateRecord

FAST = ["pipeline.num_inference_steps=2", "search.rounds=2", "batch_size=2"]
CLI = [sys.executable, "-c", "from tts.app.cli import main; main()"]


def tts_cli(*args, cwd=TESTS, timeout=300, env=None):
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


def record(i: int, **kw) -> CandidateRecord:
    fields = dict(prompt="p", prompt_index=0, prompt_hash="h", round=1, index=i, seed=i, noise={"seed": i}, nfe=1.0,
                  status="ok", verifier="v", choice_of_metric="m", score=0.5, image=f"{i}.png") | kw
    return CandidateRecord(**fields)


# -- 1. a non-finite score ----------------------------------------------------------------------------------

@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_a_non_finite_score_is_a_failed_verification_and_the_run_finishes(value, tmp_path):
    overrides = [*FAST, "verifier._target_=tts_test_components.NonFinite", "verifier.choice_of_metric=score",
                 f"+verifier.value={value}"]
    summary = run_tts(overrides, tmp_path)
    assert summary is not None and summary["candidates"] == 6 and summary["failed"] == 6
    lines = (tmp_path / rf.MANIFEST).read_text().splitlines()
    records = rf.read_manifest(tmp_path)
    assert len(records) == len(lines) == 6  # every line reads back
    assert all(r.status == "failed" and "non-finite" in r.error and value in r.error for r in records)
    again = run_tts(overrides, tmp_path)  # a rerun re-verifies the failed candidates, appends readable lines
    assert again["candidates"] == 6 and len(rf.read_manifest(tmp_path)) == len(
        (tmp_path / rf.MANIFEST).read_text().splitlines())


def test_a_manifest_line_nested_too_deep_is_skipped_like_any_unreadable_line(tmp_path):
    rf.append_line(tmp_path / rf.MANIFEST, record(0).model_dump_json())
    with open(tmp_path / rf.MANIFEST, "a") as f:
        f.write('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    rf.append_line(tmp_path / rf.MANIFEST, record(1).model_dump_json())
    assert [r.index for r in rf.read_manifest(tmp_path)] == [0, 1]


def test_the_manifest_writer_refuses_a_record_its_reader_cannot_read(tmp_path):
    folder = rf.RunFolder(tmp_path)
    with pytest.raises(ValueError, match="cannot read back"):
        folder.append(record(0, score=math.nan))
    with pytest.raises(ValueError, match="cannot read back"):
        folder.append(record(1, timings={"generate_s": math.inf}))
    folder.append(record(2))
    assert [r.index for r in rf.read_manifest(tmp_path)] == [2]


# -- 2. a folder that is not a run --------------------------------------------------------------------------

def one_line_error(out, *needles):
    text = out.stdout + out.stderr
    assert out.returncode == 2, text[-2000:]
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    assert errors and all(n in text for n in needles), text[-2000:]
    return text


def test_a_non_empty_folder_without_a_run_is_refused_and_left_as_it_was(tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "plan.json").write_text('{"my": "plan"}')
    (mine / "summary.json").write_text('{"my": "summary"}')
    out = tts_cli(*FAST, f"hydra.run.dir={mine}")
    one_line_error(out, "hydra.run.dir=", "not a tts run")
    assert (mine / "plan.json").read_text() == '{"my": "plan"}'
    assert (mine / "summary.json").read_text() == '{"my": "summary"}'
    assert not (mine / rf.MANIFEST).exists() and not (mine / rf.CONFIG).exists()


@pytest.mark.parametrize("text", ["[1, 2]", "42", '"config"', "null"])
def test_a_config_json_that_is_not_a_config_is_one_line(text, tmp_path):
    (tmp_path / rf.CONFIG).write_text(text)
    out = tts_cli(*FAST, f"hydra.run.dir={tmp_path}")
    one_line_error(out, "config.json", "not a tts config")
    with pytest.raises(rf.RunFolderError, match="not a tts config"):
        rf.RunFolder(tmp_path).write_config({"seed": 0}, ("seed",))


def test_an_empty_folder_and_a_run_folder_are_accepted(tmp_path):
    rf.check_run_folder(tmp_path / "new")  # does not exist yet
    rf.check_run_folder(tmp_path)  # empty
    (tmp_path / "tts-search.log").write_text("a refused run's log\n")
    rf.check_run_folder(tmp_path)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(rf.RunFolderError, match="hydra.run.dir="):
        rf.check_run_folder(tmp_path)
    (tmp_path / rf.CONFIG).write_text("{}")
    rf.check_run_folder(tmp_path)  # a run (with the user's notes beside it)


# -- 3. claims on this host -----------------------------------------------------------------------------------

HOLD = """
import sys, time
from tts.core import runfolder as rf
rf.RunFolder(sys.argv[1]).claim("abc")
print("claimed", flush=True)
time.sleep(600)
"""


def test_a_zombie_holder_claim_is_taken_over(tmp_path):
    """A shard killed while holding a claim stays a zombie until its launcher waits on it: not a holder."""
    import os
    import signal

    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        folder = rf.RunFolder(tmp_path)
        assert folder.claim("abc") is not None  # alive: its claim holds
        os.kill(holder.pid, signal.SIGKILL)
        deadline = __import__("time").time() + 10
        while Path(f"/proc/{holder.pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z":
            assert __import__("time").time() < deadline
        assert folder.claim("abc") is None  # a zombie (not yet waited on) holds nothing
    finally:
        holder.kill()
        holder.wait()


def test_a_claim_whose_pid_was_reused_or_whose_heartbeat_stopped_is_taken_over(tmp_path):
    import os
    import time

    folder = rf.RunFolder(tmp_path)
    host = folder.worker.rpartition(":")[0]
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (tmp_path / rf.CLAIMS).mkdir()
        # the PID is alive, but it is another process than the one that claimed (its start time differs)
        (tmp_path / rf.CLAIMS / "abc").write_text(f"{host}:{live.pid} start=1")
        assert folder.claim("abc") is None
        # an old-style claim naming a live PID whose heartbeat stopped long ago
        claim = tmp_path / rf.CLAIMS / "def"
        claim.write_text(f"{host}:{live.pid}")
        old = time.time() - rf.CLAIM_STALE_S - 5
        os.utime(claim, (old, old))
        assert folder.claim("def") is None
        # the same claim with a fresh heartbeat holds
        (tmp_path / rf.CLAIMS / "ghi").write_text(f"{host}:{live.pid}")
        assert folder.claim("ghi") == f"{host}:{live.pid}"
    finally:
        live.kill()
        live.wait()


def test_a_held_claim_keeps_its_heartbeat_while_the_search_runs(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setattr(rf.claims, "HEARTBEAT_S", 0.05)  # the claims' own module reads it
    folder = rf.RunFolder(tmp_path)
    assert folder.claim("abc") is None
    claim = tmp_path / rf.CLAIMS / "abc"
    old = time.time() - 1000
    os.utime(claim, (old, old))
    time.sleep(0.5)  # no batch finished: the claim's own heartbeat keeps it fresh
    assert time.time() - claim.stat().st_mtime < 5
    folder.release("abc")
    assert not claim.exists()


# -- 4. tts-serve refuses other sites --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def plain_server(tmp_path_factory):
    """tts-serve as a user starts it: loopback, no token; one front end's origin allowed."""
    import os

    from test_serve import start_server, stop

    env = dict(os.environ)
    env.pop("TTS_SERVER_TOKEN", None)
    proc, url = start_server(tmp_path_factory.mktemp("serve3") / "serve.log", "server.port=0",
                             "server.allowed_origins=[http://localhost:3000]", env=env)
    yield url
    stop(proc)


def gen_body(**settings):
    return {"model": "shapes", "prompt": "a red circle", "lineages": [{"kind": "fresh", "seed": 1}],
            "num_inference_steps": 2} | settings


def test_the_server_refuses_a_foreign_host_origin_or_body_type(plain_server):
    import httpx

    url = plain_server
    for path in ("/", "/health"):
        r = httpx.get(url + path, headers={"Host": "evil.example"})
        assert r.status_code == 403 and "Host" in r.json()["detail"], r.text
        r = httpx.get(url + path, headers={"Host": "evil.example:8580", "Origin": "http://evil.example:8580"})
        assert r.status_code == 403  # DNS rebinding: the page's own origin, but not this server's name
    form = {"Origin": "http://evil.example", "Content-Type": "text/plain"}
    r = httpx.post(url + "/generate", content=json.dumps(gen_body()), headers=form, timeout=60)
    assert r.status_code == 403 and "Origin" in r.json()["detail"]
    r = httpx.post(url + "/models/shapes/unload", content=b"a=1",
                   headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert r.status_code == 415 and "application/json" in r.json()["detail"]
    r = httpx.post(url + "/generate", content=json.dumps(gen_body()), headers={"Content-Type": "text/plain"})
    assert r.status_code == 415
    r = httpx.post(url + "/generate", json=gen_body(), headers={"Origin": "http://evil.example"}, timeout=60)
    assert r.status_code == 403
    # what a search sends, and the allowed front end, are answered
    assert httpx.post(url + "/generate", json=gen_body(), timeout=120).status_code == 200
    r = httpx.post(url + "/generate", json=gen_body(), headers={"Origin": "http://localhost:3000"}, timeout=120)
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    pre = httpx.options(url + "/generate", headers={"Origin": "http://localhost:3000",
                                                    "Access-Control-Request-Method": "POST",
                                                    "Access-Control-Request-Headers": "content-type"})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert httpx.get(url + "/", headers={"Host": "localhost"}).status_code == 200


def test_json_nested_too_deep_is_a_400(plain_server):
    import httpx

    deep = b'{"a": ' * 100_000 + b"1" + b"}" * 100_000
    r = httpx.post(plain_server + "/generate", content=deep, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 400 and "nests too deeply" in r.json()["detail"]


def test_a_short_token_is_refused_beyond_loopback():
    import os

    env = dict(os.environ, TTS_SERVER_TOKEN="x")
    out = subprocess.run([sys.executable, "-m", "tts.app.serve", "server.host=0.0.0.0", "server.port=0"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert "TTS_SERVER_TOKEN" in out.stderr and "at least 16" in out.stderr


# -- 5. a remote search generates with the model it records -----------------------------------------------------

def test_a_remote_search_asking_for_another_model_is_refused_in_one_line(plain_server, tmp_path):
    import os

    env = dict(os.environ)
    env.pop("TTS_SERVER_TOKEN", None)
    out = tts_cli(*FAST, "pipeline.model_id=/nonexistent/my-finetune", f"++pipeline.server={plain_server}",
                  f"hydra.run.dir={tmp_path / 'run'}", env=env)
    one_line_error(out, "/nonexistent/my-finetune", "pipeline.model_id=")
    assert not (tmp_path / "run" / rf.MANIFEST).exists()


def test_the_server_refuses_a_model_it_does_not_serve_and_unknown_load_keys(plain_server):
    import httpx

    r = httpx.post(plain_server + "/generate", json=gen_body(model_id="/nonexistent/my-finetune"), timeout=60)
    assert r.status_code == 409 and "/nonexistent/my-finetune" in r.json()["detail"]
    r = httpx.post(plain_server + "/models/shapes/load", json={"model_id": "/etc"}, timeout=60)
    assert r.status_code == 409 and "/etc" in r.json()["detail"]
    r = httpx.post(plain_server + "/models/shapes/load", json={"height": 32, "colour": "red"}, timeout=60)
    assert r.status_code == 422 and "'colour'" in r.json()["detail"]
    served = httpx.get(plain_server + "/").json()["models"]["model_ids"]["shapes"]
    r = httpx.post(plain_server + "/generate", json=gen_body(model_id=served), timeout=120)
    assert r.status_code == 200 and r.json()["model_id"] == served


# -- 6. readers stay inside the run folder -------------------------------------------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("small") / "run"
    run_tts([*FAST, "collages=false"], run)
    return run


def tampered(small_run, tmp_path) -> tuple[Path, bytes]:
    """A copy of a run whose manifest points three records at files outside it; the secret image's bytes."""
    import shutil

    from PIL import Image

    run = tmp_path / "shared" / "run"
    shutil.copytree(small_run, run)
    secret = tmp_path / "shared" / "SECRET.png"
    Image.new("RGB", (32, 32), (3, 251, 7)).save(secret)
    (tmp_path / "SECRET.txt").write_text("the secret")
    lines = (run / rf.MANIFEST).read_text().splitlines()
    images = [str(secret), "../SECRET.png", str(tmp_path / "SECRET.txt"), ".."]
    out = []
    for n, line in enumerate(lines):
        data = json.loads(line)
        if n < len(images):
            data["image"], data["score"] = images[n], 1.0 + n  # the best scores, so every reader shows them
            data["scores"][data["verifier"]][data["choice_of_metric"]]["score"] = 1.0 + n
        out.append(json.dumps(data))
    (run / rf.MANIFEST).write_text("\n".join(out) + "\n")
    return run, secret.read_bytes()


def test_report_and_collage_refuse_images_outside_the_run_folder(small_run, tmp_path):
    import base64

    import numpy as np
    from PIL import Image

    from tts.views import report as tr
    from tts.views.collage import collage_run

    run, secret = tampered(small_run, tmp_path)
    embedded = tr.write_report(run, output=tmp_path / "embed.html", embed=True).read_text()
    assert base64.b64encode(secret).decode() not in embedded
    assert base64.b64encode(b"the secret").decode() not in embedded
    linked = tr.write_report(run, output=tmp_path / "shared" / "run" / "linked.html").read_text()
    assert "SECRET" not in linked.replace(str(run), "")
    written = collage_run(run)
    assert written
    for path in written:
        pixels = np.asarray(Image.open(path).convert("RGB")).reshape(-1, 3)
        assert not ((pixels == (3, 251, 7)).all(axis=1)).any()  # the secret image is drawn nowhere


def test_replay_refuses_a_record_outside_the_run_folder_in_one_line(small_run, tmp_path):
    run, _ = tampered(small_run, tmp_path)
    for image in ("..", "SECRET.png", "../SECRET.png"):
        out = subprocess.run([sys.executable, "-m", "tts.app.replay", str(run), image], capture_output=True, text=True,
                             timeout=120, cwd=TESTS)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert len(out.stderr.strip().splitlines()) == 1
    assert not (run.parent / "SECRET.png").read_bytes() == b""  # nothing written over outside files


def edit_record(run: Path, n: int, **changes) -> str:
    lines = (run / rf.MANIFEST).read_text().splitlines()
    data = json.loads(lines[n]) | changes
    lines[n] = json.dumps(data)
    (run / rf.MANIFEST).write_text("\n".join(lines) + "\n")
    return data["image"]


@pytest.mark.parametrize("change", [
    {"noise": {"kind": "fresh", "seed": 2 ** 80}},
    {"noise": {"kind": "spiral", "seed": 1}},
    {"path": {"strategy": "x", "particle": "p", "ops": [{"op": "bogus"}], "nfe_path": 1.0}},
    {"path": {"strategy": "x", "particle": "p", "ops": [{"op": "run", "to": "x"}], "nfe_path": 1.0}},
])
def test_replay_of_a_tampered_record_is_one_line(change, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    image = edit_record(run, 0, **change)
    out = subprocess.run([sys.executable, "-m", "tts.app.replay", str(run), image], capture_output=True, text=True,
                         timeout=120, cwd=TESTS)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1 and "cannot be replayed" in out.stderr


@pytest.mark.parametrize("config", [[1, 2], {"pipeline": {"model_id": "/nonexistent/model", "name": "x",
                                                          "height": 8, "width": 8, "num_inference_steps": 1,
                                                          "guidance_scale": 1.0}}])
def test_replay_without_the_model_or_a_config_is_one_line(config, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    (run / rf.CONFIG).write_text(json.dumps(config))
    image = rf.read_manifest(run)[0].image
    out = subprocess.run([sys.executable, "-m", "tts.app.replay", str(run), image], capture_output=True, text=True,
                         timeout=120, cwd=TESTS)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert len(out.stderr.strip().splitlines()) == 1


# -- 7. a redone in-loop prompt replaces its records -----------------------------------------------------------

INLOOP = ["search._target_=tts_test_plugins.TinyInLoop", "+search.eta=0.5", "pipeline.num_inference_steps=4",
          "prompts=shapes-bench", "num_prompts=2", "batch_size=4"]


@pytest.mark.parametrize("kept", ["all", "first"])
def test_an_in_loop_prompt_redone_after_a_kill_leaves_no_duplicate_records(kept, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(TESTS / "plugins"))
    whole = run_tts(INLOOP, tmp_path / "whole")
    run = tmp_path / "killed"
    run_tts(INLOOP, run)
    lines = (run / rf.MANIFEST).read_text().splitlines()
    phash = json.loads(lines[0])["prompt_hash"]
    # killed after the prompt's first record (or all of them) and before its searches.jsonl line
    of_prompt = [n for n, line in enumerate(lines) if json.loads(line)["prompt_hash"] == phash]
    dropped = set(of_prompt[1:]) if kept == "first" else set()
    (run / rf.MANIFEST).write_text("".join(line + "\n" for n, line in enumerate(lines) if n not in dropped))
    searches = [s for s in (run / rf.SEARCHES).read_text().splitlines() if phash not in s]
    (run / rf.SEARCHES).write_text("".join(s + "\n" for s in searches))
    (run / rf.SUMMARY).unlink()
    summary = run_tts(INLOOP, run)
    records = rf.read_manifest(run)
    assert len(records) == len({r.key for r in records}) == len(lines)  # no record twice
    assert summary["verifier_calls"] == whole["verifier_calls"] and summary["candidates"] == whole["candidates"]
    assert summary["prompts"] == whole["prompts"]


# -- 8. secrets through interpolation ---------------------------------------------------------------------------

def test_oc_env_of_a_secret_looking_variable_is_refused_before_it_reaches_records(tmp_path):
    import os

    secret = "sk-fake-0123456789abcdef"
    env = dict(os.environ, FAKE_API_KEY=secret, MY_PROMPT="a red circle left of a blue square")
    run = tmp_path / "run"
    out = tts_cli(*FAST, "verifier=compressibility", "prompt=${oc.env:FAKE_API_KEY}", f"hydra.run.dir={run}", env=env)
    text = one_line_error(out, "FAKE_API_KEY", "oc.env")
    assert secret not in text
    leaked = [p for p in tmp_path.rglob("*") if secret in p.name or (p.is_file() and secret in p.read_text("latin-1"))]
    assert not leaked and not (run / rf.MANIFEST).exists()
    ok = tts_cli(*FAST, "prompt=${oc.env:MY_PROMPT}", f"hydra.run.dir={tmp_path / 'fine'}", env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]  # a variable that is not secret-looking is read as before


# -- 9. every size bounded up front; 10/11. tts-plan's bad values -----------------------------------------------

def tts_plan(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "tts.app.plan", *args], capture_output=True, text=True, timeout=timeout,
                          cwd=TESTS)


@pytest.mark.parametrize("args,says", [
    (["search.schedule=constant", "search.per_round=1000000000"], "search.per_round"),
    (["search.schedule=constant", "search.per_round=100000", "search.rounds=100000"], "candidates a prompt"),
    (["search.rounds=17"], "search.rounds"),  # 2**17 in its last round
    (["search=zero-order", "search.num_neighbors=100000", "search.rounds=1000"], "candidates a prompt"),
    (["search=smc", "search.num_particles=1000000000"], "search.num_particles"),
    (["search=evolution", "search.population=100000", "search.generations=100000"], "candidates a prompt"),
    (["search.rounds=-3"], "search.rounds"),
    (["search.nfe_budget=nan"], "search.nfe_budget"),
    (["search.nfe_budget=inf"], "search.nfe_budget"),
    (["plan.s_per_nfe=inf"], "plan.s_per_nfe"),
    (["plan.s_per_nfe=nan"], "plan.s_per_nfe"),
    (["verifier=gemini", "verifier.price_per_million_input_tokens=-1"], "price_per_million_input_tokens"),
    (["verifier=gemini", "verifier.price_per_million_output_tokens=inf"], "price_per_million_output_tokens"),
    (["verifier=gemini", "plan.input_tokens=-5"], "plan.input_tokens"),
])
def test_unbounded_or_bad_sizes_are_one_line_before_any_work(args, says):
    import time

    start = time.monotonic()
    out = tts_plan(*args)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert time.monotonic() - start < 30


def test_the_plan_counts_the_candidates_the_strategy_asks_for():
    out = tts_plan("search.rounds=16")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| candidates | 131,070 | 131,070 |" in out.stdout
    out = tts_plan("search.schedule=constant", "search.per_round=100000", "search.rounds=2")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| candidates | 200,000 | 200,000 |" in out.stdout  # not where a simulation stopped


def test_a_search_refuses_an_unbounded_size_before_loading(tmp_path):
    out = tts_cli("search.schedule=constant", "search.per_round=1000000000", f"hydra.run.dir={tmp_path / 'run'}")
    one_line_error(out, "search.per_round")
    assert not (tmp_path / "run").exists()


# -- 10/11. tts-serve's bad settings and values ---------------------------------------------------------------

@pytest.mark.parametrize("arg,says", [("server.port=99999", "server.port must be at most 65535"),
                                      ("server.max_body_mb=nan", "server.max_body_mb"),
                                      ("server.batch_wait_ms=inf", "server.batch_wait_ms"),
                                      ("server.allowed_origins=[http://x.example/path]", "is not an origin")])
def test_bad_server_settings_are_one_line(arg, says):
    out = subprocess.run([sys.executable, "-m", "tts.app.serve", arg], capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert says in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize("raw,says", [
    ('"guidance_scale": NaN', "pipeline.guidance_scale must be a number"),
    ('"guidance_scale": Infinity', "pipeline.guidance_scale must be a number"),
    ('"guidance_scale": 1e308', "pipeline.guidance_scale must be a number"),
    ('"guidance_scale": "high"', "pipeline.guidance_scale must be a number"),
    ('"max_sequence_length": -1', "pipeline.max_sequence_length must be a positive integer"),
    ('"max_sequence_length": "x"', "pipeline.max_sequence_length must be a positive integer"),
])
def test_the_server_refuses_bad_call_values_with_422(raw, says, plain_server):
    import httpx

    body = json.dumps(gen_body())[:-1] + ", " + raw + "}"
    r = httpx.post(plain_server + "/generate", content=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert r.status_code == 422 and says in r.json()["detail"], r.text


# -- 10/11. prompt files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind,says", [("folder", "is a folder"), ("dev-zero", "not a regular file"),
                                       ("fifo", "not a regular file"), ("empty", "no prompts in"),
                                       ("deep-jsonl", "nests too deeply")])
def test_bad_prompt_files_are_one_line_and_make_no_run_folder(kind, says, tmp_path):
    import os

    path = {"folder": tmp_path, "dev-zero": Path("/dev/zero"), "fifo": tmp_path / "p.txt",
            "empty": tmp_path / "p.txt", "deep-jsonl": tmp_path / "p.jsonl"}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "empty":
        path.write_text("\n\n")
    elif kind == "deep-jsonl":
        path.write_text('{"prompt": ' + "[" * 100_000 + "]" * 100_000 + "}\n")
    run = tmp_path / "run"
    out = tts_cli("prompts=file", f"prompts.path={path}", f"hydra.run.dir={run}", timeout=60)
    one_line_error(out, says)
    assert not run.exists()


# -- 10. output folders that cannot hold a run -------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["proc", "file", "dev-null", "under-a-file"])
def test_an_output_place_that_cannot_hold_a_run_is_one_line(kind, tmp_path):
    (tmp_path / "afile").write_text("mine")
    arg = {"proc": "output_root=/proc/self/out", "file": f"output_root={tmp_path / 'afile'}",
           "dev-null": "hydra.run.dir=/dev/null", "under-a-file": f"hydra.run.dir={tmp_path / 'afile' / 'run'}"}[kind]
    out = tts_cli(*FAST, arg, timeout=60)
    one_line_error(out, arg.partition("=")[0])
    assert (tmp_path / "afile").read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


@pytest.mark.parametrize("value", ["NaN", "1e309", "-Infinity"])
def test_report_of_a_manifest_with_a_non_finite_score_is_not_a_traceback(value, small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    lines = (run / rf.MANIFEST).read_text().splitlines()
    lines[0] = lines[0].replace('"score":', f'"score":{value},"_was":', 1)
    (run / rf.MANIFEST).write_text("\n".join(lines) + "\n")
    assert len(rf.read_manifest(run)) == len(lines) - 1  # the line is unreadable: skipped, its candidate redone
    out = subprocess.run([sys.executable, "-m", "tts.views.report", str(run)], capture_output=True, text=True, timeout=120,
                         cwd=TESTS)
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr[-2000:]


# -- 12. a full disk --------------------------------------------------------------------------------------------

def _full_tmpfs(where: Path) -> bool:
    """A 400 kB tmpfs at ``where`` (root only); False where it cannot be mounted."""
    where.mkdir()
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(where)],
                          capture_output=True).returncode == 0


def test_a_full_disk_is_one_line_without_logging_tracebacks(tmp_path):
    mnt = tmp_path / "mnt"
    run = mnt / "run"
    mounted = _full_tmpfs(mnt)
    try:
        if mounted:  # a real full file system: the run's log file cannot grow either
            first = tts_cli(*FAST, f"hydra.run.dir={run}")
            assert first.returncode == 0, first.stderr[-2000:]
            for path, chunk in ((mnt / "fill", b"\0" * 4096), (run / "tts-search.log", b"x" * 63 + b"\n")):
                with open(path, "ab", buffering=0) as f, pytest.raises(OSError):
                    while True:
                        f.write(chunk)
            out = tts_cli(*FAST[:-2], "search.rounds=5", "batch_size=2", f"hydra.run.dir={run}")
        else:  # no mount here: a log file whose writes fail as on a full disk, and a full disk for images
            code = ("import errno, logging, tts.core.runfolder as rf\n"
                    "class Full:\n"
                    "    def write(self, s): raise OSError(errno.ENOSPC, 'No space left on device')\n"
                    "    def flush(self): raise OSError(errno.ENOSPC, 'No space left on device')\n"
                    "    def close(self): pass\n"
                    "logging.FileHandler._open = lambda self: Full()\n"
                    "def save(path, image): raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
                    "rf.save_image = save\n"
                    "from tts.app.cli import main; main()")
            out = subprocess.run([sys.executable, "-c", code, *FAST, f"hydra.run.dir={run}"], capture_output=True,
                                 text=True, timeout=300, cwd=TESTS)
        text = out.stdout + out.stderr
        assert out.returncode == 2 and "disk is full" in text, text[-3000:]
        assert "Logging error" not in text and "Traceback" not in text, text[-3000:]
    finally:
        if mounted:
            subprocess.run(["umount", str(mnt)], capture_output=True)
