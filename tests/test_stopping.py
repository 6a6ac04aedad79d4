"""Stop when good enough (search.stop_at), one budget for a study (search.study_nfe_budget), and the bootstrap
intervals over prompts (tts.core.stats)."""
import json
import math
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import compose, run_tts

from tts.app.messages import format_summary
from tts.core import runfolder as rf
from tts.core.stats import bootstrap_mean, bootstrap_paired, bootstrap_rate
from tts.search.protocols import Budget

# Three bench prompts the exact checker solves at different costs; 10 steps, as the preset.
BENCH = ["prompts=shapes-bench", "num_prompts=3", "verifier=shapes", "verifier.choice_of_metric=criteria_met",
         "search.schedule=constant", "search.per_round=4"]


def records_in_order(run):
    return sorted(rf.final_records(rf.read_manifest(run)), key=lambda r: (r.prompt_index, r.round, r.index))


def by_prompt(records):
    out = {}
    for r in records:
        out.setdefault(r.prompt, []).append(r)
    return out


# -- tts.core.stats ------------------------------------------------------------------------------------------------

def test_all_solved_and_none_solved_are_single_points():
    one = bootstrap_rate([1] * 30)
    assert (one.estimate, one.low, one.high, one.n) == (1.0, 1.0, 1.0, 30) and one.excludes_zero()
    zero = bootstrap_rate([False] * 12)
    assert (zero.estimate, zero.low, zero.high) == (0.0, 0.0, 0.0) and not zero.excludes_zero()


def test_a_large_sample_matches_the_normal_approximation():
    rng = np.random.default_rng(3)
    x = rng.random(2000) < 0.3
    got = bootstrap_rate(x, seed=1)
    p, half = x.mean(), 1.96 * math.sqrt(x.mean() * (1 - x.mean()) / len(x))
    assert got.estimate == pytest.approx(p)
    assert got.low == pytest.approx(p - half, abs=0.004) and got.high == pytest.approx(p + half, abs=0.004)
    assert bootstrap_rate(x, seed=1) == got and bootstrap_rate(x, seed=2) != got  # seeded


def test_paired_differences_cancel_what_both_share():
    rng = np.random.default_rng(0)
    hard = rng.random(400)  # per-prompt difficulty both strategies share
    a, b = hard + 0.05, hard
    shift = bootstrap_paired(a, b)
    assert shift.low == pytest.approx(0.05) and shift.high == pytest.approx(0.05) and shift.excludes_zero()
    noise = rng.normal(0.02, 0.3, 400)
    d = bootstrap_paired(hard + noise, hard, seed=5)
    half = 1.96 * noise.std(ddof=0) / math.sqrt(len(noise))
    assert d.estimate == pytest.approx(noise.mean())
    assert d.low == pytest.approx(noise.mean() - half, abs=0.006) and d.high == pytest.approx(noise.mean() + half, abs=0.006)
    unpaired = bootstrap_mean(hard + noise, seed=5)
    assert unpaired.high - unpaired.low > d.high - d.low  # pairing removes the shared spread


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="no prompts"):
        bootstrap_rate([])
    with pytest.raises(ValueError, match="0/1"):
        bootstrap_rate([0.5, 1])
    with pytest.raises(ValueError, match="one value of each per prompt"):
        bootstrap_paired([1, 0], [1])


# -- search.stop_at ------------------------------------------------------------------------------------------------

def test_reached_follows_the_metrics_direction():
    assert Budget(stop_at=0.8).reached(0.8) and Budget(stop_at=0.8).reached(0.9) and not Budget(stop_at=0.8).reached(0.7)
    low = Budget(stop_at=2.0)
    assert low.reached(1.5, higher_is_better=False) and not low.reached(2.5, higher_is_better=False)
    assert not Budget().reached(1.0) and not Budget(stop_at=1.0).reached(None)


