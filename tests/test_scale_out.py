"""One study across many processes: torchrun ranks and plain RANK/WORLD_SIZE processes write one run folder
equal to a single-process run's; Hydra launcher jobs (submitit_local) shard by shard.index/shard.count; the
summary and collages are written once, by the shard that completes the study; a killed shard resumes; a
prompt finished by another writer after this one started is not redone; file systems without flock get
a one-line error and a lock-free mode (per-writer manifests merged on read)."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import TESTS, run_tts

from tts.run import loop

from tts.core import runfolder as rf
from tts.core.records import CandidateRecord
from tts.run.shard import Shard, ShardError, launcher_rank, resolve

FAST = ["pipeline.num_inference_steps=2", "search.rounds=2", "batch_size=2"]
TTS = [sys.executable, "-m", "tts"]
PROMPTS = ["a red circle", "a blue square", "a green triangle", "a yellow circle"]
TABLE = "mean of each prompt's best"
#: the same CPU threads in every process (torchrun sets 1), so images are bit-identical across runs
ENV = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
                                                        "MASTER_PORT")} | {"OMP_NUM_THREADS": "1"}


def prompt_file(tmp_path: Path, n: int = 4) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS[:n]) + "\n")
    return path


def content(run: Path) -> dict:
    """What a run computed: every record (without who wrote it and how long it took) with its image bytes,
    every round JSON, the summary."""
    records = sorted(rf.read_manifest(run), key=lambda r: r.key)
    return {
        "records": [(r.model_dump(exclude={"worker", "timings"}), (run / r.image).read_bytes()) for r in records],
        "rounds": {p.name: json.loads(p.read_text()) for p in run.glob("prompt@*.json")},
        "summary": json.loads((run / rf.SUMMARY).read_text()),
    }


def one_process(tmp_path: Path, prompts: Path) -> Path:
    run = tmp_path / "single"
    out = subprocess.run([*TTS, *FAST, "prompts=file", f"prompts.path={prompts}", f"hydra.run.dir={run}"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    return run


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- shares --------------------------------------------------------------------------------------------------

def test_prompts_are_dealt_round_robin_and_launcher_ranks_split_each_shard():
    assert [k for k in range(10) if Shard(1, 4).owns(k)] == [1, 5, 9] and Shard(1, 4).size(10) == 3
    assert resolve(2, 3, env={}) == Shard(2, 3)
    assert resolve(1, 4, env={"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"}) == Shard(3, 8, 1)
    assert launcher_rank({}) is None
    for index, count, env, says in [(3, 2, {}, "shard.index=3 must be below shard.count=2"),
                                    (0, 0, {}, "shard.count must be an integer >= 1"),
                                    (0, 1, {"RANK": "2", "WORLD_SIZE": "2"}, "RANK=2 is not in 0..WORLD_SIZE-1"),
                                    (0, 1, {"RANK": "x", "WORLD_SIZE": "2"}, "are not integers")]:
        with pytest.raises(ShardError, match=says):
            resolve(index, count, env=env)


def test_bad_shard_settings_are_one_line_before_any_folder(tmp_path):
    for args, says in [(["shard.count=2", "shard.index=2"], "shard.index=2 must be below shard.count=2"),
                       (["shard.manifest=nfs"], "shard.manifest must be one of shared, per-shard"),
                       (["shard.count=2", "search=human-preference"], "asks a person")]:
        out = subprocess.run([*TTS, *args, f"output_root={tmp_path}"], env=ENV, capture_output=True, text=True,
                             timeout=120)
        text = out.stdout + out.stderr
        assert out.returncode == 2 and says in text, text[-2000:]
        assert "Traceback" not in text and list(tmp_path.rglob("*")) == []
    out = subprocess.run([*TTS, f"output_root={tmp_path}"], env=ENV | {"RANK": "0", "WORLD_SIZE": "2"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "pass the same hydra.run.dir=DIR to every rank" in out.stderr
    assert list(tmp_path.rglob("*")) == []


# -- one node, several processes --------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchrun_ranks_write_the_same_folder_as_one_process(tmp_path):
    prompts = prompt_file(tmp_path)
    single = one_process(tmp_path, prompts)
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "tts", *FAST, "prompts=file", f"prompts.path={prompts}",
                          f"output_root={tmp_path / 'ranks'}"], env=ENV, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = [p.parent for p in (tmp_path / "ranks").rglob(rf.MANIFEST)]
    assert len(runs) == 1  # both ranks resolved one folder from rank 0's clock and suffix
    run = runs[0]
    assert content(run) == content(single)
    assert len({r.worker for r in rf.read_manifest(run)}) == 2  # both ranks took part
    assert out.stdout.count(TABLE) == 1  # the summary once, by the rank that completed the study
    assert sorted(p.name for p in (run / "collages").iterdir()) == sorted(
        f"{rf.prompt_stem(p)}_rounds.png" for p in PROMPTS)
    assert sorted(p.name for p in run.glob("*.log")) == ["tts-search.shard-0-of-2.log", "tts-search.shard-1-of-2.log"]
    config = json.loads((run / rf.CONFIG).read_text())
    assert config["shard"] == {"count": 2, "manifest": "shared"}


@pytest.mark.slow
def test_processes_given_rank_variables_agree_on_one_folder(tmp_path):
    """What torchrun and accelerate launch both set, set by hand: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*."""
    prompts = prompt_file(tmp_path)
    single = one_process(tmp_path, prompts)
    port = free_port()
    procs = [subprocess.Popen([*TTS, *FAST, "prompts=file", f"prompts.path={prompts}",
                               f"output_root={tmp_path / 'ranks'}"],
                              env=ENV | {"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r),
                                         "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for r in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    runs = [p.parent for p in (tmp_path / "ranks").rglob(rf.MANIFEST)]
    assert len(runs) == 1 and content(runs[0]) == content(single)
    assert "".join(o for o, _ in outs).count(TABLE) == 1


# -- clusters: Hydra launchers ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_submitit_local_jobs_shard_one_study_into_one_folder(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    prompts = prompt_file(tmp_path)
    out = subprocess.run([*TTS, "-m", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", *FAST,
                          "prompts=file", f"prompts.path={prompts}", "shard.count=2", "shard.index=range(2)",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}"], env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    run = tmp_path / "sweep" / "shards"
    assert [p.parent for p in (tmp_path / "sweep").rglob(rf.MANIFEST)] == [run]
    records = rf.read_manifest(run)
    assert len(records) == len({r.key for r in records}) == 4 * 6 and len({r.worker for r in records}) == 2
    assert json.loads((run / rf.SUMMARY).read_text())["candidates"] == 24
    assert len(list((run / "collages").glob("*_rounds.png"))) == 4
    collage = subprocess.run([sys.executable, "-m", "tts.views.collage", str(tmp_path / "sweep")], capture_output=True,
                             text=True, timeout=300)
    assert collage.returncode == 0 and collage.stdout.count("_rounds.png") == 4  # tts-collage sees one run


@pytest.mark.slow
def test_a_sweep_of_shards_and_another_key_gives_one_folder_per_combination(tmp_path):
    prompts = prompt_file(tmp_path, 2)
    out = subprocess.run([*TTS, "-m", "pipeline.num_inference_steps=1", "batch_size=2", "search.rounds=1,2",
                          "prompts=file", f"prompts.path={prompts}", "shard.count=2", "shard.index=range(2)",
                          f"hydra.sweep.dir={tmp_path / 'sweep'}"], env=ENV, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    runs = sorted(p.parent.name for p in (tmp_path / "sweep").rglob(rf.SUMMARY))
    assert runs == ["search.rounds=1", "search.rounds=2"]
    assert [json.loads((tmp_path / "sweep" / r / rf.SUMMARY).read_text())["candidates"] for r in runs] == [4, 12]


# -- a killed shard -----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_killed_shard_resumes_and_its_rerun_completes_the_study(tmp_path):
    prompts = prompt_file(tmp_path)
    run = tmp_path / "run"
    env = ENV | {"PYTHONPATH": f"{TESTS / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = [*TTS, "verifier._target_=tts_test_plugins.SleepyVerifier", "~verifier.choice_of_metric", *FAST,
            "prompts=file", f"prompts.path={prompts}", "shard.count=2", f"hydra.run.dir={run}"]
    victim = subprocess.Popen([*args, "shard.index=1"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(rf.read_manifest(run)) < 3:
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)  # preempted mid-prompt
    victim.wait()
    killed = rf.read_manifest(run)
    assert 3 <= len(killed) < 12
    first = subprocess.run([*args, "shard.index=0"], env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    assert not (run / rf.SUMMARY).exists() and "the summary is written once" in first.stdout  # shard 1 unfinished
    again = subprocess.run([*args, "shard.index=1"], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and TABLE in again.stdout, again.stderr[-2000:]
    records = rf.read_manifest(run)
    assert len(records) == len({r.key for r in records}) == 4 * 6  # nothing lost, nothing done twice
    assert {r.key for r in killed} <= {r.key for r in records}
    assert json.loads((run / rf.SUMMARY).read_text())["candidates"] == 24


# -- several writers without shards ------------------------------------------------------------------------------

@pytest.mark.slow
def test_a_prompt_another_writer_finished_after_this_one_started_is_not_redone(tmp_path, monkeypatch):
    """This process read the folder before the other writer finished the second prompt; it must read the
    manifest again before searching a prompt it claims."""
    prompts = prompt_file(tmp_path, 2)
    over = [*FAST, "prompts=file", f"prompts.path={prompts}"]
    real, calls = loop.search_prompt, []

    def search_prompt(run):
        calls.append(run.prompt.text)
        if len(calls) == 1:  # while this process works on the first prompt, another writer does the second
            other = tmp_path / "second.txt"
            other.write_text(PROMPTS[1] + "\n")
            run_tts([*FAST, "prompts=file", f"prompts.path={other}"], tmp_path / "run")
        real(run)

    monkeypatch.setattr(loop, "search_prompt", search_prompt)
    summary = run_tts(over, tmp_path / "run")
    records = rf.read_manifest(tmp_path / "run")
    assert len(records) == len({r.key for r in records}) == 12 and summary["candidates"] == 12


@pytest.mark.slow
def test_a_requeued_job_takes_back_a_prompt_its_old_claim_on_another_host_still_holds(tmp_path, monkeypatch):
    """A preempted job's claim (written on node17) still looks alive when SLURM restarts the job on another
    node: the job searches its other prompts, waits, and takes the prompt over once the claim goes stale."""
    prompts = prompt_file(tmp_path, 2)
    run = tmp_path / "run"
    (run / rf.CLAIMS).mkdir(parents=True)
    claim = run / rf.CLAIMS / rf.prompt_hash(PROMPTS[1])
    claim.write_text("node17:4242")
    last_heartbeat = time.time() - rf.CLAIM_STALE_S + 3
    os.utime(claim, (last_heartbeat, last_heartbeat))
    monkeypatch.setattr(loop, "CLAIM_POLL_S", 0.2)
    summary = run_tts([*FAST, "prompts=file", f"prompts.path={prompts}"], run)
    assert summary is not None and summary["candidates"] == 12 and not claim.exists()


def test_the_manifest_tail_reads_each_whole_line_once(tmp_path):
    def record(i):
        return CandidateRecord(prompt="p", prompt_index=0, prompt_hash="h", round=1, index=i, seed=i,
                               noise={"seed": i}, nfe=1.0, status="ok", verifier="v", choice_of_metric="m", score=0.5,
                               image=f"{i}.png")

    tail = rf.ManifestTail(tmp_path)
    assert tail.read() == []
    rf.append_line(tmp_path / rf.MANIFEST, record(0).model_dump_json())
    with open(tmp_path / rf.MANIFEST, "ab") as f:
        f.write(record(1).model_dump_json()[:30].encode())  # a line still being written
    assert [r.index for r in tail.read()] == [0]
    with open(tmp_path / rf.MANIFEST, "ab") as f:
        f.write(record(1).model_dump_json()[30:].encode() + b"\n")
    (tmp_path / rf.MANIFESTS).mkdir()
    rf.append_line(tmp_path / rf.MANIFESTS / "other.jsonl", record(2).model_dump_json(), locked=False)
    assert [r.index for r in tail.read()] == [1, 2] and tail.read() == []


# -- file systems without flock ---------------------------------------------------------------------------------

NO_FLOCK = """import errno, fcntl, os
def _flock(fd, op):
    raise OSError(errno.ENOSYS, os.strerror(errno.ENOSYS))
