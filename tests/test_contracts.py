"""The typed contracts (tts.search.protocols, tts.sampling.ImageGenerator): strategies are told oriented scores
while the run folder keeps the verifier's; a strategy's traits, its budget and its seeds are read in one place;
the safety screen is a generator around a generator; one NFE estimate, which the shapes model's measured count
matches."""
from __future__ import annotations

import json

import pytest
from conftest import compose

from tts.core import runfolder as rf
from tts.core.noise import fresh
from tts.core.records import SafetyRecord
from tts.pipelines import PipelineSpec
from tts.pipelines.nfe import nfe_per_image
from tts.run.safety import SHOT_KEY, Safety, Screened, shots_of
from tts.sampling import ImageGenerator
from tts.sampling.generate import make_generator
from tts.search.protocols import AskTellStrategy, Budget, make_strategy, traits

PROMPT = "a red circle left of a blue square"


class Recorder:
    """Two rounds of three fresh noises; keeps what it is told (class-level, as tts builds one per prompt)."""

    told: list = []

    def __init__(self, seed_fn, context=None, nfe_budget=None):
        self.seed_fn, self.nfe_budget, self.round, self.best = seed_fn, nfe_budget, 0, None

    def ask(self):
        if self.round == 2:
            return []
        self.round += 1
        return [fresh(self.seed_fn(self.round, i, "fresh")) for i in range(3)]

    def tell(self, candidates):
        Recorder.told += candidates
        for c in candidates:
            self.best = c if c.beats(self.best) else self.best


def test_strategies_are_told_oriented_scores_and_the_run_folder_keeps_the_verifiers(tmp_path):
    import tts
    from tts_test_components import Darkness

    Recorder.told = []
    tts.search("shapes", PROMPT, verifier=Darkness(), strategy=Recorder, run_dir=tmp_path)
    records = {(r.round, r.index): r for r in rf.final_records(rf.read_manifest(tmp_path))}
    told = [c for c in Recorder.told if c.record is not None]  # the loop's (and the study's replay); not tts-plan's
    assert {(c.round, c.index) for c in told} == set(records) and len(records) == 6
    raw = [records[(c.round, c.index)].score for c in told]
    assert len(set(raw)) > 1
    assert [c.score for c in told] == [-s for s in raw]  # lower is better: told negated, so larger wins
    assert [c.metric_score for c in told] == raw and not any(c.metric_direction for c in told)
    for k in (1, 2):  # the round JSON's global best is the lowest luminance so far, as the verifier gave it
        (doc,) = [json.loads(p.read_text()) for p in tmp_path.glob(f"{rf.prompt_stem(PROMPT)}_i@{k}_s@*.json")]
        assert doc["global_best_score"] == min(r.score for (rd, _), r in records.items() if rd <= k)


@pytest.mark.parametrize("name, expected", [
    ("random", {"independent_rounds": True}),
    ("zero-order", {}),
    ("human-preference", {"asks_a_person": True, "interactive": True}),  # the terminal front-end asks on the console
    ("smc", {"in_loop": True}),
])
def test_the_traits_of_the_shipped_strategies(name, expected):
    from tts.app.build import instantiate

    strategy = make_strategy(instantiate(compose([f"search={name}", "search.nfe_budget=200"]).search, "search"))
    kind = traits(strategy)
    flags = {k: getattr(kind, k) for k in ("in_loop", "asks_a_person", "interactive", "independent_rounds")}
    assert {k for k, v in flags.items() if v} == set(expected)
    assert isinstance(strategy, AskTellStrategy) is (name != "smc")
    assert kind.budget == Budget(200.0)


def test_the_job_owns_the_budget(tmp_path):
    from tts.app.build import build_job
    from tts.app.errors import ConfigError
    from tts.run.job import SearchJob

    job = build_job(compose(["search.nfe_budget=40", "pipeline.num_inference_steps=10"]), tmp_path)
    assert job.budget == Budget(40.0)
    again = SearchJob(job.pipeline, job.verifier, job.search_factory, job.prompts, tmp_path)  # derived when not given
    assert again.budget == job.budget and build_job(compose([]), tmp_path).budget == Budget(None)
    nfe, how = nfe_per_image(job.pipeline)
    assert Budget(nfe - 1).shortfall(nfe, how, "shapes", key="nfe_budget").startswith(
        f"nfe_budget={nfe - 1:g} pays for less than one image ({nfe:g} NFEs per image on shapes")
    assert Budget(nfe).shortfall(nfe, how, "shapes") is None and Budget().shortfall(nfe, how, "shapes") is None
    with pytest.raises(ConfigError, match=r"search.nfe_budget=5 pays for less than one image"):
        build_job(compose(["search.nfe_budget=5", "pipeline.num_inference_steps=10"]), tmp_path)


def _spec(**kw) -> PipelineSpec:
    return PipelineSpec(name="shapes", model_id="tts://shapes-model", height=32, width=32, num_inference_steps=2, **kw)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_one_nfe_estimate_matches_what_the_shapes_model_counts(guidance):
    spec = _spec(guidance_scale=guidance)
    gen = make_generator(spec)
    try:
        _, measured, _ = gen.generate(PROMPT, [fresh(1), fresh(2)])
    finally:
        gen.close()
    assert nfe_per_image(spec)[0] == measured == 2 * (2 if guidance > 1 else 1)


def test_the_safety_screen_is_a_generator_around_a_generator():
    gen = make_generator(_spec(guidance_scale=1.0))
    try:
        screened = Safety().wrap(gen, "shapes")
        assert isinstance(screened, Screened) and isinstance(screened, ImageGenerator) and isinstance(gen, ImageGenerator)
        assert screened.latent_shape == gen.latent_shape
        lineages = [fresh(3), fresh(4)]
        images, nfe, seconds = screened.generate(PROMPT, lineages)
        assert all(SHOT_KEY in im.info for im in images)
        shots = shots_of(images, nfe, seconds)
        assert [s.safety for s in shots] == [SafetyRecord(nsfw=False, black=False, pipeline="shapes")] * 2
        assert [s.nfe for s in shots] == [nfe, nfe] and sum(s.seconds for s in shots) == pytest.approx(seconds)
        assert not any(SHOT_KEY in im.info for im in images)  # read once, never saved into a PNG
        plain, nfe2, _ = gen.generate(PROMPT, lineages)  # the screen changes no pixel
        assert nfe2 == nfe and [im.tobytes() for im in plain] == [s.image.tobytes() for s in shots]
        assert [s.safety for s in shots_of(plain, nfe2, 1.0)] == [None, None]  # an unscreened batch: no record
    finally:
        gen.close()
