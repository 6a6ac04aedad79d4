"""``tts-plan`` (also ``tts-search --plan``): what a run will spend, before it spends it.

    tts-plan pipeline=flux-dev verifier=gemini prompts=file prompts.path=PartiPrompts.tsv prompts.column=Prompt \
        shard.count=8 plan.s_per_nfe=0.25

From the config alone: prompts and shards; candidates per prompt (the strategy is run on stand-in
scores, so an adaptive one gives its fewest and most); NFEs per candidate (steps x denoiser passes per
step; classifier-free guidance doubles them, Ma et al. 2025 count compute in NFEs); verifier calls; the
weights in memory of a preset's checkpoint (the presets table of docs/configuration.md);
API requests, tokens and cost from the verifier's ``price_per_million_*_tokens``; GPU-hours from a
throughput in seconds per NFE, given (``plan.s_per_nfe``), measured here (``plan.measure=true``: one
timed batch of the pipeline), or measured in a pilot run folder (``plan.from_run=DIR``, which also gives
measured NFEs, requests and tokens per candidate). Totals of an adaptive strategy are upper bounds.
Every ``tts-search`` run writes its plan into the run folder (``plan.json``); compare it with what
``summary.json`` says the run spent.
"""
from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path

from omegaconf import DictConfig

from ..core import runfolder as rf
from ..core.validate import MAX_CANDIDATES, is_number
from .errors import PlanError

PLAN_VERSION = 1
#: Characters per text token, the providers' rule of thumb (Gemini API docs, "Understand and count tokens").
CHARS_PER_TOKEN = 4
#: An answer of six metrics, each a short explanation and a score, in JSON.
OUTPUT_TOKENS = 400


@dataclasses.dataclass
class _Parts:
    """What a plan is made from: the built components (a job) or ones built cheaply from the config."""

    pipeline: object
    verifier: object
    search_factory: object
    prompts: list
    shard_count: int
    batch_size: int
    arms: list | None = None  # search.pipelines (tts.pipelines.arms)


def make_plan(cfg: DictConfig, job=None) -> dict:
    """The plan of the run ``cfg`` describes (``job``: its components, when already built)."""
    from ..pipelines.nfe import nfe_per_image

    parts = _parts(cfg, job)
    settings = cfg.get("plan") or {}
    pilot = _pilot(settings.get("from_run"), cfg) if settings.get("from_run") else None
    nfe, nfe_source = nfe_per_image(parts.pipeline)
    low, high = candidates_per_prompt(parts.search_factory, None if parts.arms else nfe)  # arms: budget of their own
    from ..search.protocols import is_gradient, make_strategy

    if is_gradient(make_strategy(parts.search_factory)) and nfe:  # noise-opt: backward passes charged
        from ..sampling.gradient import BACKWARD

        nfe, nfe_source = nfe * ((1 + BACKWARD) * (high - 1) + 1) / high, f"{nfe_source}; a gradient step's pass charged 3x"
    s_per_nfe, throughput_source = settings.get("s_per_nfe"), "given (plan.s_per_nfe)"
    if pilot:
        nfe, nfe_source = pilot["nfe_per_candidate"], f"measured in {pilot['run']}"
        if s_per_nfe is None and pilot["s_per_nfe"]:
            s_per_nfe, throughput_source = pilot["s_per_nfe"], f"measured in {pilot['run']}"
    if settings.get("measure"):
        s_per_nfe, nfe = measure(parts)
        throughput_source = nfe_source = f"measured here: one batch of {parts.batch_size}"
    if s_per_nfe is not None and (not is_number(s_per_nfe) or not 0 < s_per_nfe < math.inf):
        raise PlanError(f"plan.s_per_nfe must be a positive number of seconds, got {s_per_nfe!r}")
    prompts, shards = len(parts.prompts), parts.shard_count
    per_shard = math.ceil(prompts / shards) if prompts else 0
    candidates = prompts * high
    plan = {
        "schema_version": PLAN_VERSION,
        "prompts": prompts, "shards": shards, "prompts_per_shard": per_shard,
        "candidates_per_prompt": {"min": low, "max": high}, "exact": low == high,
        "candidates": candidates,
        "nfe_per_candidate": nfe, "nfe_source": nfe_source, "nfe": candidates * nfe,
        "verifier_calls": candidates,
        "weights_gb": _weights(parts.pipeline) if not getattr(parts.pipeline, "server", None) else None,
        "api": api_cost(parts, candidates, settings, pilot),
        "s_per_nfe": s_per_nfe, "throughput_source": throughput_source if s_per_nfe is not None else None,
        "gpu_hours": candidates * nfe * s_per_nfe / 3600 if s_per_nfe is not None else None,
        "wall_hours": per_shard * high * nfe * s_per_nfe / 3600 if s_per_nfe is not None else None,
    }
    if parts.arms:  # search.pipelines: each pipeline's NFEs, cost, weights and time (tts.app.over_models)
        from .over_models import plan_pipelines

        plan["pipelines"] = plan_pipelines(parts.arms, parts.search_factory, s_per_nfe)
    return plan


