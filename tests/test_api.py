"""The Python API (tts.api, docs/python-api.md): the doc's examples run, and the API keeps its promises: one or
several prompts, a function as verifier, the CLI's run folder (same records, resumable both ways), nothing
global left behind, one-line errors with the closest name."""
from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

import pytest

from conftest import run_tts

DOC = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"
PROMPT = "a red circle left of a blue square"


@pytest.fixture(scope="module")
def tts_module():
    import tts

    return tts


@pytest.fixture(scope="module")
def pipe(tts_module):
    return tts_module.load_pipeline("shapes")


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)


def test_doc_examples_run(tmp_path, monkeypatch, capsys):
    """Every python block of docs/python-api.md, in order, in one namespace (in a scratch working directory)."""
    monkeypatch.chdir(tmp_path)
    blocks = _blocks()
    assert len(blocks) >= 5
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    out = capsys.readouterr().out.splitlines()
    assert "True" in out  # load_run's best is the search's best
    assert "14" in out    # the resumed folder: 2 + 4 + 8 candidates
    assert any(line.startswith("unknown search 'smcc'; did you mean 'smc'?") for line in out)


def _score_fn(prompts, images):
    """Mean red of the image: a plain function as a verifier."""
    return [sum(p[0] for p in im.getdata()) / (im.width * im.height) for im in images]


def test_list_of_prompts_and_a_function_verifier(tts_module, pipe):
    texts = ["a red circle", "a blue square", "a green triangle"]
    results = tts_module.search(pipe, texts, verifier=_score_fn, strategy="random", rounds=2)
    assert [r.prompt for r in results] == texts
    for r in results:
        assert len(r.candidates) == 2 + 4 and r.nfe == 6 * 10 and r.run_dir is None
        for c in r.candidates:  # each score is the function's value on the image the result holds
            assert c.score == pytest.approx(_score_fn([r.prompt], [c.image])[0])
        assert r.best.score == max(c.score for c in r.candidates)
    assert len({r.best.seed for r in results}) == 3


def test_lower_is_better_function_picks_the_smallest(tts_module, pipe):
    r = tts_module.search(pipe, "a red circle", verifier=_score_fn, verifier_options={"lower_is_better": True},
                          strategy="random", rounds=2)
    assert r.best.score == min(c.score for c in r.candidates) < max(c.score for c in r.candidates)


def _records(folder):
    from tts.core import runfolder as rf

    return [r.model_dump(exclude={"timings", "worker"}) for r in rf.read_manifest(folder)]


def test_run_dir_is_the_cli_run_folder_and_resumes_both_ways(tts_module, pipe, tmp_path):
    api_dir, cli_dir = tmp_path / "api", tmp_path / "cli"
    result = tts_module.search(pipe, PROMPT, strategy="random", rounds=2, seed=3, run_dir=api_dir)
    run_tts(["search.rounds=2", "seed=3"], cli_dir)
    assert _records(api_dir) == _records(cli_dir) and len(_records(api_dir)) == 6
    assert result.run_dir == api_dir and result.best.path.parent == api_dir
    # the CLI resumes the API's folder (nothing regenerated) and extends it; the API resumes that in turn
    run_tts(["search.rounds=3", "seed=3"], api_dir)
    assert _records(api_dir) == _records(cli_dir) + _records(api_dir)[6:] and len(_records(api_dir)) == 14
    again = tts_module.search(pipe, PROMPT, strategy="random", rounds=3, seed=3, run_dir=api_dir)
    assert len(_records(api_dir)) == 14 and len(again.candidates) == 14
    run = tts_module.load_run(api_dir)
    assert run.summary["prompts"][PROMPT]["seed"] == again.best.seed == run.best()[PROMPT].seed
    with pytest.raises(ValueError, match="seed"):  # another search in the same folder is refused
        tts_module.search(pipe, PROMPT, strategy="random", rounds=3, seed=4, run_dir=api_dir)


def test_two_calls_agree_and_leave_nothing_global(tts_module, pipe, tmp_path, monkeypatch, capfd):
    from hydra.core.global_hydra import GlobalHydra

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cwd, handlers = os.getcwd(), (list(logging.getLogger().handlers), list(logging.getLogger("tts").handlers))
    first = tts_module.search(pipe, PROMPT, strategy="smc", nfe_budget=80, seed=1)
    second = tts_module.search(pipe, PROMPT, strategy="smc", nfe_budget=80, seed=1)
    assert [c.record.noise for c in first.candidates] == [c.record.noise for c in second.candidates]
    assert [c.score for c in first.candidates] == [c.score for c in second.candidates] and first.nfe <= 80
    assert list(first.best.image.getdata()) == list(second.best.image.getdata())
    assert os.getcwd() == cwd
    assert (list(logging.getLogger().handlers), list(logging.getLogger("tts").handlers)) == handlers
    assert not GlobalHydra.instance().is_initialized()
    assert list(scratch.iterdir()) == []  # the temporary run folders are gone
    err = capfd.readouterr().err
    assert "img" not in err and "prompts" not in err  # no progress bar unless asked
    tts_module.search(pipe, PROMPT, strategy="random", rounds=1, progress=True)
    assert "verified 2" in capfd.readouterr().err


