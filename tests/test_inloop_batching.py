"""Several prompts' in-loop searches driven together (tts.sampling.batching): their steps stacked into shared
denoiser calls give each prompt the search it gets alone.

Ids, seeds, paths and NFEs must be equal; latents, images and scores equal to float rounding (CPU matrix-multiply
kernels sum in an order that depends on the batch size, so a row in a batch of 24 differs from the same row in a
batch of 8 in the last bits, about 1e-6; an image may differ by one pixel level)."""
import dataclasses

import numpy as np
import pytest
import torch
from conftest import run_tts

from tts.core import runfolder as rf
from tts.core.noise import derive_seed
from tts.sampling.batching import StepDriver
from tts.sampling.particles import Engine, drive, sampler_options
from tts.sampling.sampler import Sampler
from tts.search.beam import BeamSearch
from tts.search.evolution import EvolutionSearch
from tts.search.paths import PathsSearch
from tts.search.prune import PruneSearch
from tts.search.refine import RefineSearch
from tts.search.smc import SMCSearch
from tts.search.tree import TreeSearch
from tts.search._steps import InLoopStrategy

PROMPTS = ["two red circles", "a blue square above a green triangle", "a small yellow circle"]
STRATEGIES = {
    "prune": lambda seed_fn: PruneSearch(seed_fn, nfe_budget=120, prune_at=[2, 5]),
    "smc": lambda seed_fn: SMCSearch(seed_fn, nfe_budget=60, ess_threshold=1.0),
    "paths": lambda seed_fn: PathsSearch(seed_fn, nfe_budget=100, start_step=5, forward=1, backward=3),
    "beam": lambda seed_fn: BeamSearch(seed_fn, nfe_budget=80, width=2, branching=4, branch_at=[3, 6]),
    "evolution": lambda seed_fn: EvolutionSearch(seed_fn, nfe_budget=100, population=6, generations=2,
                                                 preview_step=4, finals=4),
    "refine": lambda seed_fn: RefineSearch(seed_fn, nfe_budget=60),
    "tree": lambda seed_fn: TreeSearch(seed_fn, nfe_budget=60),
}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def gen():
    from tts.pipelines import PipelineSpec
    from tts.sampling.generate import Generator

    spec = PipelineSpec(name="shapes", model_id="tts://shapes-model", device="cpu", height=32, width=32,
                        num_inference_steps=10, guidance_scale=1.5)  # guidance on: negative rows stacked too
    return Generator(spec.load(), spec)


class Redness:
    """A preview scorer (larger is better) that keeps what it scored."""

    def __init__(self):
        self.seen = []

    def __call__(self, images, info):
        scores = [float((a := np.asarray(im, dtype=float) / 255)[..., 0].mean() - a[..., 1:].mean()) for im in images]
        self.seen.append((info.step, info.ids, info.label, scores))
        return scores


class Counting(Engine):
    """The real engine, counting the advances it runs itself (each one sampler run)."""

    advances = 0

    def advance(self, p, until=None):
        self.advances += int((self.steps if until is None else until) > p.step)
        return super().advance(p, until)


def engines(gen, name):
    """Per prompt: (engine, strategy, scorer), seeds derived from the prompt as tts-search derives them."""
    out = []
    for k, prompt in enumerate(PROMPTS):
        strategy = STRATEGIES[name](lambda r, i, purpose, k=k: derive_seed(3, k, r, i, purpose))
        scorer = Redness()
        out.append((Counting(Sampler(gen, sampler_options(strategy.eta)), prompt, scorer, strategy.nfe_budget),
                    strategy, scorer))
    return out


def outcome(engine, scorer, result):
    finals = engine.finish(result)
    return {"ids": [f.id for f in finals], "parents": [f.parent for f in finals], "paths": [f.path for f in finals],
            "nfe": [(f.nfe_path, f.nfe_shared, f.nfe) for f in finals], "spent": engine.spent,
            "previews": (engine.preview_decodes, engine.preview_scores),
            "scored": [(step, ids, label) for step, ids, label, _ in scorer.seen],
            "scores": [s for *_, scores in scorer.seen for s in scores],
            "images": [np.asarray(f.image, dtype=int) for f in finals]}


def assert_same_search(batched, alone):
    exact = ("ids", "parents", "paths", "nfe", "spent", "previews", "scored")
    assert {k: batched[k] for k in exact} == {k: alone[k] for k in exact}
    assert np.allclose(batched["scores"], alone["scores"], rtol=0, atol=1e-3)  # a pixel level is 1/255 of a mean
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(batched["images"], alone["images"]))


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_three_prompts_batched_search_as_each_prompt_alone(gen, name):
    alone, engines_alone = [], engines(gen, name)
    for engine, strategy, scorer in engines_alone:
        assert isinstance(strategy, InLoopStrategy)
        alone.append(outcome(engine, scorer, drive(strategy.requests(engine), engine)))
    together = engines(gen, name)
    done = []
    driver = StepDriver(batch_size=8)
    results = driver.run([(e, s.requests(e)) for e, s, _ in together], lambda k, result: done.append(k))
    assert sorted(done) == [0, 1, 2]
    for (engine, _, scorer), result, one in zip(together, results, alone):
        assert_same_search(outcome(engine, scorer, result), one)
    assert driver.calls < sum(e.advances for e, _, _ in engines_alone)  # prompts shared denoiser calls


