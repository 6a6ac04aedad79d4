"""``search.pipelines`` / ``search.allocation`` / ``router``: a search over several pipelines, built and validated
from a composed config before anything loads (tts.app.build calls :func:`split_search_node` and :func:`build`).
docs/search-over-models.md."""
from __future__ import annotations

import functools

from omegaconf import DictConfig, OmegaConf

from .errors import ConfigError

#: the keys of the ``search`` node that belong to the search over pipelines, not to the inner strategy (given on
#: the command line as ``search.pipelines=[...]``: tts.app.overrides adds them to any search's node)
KEYS = ("pipelines", "allocation", "ucb_c", "router_mode")


def split_search_node(node: DictConfig) -> tuple[DictConfig, dict]:
    """The strategy's own node and the search-over-pipelines settings taken out of it."""
    plain = OmegaConf.to_container(node, resolve=True)
    taken = {k: plain.pop(k) for k in KEYS if k in plain}
    return OmegaConf.create(plain), taken


def build(cfg, factory, pipeline, settings: dict):
    """(factory, arms): the factory wrapped in tts.search.over_models.PipelineSearch and the pipelines' arms when
    ``search.pipelines`` is set, else (factory, None); every setting validated in one line."""
    from ..pipelines import PipelineConfigError
    from ..pipelines.arms import parse_arms
    from ..pipelines.nfe import nfe_per_image
    from ..search.over_models import ArmInfo, PipelineSearch

    entries = settings.get("pipelines")
    router = _router(cfg)
    if entries is None:
        if router is not None:
            raise ConfigError("router= picks among search.pipelines: set search.pipelines=[...] too (or drop router)")
        if settings.get("allocation", "uniform") != "uniform":
            raise ConfigError("search.allocation spreads a budget over search.pipelines: set search.pipelines=[...] "
                              "(or drop search.allocation)")
        return factory, None
    try:
        arms = parse_arms(entries, pipeline)
        for arm in arms:
            arm.spec.check()
    except PipelineConfigError as e:
        raise ConfigError(str(e)) from None
    labels = [a.label for a in arms]
    if router is not None:
        try:
            router.check(labels)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    infos = [ArmInfo(a.label, nfe_per_image(a.spec)[0] * a.cost) for a in arms]
    wrapped = functools.partial(PipelineSearch, inner=factory, arms=infos,
                                allocation=settings.get("allocation", "uniform"), router=router,
                                router_mode=settings.get("router_mode", "restrict"),
                                c=float(settings.get("ucb_c", 1.0)),
                                nfe_budget=getattr(factory, "keywords", {}).get("nfe_budget"))
    return wrapped, arms


def _router(cfg):
    node = cfg.get("router")
    if node is None or not node.get("_target_"):
        return None
    from .instantiation import instantiate

    return instantiate(node, "router")


def plan_pipelines(arms, factory, s_per_nfe: float | None = None) -> list[dict]:
    """plan.json's ``pipelines``: per pipeline its NFEs per image, cost per NFE (and the rule that set it), NFEs
    charged per image, the most candidates and charged NFEs a prompt may spend there (the whole budget, or every
    round of its strategy), its weights in memory and its seconds per image (with ``plan.s_per_nfe``, which is the
    first pipeline's: a pipeline's seconds per image are its charged NFEs times it)."""
    from ..pipelines.nfe import nfe_per_image
    from ..pipelines import weights_in_memory

    budget = getattr(factory, "keywords", {}).get("nfe_budget")
    inner = getattr(factory, "keywords", {}).get("inner", factory)
    rows = []
    for a in arms:
        nfe, how = nfe_per_image(a.spec)
        charged = nfe * a.cost
        most = int(budget // charged) if budget else _inner_total(inner)
        rows.append({"label": a.label, "nfe_per_image": nfe, "nfe_source": how, "cost_per_nfe": a.cost,
                     "cost_rule": a.cost_rule, "charged_nfe_per_image": charged, "most_candidates": most,
                     "most_nfe": most * charged, "weights_gb": weights_in_memory(a.spec),
                     "s_per_image": charged * s_per_nfe if s_per_nfe else None})
    return rows


def _inner_total(inner) -> int:
    from ..search import Candidate

    strategy, total = inner(seed_fn=lambda r, i, p: 1000 * r + i, nfe_budget=None), 0
    while (noises := strategy.ask()) and total < 1_000_000:
        strategy.tell([Candidate(0, i, n, None) for i, n in enumerate(noises)])
        total += len(noises)
    return total


def format_pipelines(rows: list[dict]) -> list[str]:
    """tts-plan's table of the pipelines of a search over pipelines."""
    out = ["", "pipelines (charged NFEs = NFEs x cost per NFE relative to the first; a prompt spends at most the "
               "budget in all, spread by search.allocation):",
           "| pipeline | NFEs / image | cost per NFE | charged / image | most candidates (NFEs) a prompt | weights (GB) "
           "| s / image |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        gb = "n/a" if r["weights_gb"] is None else f"{r['weights_gb']:g}"
        sec = "n/a" if r["s_per_image"] is None else f"{r['s_per_image']:.3g}"
        out.append(f"| {r['label']} | {r['nfe_per_image']:g} ({r['nfe_source'].removeprefix('estimated: ')}) | "
                   f"{r['cost_per_nfe']:g} ({r['cost_rule']}) | {r['charged_nfe_per_image']:g} | "
                   f"{r['most_candidates']} ({r['most_nfe']:g}) | {gb} | {sec} |")
    return out
