"""A newcomer's first commands (issue 27): failed runs exit non-zero in one line, quoting is named, typos in a
``_target_`` get "did you mean", errors read ``error: ...``, refused runs leave nothing, ``threads=``, and the
next steps after a run."""
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import TESTS, compose

from tts.core import threads as th
from tts.app.build import build_job
from tts.app.errors import ConfigError
from tts.app.overrides import check_overrides, quoted

ROOT = TESTS.parent
BAD_VERIFIER = '''
from tts.core.records import MetricScore
from tts.verifiers.base import Verifier


class Positional(Verifier):
    """The README's old recipe: MetricScore takes keywords only, so every candidate fails."""
    name = "positional"
    metrics = ("x",)

    def score(self, prompts, images):
        return [{"x": MetricScore(1.0, "why")} for _ in images]


class FirstBatchFails(Verifier):
    name = "first-fails"
    metrics = ("x",)
    calls = 0

    def score(self, prompts, images):
        FirstBatchFails.calls += 1
        if FirstBatchFails.calls == 1:
            raise ConnectionError("service unavailable (503)")
        return [{"x": MetricScore(score=1.0)} for _ in images]


class NotAVerifier:
    pass
'''


def tts_search(args, cwd, timeout=300):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "tts", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def user_dir(tmp_path):
    (tmp_path / "my_verifiers.py").write_text(textwrap.dedent(BAD_VERIFIER))
    return tmp_path


def test_a_run_with_every_candidate_failed_exits_1_in_one_line_without_a_table(user_dir):
    out = tts_search(["verifier=custom", "verifier._target_=my_verifiers.Positional", "search.rounds=1",
                      "pipeline.num_inference_steps=2", "hydra.run.dir=run"], user_dir)
    assert out.returncode == 1, out.stderr[-2000:]
    assert "| group" not in out.stdout and "|---" not in out.stdout
    errors = [line for line in out.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0] == out.stderr.strip().splitlines()[-1]
    assert errors[0].startswith("error: no candidate was verified: 2 of 2 failed (first: TypeError: ")
    assert f"hydra.run.dir={user_dir / 'run'}" in errors[0] and "next:" not in out.stdout
    assert "[ERROR] - no candidate was verified" in (user_dir / "run" / "tts-search.log").read_text()


def test_partial_failure_is_counted_in_the_last_line_after_the_next_steps(user_dir):
    out = tts_search(["verifier=custom", "verifier._target_=my_verifiers.FirstBatchFails", "search.rounds=1",
                      "batch_size=1", "verify_concurrency=1", "pipeline.num_inference_steps=2", "hydra.run.dir=run"],
                     user_dir)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    run = user_dir / "run"
    assert lines[-1] == (f"1 of 2 candidates failed (first: ConnectionError: service unavailable (503)); rerun the "
                         f"same command with hydra.run.dir={run} to retry only those")
    assert f"next: tts-collage {run}" in out.stdout and f"tts-report {run}" in out.stdout
    assert "| all | 1 | 1.000 |" in out.stdout


@pytest.mark.parametrize("prompt,shown", [
    ("a red circle, a blue square and a green triangle", "\"prompt='a red circle, a blue square and a green triangle'\""),
    ("a dog's toy", '"prompt=\\"a dog\'s toy\\""'),
])
def test_commas_and_apostrophes_are_refused_naming_the_quoting_that_works(prompt, shown, tmp_path):
    with pytest.raises(ConfigError, match="quote") as e:
        check_overrides([f"prompt={prompt}"])
    assert shown in str(e.value) and quoted(f"prompt={prompt}") == shown
    # the quoting it names, typed into a shell, reaches the config as the prompt
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(f"{sys.executable} -m tts --cfg job {shown}", shell=True, cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    import yaml

    assert yaml.safe_load(out.stdout)["prompt"] == prompt
    assert check_overrides(["-m", "prompt=a,b"]) == ["-m", "prompt=a,b"]  # a sweep under -m is left alone


def test_a_typo_in_a_target_is_one_error_line_with_did_you_mean_and_leaves_no_outputs(user_dir):
    out = tts_search(["verifier._target_=tts.verifiers.shapes.ShapeVerifier"], user_dir, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "error: verifier._target_='tts.verifiers.shapes.ShapeVerifier' cannot be imported: tts.verifiers.shapes has "
        "no 'ShapeVerifier'; did you mean 'tts.verifiers.shapes.ShapesVerifier'?"]
    assert not re.search(r"\[\d{4}-\d\d-\d\d", out.stdout + out.stderr)  # no log-record prefix
    assert not (user_dir / "outputs").exists()
    (user_dir / "outputs").mkdir()  # a root that was there before is kept
    out = tts_search(["seed=-1"], user_dir, timeout=120)
    assert out.returncode == 2 and out.stderr.strip() == "error: seed must be a non-negative integer, got -1"
    assert (user_dir / "outputs").is_dir() and not list((user_dir / "outputs").iterdir())


def test_a_class_that_is_not_a_verifier_gets_the_documented_line(user_dir, monkeypatch):
    monkeypatch.syspath_prepend(str(user_dir))
    with pytest.raises(ConfigError) as e:
        build_job(compose(["verifier=custom", "verifier._target_=my_verifiers.NotAVerifier"]), user_dir / "run")
    assert str(e.value) == ("verifier._target_='my_verifiers.NotAVerifier' is a NotAVerifier, not a "
                            "tts.verifiers.base.Verifier subclass (see verifiers/example_custom.py)")


def test_threads_sets_torchs_threads_before_the_run_and_auto_is_the_cores_this_process_may_use(tmp_path, monkeypatch):
    import torch

    from conftest import run_tts

    before = torch.get_num_threads()
    try:
        run_tts(["threads=2", "search.rounds=1", "pipeline.num_inference_steps=2"], tmp_path)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert th.resolve("auto") == len(os.sched_getaffinity(0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert th.resolve("auto") == 3 and th.resolve(5) == 5
    with pytest.raises(ConfigError, match="threads must be a positive integer or auto, got 0"):
        run_tts(["threads=0"], tmp_path / "refused")


def _tasks(root: Path, stats: list[tuple[int, int]]) -> Path:
    for i, (run, wait) in enumerate(stats):
        (root / str(i)).mkdir(parents=True, exist_ok=True)
        (root / str(i) / "schedstat").write_text(f"{run} {wait} 7\n")
    return root


def test_the_wait_hint_reads_the_kernels_run_and_wait_times(tmp_path):
    s = 1_000_000_000
    start = th.schedstat(_tasks(tmp_path / "a", [(1 * s, 0), (1 * s, 0)]))
    waited = th.schedstat(_tasks(tmp_path / "b", [(4 * s, 9 * s), (3 * s, 8 * s)]))
    busy = th.schedstat(_tasks(tmp_path / "c", [(9 * s, 1 * s), (9 * s, 1 * s)]))
    assert (waited - start) == th.SchedStat(5 * s, 17 * s)
    hint = th.wait_hint(start, waited, 4, 12.0)
    assert hint.startswith("note: this run's threads waited 17 s for a CPU core and ran 5 s (wall 12 s") and \
        "try threads=1 (this run: threads=4)" in hint
    assert th.wait_hint(start, busy, 4, 12.0) is None  # ran more than it waited
    assert th.wait_hint(None, waited, 4, 12.0) is None  # not measured: no hint
    here = th.schedstat()
    if sys.platform.startswith("linux") and here is not None:
        assert here.run_ns > 0 and here.wait_ns >= 0
