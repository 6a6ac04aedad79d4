"""Diffusion tree search (DTS / DTS*: Jain et al. 2025, "Diffusion Tree Sampling: Scalable inference-time alignment of
diffusion models", arXiv 2506.20701): a tree over denoising states, grown by rollouts whose terminal rewards are
backed up the chain, on a stochastic sampler (``eta`` > 0, so two children of a state differ).

* **Nodes.** The root stands above the initial noises: its children are fresh noises (step 0); a node at depth d
  holds one trajectory at step ``levels[d - 1]`` (``levels``: steps, or fractions of the pipeline's steps); a
  child continues its parent's state with a new noise seed to the next level.
* **One iteration** (DTS's four phases): *selection* walks down from the root, through nodes that already have
  ``branching`` children, choosing a child by its backed-up value; *expansion* adds a child to the first node
  with room (a fresh noise under the root, else the parent's state stepped to the next level with a new seed);
  *rollout* denoises a copy of the new node to the end with a new seed, and the verifier scores the final image
  (the terminal reward); *backup* adds the reward to every node on the chain.
* **Values.** A node's value is the soft value of the rewards of the rollouts through it,
  v = (1 / lambda) log mean exp(lambda r) (DTS's soft Bellman backup: lambda -> 0 the mean, -> infinity the max).
  ``select=max`` is DTS* (search: the child with the highest value plus an exploration bonus
  ``exploration * sqrt(ln N(parent) / N(child))``, UCT-style); ``select=soft`` is DTS (sampling: a child drawn
  with probability proportional to exp(lambda v), from a seeded generator).
* **Budget.** Every rollout's final image is a candidate (its path recorded, replayed by tts-replay); a rollout
  from depth d costs the steps left after it, an expansion the steps between levels. Without ``nfe_budget``
  the search stops after ``rollouts`` rollouts; with it, when no rollout fits what is left (when the chosen
  expansion does not fit, the deepest node on the chain whose rollout fits is rolled out instead). Charged NFEs
  (what the records' ``nfe`` sum to) equal what the search spent: the shared prefixes and expansions are spread
  over the candidates (tts.sampling.particles).
"""
from __future__ import annotations

import dataclasses
import math
import random

from ..core.noise import fresh
from ..core.validate import check_number
from . import SearchContext, SeedFn, check_budget, check_size
from ._steps import Advance, Score, StepRequests, check_image_budget, check_steps, resolve_steps

SELECTIONS = ("max", "soft")


@dataclasses.dataclass
class Node:
    """A denoising state in the tree (``particles``: one row; None for the root) and the rewards through it."""

    depth: int
    particles: object = None
    children: list["Node"] = dataclasses.field(default_factory=list)
    rewards: list[float] = dataclasses.field(default_factory=list)
    visits: int = 0

    def value(self, lmbda: float) -> float:
        """The soft value of the rewards backed up through this node (-inf when none was scored)."""
        if not self.rewards:
            return -math.inf
        top = max(self.rewards)
        return top + math.log(sum(math.exp(lmbda * (r - top)) for r in self.rewards) / len(self.rewards)) / lmbda


