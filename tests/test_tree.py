"""search=tree (DTS*, tts.search.tree) on the embedded shapes model steered by shapes-reward: the budget, values
steering the expansions, exact replay, one-line errors."""
import pytest
from conftest import compose, run_tts

from tts.app.build import build_job
from tts.app.errors import ConfigError
from tts.app.replay import replay
from tts.core import runfolder as rf

BASE = ["pipeline=shapes", "verifier=shapes-reward", "search=tree", "prompt='a big square'"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tree")
    run_tts([*BASE, "search.nfe_budget=160"], folder)
    return folder


def records_of(run):
    return sorted(rf.read_manifest(run), key=lambda r: r.index)


def test_budget_is_spent_and_never_exceeded(run):
    [search] = rf.read_searches(run).values()
    records = records_of(run)
    assert search.nfe == 160 and search.candidates == len(records) > 16  # deeper rollouts are cheaper than images
    assert sum(r.nfe for r in records) == pytest.approx(160)  # charged NFEs sum to what was spent
    assert all(r.path.nfe_path == 10 and r.path.nfe_shared < 10 for r in records)


def test_the_values_choose_the_expansions(run):
    """After the root's 3 children (fresh noises) are rolled out, DTS* descends into the best one; later rollouts
    start deeper in the tree and score better than the first, random ones."""
    records = records_of(run)
    first = records[:3]
    best = max(first, key=lambda r: r.score)
    assert all(r.path.ops[0]["noise"] == r.noise for r in records)
    assert records[3].noise == best.noise and len({r.noise["seed"] for r in first}) == 3
    depths = [sum(op["op"] == "from" and op["event"] == "branch" for op in r.path.ops) for r in records]
    assert depths[:3] == [0, 0, 0] and max(depths) == 3
    late = [r.score for r in records[len(records) // 2:]]
    assert sum(late) / len(late) > sum(r.score for r in first) / 3 + 0.1


@pytest.mark.parametrize("index", [0, 5, -1])
def test_every_path_replays_exactly(run, index):
    record = records_of(run)[index]
    _, diff = replay(run, record.image)
    assert diff == 0


def test_soft_selection_runs_within_a_budget_that_is_no_multiple_of_an_image(tmp_path):
    run_tts([*BASE, "search.nfe_budget=45", "search.select=soft", "search.levels=[2,6]"], tmp_path)
    [search] = rf.read_searches(tmp_path).values()
    # 3 fresh rollouts (30), one expansion to step 2 and its rollout (2 + 8): what is left (5) pays for no rollout
    assert search.nfe == 40 and search.candidates == 4


@pytest.mark.parametrize("override, match", [("search.select=greedy", "max, soft"),
                                             ("search.levels=[0.5,0.2]", "increasing"),
                                             ("search.branching=0", "search.branching"),
                                             ("search.nfe_budget=5", "less than one image")])
def test_bad_settings_fail_in_one_line_before_loading(override, match, tmp_path):
    with pytest.raises(ConfigError, match=match) as e:
        build_job(compose([*BASE, override]), tmp_path)
    assert "\n" not in str(e.value) and not list(tmp_path.iterdir())
