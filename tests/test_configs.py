"""Every shipped YAML composes and instantiates; bad input fails fast with a clear message."""
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from conftest import PARTI, compose, needs_shared

from tts.app.build import build_job
from tts.app.errors import ConfigError
from tts.core.configtree import choices, config_dir
from tts.pipelines import PipelineSpec
from tts.verifiers.base import Verifier

EXTRA = {"prompts": {"file": [f"prompts.path={PARTI}", "prompts.column=Prompt", "num_prompts=2"],
                     "dataset": ["prompts.name=unused"]},
         "verifier": {"custom": ["verifier._target_=verifiers.example_custom.Sharpness"]}}


@pytest.mark.parametrize("group,name", [
    pytest.param(g, n, marks=[needs_shared] if (g, n) == ("prompts", "file") else [])
    for g in ("pipeline", "verifier", "search", "prompts") for n in choices(g)])
def test_every_shipped_config_composes_and_instantiates(group, name, tmp_path):
    import hydra

    cfg = compose([f"{group}={name}", *EXTRA.get(group, {}).get(name, [])])
    node = cfg[group]
    if group == "pipeline":
        assert isinstance(hydra.utils.instantiate(node), PipelineSpec)
    elif group == "verifier":
        v = hydra.utils.instantiate(node)
        assert isinstance(v, Verifier) and v.choice_of_metric in v.metrics
    elif group == "search":
        from tts.app.over_models import split_search_node  # search.pipelines etc. are not the strategy's

        strategy = hydra.utils.instantiate(split_search_node(node)[0])(seed_fn=lambda r, i, p: i)
        if getattr(strategy, "in_loop", False):  # runs inside the denoising loop (tests/test_inloop.py runs each)
            assert callable(strategy.search) and 0.0 <= strategy.eta <= 1.0
        elif getattr(strategy, "gradient", False):  # optimises noises by gradients (tests/test_noise_opt.py runs it)
            assert strategy.initial()["kind"] == "fresh" and strategy.steps(10) >= 1
        else:
            assert len(strategy.ask()) >= 1
    elif name != "dataset":
        assert len(hydra.utils.instantiate(node).load()) >= 1


def test_default_config_builds_a_job(tmp_path):
    job = build_job(compose(), tmp_path)
    assert job.pipeline.name == "shapes" and job.verifier.name == "shapes" and len(job.prompts) == 1


@pytest.mark.parametrize("override,match", [
    ("search.rounds=0", "rounds must be a positive integer"),
    ("batch_size=0", "batch_size must be a positive integer"),
    ("search=zero-order", None),
    ("pipeline.num_inference_steps=-1", "num_inference_steps"),
    ("pipeline.dtype=fp8", "dtype must be one of"),
    ("pipeline.height=4096", "max_resolution"),
    ("verifier.choice_of_metric=corect", "did you mean 'correct'"),
    ("num_prompts=0", "num_prompts"),
    ("prompt='a red cube'", "not in the shapes world"),
    ("seed=-1", "seed"),
])
def test_bad_numbers_and_names_fail_before_loading(override, match, tmp_path):
    overrides = [override] + (["search=zero-order", "search.threshold=1.5"] if match is None else [])
    with pytest.raises(Exception) as e:
        build_job(compose(overrides), tmp_path)
    assert (match or "threshold must lie strictly between 0 and 1") in str(e.value)
    assert not list(tmp_path.iterdir())  # nothing written


def test_custom_target_that_is_not_a_verifier(tmp_path):
    with pytest.raises(ConfigError, match="not a tts.verifiers.base.Verifier"):
        build_job(compose(["verifier._target_=collections.OrderedDict", "~verifier.choice_of_metric"]), tmp_path)
    with pytest.raises(ConfigError, match="cannot be imported: no module named 'no_such_module'"):
        build_job(compose(["verifier._target_=no_such_module.Thing"]), tmp_path)
    with pytest.raises(ConfigError, match=r"tts.verifiers.shapes has no 'ShapeVerifier'; did you mean "
                                          r"'tts.verifiers.shapes.ShapesVerifier'\?"):
        build_job(compose(["verifier._target_=tts.verifiers.shapes.ShapeVerifier"]), tmp_path)
    with pytest.raises(ConfigError, match=r"tts has no 'verifier'; did you mean 'tts.verifiers'\?"):
        build_job(compose(["search._target_=tts.verifier.shapes.ShapesVerifier"]), tmp_path)


