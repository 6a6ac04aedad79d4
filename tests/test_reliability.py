"""Reliability of the run folder and the command line: torn and stray manifest lines, short writes and a
full disk, config races, concurrent writers, stale temporary files, corrupt images, secrets, bad prompt
files, Ctrl-C. Each test fails without the guarantee it checks."""
import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import TESTS, compose, run_tts

from tts.core import runfolder as rf
from tts.app.build import build_job
from tts.prompts import PromptSourceError
from tts.core.records import SCHEMA_VERSION, CandidateRecord

FAST = ["pipeline.num_inference_steps=2", "search.rounds=2", "batch_size=2"]
CLI = [sys.executable, "-c", "from tts.app.cli import main; main()"]


def record(i: int, **kw) -> CandidateRecord:
    return CandidateRecord(prompt="p", prompt_index=0, prompt_hash="h", round=1, index=i, seed=i, noise={"seed": i},
                           nfe=1.0, status="ok", verifier="v", choice_of_metric="m", score=0.5, image=f"{i}.png", **kw)


def keys(run: Path) -> list:
    return sorted(r.key for r in rf.read_manifest(run))


# -- the manifest ------------------------------------------------------------------------------------------

def test_an_append_after_a_torn_line_starts_on_a_line_of_its_own(tmp_path):
    rf.append_line(tmp_path / rf.MANIFEST, record(0).model_dump_json())
    with open(tmp_path / rf.MANIFEST, "ab") as f:
        f.write(record(1).model_dump_json()[:40].encode())  # a writer killed mid-line (or a full disk)
    rf.append_line(tmp_path / rf.MANIFEST, record(2).model_dump_json())
    assert [r.index for r in rf.read_manifest(tmp_path)] == [0, 2]


def test_short_writes_are_finished_and_a_failed_write_leaves_no_half_record(tmp_path, monkeypatch):
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data[:7])))  # 7 bytes a call
    rf.append_line(tmp_path / rf.MANIFEST, record(0).model_dump_json())
    assert [r.index for r in rf.read_manifest(tmp_path)] == [0]

    calls = []

    def full_disk(fd, data):
        calls.append(1)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, bytes(data[:20]))

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError):
        rf.append_line(tmp_path / rf.MANIFEST, record(1).model_dump_json())
    monkeypatch.setattr(os, "write", real_write)
    assert (tmp_path / rf.MANIFEST).read_bytes().endswith(b"}\n")  # cut back to the last whole record
    rf.append_line(tmp_path / rf.MANIFEST, record(2).model_dump_json())
    assert [r.index for r in rf.read_manifest(tmp_path)] == [0, 2]


@pytest.mark.slow
def test_a_rerun_after_a_torn_manifest_reaches_the_full_set(tmp_path):
    run_tts(FAST, tmp_path)
    full = keys(tmp_path)
    data = (tmp_path / rf.MANIFEST).read_bytes()
    (tmp_path / rf.MANIFEST).write_bytes(data[:-30])  # the last record torn
    assert len(keys(tmp_path)) == len(full) - 1
    summary = run_tts(FAST, tmp_path)
    assert keys(tmp_path) == full and summary["candidates"] == len(full) == 6


@pytest.mark.parametrize("stray", [b"42", b"null", b"{}", b"[1, 2]", b"\xff\xfe not utf-8", b'{"prompt": '])
def test_stray_lines_are_skipped_with_one_warning_naming_them(stray, tmp_path, caplog):
    for i in range(2):
        rf.append_line(tmp_path / rf.MANIFEST, record(i).model_dump_json())
    with open(tmp_path / rf.MANIFEST, "ab") as f:
        f.write(stray + b"\n")
    rf.append_line(tmp_path / rf.MANIFEST, record(2).model_dump_json())
    with caplog.at_level(logging.WARNING):
        assert [r.index for r in rf.read_manifest(tmp_path)] == [0, 1, 2]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "(3)" in warnings[0]