def test_stop_at_ends_each_prompt_at_its_first_hit_and_records_what_it_saved(tmp_path):
    full, stop = tmp_path / "full", tmp_path / "stop"
    run_tts(BENCH + ["search.rounds=2", "batch_size=1", "search.nfe_budget=80"], full)
    run_tts(BENCH + ["search.rounds=2", "batch_size=1", "search.nfe_budget=80", "++search.stop_at=1"], stop)
    whole, cut = by_prompt(records_in_order(full)), by_prompt(records_in_order(stop))
    summary = json.loads((stop / rf.SUMMARY).read_text())
    reached = 0
    for prompt, rs in whole.items():
        hit = next((i for i, r in enumerate(rs) if r.score >= 1), None)
        kept = cut[prompt]
        assert [(r.key, r.seed, r.score) for r in kept] == [(r.key, r.seed, r.score) for r in rs[:len(kept)]]
        assert len(kept) == (len(rs) if hit is None else hit + 1)  # batch_size=1: nothing after the hit
        row = summary["prompts"][prompt]
        assert row["nfe_spent"] == sum(r.nfe for r in kept)
        assert row["stopped_at_score"] == (None if hit is None else 1.0)
        if hit is not None:
            reached += 1
            assert row["nfe_unspent"] == 80 - row["nfe_spent"]
            last = max(r.round for r in kept)
            [round_json] = list(stop.glob(f"{rf.prompt_stem(prompt)}_i@{last}_s@*.json"))
            doc = json.loads(round_json.read_text())
            assert doc["stopped_at_score"] == 1.0 and doc["nfe_unspent"] == 80 - doc["nfe_total"]
    assert reached >= 1
    ctq = summary["cost_to_quality"]
    assert ctq["reached"] == reached and ctq["success"] == pytest.approx(reached / 3)
    assert ctq["nfe_per_prompt"]["mean"] == pytest.approx(sum(r["nfe_spent"] for r in summary["prompts"].values()) / 3)


def test_the_rest_of_the_hits_batch_is_recorded(tmp_path):
    """Rounds of 4 in batches of 3 (indices 0-2, then 3): a prompt ends with the batch that holds its first hit."""
    run_tts(BENCH + ["search.rounds=4", "batch_size=3", "++search.stop_at=1"], tmp_path)
    for rs in by_prompt(records_in_order(tmp_path)).values():
        hit = next((r for r in rs if r.score >= 1), None)
        if hit is None:
            assert len(rs) == 16
            continue
        assert (rs[-1].round, rs[-1].index) == (hit.round, 2 if hit.index < 3 else 3)
        assert all(r.score < 1 for r in rs if (r.round, r.index) < (hit.round, hit.index))


def test_stop_at_settings_are_checked_before_anything_loads(tmp_path):
    from tts.app.build import build_job
    from tts.app.errors import ConfigError
    from tts.app.overrides import check_overrides

    assert check_overrides(["search.stop_at=1", "search.study_nfe_budget=600", "search.study_order=best-first"]) == [
        "++search.stop_at=1", "++search.study_nfe_budget=600", "++search.study_order=best-first"]
    with pytest.raises(ConfigError, match="search.study_order must be one of round-robin, best-first, got 'best'"):
        build_job(compose(["++search.study_nfe_budget=600", "++search.study_order=best"]), tmp_path)
    with pytest.raises(ConfigError, match="search.stop_at must be a score"):
        build_job(compose(["++search.stop_at=high"]), tmp_path)
    with pytest.raises(ConfigError, match="search.study_nfe_budget must be a positive number"):
        build_job(compose(["++search.study_nfe_budget=-3"]), tmp_path)
    assert build_job(compose(["search=prune", "++search.stop_at=1"]), tmp_path).budget.stop_at == 1.0
    assert build_job(compose(["search=refine", "++search.study_nfe_budget=600"]), tmp_path).budget.study == 600.0
    with pytest.raises(ConfigError, match="needs the whole study in one process: drop shard.count"):
        build_job(compose(["++search.study_nfe_budget=600", "shard.count=2"]), tmp_path)
    job = build_job(compose(["++search.stop_at=0.5", "search.nfe_budget=40"]), tmp_path)
    assert job.budget == Budget(40.0, 0.5, None, "round-robin")