class TreeSearch(StepRequests):
    in_loop = True
    name = "tree"

    def __init__(self, seed_fn: SeedFn, context: SearchContext | None = None, nfe_budget: float | None = None,
                 rollouts: int = 16, levels=(0.25, 0.5, 0.75), branching: int = 3, select: str = "max",
                 lmbda: float = 10.0, exploration: float = 0.1, eta: float = 1.0):
        self.rollouts = check_size("search.rollouts", rollouts)
        self.levels = check_steps("search.levels", levels)
        self.branching = check_size("search.branching", branching)
        if select not in SELECTIONS:
            raise ValueError(f"search.select must be one of {', '.join(SELECTIONS)} (max: DTS*, soft: DTS), "
                             f"got {select!r}")
        self.select = select
        self.lmbda = float(check_number("search.lmbda", lmbda, 0.0, 1e6, lo_open=True))
        self.exploration = float(check_number("search.exploration", exploration, 0.0, 1e6))
        self.eta = float(check_number("search.eta", eta, 0.0, 1.0, lo_open=True))
        self.nfe_budget = check_budget(nfe_budget)
        check_image_budget(self.nfe_budget, context.nfe_per_image if context else None)
        self.seed_fn = seed_fn

    def requests(self, engine):
        """The tree's step requests (tts.search._steps): expansions and rollouts are Advances, rewards Scores,
        so tts-search can step several prompts' trees in shared denoiser calls."""
        depths = (0, *resolve_steps("search.levels", self.levels, engine.steps))  # the step of each depth
        root, finals, n = Node(-1), [], 0
        while n < (self.rollouts if self.nfe_budget is None else 10 ** 9):
            chain = yield from self._chain(root, engine, depths, n)
            if chain is None:
                break
            final = yield Advance(self._rollout(engine, chain[-1], n))
            [reward] = yield Score(final, f"rollout {n}")
            for node in chain:
                node.visits += 1
                if reward is not None and math.isfinite(reward):
                    node.rewards.append(float(reward))
            finals.append(final)
            n += 1
        if not finals:
            raise ValueError("search=tree made no rollout: raise search.nfe_budget to one image or more")
        return finals

    # -- selection and expansion ------------------------------------------------------------------------------

    def _chain(self, root: Node, engine, depths, n: int) -> list[Node] | None:
        """The nodes from the root to the one this iteration rolls out from (a new child when one fits), or
        None when no rollout fits what is left of the budget."""
        chain, node = [root], root
        while node.depth < len(depths) - 1:
            if len(node.children) < self.branching:
                cost = self._step_cost(engine, depths, node.depth) + self._rollout_cost(engine, depths, node.depth + 1)
                if cost <= engine.remaining + 1e-9:
                    child = yield from self._expand(engine, depths, node, n)
                    return [*chain, child]
                break
            node = self._choose(node, n)
            chain.append(node)
        while len(chain) > 1 and self._rollout_cost(engine, depths, chain[-1].depth) > engine.remaining + 1e-9:
            chain.pop()
        return chain if len(chain) > 1 else None

    def _choose(self, node: Node, n: int) -> Node:
        kids = node.children
        if self.select == "soft":
            values = [k.value(self.lmbda) for k in kids]
            top = max(values)
            if math.isinf(top):
                return kids[0]
            weights = [math.exp(self.lmbda * (v - top)) for v in values]
            return random.Random(self.seed_fn(n, node.depth + 1, "select")).choices(kids, weights)[0]
        total = math.log(max(1, node.visits))
        return max(kids, key=lambda k: k.value(self.lmbda) + self.exploration * math.sqrt(total / max(1, k.visits)))

    def _expand(self, engine, depths, node: Node, n: int) -> Node:
        if node.depth < 0:  # under the root: a fresh initial noise
            return _add(node, Node(0, engine.start([fresh(self.seed_fn(0, len(node.children), "fresh"))])))
        p = engine.select(node.particles, [0], "branch", [self.seed_fn(n, node.depth + 1, "branch")])
        return _add(node, Node(node.depth + 1, (yield Advance(p, depths[node.depth + 1]))))

    # -- rollouts and costs ------------------------------------------------------------------------------------

    def _rollout(self, engine, node: Node, n: int):
        """A copy of the node's state, with a new seed, to denoise to the end (its prefix counted as shared)."""
        return engine.select(node.particles, [0], "rollout", [self.seed_fn(n, node.depth, "rollout")], copies=True)

    @staticmethod
    def _step_cost(engine, depths, depth: int) -> float:
        """NFEs of stepping a node at ``depth`` (-1: the root) to the next depth."""
        return 0.0 if depth < 0 else (depths[depth + 1] - depths[depth]) * engine.row_step_cost

    @staticmethod
    def _rollout_cost(engine, depths, depth: int) -> float:
        return (engine.steps - depths[depth]) * engine.row_step_cost


def _add(parent: Node, child: Node) -> Node:
    parent.children.append(child)
    return child