def test_rows_stacked_from_several_prompts_agree_with_each_prompt_alone_to_float_rounding(gen):
    """Why the records compare exactly but latents only closely: the denoiser's first Linear already differs
    in the last bits between batch shapes."""
    from tts.core.noise import fresh
    from tts.sampling.batching import merge, split

    sampler = Sampler(gen, sampler_options(1.0))
    trajs = [sampler.start(p, [fresh(10 * k + i) for i in range(3)]) for k, p in enumerate(PROMPTS)]
    seeds = lambda k: (lambda i: [derive_seed(k, r, i) for r in range(3)])  # noqa: E731
    alone = [sampler.run(t, until=4, seeds=seeds(k)) for k, t in enumerate(trajs)]
    together = split(sampler.run(merge(trajs), until=4, seeds=lambda i: [s for k in range(3) for s in seeds(k)(i)]),
                     trajs)
    for a, b in zip(alone, together):
        assert torch.allclose(a.latents, b.latents, rtol=0, atol=1e-5) and torch.equal(a.nfe, b.nfe)
        assert a.spent == b.spent and b.step == 4


def test_a_strategy_error_reaches_the_strategy_at_its_yield(gen):
    """A request over the budget raises BudgetExceeded where the strategy yielded it, as engine.advance would."""
    from tts.sampling.particles import Advance, BudgetExceeded

    def greedy(engine):
        p = engine.start([{"kind": "fresh", "seed": 1}] * 2)
        try:
            yield Advance(p)
        except BudgetExceeded:
            return "refused"

    engine = Engine(Sampler(gen, sampler_options(0.0)), PROMPTS[0], Redness(), nfe_budget=15)
    assert StepDriver(4).run([(engine, greedy(engine))]) == ["refused"] and engine.spent == 0


# --- tts-search end to end --------------------------------------------------------------------------------------

FAST = ["pipeline.num_inference_steps=4", "prompts=shapes-bench", "num_prompts=3"]


def folder(run):
    records = sorted(rf.final_records(rf.read_manifest(run)), key=lambda r: r.key)
    searches = rf.read_searches(run)
    return ([(r.key, r.noise, r.nfe, r.status, r.path.model_dump()) for r in records],
            [r.score for r in records], {k: (s.candidates, s.nfe, s.preview_scores) for k, s in searches.items()})


@pytest.mark.parametrize("search", ["smc", "prune"])
def test_tts_search_batches_the_prompts_of_an_in_loop_study_with_the_same_records(search, tmp_path, monkeypatch):
    import tts.run.inloop as inloop

    drivers = []

    class Watched(StepDriver):
        def run(self, searches, on_done=None):
            drivers.append(len(searches))
            return super().run(searches, on_done)

    monkeypatch.setattr(inloop, "StepDriver", Watched)
    overrides = FAST + [f"search={search}", "search.nfe_budget=32"]
    run_tts(overrides + ["batch_size=8"], tmp_path / "batched")
    assert drivers == [3]  # the three prompts searched together
    run_tts(overrides + ["batch_size=1"], tmp_path / "alone")
    assert drivers == [3]  # batch_size 1: one prompt at a time
    batched, alone = folder(tmp_path / "batched"), folder(tmp_path / "alone")
    assert batched[0] == alone[0] and batched[2] == alone[2]
    assert np.allclose(batched[1], alone[1], rtol=0, atol=1e-3)
    again = folder(tmp_path / "batched")
    run_tts(overrides + ["batch_size=8"], tmp_path / "batched")  # a rerun of a finished study does nothing
    assert folder(tmp_path / "batched") == again and drivers == [3]


@pytest.mark.slow
def test_kill_9_mid_batched_study_then_rerun_gives_the_uninterrupted_records(tmp_path):
    """Killed after the first of three prompts searched together was recorded; the rerun searches the other two
    together (a prompt half-recorded keeps its records) and ends with the uninterrupted run's records."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from conftest import TESTS

    env = dict(os.environ, PYTHONPATH=f"{TESTS / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    base = [sys.executable, "-c", "from tts.app.cli import main; main()", *FAST, "search=smc", "search.nfe_budget=24",
            "batch_size=8", "verifier._target_=tts_test_plugins.SleepyVerifier", "~verifier.choice_of_metric"]
    subprocess.run([*base, f"hydra.run.dir={tmp_path / 'whole'}"], env=env, check=True, capture_output=True,
                   timeout=600)
    run = tmp_path / "killed"
    proc = subprocess.Popen([*base, f"hydra.run.dir={run}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(rf.read_searches(run)) < 1:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(rf.read_searches(run)) == 1  # the others were being verified (0.3 s a batch) when killed
    subprocess.run([*base, f"hydra.run.dir={run}"], env=env, check=True, capture_output=True, timeout=600)
    killed, whole = folder(run), folder(tmp_path / "whole")
    assert killed[0] == whole[0] and killed[2] == whole[2]
    assert np.allclose(killed[1], whole[1], rtol=0, atol=1.0)  # brightness: a mean of pixel levels
    assert len(rf.read_manifest(run)) == len(rf.read_manifest(tmp_path / "whole"))  # nothing recorded twice
