"""A search over several pipelines (issue 31): search.pipelines, allocation (uniform, halving, UCB1), routers,
the model manager, tts-plan's per-pipeline table, and resume after kill -9 (docs/search-over-models.md)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TESTS, compose, run_tts

from tts.app.build import build_job
from tts.app.errors import ConfigError
from tts.core.configtree import choices
from tts.core.records import CandidateRecord
from tts.core.runfolder import read_manifest
from tts.search import Candidate
from tts.search.allocation import UCB, Arms, Halving, Uniform, make_rule
from tts.search.over_models import ArmInfo, PipelineSearch
from tts.search.random import RandomSearch
from tts.search.router import LLMRouter, RulesRouter, parse_choice

# three settings of the embedded model that really differ: cost (2 vs 4 NFEs) and guidance
ARMS = "++search.pipelines=[{preset:shapes,label:a,num_inference_steps:2},{preset:shapes,label:b,num_inference_steps:2," \
       "guidance_scale:1.5},{preset:shapes,label:c,num_inference_steps:1}]"
SMALL = [ARMS, "search.schedule=constant", "search.per_round=2", "search.rounds=20", "search.nfe_budget=24",
         "batch_size=4"]


def records(run):
    return sorted(read_manifest(run), key=lambda r: r.key)


def charged(pipeline: str) -> float:
    return {"a": 2.0, "b": 4.0, "c": 1.0}[pipeline]


# -- settings, validated up front --------------------------------------------------------------------------------

def test_pipelines_build_arms_with_labels_and_costs(tmp_path):
    job = build_job(compose(SMALL), tmp_path)
    assert [a.label for a in job.arms] == ["a", "b", "c"]
    assert [a.spec.num_inference_steps for a in job.arms] == [2, 2, 1] and job.arms[1].spec.guidance_scale == 1.5
    assert [a.cost for a in job.arms] == [1.0, 1.0, 1.0]
    assert job.arms[1].cost_rule == "same checkpoint as the first"
    arms = job.search_factory.keywords["arms"]
    assert [(a.label, a.nfe_per_image) for a in arms] == [("a", 2.0), ("b", 4.0), ("c", 1.0)]
    unlabeled = build_job(compose(["++search.pipelines=[shapes,{preset:shapes,guidance_scale:1.5,cost_per_nfe:2}]"]),
                          tmp_path / "u")
    assert [a.label for a in unlabeled.arms] == ["shapes", "shapes[guidance_scale=1.5]"]
    assert unlabeled.arms[1].cost == 2.0 and unlabeled.arms[1].cost_rule == "declared"
    assert unlabeled.search_factory.keywords["arms"][1].nfe_per_image == 40.0  # 10 steps x 2 passes x cost 2


@pytest.mark.parametrize("override,match", [
    ("++search.pipelines=[shapes,shapez]", "unknown pipeline 'shapez'; did you mean 'shapes'?"),
    ("++search.pipelines=[shapes,{preset:shapes,guidanc_scale:1.5}]", "did you mean 'guidance_scale'?"),
    ("++search.pipelines=[shapes,shapes]", "names 'shapes' twice"),
    ("++search.pipelines=[shapes,{preset:shapes,cost_per_nfe:0}]", "cost_per_nfe must be a positive number"),
    ("++search.allocation=halvin", "did you mean 'halving'?"),
    ("router=rules", "set search.pipelines"),
])
def test_bad_settings_fail_in_one_line_before_loading(override, match, tmp_path):
    extra = [ARMS] if "search.allocation" in override else []
    with pytest.raises(ConfigError, match=match.replace("[", r"\[").replace("?", r"\?")) as e:
        build_job(compose([*extra, override]), tmp_path)
    assert "\n" not in str(e.value)


def test_cli_unknown_preset_is_one_line_with_did_you_mean(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tts", "search.pipelines=[shapes,sdxll]", f"hydra.run.dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "did you mean 'sdxl'?" in lines[0]


def test_router_strengths_must_name_the_searchs_pipelines(tmp_path):
    with pytest.raises(ConfigError, match="names pipeline 'gs1.5'.*did you mean 'gs15'"):
        build_job(compose(["search=models-shapes", "router=rules",
                           "search.pipelines=[{preset:shapes,label:gs1},{preset:shapes,label:gs15,guidance_scale:1.5}]"]),
                  tmp_path)


@pytest.mark.parametrize("name", choices("router"))
def test_every_shipped_router_config_instantiates(name, tmp_path):
    job = build_job(compose(["search=models-shapes", f"router={name}"]), tmp_path)
    router = job.search_factory.keywords["router"]
    assert (router is None) == (name == "none")
    if router is not None:
        router.check([a.label for a in job.arms])


# -- allocation rules ----------------------------------------------------------------------------------------------

def arms_with(scores, live=None, prior=None):
    n = len(scores)
    return Arms([list(s) for s in scores], live or [True] * n, list(range(n)), prior or [0.0] * n)


def test_uniform_plays_every_live_pipeline():
    assert Uniform().pick(arms_with([[], [], []], live=[True, False, True])) == [0, 2]


def test_halving_drops_the_weaker_half_by_mean_score_each_round():
    rule, state = Halving(), arms_with([[0.2, 0.4], [0.9, 0.1], [0.1, 0.0], [0.8, 0.8]])
    rule.after_round(state)
    assert rule.pick(state) == [1, 3]  # means 0.3, 0.5, 0.05, 0.8: the better half stays
    state.scores[1] += [1.0, 1.0]
    rule.after_round(state)
    assert rule.pick(state) == [3]  # means 0.75 and 0.8: one left, which plays the rest
    rule.after_round(state)
    assert rule.pick(state) == [3]


def test_ucb_plays_unplayed_first_then_the_largest_upper_bound():
    rule = UCB(c=1.0)
    assert rule.pick(arms_with([[0.5], [], []])) == [1]
    # equal counts: the larger mean; a much less played arm: its bonus wins
    assert rule.pick(arms_with([[0.1, 0.2], [0.9, 0.8], [0.1, 0.2]])) == [1]
    assert rule.pick(arms_with([[0.5] * 40, [0.6] * 40, [0.4]])) == [2]
    # a router's prior counts as a success already seen: that arm first, none unplayed forced
    assert rule.pick(arms_with([[], [], []], prior=[0.0, 0.0, 1.0])) == [0]
    assert make_rule("ucb").pick(arms_with([[0.0], [0.0], []], prior=[0.0, 0.0, 0.0])) == [2]


def drive(search, score_of):
    """Run a PipelineSearch to its end on scores from ``score_of(pipeline, noise)``; its asks, in order."""
    asked = []
    while noises := search.ask():
        asked.append([n["pipeline"] for n in noises])
        search.tell([Candidate(len(asked), i, n, score_of(n["pipeline"], n)) for i, n in enumerate(noises)])
    return asked


def make_search(allocation, budget=60.0, **kw):
    inner = lambda **k: RandomSearch(**(k | {"rounds": 50, "schedule": "constant", "per_round": 2}))  # noqa: E731
    arms = [ArmInfo("a", 2.0), ArmInfo("b", 4.0), ArmInfo("c", 1.0)]
    return PipelineSearch(lambda r, i, p: hash((r, i, p)) % 2**31, inner=inner, arms=arms, allocation=allocation,
                          nfe_budget=budget, **kw)


@pytest.mark.parametrize("allocation", ["uniform", "halving", "ucb"])
def test_each_allocation_spends_the_budget_and_no_more(allocation):
    search = make_search(allocation)
    asked = drive(search, lambda p, n: {"a": 0.2, "b": 0.9, "c": 0.1}[p])
    spent = sum(charged(p) for r in asked for p in r)
    assert 60 - 4 < spent <= 60 and search.spent == spent  # what is left buys no image where it may go
    plays = [p for r in asked for p in r]
    if allocation == "uniform":
        assert asked[0] == ["a", "a", "b", "b", "c", "c"]
    if allocation == "halving":
        assert asked[1] == ["a", "a", "b", "b"]  # c (the weakest) dropped after round 1, then a
        assert set(p for r in asked[2:] for p in r) == {"b"}
    if allocation == "ucb":
        assert asked[:3] == [["a", "a"], ["b", "b"], ["c", "c"]]
        assert plays.count("b") > plays.count("a") and plays.count("b") > plays.count("c")


def test_allocation_is_a_function_of_the_scores_told():
    score = lambda p, n: (n["seed"] % 97) / 97 + (0.3 if p == "a" else 0)  # noqa: E731
    assert drive(make_search("ucb"), score) == drive(make_search("ucb"), score)
    assert drive(make_search("halving"), score) == drive(make_search("halving"), score)


def test_router_restricts_or_orders_the_pipelines(tmp_path):
    from tts.search import SearchContext

    router = RulesRouter({"a": {"keywords": ["circle"]}, "b": {"keywords": ["two", "square"]}, "c": {}})
    ctx = SearchContext("two squares", "h1", tmp_path, (1, 4, 4), 2.0)
    inner = lambda **k: RandomSearch(**(k | {"rounds": 3, "schedule": "constant", "per_round": 1}))  # noqa: E731
    arms = [ArmInfo("a", 2.0), ArmInfo("b", 4.0), ArmInfo("c", 1.0)]
    only = PipelineSearch(lambda r, i, p: i, ctx, inner=inner, arms=arms, router=router)
    assert set(p for r in drive(only, lambda p, n: 0.5) for p in r) == {"b"}
    route = json.loads((tmp_path / "routes" / "h1.json").read_text())
    assert route["chosen"] == ["b"] and route["router"] == "rules" and "two" in route["reason"]
    # the recorded route is read back (a rerun never asks the router again)
    (tmp_path / "routes" / "h1.json").write_text(json.dumps(route | {"chosen": ["c"]}))
    again = PipelineSearch(lambda r, i, p: i, ctx, inner=inner, arms=arms, router=router)
    assert set(p for r in drive(again, lambda p, n: 0.5) for p in r) == {"c"}
    prior = PipelineSearch(lambda r, i, p: i, SearchContext("two squares", "h2", tmp_path, (1, 4, 4), 2.0),
                           inner=inner, arms=arms, router=router, router_mode="prior")
    assert drive(prior, lambda p, n: 0.5)[0] == ["b", "a", "c"]


def test_rules_router_counts_whole_words_and_falls_back_to_the_default():
    router = RulesRouter({"a": {"keywords": ["red", "left of"]}, "b": {"keywords": ["two"]}, "default": "b"})
    assert router.route("a red circle left of a square", ["a", "b"]).chosen == ("a",)
    assert router.route("a reddish network", ["a", "b"]).chosen == ("b",)  # no whole word: the default
    assert "no keyword" in router.route("a reddish network", ["a", "b"]).reason


def test_llm_router_on_a_tiny_random_qwen2_twin(tmp_path):
    from twins_extra import save_instruct_llm

    path = save_instruct_llm(tmp_path)
    router = LLMRouter({"gs1": {"description": "plain shapes"}, "gs1.5": {"description": "counts"}},
                       model_id=str(path), max_new_tokens=8, device="cpu")
    router.check(["gs1", "gs1.5"])
    first, second = (router.route("two red circles", ["gs1", "gs1.5"]) for _ in range(2))
    assert first == second and first.router == "llm" and first.answer is not None  # greedy: the same answer
    # a random model names no pipeline: every pipeline, said so
    assert parse_choice(first.answer, ["gs1", "gs1.5"]) is None and first.chosen == ("gs1", "gs1.5")
    assert "named no pipeline" in first.reason
    assert parse_choice("gs1.5, because it counts", ["gs1", "gs1.5"]) == "gs1.5"


# -- end to end on the embedded model ------------------------------------------------------------------------------

@pytest.mark.parametrize("allocation", ["uniform", "halving", "ucb"])
def test_search_over_three_settings_end_to_end(allocation, tmp_path):
    run_tts([*SMALL, f"++search.allocation={allocation}"], tmp_path)
    recs = records(tmp_path)
    assert recs and all(r.pipeline in ("a", "b", "c") and r.status == "ok" for r in recs)
    assert all(r.nfe == charged(r.pipeline) for r in recs)  # measured NFEs, per pipeline
    assert 24 - 4 < sum(r.nfe for r in recs) <= 24  # what is left may buy no image of the pipeline kept
    assert len({r.image for r in recs}) == len(recs)
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert [p["label"] for p in plan["pipelines"]] == ["a", "b", "c"]


def test_zero_order_over_pipelines_with_a_router(tmp_path):
    run_tts([ARMS, "search=zero-order", "search.rounds=2", "search.num_neighbors=2", "router=rules",
             "router.strengths={a:{keywords:[circle]},b:{keywords:[two]},c:{}}", "prompt='two red circles'"],
            tmp_path)
    recs = records(tmp_path)
    assert {r.pipeline for r in recs} == {"b"} and len(recs) in (5, 6)  # a pivot, 2 neighbours; again if no gain
    route = json.loads(next((tmp_path / "routes").glob("*.json")).read_text())
    assert route["chosen"] == ["b"] and route["reason"] == "b: two"


def test_old_records_without_a_pipeline_still_read():
    line = {"prompt": "p", "prompt_index": 0, "prompt_hash": "h", "round": 1, "index": 0, "seed": 1,
            "noise": {"kind": "fresh", "seed": 1}, "nfe": 10, "status": "ok", "verifier": "v",
            "choice_of_metric": "m", "image": "x.png"}
    assert CandidateRecord.model_validate(line).pipeline is None


def test_model_manager_loads_only_what_the_allocation_plays(tmp_path):
    """Two checkpoints (the shapes model and a copy): with max_resident=1 the manager swaps them as the
    allocation asks; a pipeline halving dropped is never loaded again."""
    import shutil

    from tts.pipelines.models import manager
    from tts.sampling.multi import MultiGenerator
    from tts.pipelines.arms import parse_arms
    from tts.pipelines.models import preset_spec

    import tts

    copy = tmp_path / "shapes-copy"
    shutil.copytree(os.path.join(os.path.dirname(tts.__file__), "assets", "shapes-model"), copy)
    arms = parse_arms(["shapes", {"preset": "shapes", "model_id": str(copy), "label": "copy",
                                  "num_inference_steps": 1}], preset_spec("shapes", device="cpu"))
    assert arms[1].cost_rule.startswith("unknown")
    mgr = manager()
    mgr.configure(max_resident=1)
    gen = MultiGenerator(arms, mgr)
    try:
        lin = lambda s, p: {"kind": "fresh", "seed": s, "pipeline": p}  # noqa: E731
        images, _, _ = gen.generate("a red circle", [lin(1, "shapes"), lin(2, "copy"), lin(3, "shapes")])
        assert [im.info["tts.charged_nfe"] for im in images] == [10.0, 1.0, 10.0]
        assert len(mgr.resident()) == 1
        assert gen.loads == ["shapes", "copy"]  # one call per pipeline in a mixed batch: one swap
        gen.generate("a red circle", [lin(4, "copy")])
        assert gen.loads == ["shapes", "copy"]  # still loaded
        gen.generate("a red circle", [lin(5, "shapes")])
        assert gen.loads == ["shapes", "copy", "shapes"] and len(mgr.resident()) == 1
    finally:
        gen.close()


def test_plan_prints_each_pipelines_nfes_memory_and_time(capsys):
    from tts.app.plan import main

    main(["search=models-shapes", "plan.s_per_nfe=0.01"])
    out = capsys.readouterr().out
    assert "| gs1.5 | 20 (10 steps x 2 passes (shapes))" in out and "| steps5 | 5 " in out
    assert "6 (120)" in out and "0.2 |" in out  # 120 NFEs buy 6 images at 20 NFEs; 20 x 0.01 s


@pytest.mark.slow
def test_resume_after_kill_gives_identical_records(tmp_path):
    env = dict(os.environ, PYTHONPATH=f"{TESTS / 'plugins'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    base = [sys.executable, "-c", "from tts.app.cli import main; main()", "verifier._target_=tts_test_plugins.SleepyVerifier",
            "~verifier.choice_of_metric", *SMALL, "search.allocation=ucb", "batch_size=2"]
    subprocess.run([*base, f"hydra.run.dir={tmp_path / 'whole'}"], env=env, check=True, capture_output=True,
                   timeout=300)
    run = tmp_path / "killed"
    proc = subprocess.Popen([*base, f"hydra.run.dir={run}"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if (run / "manifest.jsonl").exists() and len((run / "manifest.jsonl").read_text().splitlines()) >= 5:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 5 <= len(read_manifest(run)) < len(read_manifest(tmp_path / "whole"))
    subprocess.run([*base, f"hydra.run.dir={run}"], env=env, check=True, capture_output=True, timeout=300)
    same = lambda r: (r.key, r.pipeline, r.seed, r.noise, r.nfe, r.score, r.status)  # noqa: E731
    assert [same(r) for r in records(run)] == [same(r) for r in records(tmp_path / "whole")]
    assert len({r.pipeline for r in records(run)}) == 3


def test_report_shows_pipelines_side_by_side_and_wins_per_tag(tmp_path):
    from tts.views.report import write_report
    from tts.views.report.pipelines import per_prompt, wins
    from tts.views.report.runs import load_runs

    run = tmp_path / "run"
    run_tts([ARMS, "++search.allocation=uniform", "search.schedule=constant", "search.per_round=1",
             "search.rounds=2", "prompts=shapes-bench", "num_prompts=2", "router=rules",
             "router.strengths={a:{keywords:[circle]},b:{keywords:[square]},c:{keywords:[triangle]}}",
             "++search.router_mode=prior"], run)
    recs = records(run)
    loaded = load_runs(run)[0]
    rows = per_prompt(loaded)
    assert len(rows) == 2 and all(set(r["cells"]) == {"a", "b", "c"} for r in rows)
    for row in rows:
        mine = [r for r in recs if r.prompt == row["prompt"]]
        assert row["cells"]["b"]["nfe"] == sum(r.nfe for r in mine if r.pipeline == "b") == 8.0
        top = max((r for r in mine if r.status == "ok"), key=lambda r: r.score)
        assert row["cells"][row["winner"]]["best"].score == top.score
        assert row["route"]["router"] == "rules"
    counts = wins(loaded)
    assert sum(counts["all"].values()) == 2 and sum(v for k, c in counts.items() if k.startswith("category=")
                                                    for v in c.values()) == 2
    page = write_report(run).read_text()
    assert "id='pipelines'" in page and "class='winner'" in page and "8 NFEs" in page
