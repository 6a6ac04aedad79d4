"""Search scaling on the shapes world: success vs candidates per prompt, for random and zero-order search.

    python scripts/benchmark_scaling.py                      # full bench (234 prompts), ~25 min on 2 CPU cores
    python scripts/benchmark_scaling.py --prompts 60 --max-k 8   # a quick look

For every bench prompt, random search draws 32 fresh noises (seeds derived exactly as tts-search
derives them); best-of-k uses the first k. Zero-order search (3 neighbours, cosine 0.95) runs until
32 candidates exist; budget k uses the first k in the order it generated them. All prompts' searches
advance in lockstep and each pipeline call mixes prompts (``--batch`` rows), so the small zero-order
rounds still fill the batch; the candidates are the same as one prompt at a time would give. The search is
steered by the exact checker's ``criteria_met``, the imperfect ``shapes-proxy``, the learned ``shapes-reward``
or the ensemble of the last two (``--steer`` for random search, whose pool is scored once and each signal picks
its own best; ``--zero-order-steer``: one zero-order search per signal); the winner is always judged by the
exact checker (``correct`` = success, ``criteria_met``), and for the proxy and the learned reward the gap
between the steering score and the judged one is tabled and plotted (``<plot>-hacking.png``). NFEs are
measured by tts's generator. Prints Markdown tables and writes plots.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts.app.cli import config_dir  # noqa: E402
from tts.sampling.generate import make_generator  # noqa: E402
from tts.run.lockstep import LockstepStudy, search_lockstep  # noqa: E402
from tts.pipelines import PipelineSpec  # noqa: E402
from tts.search.random import RandomSearch  # noqa: E402
from tts.search.zero_order import ZeroOrderSearch  # noqa: E402
from tts.verifiers.shapes import ShapesVerifier  # noqa: E402
from tts.verifiers.shapes_proxy import ShapesProxyVerifier  # noqa: E402
from tts.verifiers.shapes_reward import ShapesRewardVerifier  # noqa: E402
from tts.world.bench import build  # noqa: E402

EXACT, PROXY, REWARD = ShapesVerifier(), ShapesProxyVerifier(), ShapesRewardVerifier()
PRESET = yaml.safe_load((config_dir() / "pipeline" / "shapes.yaml").read_text())  # default steps and guidance
#: steering signals: the exact checker, shapes-proxy, shapes-reward, and the ensemble of the last two
STEER_NAMES = {"criteria_met": "the exact checker (criteria_met)", "proxy": "shapes-proxy",
               "reward": "shapes-reward", "ensemble": "ensemble of shapes-reward and shapes-proxy (mean rank)"}


def score(prompt, images):
    exact = EXACT.score([prompt] * len(images), images)
    proxy = PROXY.score([prompt] * len(images), images)
    reward = REWARD.score([prompt] * len(images), images)
    return [{"correct": e["correct"].score, "criteria_met": e["criteria_met"].score, "proxy": p["proxy_score"].score,
             "reward": r["reward"].score} for e, p, r in zip(exact, proxy, reward)]


def steering(candidates, key):
    """The steering score of each candidate; ``ensemble``: mean rank fraction of reward and proxy among them
    (ties count half), as verifier=ensemble ranks a prompt's candidates."""
    if key != "ensemble":
        return np.array([c[key] for c in candidates], dtype=float)
    out = np.zeros(len(candidates))
    for member in ("reward", "proxy"):
        v = np.array([c[member] for c in candidates], dtype=float)
        out += ((v[:, None] > v[None, :]).sum(1) + 0.5 * ((v[:, None] == v[None, :]).sum(1) - 1)) / max(1, len(v) - 1)
    return out / 2


def progress(name):
    start = time.time()
    return lambda done, total: print(f"# {name}: {done}/{total} candidates, {time.time() - start:.0f} s", file=sys.stderr)


def pools_for(gen, texts, factory, args, steer="criteria_met"):
    """Every prompt's candidates (scores in generation order) for one strategy, prompts in lockstep (tts.run.lockstep)."""
    study = LockstepStudy(texts, factory, score, steer=steer, seed=args.seed)
    name = getattr(factory, "func", factory).__name__
    return search_lockstep(gen, study, args.max_k, args.batch, progress(name))