# -- search.stop_at in the loop ----------------------------------------------------------------------------------

@pytest.mark.parametrize("search,batch", [("tree", 1), ("refine", 1), ("refine", 8)])
def test_in_the_loop_a_final_that_reaches_stop_at_ends_the_search(tmp_path, search, batch):
    """tree scores each rollout as it ends, refine each wave's finals: with stop_at the search ends at the first
    good one, its finals a prefix of the unstopped search's (same particles, paths, scores), the rest of its
    budget unspent; with batch_size 8 the prompts are searched together (tts.sampling.batching)."""
    full, stop = tmp_path / "full", tmp_path / "stop"
    common = BENCH[:4] + [f"search={search}", "search.nfe_budget=120", f"batch_size={batch}"]
    run_tts(common, full)
    run_tts(common + ["++search.stop_at=1"], stop)
    whole, cut = by_prompt(records_in_order(full)), by_prompt(records_in_order(stop))
    summary = json.loads((stop / rf.SUMMARY).read_text())
    stopped = 0
    for prompt, rs in whole.items():
        kept, row = cut[prompt], summary["prompts"][prompt]
        same = lambda r: (r.path.particle, r.path.ops, round(r.score, 4), r.noise)  # noqa: E731
        assert [same(r) for r in kept] == [same(r) for r in rs[:len(kept)]]
        hit = next((i for i, r in enumerate(rs) if r.score >= 1), None)
        if hit is None:
            assert len(kept) == len(rs) and row["stopped_at_score"] is None
            continue
        stopped += 1
        # the scored batch that holds the hit ends it: a rollout (tree), a fresh image or two refinements (refine)
        assert hit < len(kept) <= hit + (2 if search == "refine" else 1) and row["stopped_at_score"] == 1.0
        assert row["nfe_spent"] == pytest.approx(sum(r.nfe for r in kept))
        assert row["nfe_unspent"] == pytest.approx(120 - row["nfe_spent"]) and row["nfe_unspent"] > 0
    assert stopped >= 1


def test_a_strategy_that_finishes_its_finals_together_spends_its_budget_as_before(tmp_path):
    common = BENCH[:4] + ["search=prune", "search.nfe_budget=80", "batch_size=1"]
    run_tts(common, tmp_path / "full")
    run_tts(common + ["++search.stop_at=1"], tmp_path / "stop")
    same = lambda run: [(r.prompt, r.path.ops, r.score, r.nfe) for r in records_in_order(run)]  # noqa: E731
    assert same(tmp_path / "full") == same(tmp_path / "stop")


# -- search.study_nfe_budget ---------------------------------------------------------------------------------------

STUDY = BENCH + ["num_prompts=4", "search.rounds=40", "batch_size=2", "++search.stop_at=1",
                 "++search.study_nfe_budget=400"]


def test_a_study_budget_moves_what_easy_prompts_leave_to_hard_ones(tmp_path):
    run_tts(STUDY, tmp_path)
    passes = rf.read_study(tmp_path)
    summary = json.loads((tmp_path / rf.SUMMARY).read_text())
    spent = {p: row["nfe_spent"] for p, row in summary["prompts"].items()}
    assert sum(spent.values()) <= 400 and passes[-1].final and passes[0].grants == dict.fromkeys(passes[0].grants, 100.0)
    assert len(passes) >= 3  # a second pass handed out what stopped prompts left
    open_after_first = set(passes[1].grants)
    for p, row in summary["prompts"].items():
        h = rf.prompt_hash(p)
        if row["stopped_at_score"] is None:  # still below the threshold: it got the leftover
            assert h in open_after_first and row["nfe_budget"] > 100
        elif passes[0].spent and h not in open_after_first:
            assert row["nfe_spent"] <= 100
    assert summary["cost_to_quality"]["study_passes"] == len(passes)
    reached = sum(r["stopped_at_score"] is not None for r in summary["prompts"].values())
    assert f"{reached} of 4 prompts reached stop_at=1; NFEs a prompt: mean {sum(spent.values()) / 4:.1f}" in (
        format_summary(summary, tmp_path))
    assert 400 - sum(spent.values()) < passes[0].nfe_per_image or all(
        r["stopped_at_score"] is not None for r in summary["prompts"].values())


