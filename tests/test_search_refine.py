"""search=refine (tts.search.refine): fresh finals and late refinements of the best, a wave at a time, within
the budget, replayable; and search.stop_at in the loop (Engine stop), alone and with prompts driven together."""
import numpy as np
import pytest
from test_search_prune_paths_beam import CountingSampler, gen, one_thread  # noqa: F401 - fixtures: the shapes model, one thread

from tts.core.noise import derive_seed
from tts.sampling.batching import StepDriver
from tts.sampling.particles import Engine, drive, replay_path, sampler_options
from tts.sampling.sampler import Sampler
from tts.search.refine import RefineSearch

PROMPT = "two red circles"


def seed_fn(r, i, p):
    return derive_seed(7, r, i, p)


class Recorder(Engine):
    """The real Engine, recording each Score request's rows and scores."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.log = []

    def score(self, p, label=""):
        scores = super().score(p, label)
        self.log.append((label, p.step, list(p.ids), scores))
        return scores


def red(images, info):
    """A cheap score: the mean red channel (larger is better)."""
    return [float(np.asarray(im, dtype=float)[..., 0].mean()) for im in images]


def engine(gen, budget=None, stop=None, scorer=red):
    return Recorder(Sampler(gen, sampler_options(0.0)), PROMPT, scorer, budget, stop)


def test_bad_options_fail_up_front_naming_the_setting():
    with pytest.raises(ValueError, match="search.children"):
        RefineSearch(seed_fn, children=0)
    with pytest.raises(ValueError, match="search.renoise_to"):
        RefineSearch(seed_fn, renoise_to=1.5)
    with pytest.raises(ValueError, match="search.patience"):
        RefineSearch(seed_fn, patience=-1)


def test_waves_refine_the_best_final_so_far_within_the_budget_and_replay(gen):
    strategy = RefineSearch(seed_fn, nfe_budget=60, fresh=1, children=2, renoise_to=0.8)
    e = engine(gen, 60)
    finals = e.finish(drive(strategy.requests(e), e))
    # four waves of one fresh image (10 NFEs) and two refinements of the last two steps (2 x 2): 56 NFEs; a fifth
    # fresh image does not fit, two more refinements do
    assert e.spent == 60 and len(finals) == 4 + 10
    assert [label for label, *_ in e.log] == [f"{k} {w}" for w in range(1, 5) for k in ("fresh", "refine")] + ["refine 5"]
    parents = {f.id: f.parent for f in finals}
    refined, scored = set(), {}
    for label, step, ids, scores in e.log:
        assert step == 10  # every scored row is a final
        if label.startswith("refine"):
            parent = parents[ids[0]]
            assert scored[parent] == max(s for i, s in scored.items() if i not in refined)  # the best unrefined
            refined.add(parent)
        scored.update(zip(ids, scores))
    sampler = Sampler(gen, sampler_options(0.0))
    for f in finals:
        renoised = [op["to"] for op in f.path if op["op"] == "renoise"]
        assert set(renoised) <= {8} and f.nfe_path == 10 + 2 * len(renoised)
        again = np.asarray(replay_path(sampler, PROMPT, f.path), dtype=int)
        assert np.abs(again - np.asarray(f.image, dtype=int)).max() <= 1
    assert sum(f.nfe for f in finals) == pytest.approx(e.spent)
    assert len({np.asarray(f.image).tobytes() for f in finals}) > 7  # refinements differ from their parent


def test_without_a_budget_it_makes_candidates_finals():
    strategy = RefineSearch(seed_fn, candidates=7, fresh=1, children=2)
    e = Engine(CountingSampler(10, False, 0.0), PROMPT, lambda ims, info: list(ims))
    finals = e.finish(drive(strategy.requests(e), e))
    assert len(finals) == 7 and e.spent == 3 * 10 + 4 * 2


def test_patience_ends_a_search_that_stopped_improving():
    flat = lambda ims, info: [0.0] * len(ims)  # noqa: E731 - nothing ever improves on the first final
    e = Engine(CountingSampler(10, False, 0.0), PROMPT, flat, 500)
    finals = e.finish(drive(RefineSearch(seed_fn, nfe_budget=500, patience=14).requests(e), e))
    assert e.spent == 28 and len(finals) == 6  # the first wave sets the best (14 NFEs); one more, then it gives up


def test_stop_at_ends_at_the_first_scored_final_that_reaches_it(gen):
    scores = []
    full = engine(gen, 140)
    whole = full.finish(drive(RefineSearch(seed_fn, nfe_budget=140).requests(full), full))
    scores = [s for *_, ss in full.log for s in ss]
    threshold = sorted(scores)[len(scores) // 2]  # a score about half the finals reach
    first = next(k for k, (*_, ss) in enumerate(full.log) if any(s >= threshold for s in ss))
    cut = engine(gen, 140, stop=lambda s: s >= threshold)
    kept = cut.finish(drive(RefineSearch(seed_fn, nfe_budget=140).requests(cut), cut))
    assert len(cut.log) == first + 1 and cut.stopped_by in cut.log[-1][2]
    assert [f.path for f in kept] == [f.path for f in whole[:len(kept)]]  # what it made is the same, cut short
    assert cut.spent < full.spent and sum(f.nfe for f in kept) == pytest.approx(cut.spent)


def test_stopping_prompts_driven_together_is_stopping_them_alone(gen):
    prompts = ["two red circles", "a blue square", "three green triangles"]

    def make(p, stop=None):
        e = Engine(Sampler(gen, sampler_options(0.0)), p, red, 100, stop)
        return e, RefineSearch(lambda r, i, x, p=p: derive_seed(3, p, r, i, x), nfe_budget=100).requests(e)

    tops = []
    for p in prompts:  # each prompt's best score unstopped: a threshold between them stops some, not all
        e, steps = make(p)
        tops.append(max(red([f.image for f in e.finish(drive(steps, e))], None)))
    threshold = sorted(tops)[1]
    stop = lambda s: s >= threshold  # noqa: E731
    alone = [make(p, stop) for p in prompts]
    alone_results = [e.finish(drive(steps, e)) for e, steps in alone]
    together = [make(p, stop) for p in prompts]
    together_results = [e.finish(r) for (e, _), r in zip(together, StepDriver(64).run(together))]
    for (a, _), (b, _), ra, rb in zip(alone, together, alone_results, together_results):
        assert a.stopped_by == b.stopped_by and a.spent == b.spent
        assert [(f.id, f.path, f.nfe) for f in ra] == [(f.id, f.path, f.nfe) for f in rb]
    assert sum(e.stopped_by is not None for e, _ in alone) == 2  # the two whose best reaches it stopped