def best_of(pool, k, key):
    """The exact verdict of the candidate with the highest ``key`` score among the first k (first wins ties)."""
    head = pool[:k]
    return head[int(np.argmax(steering(head, key)))]


def pick(pool, k, key):
    """The verdicts that stand for "k candidates, keep the best by ``key``": for k = 1 every candidate of the
    pool (one candidate's expected success, measured on the whole pool rather than on its first member
    alone), for k > 1 the best of the first k."""
    return pool if k == 1 else [best_of(pool, k, key)]


def subset(prompts, n):
    if n >= len(prompts):
        return prompts
    idx = np.linspace(0, len(prompts) - 1, n).round().astype(int)  # spread evenly over the category-ordered suite
    return [prompts[i] for i in idx]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=10_000, help="use an even spread of this many bench prompts")
    p.add_argument("--max-k", type=int, default=32)
    p.add_argument("--methods", default="random,zero-order")
    p.add_argument("--steer", default="criteria_met,proxy,reward,ensemble",
                   help="signals random search is steered by (its pool is scored once; each picks its own best)")
    p.add_argument("--zero-order-steer", default="criteria_met",
                   help="signals zero-order search is run with (one search per signal: its path depends on it)")
    p.add_argument("--seed", type=int, default=0, help="run seed (noises derive from it as in tts-search)")
    p.add_argument("--suite-seed", type=int, default=0,
                   help="0: the bench (prompts=shapes-bench); another seed draws a fresh suite of the same make-up, "
                        "for tuning settings without touching the bench")
    p.add_argument("--batch", type=int, default=64, help="candidates per pipeline call (prompts mixed)")
    p.add_argument("--steps", type=int, default=PRESET["num_inference_steps"], help="default: the shapes preset's")
    p.add_argument("--guidance", type=float, default=PRESET["guidance_scale"], help="default: the shapes preset's")
    p.add_argument("--model", default="tts://shapes-model")
    p.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    p.add_argument("--json", type=Path, default=None, help="also write raw results here")
    p.add_argument("--plot", type=Path, default=None, help="write the score-vs-NFE plot here (needs matplotlib)")
    args = p.parse_args(argv)
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    torch.manual_seed(0)
    spec = PipelineSpec(name="shapes", model_id=args.model, height=32, width=32, num_inference_steps=args.steps,
                        guidance_scale=args.guidance, device=args.device)
    gen = make_generator(spec)
    prompts = subset(build(args.suite_seed), args.prompts)
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= args.max_k]
    methods = args.methods.split(",")
    texts = [p.text for p in prompts]
    pools, runs, start, nfe = {}, [], time.time(), 0.0
    if "random" in methods:  # k fresh noises per prompt, seeded as tts-search seeds round 1
        pools["random"], nfe = pools_for(gen, texts, partial(RandomSearch, rounds=1, schedule="constant",
                                                                   per_round=args.max_k), args)
        runs += [("random", "random", steer) for steer in args.steer.split(",")]
    for steer in args.zero_order_steer.split(",") if "zero-order" in methods else []:
        # 3 neighbours at cosine 0.95, until each prompt has max-k candidates
        name = "zero-order" if steer == "criteria_met" else f"zero-order/{steer}"
        pools[name], nfe = pools_for(gen, texts, partial(ZeroOrderSearch, rounds=10_000, num_neighbors=3,
                                                               threshold=0.95), args, steer)
        runs.append((name, "zero-order", steer))
    elapsed = time.time() - start
    rows = tables(prompts, pools, runs, ks, nfe)
    print(f"command: python scripts/benchmark_scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{len(prompts)} prompts, {args.steps} DDIM steps, guidance {args.guidance}, {nfe:.0f} NFEs per candidate, "
          f"{elapsed / 60:.1f} min on {args.device if args.device != 'cpu' else f'{torch.get_num_threads()} CPU threads'}\n")
    print("\n".join(rows["text"]))
    if args.json:
        args.json.write_text(json.dumps({"prompts": [p.text for p in prompts], "pools": pools, "nfe": nfe}))
    if args.plot:
        plot(rows["curves"], nfe, args.plot)


