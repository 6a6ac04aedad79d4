"""``search.allocation``: how a search over several pipelines (tts.search.pipelines) spends its budget among them.
Every rule decides from the scores recorded so far for this prompt (oriented: larger is better) and nothing else,
so a rerun that replays the manifest makes the same decisions (resumable).

- ``uniform``: every pipeline plays every round (the budget split evenly, up to the pipelines' own rounds).
- ``halving``: successive halving (Karnin, Koren & Somekh, "Almost optimal exploration in multi-armed bandits",
  ICML 2013; Jamieson & Talwalkar, "Non-stochastic best arm identification and hyperparameter optimization",
  AISTATS 2016): every remaining pipeline plays a round; then the weaker half (by mean oriented score of its
  candidates; ties: the later one in the prior order) is dropped, until one is left, which plays the rest.
- ``ucb``: UCB1 (Auer, Cesa-Bianchi & Fischer, "Finite-time analysis of the multiarmed bandit problem", Machine
  Learning 2002): each round goes to one pipeline, each unplayed one first (prior order), then the pipeline with the
  largest ``mean + c * sqrt(2 ln n / n_a)`` over its candidates' scores, rescaled to [0, 1] by the smallest and
  largest score seen for this prompt (n: candidates scored, n_a: the pipeline's). A router's prior adds
  ``prior_weight`` pseudo-candidates of score 1 to the pipelines it chose.
"""
from __future__ import annotations

import dataclasses
import math

RULES = ("uniform", "halving", "ucb")


@dataclasses.dataclass
class Arms:
    """What the rules read: each pipeline's oriented scores so far (failed candidates left out), which are still
    in play (not dropped, not exhausted), and the prior order (the router's choice first)."""

    scores: list[list[float]]
    live: list[bool]
    order: list[int]
    prior: list[float]

    def mean(self, a: int) -> float:
        s = self.scores[a]
        return sum(s) / len(s) if s else float("-inf")


class Uniform:
    name = "uniform"

    def pick(self, arms: Arms) -> list[int]:
        return [a for a in arms.order if arms.live[a]]

    def after_round(self, arms: Arms) -> None:
        pass


class Halving:
    name = "halving"

    def __init__(self):
        self.dropped: set[int] = set()

    def pick(self, arms: Arms) -> list[int]:
        return [a for a in arms.order if arms.live[a] and a not in self.dropped]

    def after_round(self, arms: Arms) -> None:
        alive = self.pick(arms)
        if len(alive) < 2:
            return
        rank = sorted(alive, key=lambda a: (-arms.mean(a), arms.order.index(a)))
        self.dropped |= set(rank[math.ceil(len(alive) / 2):])


class UCB:
    name = "ucb"

    def __init__(self, c: float = 1.0, prior_weight: float = 1.0):
        self.c, self.prior_weight = c, prior_weight

    def pick(self, arms: Arms) -> list[int]:
        alive = [a for a in arms.order if arms.live[a]]
        if not alive:
            return []
        fresh = [a for a in alive if not arms.scores[a] and not arms.prior[a]]
        if fresh:
            return [fresh[0]]
        flat = [s for scores in arms.scores for s in scores]
        lo, hi = (min(flat), max(flat)) if flat else (0.0, 1.0)
        span = hi - lo or 1.0
        n_all = sum(len(s) + self.prior_weight * arms.prior[a] for a, s in enumerate(arms.scores))

        def bound(a: int) -> float:
            pseudo = self.prior_weight * arms.prior[a]
            n = len(arms.scores[a]) + pseudo
            if n <= 0:
                return float("inf")
            mean = (sum((s - lo) / span for s in arms.scores[a]) + pseudo) / n
            return mean + self.c * math.sqrt(2 * math.log(max(n_all, 1.0)) / n)

        return [max(alive, key=lambda a: (bound(a), -arms.order.index(a)))]

    def after_round(self, arms: Arms) -> None:
        pass


def make_rule(name: str, c: float = 1.0, prior_weight: float = 1.0):
    """The allocation rule ``search.allocation`` names (one line naming the choices if unknown)."""
    import difflib

    if name == "uniform":
        return Uniform()
    if name == "halving":
        return Halving()
    if name == "ucb":
        return UCB(c, prior_weight)
    close = difflib.get_close_matches(str(name), RULES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"search.allocation={name!r} is not an allocation rule{hint} choices: {', '.join(RULES)}")