def test_a_newer_schema_is_a_one_line_error_saying_upgrade(tmp_path):
    line = json.loads(record(0).model_dump_json()) | {"schema_version": SCHEMA_VERSION + 1}
    (tmp_path / rf.MANIFEST).write_text(json.dumps(line) + "\n")
    with pytest.raises(rf.RunFolderError, match="upgrade tts"):
        rf.read_manifest(tmp_path)
    out = subprocess.run([*CLI, *FAST, f"hydra.run.dir={tmp_path}"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "upgrade tts" in out.stderr + out.stdout
    assert "Traceback" not in out.stderr + out.stdout


@pytest.mark.slow
def test_a_folder_with_stray_lines_resumes(tmp_path):
    run_tts(FAST, tmp_path)
    with open(tmp_path / rf.MANIFEST, "ab") as f:
        f.write(b"42\nnull\n{}\n\xff\n")
    summary = run_tts(FAST, tmp_path)
    assert summary["candidates"] == 6 and len(rf.read_manifest(tmp_path)) == 6


# -- config.json, folders, concurrent writers ------------------------------------------------------------

def test_two_runs_started_together_cannot_both_claim_a_folder_with_different_configs(tmp_path, monkeypatch):
    real = rf.atomic_write_json

    def slow(path, obj):
        time.sleep(0.3)  # widen the window between "is there a config?" and writing one
        real(path, obj)

    monkeypatch.setattr(rf, "atomic_write_json", slow)
    outcomes = []

    def start(seed):
        try:
            rf.RunFolder(tmp_path).write_config({"seed": seed}, ("seed",))
            outcomes.append("ran")
        except rf.RunFolderMismatch as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=start, args=(s,)) for s in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[0] == "ran" and "seed: " in sorted(outcomes)[1]


def test_default_run_folders_get_a_unique_suffix():
    code = "from conftest import compose; from tts.app import cli; print(cli._RUN_UID)"
    uids = {subprocess.run([sys.executable, "-c", code], cwd=TESTS, capture_output=True, text=True).stdout.strip()
            for _ in range(2)}
    assert len(uids) == 2 and all(len(u) == 4 for u in uids)
    from omegaconf import OmegaConf

    hydra = OmegaConf.to_container(OmegaConf.load(Path(__file__).parents[1] / "configs" / "config.yaml").hydra)
    assert hydra["run"]["dir"].endswith("_${tts_uid:}") and hydra["sweep"]["dir"].endswith("_${tts_uid:}")


@pytest.mark.slow
def test_two_processes_on_one_folder_share_the_work(tmp_path):
    prompts = tmp_path / "p.txt"
    prompts.write_text("a red circle\na blue square\na green triangle\na yellow circle\n")
    run = tmp_path / "run"
    args = [*CLI, *FAST, "prompts=file", f"prompts.path={prompts}", f"hydra.run.dir={run}"]
    procs = [subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errs
    records = rf.read_manifest(run)
    assert len({r.key for r in records}) == 4 * 6
    assert len(records) == 4 * 6  # nobody did anything twice
    assert len({r.worker for r in records}) == 2  # both took part


def test_a_dead_process_claim_is_taken_over(tmp_path):
    folder = rf.RunFolder(tmp_path)
    (tmp_path / rf.CLAIMS).mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / rf.CLAIMS / "abc").write_text(f"{folder.worker.rpartition(':')[0]}:{dead.stdout.strip()}")
    assert folder.claim("abc") is None
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        (tmp_path / rf.CLAIMS / "def").write_text(f"{folder.worker.rpartition(':')[0]}:{live.pid}")
        assert folder.claim("def") == f"{folder.worker.rpartition(':')[0]}:{live.pid}"
    finally:
        live.kill()


# -- temporary files and images ------------------------------------------------------------------------------

def test_stale_temporary_files_are_removed_on_resume(tmp_path):
    folder = rf.RunFolder(tmp_path)
    legacy = tmp_path / ".x.png.0123456789abcdef0123456789abcdef.tmp"
    dead_pid = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True).stdout.strip()
    mine = rf._tmp_name(tmp_path / "y.png")
    dead = mine.with_name(mine.name.replace(f".{os.getpid()}.", f".{dead_pid}."))
    for p in (legacy, dead, mine):
        p.write_bytes(b"partial")
    folder.clean()
    assert not legacy.exists() and not dead.exists() and mine.exists()  # a live writer's file is left alone


@pytest.mark.slow
def test_corrupt_images_are_regenerated_on_resume(tmp_path):
    run_tts(FAST, tmp_path)
    records = rf.read_manifest(tmp_path)
    victim = tmp_path / records[2].image
    original = victim.read_bytes()
    victim.write_bytes(original[:100])  # truncated PNG
    (tmp_path / records[4].image).unlink()
    run_tts(FAST, tmp_path)
    assert victim.read_bytes() == original  # regenerated, identical (seeded)
    assert (tmp_path / records[4].image).exists()
    assert len(rf.final_records(rf.read_manifest(tmp_path))) == 6