@pytest.mark.parametrize("kwargs, message", [
    ({"strategy": "smcc"}, "unknown search 'smcc'; did you mean 'smc'?"),
    ({"verifier": "shape"}, "unknown verifier 'shape'; did you mean 'shapes'?"),
    ({"strategy": "random", "roundz": 2}, "unknown option 'roundz'; did you mean 'rounds'? (strategy options: base, "),
    ({"strategy_options": {"roundz": 2}}, "unknown option 'roundz' for search 'random'; did you mean 'rounds'?"),
    ({"verifier_options": {"choice_of_metric": "corect"}}, "did you mean 'correct'?"),
    ({"strategy": "smc", "nfe_budget": 5}, "pays for less than one image"),
    ({"seed": -1}, "seed must be a non-negative integer"),
    ({"strategy": object()}, "strategy must be a name"),
])
def test_bad_input_is_one_line(tts_module, pipe, kwargs, message):
    with pytest.raises(ValueError) as e:
        tts_module.search(pipe, "a red circle", **kwargs)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_bad_pipeline_name_and_setting(tts_module):
    with pytest.raises(ValueError, match="unknown pipeline 'shape'; did you mean 'shapes'"):
        tts_module.load_pipeline("shape")
    with pytest.raises(ValueError, match="did you mean pipeline.num_inference_steps"):
        tts_module.load_pipeline("shapes", num_inference_step=3)


def test_an_adopted_pipeline_searches_as_its_preset(tts_module, pipe):
    """A diffusers pipeline object the caller built, with the preset's settings, gives the preset's candidates."""
    from tts.pipelines.models import manager
    from tts.pipelines import resolve_model_path
    from tts.world.pipeline import ShapesPipeline

    mine = ShapesPipeline.from_pretrained(resolve_model_path("tts://shapes-model"))
    adopted = tts_module.load_pipeline(mine, num_inference_steps=10, guidance_scale=1.0)
    assert adopted.pipe is mine and adopted.config["height"] == 32
    a = tts_module.search(adopted, PROMPT, strategy="random", rounds=2)
    b = tts_module.search(pipe, PROMPT, strategy="random", rounds=2)
    assert [(c.seed, c.score) for c in a.candidates] == [(c.seed, c.score) for c in b.candidates]
    assert all(r.loaded.pipe is not mine for r in manager().resident())  # the manager keeps no reference


def test_a_strategy_class_and_a_verifier_instance(tts_module, pipe):
    import functools

    from tts.search.random import RandomSearch
    from tts.verifiers.shapes import ShapesVerifier

    by_class = tts_module.search(pipe, PROMPT, verifier=ShapesVerifier("correct"),
                                 strategy=functools.partial(RandomSearch, schedule="constant", per_round=3), rounds=2)
    by_name = tts_module.search(pipe, PROMPT, verifier="shapes", choice_of_metric="correct",
                                strategy="random", schedule="constant", per_round=3, rounds=2)
    assert [(c.seed, c.score) for c in by_class.candidates] == [(c.seed, c.score) for c in by_name.candidates]
    assert len(by_class.candidates) == 6
    with pytest.raises(ValueError, match="pass the strategy's class"):
        tts_module.search(pipe, PROMPT, strategy=RandomSearch(seed_fn=lambda r, i, p: 0))


def test_load_run_refuses_a_folder_that_is_no_run(tts_module, tmp_path):
    with pytest.raises(ValueError, match="not a run folder"):
        tts_module.load_run(tmp_path)


def test_import_tts_is_cheap():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import sys, tts; print('torch' in sys.modules, 'hydra' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_load_run_reads_a_folder_of_round_jsons_only(tts_module, pipe, tmp_path):
    """A tt-scale-flux folder has no manifest: each round's best comes from its round JSON, as tts-report reads it."""
    from tts.core import runfolder as rf

    result = tts_module.search(pipe, PROMPT, strategy="random", rounds=2, run_dir=tmp_path)
    (tmp_path / rf.MANIFEST).unlink()
    run = tts_module.load_run(tmp_path)
    assert run.source == "round JSONs" and len(run.records) == 6
    assert run.best()[PROMPT].score == result.best.score and run.best()[PROMPT].seed == result.best.seed