def tables(prompts, pools, runs, ks, nfe):
    groups = collections.defaultdict(list)
    for i, pr in enumerate(prompts):
        groups["all"].append(i)
        groups[pr.tags["category"]].append(i)
        groups[pr.tags["split"]].append(i)
    order = ["all", "in_dist", "held_out", "single_object", "two_object", "counting", "colors", "position", "color_attr"]
    text, curves = [], {}
    for pool, method, key in runs:
        name = f"{method} search steered by {STEER_NAMES[key]}"
        text += [f"### {name}", "", "success (correct) / mean criteria_met of the chosen candidate, by candidates per prompt "
                 f"(NFEs per prompt = candidates x {nfe:.0f})", "",
                 "| group | n | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
        for g in [g for g in order if g in groups]:
            cells = []
            for k in ks:
                picks = [c for i in groups[g] for c in pick(pools[pool][i], k, key)]
                cells.append(f"{100 * np.mean([c['correct'] for c in picks]):.0f}% / "
                             f"{np.mean([c['criteria_met'] for c in picks]):.2f}")
                if g == "all":
                    curves.setdefault(name, []).append((k * nfe, 100 * np.mean([c["correct"] for c in picks]),
                                                        np.mean([c["criteria_met"] for c in picks])))
            text.append(f"| {g} | {len(groups[g])} | " + " | ".join(cells) + " |")
        text.append("")
    text += hacking(pools, runs, ks, nfe, curves)
    return {"text": text, "curves": curves}


def hacking(pools, runs, ks, nfe, curves) -> list[str]:
    """The verifier-hacking gap (Ma et al. 2025, Sec. 4.2): for searches steered by a learned or proxy score, the
    steering score of the kept candidate against what the exact checker says of it, as compute grows."""
    text = ["### Steering score vs judged quality of the kept candidate (all prompts)", "",
            "steering score (mean) / true criteria_met (mean) / gap, by candidates per prompt", "",
            "| search | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|" + "---|" * len(ks)]
    for pool, method, key in runs:
        if key not in ("reward", "proxy"):
            continue
        cells, pts = [], []
        for k in ks:
            picks = [c for prompt_pool in pools[pool] for c in pick(prompt_pool, k, key)]
            steer, true = np.mean([c[key] for c in picks]), np.mean([c["criteria_met"] for c in picks])
            cells.append(f"{steer:.2f} / {true:.2f} / {steer - true:+.2f}")
            pts.append((k * nfe, steer, true))
        text.append(f"| {method} by {STEER_NAMES[key]} | " + " | ".join(cells) + " |")
        curves.setdefault("_hacking", {})[f"{method} by {STEER_NAMES[key]}"] = pts
    return text + [""]


def plot(curves, nfe, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    hacked = curves.pop("_hacking", {})
    for name, pts in curves.items():
        for ax, col in zip(axes, (1, 2)):
            ax.plot([p[0] for p in pts], [p[col] for p in pts], marker="o", label=name)
    for ax, label in zip(axes, ("success (exact checker), %", "mean criteria_met of the chosen candidate")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"search NFEs per prompt ({nfe:.0f} per candidate)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("shapes-bench: score vs search compute")
    fig.tight_layout()
    fig.savefig(path)
    if hacked:
        fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
        for i, (name, pts) in enumerate(hacked.items()):
            color = f"C{i}"
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color, label=f"{name}: steering score")
            ax.plot([p[0] for p in pts], [p[2] for p in pts], marker="s", ls="--", color=color,
                    label=f"{name}: true criteria_met")
        ax.set_xscale("log", base=2)
        ax.set_xlabel(f"search NFEs per prompt ({nfe:.0f} per candidate)")
        ax.set_ylabel("mean over prompts of the kept candidate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
        ax.set_title("verifier hacking on shapes-bench")
        fig.tight_layout()
        fig.savefig(path.with_name(path.stem + "-hacking" + path.suffix))


if __name__ == "__main__":
    main()
