import pytest

from tts.search import Candidate
from tts.search.random import RandomSearch
from tts.search.zero_order import ZeroOrderSearch


def seed_fn(r, i, purpose):
    return hash((r, i, purpose)) % 2**32


def score_all(noises, r, scores):
    return [Candidate(r, i, n, s) for i, (n, s) in enumerate(zip(noises, scores))]


def test_random_search_schedule_and_global_best():
    s = RandomSearch(seed_fn, rounds=4)
    sizes, r = [], 0
    best_scores = [5.0, 1.0, 2.0, 3.0]
    while noises := s.ask():
        r += 1
        sizes.append(len(noises))
        assert all(n["kind"] == "fresh" for n in noises)
        s.tell(score_all(noises, r, [best_scores[r - 1]] + [0.0] * (len(noises) - 1)))
    assert sizes == [2, 4, 8, 16]
    assert s.best.round == 1 and s.best.score == 5.0  # the global best survives later, worse rounds


def test_random_search_constant_schedule():
    s = RandomSearch(seed_fn, rounds=3, schedule="constant", per_round=5)
    assert [len(s.ask()) for _ in range(4)] == [5, 5, 5, 0]


def test_zero_order_moves_to_better_neighbour_without_regenerating_pivot():
    s = ZeroOrderSearch(seed_fn, rounds=3, num_neighbors=3, threshold=0.9)
    r1 = s.ask()
    assert len(r1) == 4 and r1[0]["kind"] == "fresh" and all(n["kind"] == "neighbor" for n in r1[1:])
    assert all(n["pivot"] == r1[0] for n in r1[1:])
    s.tell(score_all(r1, 1, [0.5, 0.1, 0.9, 0.2]))
    r2 = s.ask()
    assert len(r2) == 3  # pivot is not regenerated
    assert all(n["pivot"] == r1[2] for n in r2)
    s.tell(score_all(r2, 2, [0.1, 0.2, 0.3]))  # nobody beats 0.9: restart
    r3 = s.ask()
    assert len(r3) == 4 and r3[0]["kind"] == "fresh" and r3[0] != r1[0]
    s.tell(score_all(r3, 3, [0.0, 0.0, 0.0, 0.0]))
    assert s.best.score == 0.9 and s.best.noise == r1[2]  # the global best survives the restart
    assert s.ask() == []


def test_zero_order_ignores_failed_candidates():
    s = ZeroOrderSearch(seed_fn, rounds=2, num_neighbors=2)
    r1 = s.ask()
    s.tell(score_all(r1, 1, [None, 0.3, None]))
    assert s.best.score == 0.3
    r2 = s.ask()
    assert all(n["pivot"] == r1[1] for n in r2)


@pytest.mark.parametrize("kwargs,match", [({"rounds": 0}, "rounds"), ({"num_neighbors": 0}, "num_neighbors"),
                                          ({"threshold": 1.0}, "threshold"), ({"threshold": 0}, "threshold")])
def test_zero_order_rejects_impossible_numbers(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ZeroOrderSearch(seed_fn, **kwargs)


def test_random_rejects_bad_schedule():
    with pytest.raises(ValueError, match="schedule"):
        RandomSearch(seed_fn, schedule="linear")


def context(nfe_per_image):
    from pathlib import Path

    from tts.search import SearchContext

    return SearchContext("p", "h", Path("."), (4, 8, 8), nfe_per_image)


def asked_until_done(strategy):
    total, r = 0, 0
    while noises := strategy.ask():
        r += 1
        total += len(noises)
        strategy.tell(score_all(noises, r, [None] * len(noises)))
    return total


@pytest.mark.parametrize("budget,expected", [(320, 30), (160, 16), (45, 4), (5, 0)])
def test_random_search_stops_at_what_nfe_budget_pays_for(budget, expected):
    s = RandomSearch(seed_fn, context(10.0), rounds=4, nfe_budget=budget)
    assert asked_until_done(s) == expected  # 320 NFEs pay for 32 images; 4 rounds ask 30


@pytest.mark.parametrize("budget", [10, 40, 130])
def test_zero_order_stops_at_what_nfe_budget_pays_for(budget):
    s = ZeroOrderSearch(seed_fn, context(10.0), rounds=50, num_neighbors=3, nfe_budget=budget)
    assert asked_until_done(s) == budget // 10


def test_nfe_budget_is_validated_and_needs_a_measurable_pipeline():
    with pytest.raises(ValueError, match="search.nfe_budget must be a positive number"):
        RandomSearch(seed_fn, nfe_budget=0)
    with pytest.raises(ValueError, match="drop one of them"):
        RandomSearch(seed_fn, context(None), nfe_budget=100)
    assert asked_until_done(RandomSearch(seed_fn, None, rounds=2, nfe_budget=10)) == 6  # validation: no context
