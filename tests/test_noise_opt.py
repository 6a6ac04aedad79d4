"""search=noise-opt (ReNO, tts.search.noise_opt) on the embedded shapes model steered by shapes-reward: the budget
with backward passes charged, real improvement over the initial noise, exact replay, one-line refusals."""
import json

import pytest
import torch
from conftest import compose, run_tts

from tts.app.build import build_job
from tts.app.errors import ConfigError
from tts.app.replay import replay
from tts.core import runfolder as rf
from tts.core.noise import fresh, make_noise, store
from tts.search.noise_opt import NoiseOptSearch, chi_log_likelihood

BASE = ["pipeline=shapes", "verifier=shapes-reward", "search=noise-opt", "prompt='a big square'"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("noise-opt")
    run_tts([*BASE, "search.nfe_budget=100"], folder)
    return folder


def test_budget_is_spent_exactly_with_backward_passes_charged(run):
    """10 NFEs per image: 3 gradient steps cost 3 x 30, the last iterate 10: 100 NFEs, 4 candidates."""
    [search] = rf.read_searches(run).values()
    records = rf.read_manifest(run)
    assert search.nfe == 100 and search.nfe_budget == 100 and search.candidates == len(records) == 4
    assert [r.nfe for r in sorted(records, key=lambda r: r.index)] == [30, 30, 30, 10]
    assert all(r.path.nfe_path == 10 for r in records)  # a replay is one forward pass
    assert json.loads((run / rf.SUMMARY).read_text())["nfe_total"] == 100


def test_the_score_improves_over_the_initial_noise(run):
    records = sorted(rf.read_manifest(run), key=lambda r: r.index)
    first, later = records[0].score, [r.score for r in records[1:]]
    assert records[0].noise == fresh(records[0].seed) and all(r.noise["kind"] == "stored" for r in records[1:])
    assert later[-1] > first + 0.05, [first, *later]  # the verifier's own score, on the saved images
    assert len({round(s, 4) for s in [first, *later]}) == len(records)  # every iterate is another image


@pytest.mark.parametrize("index", [0, 3])
def test_every_iterate_replays_exactly(run, index):
    [record] = [r for r in rf.read_manifest(run) if r.index == index]
    _, diff = replay(run, record.image)
    assert diff == 0


def test_a_non_differentiable_verifier_is_refused_in_one_line(tmp_path):
    with pytest.raises(ConfigError) as e:
        build_job(compose(["pipeline=shapes", "verifier=shapes", "search=noise-opt"]), tmp_path)
    message = str(e.value)
    assert "\n" not in message and "shapes-reward" in message and "pickscore" in message
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("override, match", [("search.optimizer=lbfgs", "sgd, adam"), ("search.lr=0", "search.lr"),
                                             ("search.iterations=0", "search.iterations")])
def test_bad_settings_fail_before_loading(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match):
        build_job(compose(["pipeline=shapes", "verifier=shapes-reward", "search=noise-opt", override]), tmp_path)


def test_steps_fit_the_budget():
    s = NoiseOptSearch(lambda *a: 1, iterations=50, nfe_budget=160)
    assert s.steps(10) == 5 and NoiseOptSearch(lambda *a: 1, iterations=2, nfe_budget=160).steps(10) == 2
    assert NoiseOptSearch(lambda *a: 1, nfe_budget=39).steps(10) == 0  # one image only


def test_the_regulariser_pulls_the_norm_to_a_gaussian_samples():
    for scale in (0.5, 2.0):
        z = (scale * torch.randn(3072)).requires_grad_(True)
        chi_log_likelihood(z).backward()
        radial = float(z.grad @ z.detach()) / float(z.detach().norm())
        assert (radial > 0) == (scale < 1)  # ascent grows a small noise, shrinks a large one


def test_stored_noise_is_read_back_exactly_and_checked(tmp_path):
    z = torch.randn(3, 8, 8)
    lineage = store(z, tmp_path, fresh(7), 2)
    assert torch.equal(make_noise(lineage, (3, 8, 8), tmp_path), z) and lineage["seed"] == 7
    with pytest.raises(ValueError, match="pass the run folder"):
        make_noise(lineage, (3, 8, 8))
    (tmp_path / lineage["file"]).write_bytes((tmp_path / lineage["file"]).read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ValueError, match="does not match"):
        make_noise(lineage, (3, 8, 8), tmp_path)


def test_the_plan_counts_what_the_run_spent(run):
    from tts.app import plan as planning

    plan = planning.make_plan(compose([*BASE, "search.nfe_budget=100"]))
    assert plan["candidates"] == 4 and plan["nfe"] == pytest.approx(rf.read_searches(run).popitem()[1].nfe)


def test_a_rerun_of_the_folder_skips_the_finished_search(run):
    before = rf.read_manifest(run)
    run_tts([*BASE, "search.nfe_budget=100"], run)
    assert len(rf.read_manifest(run)) == len(before) and len(rf.read_searches(run)) == 1


def test_the_python_api_refuses_a_non_differentiable_verifier_before_loading():
    import tts

    with pytest.raises(ValueError, match="needs a differentiable verifier") as e:
        tts.search("shapes", "a big square", verifier="shapes", strategy="noise-opt", nfe_budget=40)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("family", ["shapes", "sd15"])
def test_the_differentiable_render_equals_the_sampler_and_reaches_the_noise(family, twins_root):
    """tts.sampling.gradient: the same final image as the sampler's (what tts-replay makes), with a gradient that
    reaches the initial noise (the shapes model, and the SD family's VAE on its twin: sd-turbo's family)."""
    import sys
    from pathlib import Path

    import numpy as np

    sys.path.insert(0, str(Path(__file__).parent))
    from test_sampler import make_spec

    from tts.sampling.generate import Generator
    from tts.sampling.gradient import Differentiable
    from tts.sampling.particles import sampler_options
    from tts.sampling.sampler import Sampler

    spec = make_spec(family, twins_root, steps=2)
    gen = Generator(spec.load(), spec)
    sampler = Sampler(gen, sampler_options(0.0))
    try:
        lineage = fresh(5)
        noise = make_noise(lineage, gen.latent_shape)[None].clone().requires_grad_(True)
        latents, pixels, forwards = Differentiable(sampler, "a big square").images(noise, lineage)
        pixels.mean().backward()
        assert forwards == 2 * (2 if spec.guidance_scale > 1 else 1) and float(noise.grad.abs().sum()) > 0
        with torch.no_grad():
            plain = sampler.run(sampler.start("a big square", [lineage]))
        assert torch.equal(latents.detach(), plain.latents)
        image = np.asarray(sampler.decode(plain.latents)[0], dtype=np.float32) / 255
        assert np.abs(pixels.detach()[0].permute(1, 2, 0).numpy() - image).max() < 1 / 255 + 1e-6
    finally:
        sampler.close()
        gen.close()


def test_stop_at_ends_at_the_first_iterate_whose_score_reaches_it(run, tmp_path):
    """The threshold is tested on each iterate's differentiable score (previews.jsonl): with one that a later
    iterate reaches first, the search ends there, the rest of the budget unspent."""
    records = sorted(rf.read_manifest(run), key=lambda r: r.index)
    tensor = [line["score"] for line in rf.read_previews(run)]
    k = next(k for k in range(1, len(tensor)) if tensor[k] > max(tensor[:k]))  # the first iterate to beat all before
    run_tts([*BASE, "search.nfe_budget=100", f"++search.stop_at={tensor[k]}"], tmp_path)
    cut = sorted(rf.read_manifest(tmp_path), key=lambda r: r.index)
    assert [r.noise for r in cut] == [r.noise for r in records[:k + 1]]
    assert [r.nfe for r in cut] == [30] * k + [10]  # no gradient step after the hit
    row = json.loads((tmp_path / rf.SUMMARY).read_text())["prompts"]["a big square"]
    assert row["stopped_at_score"] == pytest.approx(cut[-1].score) and row["nfe_unspent"] == 100 - 30 * k - 10