# -- secrets ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("arg,says", [("+verifier.api_key=sk-abcdef123456", "OPENAI_API_KEY"),
                                      ("+verifier.token=abcdefgh12345", "environment")])
def test_a_secret_on_the_command_line_is_refused_before_hydra_writes_anything(arg, says, tmp_path):
    out = subprocess.run([*CLI, "-m", "verifier=openai", arg, f"hydra.sweep.dir={tmp_path}/sweep"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and says in out.stderr and len(out.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "sweep").exists()


def test_url_credentials_are_refused_and_redacted(tmp_path):
    out = subprocess.run([*CLI, "verifier=openai", "verifier.base_url=http://user:KEY123456@127.0.0.1:1/v1",
                          f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "KEY123456" not in out.stderr + out.stdout and not (tmp_path / "run").exists()
    assert rf.redact({"base_url": "https://me:KEY123456@host/v1"}) == {"base_url": f"https://{rf.REDACTED}@host/v1"}


# -- prompt files and interrupted runs --------------------------------------------------------------------------

@pytest.mark.parametrize("name,content,says", [
    ("p.jsonl", b'{"prompt": "a red circle"}\n{"prompt": oops}\n', "p.jsonl:2: not valid JSON"),
    ("p.jsonl", b'{"prompt": "a red circle"}\n[1, 2]\n', "p.jsonl:2: a JSON object with a 'prompt' key expected"),
    ("p.jsonl", b'7\n', "p.jsonl:1: a JSON object"),
    ("p.csv", b"prompt\na red circle\na blue \xff square\n", "p.csv:3: not UTF-8"),
    ("p.txt", b"a red circle\n\xc3\x28\n", "p.txt:2: not UTF-8"),
])
def test_bad_prompt_files_are_one_line_naming_file_and_line(name, content, says, tmp_path):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(PromptSourceError, match=says.replace("[", r"\[").replace("]", r"\]")):
        build_job(compose(["prompts=file", f"prompts.path={tmp_path / name}"]), tmp_path)
    out = subprocess.run([*CLI, "prompts=file", f"prompts.path={tmp_path / name}", f"hydra.run.dir={tmp_path}/run"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and says.split(": ")[0] in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr and not (tmp_path / "run").exists()


def test_only_the_prompts_asked_for_are_read_and_repeats_are_dropped(tmp_path, caplog):
    (tmp_path / "p.jsonl").write_text('{"prompt": "a red circle"}\n{"prompt": "a red circle"}\n'
                                      '{"prompt": "a blue square"}\nnot json at all\n')
    with caplog.at_level(logging.WARNING):
        job = build_job(compose(["prompts=file", f"prompts.path={tmp_path / 'p.jsonl'}", "num_prompts=2"]), tmp_path)
    assert [p.text for p in job.prompts] == ["a red circle", "a blue square"]
    assert any("1 repeated prompt dropped" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_the_rerun_resumes(tmp_path):
    code = ("import errno, tts.core.runfolder as rf; real = rf.save_image; n = [0]\n"
            "def save(path, image):\n"
            "    n[0] += 1\n"
            "    if n[0] > 3: raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
            "    real(path, image)\n"
            "rf.save_image = save\n"
            "from tts.app.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code, *FAST, f"hydra.run.dir={tmp_path}"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 2 and "disk is full" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr
    subprocess.run([*CLI, *FAST, f"hydra.run.dir={tmp_path}"], check=True, capture_output=True, timeout=300)
    assert len(rf.final_records(rf.read_manifest(tmp_path))) == 6


@pytest.mark.slow
def test_ctrl_c_says_where_to_resume_without_a_traceback(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{TESTS / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    args = [*CLI, "verifier._target_=tts_test_plugins.SleepyVerifier", "~verifier.choice_of_metric",
            "pipeline.num_inference_steps=2", "search.rounds=6", "batch_size=2", f"hydra.run.dir={tmp_path}"]
    # SIGINT at its default in the child: a run of the whole suite can leave it ignored in this process (inherited)
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not (tmp_path / rf.MANIFEST).exists():
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert f"hydra.run.dir={tmp_path}" in err and "Traceback" not in out + err