def test_best_first_hands_the_leftover_to_the_prompt_closest_to_the_threshold(tmp_path):
    run_tts(STUDY + ["++search.study_order=best-first"], tmp_path)
    passes = rf.read_study(tmp_path)
    [chosen] = passes[1].grants  # no search.nfe_budget: the first in line takes the whole leftover
    order = [rf.prompt_hash(p.text) for p in _prompts(tmp_path)]
    first = {}
    for r in records_in_order(tmp_path):  # each prompt's records of pass 1: what it had spent when pass 2 was decided
        if sum(x.nfe for x in first.get(r.prompt_hash, [])) < passes[1].spent[r.prompt_hash]:
            first.setdefault(r.prompt_hash, []).append(r)
    best = {h: max(r.score for r in rs) for h, rs in first.items()}
    open_ = [h for h in order if best[h] < 1 and passes[1].spent[h] == passes[0].grants[h]]
    assert chosen == max(open_, key=lambda h: (best[h], -order.index(h)))
    assert passes[1].grants[chosen] == passes[1].spent[chosen] + (passes[1].leftover // 10) * 10


def _prompts(run):
    from tts.app.build import build_job

    return build_job(compose(STUDY), run / "x").prompts


@pytest.mark.slow
def test_kill_9_mid_study_then_rerun_gives_the_uninterrupted_folder(tmp_path):
    whole, run = tmp_path / "whole", tmp_path / "run"
    args = [sys.executable, "-c", "from tts.app.cli import main; main()", *[a.lstrip("+") for a in STUDY]]
    subprocess.run(args + [f"hydra.run.dir={whole}"], check=True, capture_output=True, timeout=300)
    full_study = (whole / rf.STUDY).read_text().splitlines()
    assert len(full_study) >= 3
    proc = subprocess.Popen(args + [f"hydra.run.dir={run}"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, target = time.monotonic() + 240, len(rf.read_manifest(whole)) // 2
    while time.monotonic() < deadline and proc.poll() is None:
        if (run / rf.MANIFEST).exists() and len((run / rf.MANIFEST).read_text().splitlines()) >= target:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (run / rf.SUMMARY).exists()
    subprocess.run(args + [f"hydra.run.dir={run}"], check=True, capture_output=True, timeout=300)
    assert (run / rf.STUDY).read_text().splitlines() == full_study
    a, b = records_in_order(whole), records_in_order(run)
    assert [(r.key, r.seed, r.score, r.nfe) for r in a] == [(r.key, r.seed, r.score, r.nfe) for r in b]
    left = json.loads((whole / rf.SUMMARY).read_text())
    right = json.loads((run / rf.SUMMARY).read_text())
    assert left["prompts"] == right["prompts"] and left["cost_to_quality"] == right["cost_to_quality"]


# -- search.study_nfe_budget with an in-loop strategy ----------------------------------------------------------------

IN_LOOP_STUDY = ["prompts=shapes-bench", "num_prompts=12", "verifier=shapes", "verifier.choice_of_metric=criteria_met",
                 "search=refine", "++search.stop_at=1", "++search.study_nfe_budget=240"]


@pytest.fixture(scope="module")
def in_loop_study(tmp_path_factory):
    run = tmp_path_factory.mktemp("in_loop_study")
    run_tts(IN_LOOP_STUDY + ["batch_size=4"], run)
    return run


def test_an_in_loop_study_searches_the_open_prompts_anew_each_pass(in_loop_study):
    """Each pass is a new refine search of every prompt it grants, with the NFEs the pass adds as its budget and
    seeds of its own, its records in that pass's round; a prompt that reached stop_at gets no more."""
    passes, records = rf.read_study(in_loop_study), records_in_order(in_loop_study)
    searches = [json.loads(line) for line in (in_loop_study / rf.SEARCHES).read_text().splitlines()]
    assert len(passes) >= 3 and passes[-1].final and set(passes[0].grants.values()) == {20.0}
    assert sum(r.nfe for r in records) <= 240
    for h in passes[0].grants:
        mine = [r for r in records if r.prompt_hash == h]
        rounds = sorted({r.round for r in mine})
        assert rounds == [k + 1 for k, a in enumerate(passes) if h in a.grants]  # a round per pass that granted it
        for k in rounds:
            adds = passes[k - 1].grants[h] - passes[k - 1].spent[h]
            [line] = [s for s in searches if s["prompt_hash"] == h and s["round"] == k]
            spent = sum(r.nfe for r in mine if r.round == k)
            assert line["nfe_budget"] == adds and line["nfe"] == pytest.approx(spent) and spent <= adds + 1e-9
        reached = [r.round for r in mine if r.score >= 1]
        assert not reached or max(rounds) == min(reached)  # searched until a final reached the threshold, no more
        if len(rounds) > 1:  # a later pass draws noises of its own
            assert not {r.seed for r in mine if r.round == 1} & {r.seed for r in mine if r.round == 2}
    assert json.loads((in_loop_study / rf.SUMMARY).read_text())["cost_to_quality"]["study_passes"] == len(passes)


def test_an_in_loop_study_resumes_and_batches_alike(in_loop_study, tmp_path):
    """A study killed in its last pass and rerun, and the same study one prompt at a time, end with the records
    and passes of the uninterrupted batched one."""
    import shutil

    def key(run):
        return [(r.key, r.seed, r.score, r.nfe, r.path.ops) for r in records_in_order(run)]

    one = tmp_path / "one"
    run_tts(IN_LOOP_STUDY + ["batch_size=1"], one)
    assert key(one) == key(in_loop_study)
    run = tmp_path / "cut"
    shutil.copytree(in_loop_study, run)
    last = max(r.round for r in records_in_order(run))
    for name, keep in ((rf.MANIFEST, lambda d: d["round"] < last), (rf.SEARCHES, lambda d: d["round"] < last),
                       (rf.STUDY, lambda d: not d["final"])):
        lines = (run / name).read_text().splitlines()
        (run / name).write_text("".join(f"{x}\n" for x in lines if keep(json.loads(x))))
    (run / rf.SUMMARY).unlink()
    run_tts(IN_LOOP_STUDY + ["batch_size=4"], run)
    assert key(run) == key(in_loop_study)
    assert (run / rf.STUDY).read_text() == (in_loop_study / rf.STUDY).read_text()


def test_an_in_loop_study_whose_share_pays_for_less_than_the_strategys_smallest_search_is_refused(tmp_path):
    """search=paths plans a path of at least one branch (20 NFEs on the 10-step preset): a share of 10 is refused
    in one line before any prompt is searched, naming the budget that would do."""
    from tts.core.runfolder import RunFolderError

    with pytest.raises(RunFolderError, match=r"^search.study_nfe_budget=30 gives each of the 3 prompts 10 NFEs, less "
                                             r"than the smallest search of this strategy \(20 NFEs on this pipeline\): "
                                             r"raise it to at least 60$"):
        run_tts(BENCH[:4] + ["search=paths", "++search.study_nfe_budget=30"], tmp_path)
    assert not (tmp_path / rf.MANIFEST).exists()