@pytest.mark.parametrize("arg,hint", [("pipeline=flux-deev", "did you mean 'flux-dev'"),
                                      ("verifier=shapes-proxxy", "did you mean 'shapes-proxy'"),
                                      ("search=zero_order", "did you mean 'zero-order'")])
def test_cli_unknown_names_list_choices_within_seconds(arg, hint, tmp_path):
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-c", "from tts.app.cli import main; main()", arg,
                          f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert hint in out.stderr and "choices:" in out.stderr
    group = arg.split("=")[0]
    assert all(c in out.stderr for c in choices(group))
    assert time.monotonic() - start < 60 and not (tmp_path / "run").exists()


def test_cli_bad_number_exits_2_with_message(tmp_path):
    out = subprocess.run([sys.executable, "-c", "from tts.app.cli import main; main()", "search.rounds=0",
                          f"hydra.run.dir={tmp_path}/run"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2, out.stderr[-2000:]
    assert "search.rounds must be a positive integer" in out.stderr + out.stdout
    assert "loading" not in (out.stderr + out.stdout)


def test_config_tree_is_found():
    assert (config_dir() / "config.yaml").exists()


FRONTENDS = {"scripted": ["search.frontend.simulate_top_k=2"]}


@pytest.mark.parametrize("name", choices("search/frontend"))
def test_every_shipped_front_end_config_instantiates(name):
    import hydra

    cfg = compose(["search=human-preference", f"search/frontend={name}", *FRONTENDS.get(name, [])])
    strategy = hydra.utils.instantiate(cfg.search)(seed_fn=lambda r, i, p: i)
    assert type(strategy.frontend).__name__.lower() == f"{name}frontend" and strategy.frontend.name == name
    assert strategy.interactive == (name == "terminal")


def drive(strategy, score) -> list[int]:
    """Run a strategy to the end, scoring candidate k of round r with ``score(r, k)``; the round sizes."""
    from tts.search import Candidate

    sizes = []
    while noises := strategy.ask():
        sizes.append(len(noises))
        record = SimpleNamespace(image="x.png", seed=0, choice_of_metric="m")
        strategy.tell([Candidate(len(sizes), k, n, score(len(sizes), k), record) for k, n in enumerate(noises)])
    return sizes


def shipped(name: str, *overrides):
    import hydra

    return hydra.utils.instantiate(compose([f"search={name}", *overrides]).search)


def test_random_search_asks_what_its_schedule_says():
    cfg = compose(["search=random"]).search
    assert drive(shipped("random")(seed_fn=lambda r, i, p: i), lambda r, k: k) == [
        cfg.base ** r for r in range(1, cfg.rounds + 1)] == [2, 4, 8, 16]
    assert drive(shipped("random", "search.schedule=constant", "search.per_round=3", "search.rounds=5")(
        seed_fn=lambda r, i, p: i), lambda r, k: k) == [3] * 5


def test_zero_order_asks_a_pivot_only_after_a_restart():
    cfg = compose(["search=zero-order"]).search
    n = cfg.num_neighbors
    climbing = drive(shipped("zero-order")(seed_fn=lambda r, i, p: i), lambda r, k: r + k / 10)
    assert climbing == [1 + n] + [n] * (cfg.rounds - 1)  # a neighbour always wins: the pivot moves, no restart
    stuck = drive(shipped("zero-order")(seed_fn=lambda r, i, p: i), lambda r, k: 1.0 if k == 0 else 0.0)
    assert stuck == [1 + n] * cfg.rounds  # the fresh pivot always wins: every round restarts


def test_human_preference_shows_per_round_candidates_every_round(tmp_path):
    from tts.search import SearchContext

    cfg = compose(["search=human-preference"]).search
    factory = shipped("human-preference", "search.frontend._target_=tts_test_components.PickFirst",
                      "~search.frontend.inline_images")
    context = SearchContext(prompt="p", prompt_hash="00000000", run_dir=tmp_path, latent_shape=(4, 8, 8))
    assert drive(factory(seed_fn=lambda r, i, p: 1000 * r + i, context=context), lambda r, k: k) == (
        [cfg.per_round] * cfg.rounds)
