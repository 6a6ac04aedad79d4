import math

import pytest
import torch

from tts.core.noise import derive_seed, fresh, make_noise, neighbor


@pytest.mark.parametrize("tau", [0.5, 0.95, 0.999])
@pytest.mark.parametrize("shape", [(4, 8, 8), (16, 32, 32), (3, 32, 32)])
def test_neighbour_has_exact_cosine_and_norm(tau, shape):
    pivot = fresh(7)
    x = make_noise(pivot, shape).double()
    for k in range(5):
        y = make_noise(neighbor(pivot, 100 + k, tau), shape).double()
        cos = float((x.flatten() @ y.flatten()) / (x.norm() * y.norm()))
        assert cos == pytest.approx(tau, abs=1e-5)
        assert float(y.norm()) == pytest.approx(float(x.norm()), rel=1e-5)


def test_neighbours_differ_and_chain():
    pivot = fresh(1)
    a, b = (make_noise(neighbor(pivot, s, 0.95), (4, 8, 8)) for s in (1, 2))
    assert not torch.allclose(a, b)
    # a neighbour of a neighbour is still a pure function of its lineage
    lineage = neighbor(neighbor(pivot, 1, 0.95), 9, 0.9)
    assert torch.equal(make_noise(lineage, (4, 8, 8)), make_noise(lineage, (4, 8, 8)))
    step = math.degrees(math.acos(0.95))
    assert step == pytest.approx(18.19, abs=0.01)


def test_fresh_noise_is_deterministic_and_seed_dependent():
    assert torch.equal(make_noise(fresh(3), (2, 4, 4)), make_noise(fresh(3), (2, 4, 4)))
    assert not torch.equal(make_noise(fresh(3), (2, 4, 4)), make_noise(fresh(4), (2, 4, 4)))


def test_derive_seed_is_stable_and_separates_parts():
    assert derive_seed(0, "abc", 1, 0, "fresh") == derive_seed(0, "abc", 1, 0, "fresh")
    seeds = {derive_seed(0, "abc", r, i, "fresh") for r in range(1, 5) for i in range(16)}
    assert len(seeds) == 64
    assert derive_seed(1, "abc", 1, 0, "fresh") != derive_seed(0, "abc", 1, 0, "fresh")
    assert 0 <= derive_seed("x") < 2**32


@pytest.mark.parametrize("tau", [0.0, 1.0, 1.5, -0.2])
def test_threshold_outside_open_interval_is_rejected(tau):
    with pytest.raises(ValueError, match="threshold"):
        neighbor(fresh(1), 2, tau)