fcntl.flock = _flock
"""


@pytest.mark.slow
def test_without_flock_shared_mode_is_one_line_and_per_shard_mode_works(tmp_path):
    """A file system whose flock fails (Lustre mounted noflock; ENOSYS), simulated in every process."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_FLOCK)
    env = ENV | {"PYTHONPATH": f"{site}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    prompts = prompt_file(tmp_path)
    common = [*TTS, *FAST, "prompts=file", f"prompts.path={prompts}"]
    out = subprocess.run([*common, f"hydra.run.dir={tmp_path / 'shared'}"], env=env, capture_output=True, text=True,
                         timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 2 and "shard.manifest=per-shard" in text and "Traceback" not in text, text[-2000:]
    run = tmp_path / "lockfree"
    procs = [subprocess.Popen([*common, "shard.manifest=per-shard", "shard.count=2", f"shard.index={i}",
                               f"hydra.run.dir={run}"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert len(list((run / rf.MANIFESTS).glob("*.jsonl"))) == 2 and (run / rf.MANIFEST).read_bytes() == b""
    assert not (run / rf.LOCK).exists() and not (run / rf.CLAIMS).exists()
    records = rf.read_manifest(run)  # merged on read
    assert len(records) == len({r.key for r in records}) == 24
    assert json.loads((run / rf.SUMMARY).read_text())["candidates"] == 24
    assert len(list((run / "collages").glob("*_rounds.png"))) == 4
