"""Search over models on the shapes world (issue 31, docs/search-over-models.md): per-prompt oracle choice vs
uniform vs successive halving vs UCB1 vs the rules router, success at equal NFEs.

Three settings of the embedded shapes model that really differ (configs/search/models-shapes.yaml): ``gs1``
(guidance 1, 10 steps: 10 NFEs an image), ``gs1.5`` (guidance 1.5, 10 steps: 20 NFEs) and ``steps5`` (guidance 1,
5 steps: 5 NFEs). Each pipeline's candidates for a prompt are the noises its own random search asks for (the seeds
tts.search.over_models derives), generated once and scored by the exact checker (``verifier=shapes``); every
allocation is then the real tts.search.over_models.PipelineSearch driven on those recorded scores (the same
decisions a run makes: allocation is a function of the scores told), so all rules see the same images. Success: the
best candidate (by criteria_met, the search's metric) meets every criterion of its prompt (``correct``).

    OMP_NUM_THREADS=1 python scripts/benchmark_models.py --prompts 24 --budget 60
"""
from __future__ import annotations

import argparse
import json
import time

LABELS = ("gs1", "gs1.5", "steps5")
SETTINGS = {"gs1": {}, "gs1.5": {"guidance_scale": 1.5}, "steps5": {"num_inference_steps": 5}}


def pools(prompts, budget: float, per_round: int, seed: int = 0):
    """{prompt: {label: [(criteria_met, correct), ...]}}: each pipeline's candidates, as many as the budget pays."""
    from tts.core.runfolder import prompt_hash
    from tts.pipelines.models import preset_spec
    from tts.pipelines.nfe import nfe_per_image
    from tts.sampling.generate import make_generator
    from tts.search.over_models import _arm_seeds
    from tts.search.protocols import seed_fn
    from tts.search.random import RandomSearch
    from tts.verifiers.shapes import ShapesVerifier

    verifier, out = ShapesVerifier(choice_of_metric="criteria_met"), {}
    specs = {x: preset_spec("shapes", device="cpu", **SETTINGS[x]) for x in LABELS}
    nfe = {x: nfe_per_image(s)[0] for x, s in specs.items()}
    gens = {x: make_generator(s) for x, s in specs.items()}
    for p in prompts:
        out[p.text] = {}
        for x in LABELS:
            inner = RandomSearch(_arm_seeds(seed_fn(seed, prompt_hash(p.text)), x), rounds=10_000, schedule="constant",
                                 per_round=per_round)
            noises = []
            while len(noises) * nfe[x] < budget:
                noises += inner.ask()
            noises = noises[:int(budget // nfe[x])]
            images, _, _ = gens[x].generate(p.text, noises)
            scores = verifier.score([p.text] * len(images), images)
            out[p.text][x] = [(s["criteria_met"].score, s["correct"].score) for s in scores]
    return out, nfe


def simulate(pool: dict, nfe: dict, budget: float, allocation: str, per_round: int, router=None, prompt=""):
    """The real PipelineSearch on recorded scores: (success, NFEs spent, plays per pipeline)."""
    from tts.search import Candidate, SearchContext
    from tts.search.over_models import ArmInfo, PipelineSearch
    from tts.search.random import RandomSearch

    inner = lambda **k: RandomSearch(**(k | {"rounds": 10_000, "schedule": "constant", "per_round": per_round}))  # noqa: E731
    ctx = SearchContext(prompt, "x", None, (), None) if router is not None else None
    search = PipelineSearch(lambda r, i, p: 0, ctx, inner=inner, arms=[ArmInfo(x, nfe[x]) for x in LABELS],
                            allocation=allocation, router=router, nfe_budget=budget)
    used = {x: 0 for x in LABELS}
    best = None
    while noises := search.ask():
        told = []
        for i, n in enumerate(noises):
            x = n["pipeline"]
            score = pool[x][used[x]]
            used[x] += 1
            told.append(Candidate(search.round, i, n, score[0]))
            if best is None or score[0] > best[0]:
                best = score
        search.tell(told)
    return bool(best and best[1] >= 1.0), search.spent, used


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--prompts", type=int, default=24)
    ap.add_argument("--budget", type=float, default=60.0)
    ap.add_argument("--per-round", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from tts.search.router import RulesRouter
    from tts.world.bench import ShapesBench

    start = time.perf_counter()
    prompts = ShapesBench().subset(args.prompts)
    pool, nfe = pools(prompts, args.budget, args.per_round)
    router = RulesRouter("shapes.yaml")
    rows = {f"only {x}": [] for x in LABELS} | {"uniform": [], "halving": [], "ucb": [], "rules router": [],
                                                    "oracle (per prompt)": []}
    spent = {k: [] for k in rows}
    for p in prompts:
        alone = {}
        for x in LABELS:
            ok = any(c >= 1.0 for _, c in pool[p.text][x])
            alone[x] = ok
            rows[f"only {x}"].append(ok)
            spent[f"only {x}"].append(len(pool[p.text][x]) * nfe[x])
        rows["oracle (per prompt)"].append(any(alone.values()))
        spent["oracle (per prompt)"].append(args.budget)
        for rule in ("uniform", "halving", "ucb"):
            ok, used, _ = simulate(pool[p.text], nfe, args.budget, rule, args.per_round)
            rows[rule].append(ok)
            spent[rule].append(used)
        ok, used, _ = simulate(pool[p.text], nfe, args.budget, "uniform", args.per_round, router, p.text)
        rows["rules router"].append(ok)
        spent["rules router"].append(used)
    n = len(prompts)
    print(f"{n} shapes-bench prompts, {args.budget:g} NFEs per prompt, {time.perf_counter() - start:.0f} s")
    print("| allocation | success | mean NFEs spent |\n|---|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {sum(v)}/{n} ({sum(v) / n:.0%}) | {sum(spent[k]) / n:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": {k: sum(v) for k, v in rows.items()}, "n": n, "budget": args.budget}, f)


if __name__ == "__main__":
    main()