def _parts(cfg: DictConfig, job) -> _Parts:
    if job is not None:
        return _Parts(job.pipeline, job.verifier, job.search_factory, job.prompts, job.shard.count, job.batch_size,
                      job.arms)
    from .build import _driver_settings, instantiate, instantiate_strategy, positive_int
    from .errors import ConfigError
    from ..prompts import select
    from ..run.shard import ShardError, from_config

    try:
        shard = from_config(cfg)
    except ShardError as e:
        raise ConfigError(str(e)) from None
    prompts = select(instantiate(cfg.prompts, "prompts"), cfg.num_prompts)
    from . import over_models

    search_node, over = over_models.split_search_node(_driver_settings(cfg.search)[0])  # stop_at & co.: the drivers'
    pipeline = instantiate(cfg.pipeline, "pipeline")
    factory, arms = over_models.build(cfg, instantiate(search_node, "search"), pipeline, over)
    instantiate_strategy(factory)  # its settings checked (sizes bounded) before it is simulated: one line if not
    return _Parts(arms[0].spec if arms else pipeline, instantiate(cfg.verifier, "verifier"),
                  factory, prompts, shard.count, positive_int(cfg, "batch_size"), arms)


# -- candidates and NFEs ------------------------------------------------------------------------------------

def candidates_per_prompt(factory, nfe: float | None = None) -> tuple[int, int]:
    """(fewest, most) candidates one prompt's search asks for: the strategy run to its end on stand-in scores,
    once with every candidate failing (no pivot ever improves: the most restarts) and once with every new
    candidate the best so far (the fewest). A strategy that asks a person: every round shown, at most. An
    in-loop strategy (particles, tts.sampling.particles): the whole images its ``nfe_budget`` pays for (what it spends
    is at most that; 1 without a budget, which the plan cannot bound). With ``nfe_budget``, the most is capped
    by what the budget pays for."""
    from ..search.protocols import traits

    strategy = factory(seed_fn=lambda r, i, purpose: 1000 * r + i)
    kind = traits(strategy)
    budget = kind.budget.nfe
    cap = max(1, int(budget // nfe)) if budget and nfe else None
    if kind.gradient:  # noise-opt: the initial noise and one candidate per gradient step (tts.search.noise_opt)
        return (strategy.steps(nfe) + 1,) * 2 if nfe else (strategy.iterations + 1,) * 2
    if kind.in_loop:
        return (cap, cap) if cap else (1, 1)
    if kind.asks_a_person:
        per_round = getattr(strategy, "per_round", 1)
        return (per_round, strategy.rounds * per_round) if cap is None else (min(per_round, cap), min(
            strategy.rounds * per_round, cap))
    counts = [_simulate(factory, improving) for improving in (False, True)]
    return (min(counts), max(counts)) if cap is None else (min(min(counts), cap), min(max(counts), cap))


def _simulate(factory, improving: bool, cap: int = MAX_CANDIDATES) -> int:
    from ..search import Candidate

    strategy = factory(seed_fn=lambda r, i, purpose: 1000 * r + i)
    total, round_ = 0, 0
    while noises := strategy.ask():
        round_ += 1
        strategy.tell([Candidate(round_, i, n, float(total + i) if improving else None) for i, n in enumerate(noises)])
        total += len(noises)
        if total > cap:
            raise PlanError(f"the search asks for more than {cap:,} candidates a prompt (more than tts allows): "
                            "lower its rounds or sizes, or bound it with search.nfe_budget")
    return total


def measure(parts: _Parts) -> tuple[float, float]:
    """(seconds per NFE of one image, NFEs per candidate) from a timed batch of the pipeline (after a warm-up)."""
    from ..sampling.generate import make_generator
    from ..core.noise import fresh

    generator = make_generator(parts.pipeline)
    prompt = parts.prompts[0].text if parts.prompts else "a photo"
    lineages = [fresh(10_000 + i) for i in range(parts.batch_size)]
    try:
        generator.generate(prompt, lineages)
        _, nfe, seconds = generator.generate(prompt, lineages)
    finally:
        generator.close()
    return seconds / (parts.batch_size * nfe), nfe


# -- API cost -----------------------------------------------------------------------------------------------

def api_verifiers(verifier) -> list:
    """The verifier, or an ensemble's members, that bill per token (they carry ``prices``)."""
    members = getattr(verifier, "members", None) or [verifier]
    return [v for v in members if hasattr(v, "prices")]


def api_cost(parts: _Parts, candidates: int, settings, pilot: dict | None) -> list[dict]:
    """Per API verifier: requests, tokens and USD for ``candidates`` images (one request each, unless a pilot
    measured retries), at its prices."""
    out = []
    for key in ("input_tokens", "output_tokens"):
        value = settings.get(key)
        if value is not None and (not is_number(value) or not 0 < value < math.inf):
            raise PlanError(f"plan.{key} must be a positive number of tokens per request, got {value!r}")
    for v in api_verifiers(parts.verifier):
        for name, price in zip(("price_per_million_input_tokens", "price_per_million_output_tokens"), v.prices):
            if not 0 <= price < math.inf:
                raise PlanError(f"verifier.{name} must be a non-negative number of USD, got {price!r}")
        measured = (pilot or {}).get("api", {}).get(v.name)
        if measured:
            per_call, tin, tout = measured["requests_per_call"], measured["input_tokens"], measured["output_tokens"]
            source = f"measured in {pilot['run']}"
        else:
            per_call = 1.0
            tin = settings.get("input_tokens") or estimate_input_tokens(v, parts)
            tout = settings.get("output_tokens") or OUTPUT_TOKENS
            source = "given" if settings.get("input_tokens") else "estimated (calibrate with plan.from_run=PILOT_RUN)"
        requests = candidates * per_call
        price_in, price_out = v.prices
        out.append({"verifier": v.name, "model": getattr(v, "model_name", None), "requests": requests,
                    "input_tokens_per_request": tin, "output_tokens_per_request": tout,
                    "input_tokens": requests * tin, "output_tokens": requests * tout,
                    "price_per_million_input_tokens": price_in, "price_per_million_output_tokens": price_out,
                    "cost_usd": requests * (tin * price_in + tout * price_out) / 1e6, "tokens_source": source})
    return out


def estimate_input_tokens(verifier, parts: _Parts) -> float:
    """The grading prompt's text (about 4 characters a token) plus the image, downscaled to the verifier's
    ``max_side``: Gemini bills 258 tokens per 768x768 tile (one for images up to 384 px) ("Understand and
    count tokens", Gemini API docs); OpenAI's GPT-4o family 85 + 170 per 512 px tile after fitting the
    image in 2048 px and its short side in 768 px (85 at ``detail=low``), and gpt-4o-mini 2833 + 5667 per
    tile (OpenAI, "Images and vision: calculating costs")."""
    from ..verifiers import grading

    mean_prompt = sum(len(p.text) for p in parts.prompts) / max(1, len(parts.prompts))
    text = (len(grading.load_template(getattr(verifier, "prompt_path", None))) + mean_prompt) / CHARS_PER_TOKEN
    w, h = _fit(parts.pipeline.width, parts.pipeline.height, getattr(verifier, "max_side", 768))
    model = str(getattr(verifier, "model_name", "")).lower()
    if "gemini" in type(verifier).__module__:
        image = 258 if max(w, h) <= 384 else 258 * math.ceil(w / 768) * math.ceil(h / 768)
    else:
        base, tile = (2833, 5667) if "4o-mini" in model else (85, 170)
        if getattr(verifier, "image_detail", "auto") == "low":
            image = base
        else:
            w, h = _fit(w, h, 2048)
            scale = min(1.0, 768 / min(w, h))
            image = base + tile * math.ceil(w * scale / 512) * math.ceil(h * scale / 512)
    return round(text) + image


def _fit(w: int, h: int, side: int) -> tuple[float, float]:
    scale = min(1.0, side / max(w, h))
    return w * scale, h * scale


# -- a pilot run ----------------------------------------------------------------------------------------------

#: Settings that change the cost per candidate: a pilot that differs in them is flagged.
_PILOT_KEYS = ("pipeline.model_id", "pipeline.height", "pipeline.width", "pipeline.num_inference_steps",
               "pipeline.guidance_scale", "pipeline.dtype", "batch_size", "verifier._target_", "verifier.model_name",
               "verifier.max_side")


def _pilot(path, cfg: DictConfig) -> dict:
    """Per-candidate figures measured in a finished run folder."""
    run = Path(str(path)).expanduser()
    records = [r for r in rf.final_records(rf.read_manifest(run))] if run.is_dir() else []
    if not records:
        raise PlanError(f"plan.from_run={path}: no run folder with candidates there (a folder tts-search wrote, "
                         "holding manifest.jsonl)")
    nfe = sum(r.nfe for r in records)
    plan = {"run": str(run), "candidates": len(records), "nfe_per_candidate": nfe / len(records),
            "s_per_nfe": sum(r.timings.generate_s for r in records) / nfe if nfe else None, "api": {}}
    all_records = rf.read_manifest(run)
    for name in {r.verifier for r in records}:
        used = [r.usage for r in all_records if r.usage is not None and r.verifier == name]
        requests = sum(u.requests for u in used)
        if used and requests:
            plan["api"][name] = {"requests_per_call": requests / len(used),
                                 "input_tokens": sum(u.input_tokens for u in used) / requests,
                                 "output_tokens": sum(u.output_tokens for u in used) / requests}
    plan["differs"] = _pilot_differences(run, cfg)
    return plan


def _pilot_differences(run: Path, cfg: DictConfig) -> list[str]:
    from omegaconf import OmegaConf

    try:
        old = json.loads((run / rf.CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return []
    new = OmegaConf.to_container(cfg, resolve=False)
    out = []
    for key in _PILOT_KEYS:
        a, b = _get(old, key), _get(new, key)
        if a != b and not (a is None or b is None):
            out.append(f"{key}: {a!r} in the pilot, {b!r} here")
    return out


def _get(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict):
            return None
        tree = tree.get(part)
    return tree


# -- output ------------------------------------------------------------------------------------------------------

def _n(x) -> str:
    return f"{x:,.0f}" if x >= 100 or float(x).is_integer() else f"{x:,.2f}"


def format_plan(plan: dict) -> str:
    """The plan as a few lines of text and a table (per prompt and in total)."""
    c = plan["candidates_per_prompt"]
    per = f"{c['max']}" if plan["exact"] else f"{c['min']}-{c['max']} (adaptive: totals are upper bounds)"
    head = (f"plan: {plan['prompts']:,} prompts" + (f" on {plan['shards']} shards ({plan['prompts_per_shard']:,} "
            f"each at most)" if plan["shards"] > 1 else "") + f", {per} candidates per prompt")
    rows = [("candidates", c["max"], plan["candidates"], ""),
            ("NFEs", c["max"] * plan["nfe_per_candidate"], plan["nfe"],
             f"{_n(plan['nfe_per_candidate'])} a candidate, {plan['nfe_source']}"),
            ("verifier calls", c["max"], plan["verifier_calls"], "one per candidate")]
    if plan.get("weights_gb") is not None:
        rows.append(("weights in memory (GB)", None, f"~{plan['weights_gb']:g}",
                     "the pipeline's weights in its dtype (docs/configuration.md); activations add, growing with "
                     "batch_size; pipeline.cpu_offload / quantize=nf4 lower what sits on the GPU"))
    for a in plan["api"]:
        share = a["requests"] / max(1, plan["prompts"])
        rows.append((f"{a['verifier']} requests", share, a["requests"], a["model"] or ""))
        rows.append((f"{a['verifier']} tokens in / out", None,
                     f"{_n(a['input_tokens'])} / {_n(a['output_tokens'])}",
                     f"{_n(a['input_tokens_per_request'])} / {_n(a['output_tokens_per_request'])} a request, "
                     f"{a['tokens_source']}"))
        rows.append((f"{a['verifier']} cost (USD)", a["cost_usd"] / max(1, plan["prompts"]), a["cost_usd"],
                     f"at ${a['price_per_million_input_tokens']:g} / ${a['price_per_million_output_tokens']:g} "
                     "per million tokens in / out"))
    if plan["gpu_hours"] is not None:
        rows.append(("GPU-hours", plan["gpu_hours"] / max(1, plan["prompts"]), plan["gpu_hours"],
                     f"at {plan['s_per_nfe']:.4g} s per NFE, {plan['throughput_source']}; generation only"))
        rows.append(("wall hours", None, plan["wall_hours"],
                     f"{plan['shards']} shard{'s' if plan['shards'] > 1 else ''} in parallel, one GPU each"))
    else:
        rows.append(("GPU-hours", None, "n/a", "give plan.s_per_nfe=SECONDS, plan.measure=true or plan.from_run=RUN"))
    lines = [head, "| | per prompt | total | |", "|---|---|---|---|"]
    for name, one, total, note in rows:
        lines.append(f"| {name} | {_cell(name, one)} | {_cell(name, total)} | {note} |")
    if plan.get("pipelines"):
        from .over_models import format_pipelines

        lines += format_pipelines(plan["pipelines"])
    return "\n".join(lines)


def _cell(name: str, value) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return f"{value:,.2f}" if "hours" in name or "USD" in name else _n(value)


def plan_line(plan: dict) -> str:
    """The plan in one line, for the log of a run."""
    c = plan["candidates_per_prompt"]
    parts = [f"{plan['prompts']:,} prompt{'s' if plan['prompts'] != 1 else ''}"
             + (f" on {plan['shards']} shards" if plan["shards"] > 1 else ""),
             f"{'up to ' if not plan['exact'] else ''}{plan['candidates']:,} candidates ({c['max']} a prompt)",
             f"{plan['nfe']:,.0f} NFEs", f"{plan['verifier_calls']:,} verifier calls"]
    parts += [f"{a['verifier']} about ${a['cost_usd']:,.2f}" for a in plan["api"]]
    if plan["gpu_hours"] is not None:
        parts.append(f"{plan['gpu_hours']:,.2f} GPU-hours ({plan['wall_hours']:,.2f} h wall)")
    return "plan: " + ", ".join(parts) + " (plan.json; tts-plan prints the table)"


# -- the command --------------------------------------------------------------------------------------------------

def _plan_overrides(argv: list[str]) -> list[str]:
    """The command line's config overrides: Hydra's own flags and hydra.* settings dropped, and a swept
    ``shard.index`` (one plan covers every shard) left out."""
    from .overrides import command_overrides

    out = []
    for arg in command_overrides(argv):
        key, _, value = arg.lstrip("+~").partition("=")
        if key.startswith("hydra") or (key == "shard.index" and ("," in value or "(" in value)):
            continue
        out.append(arg)
    return out


def main(argv: list[str] | None = None) -> None:
    """``tts-plan [OVERRIDES]``: print the plan of the run ``tts-search OVERRIDES`` would make."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import HydraException

    from . import ttsf
    from ..core.configtree import config_dir
    from .errors import ConfigError, is_user_error
    from .overrides import check_overrides

    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return
    try:
        overrides = _plan_overrides(check_overrides(ttsf.expand_config_args(argv), sweeps=True))
        with initialize_config_dir(config_dir=str(config_dir()), version_base=None):
            cfg = compose(config_name="config", overrides=overrides)
        plan = make_plan(cfg)
    except (ConfigError, ttsf.TtsfConfigError, HydraException) as e:
        print(f"error: {str(e).splitlines()[0]}", file=sys.stderr)
        sys.exit(2)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        if not is_user_error(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print(format_plan(plan))


def _weights(spec) -> float | None:
    from ..pipelines import weights_in_memory

    return weights_in_memory(spec)


if __name__ == "__main__":
    main()
