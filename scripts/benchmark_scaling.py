"""Search scaling on the shapes world: success vs candidates per prompt, for random and zero-order search.

    python scripts/benchmark_scaling.py                      # full bench (234 prompts), ~25 min on 2 CPU cores
    python scripts/benchmark_scaling.py --prompts 60 --max-k 8   # a quick look

For every bench prompt, random search draws 32 fresh noises (seeds derived exactly as tts-search
derives them); best-of-k uses the first k. Zero-order search (3 neighbours, cosine 0.95) runs until
32 candidates exist; budget k uses the first k in the order it generated them. The searched score
is the exact checker's ``criteria_met`` (and, for random search, also the imperfect
``shapes-proxy``); the winner is always judged by the exact checker (``correct`` = success,
``criteria_met``). NFEs are measured by tts's generator. Prints Markdown tables and writes a plot.
"""
from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts.generate import Generator  # noqa: E402
from tts.noise import derive_seed, fresh  # noqa: E402
from tts.pipelines import PipelineSpec  # noqa: E402
from tts.runfolder import prompt_hash  # noqa: E402
from tts.search import Candidate  # noqa: E402
from tts.search.zero_order import ZeroOrderSearch  # noqa: E402
from tts.verifiers.shapes import ShapesVerifier  # noqa: E402
from tts.verifiers.shapes_proxy import ShapesProxyVerifier  # noqa: E402
from tts.world.bench import build  # noqa: E402

EXACT, PROXY = ShapesVerifier(), ShapesProxyVerifier()


def score(prompt, images):
    exact = EXACT.score([prompt] * len(images), images)
    proxy = PROXY.score([prompt] * len(images), images)
    return [{"correct": e["correct"].score, "criteria_met": e["criteria_met"].score, "proxy": p["proxy_score"].score}
            for e, p in zip(exact, proxy)]


def random_pool(gen, prompt, k, seed, batch):
    ph = prompt_hash(prompt)
    lineages = [fresh(derive_seed(seed, ph, 1, i, "fresh")) for i in range(k)]
    out, nfe = [], 0.0
    for s in range(0, k, batch):
        images, n, _ = gen.generate(prompt, lineages[s:s + batch])
        out += score(prompt, images)
        nfe = n
    return out, nfe


def zero_order_pool(gen, prompt, k, seed):
    ph = prompt_hash(prompt)
    strategy = ZeroOrderSearch(lambda r, i, p: derive_seed(seed, ph, r, i, p), rounds=10_000, num_neighbors=3,
                               threshold=0.95)
    out = []
    while len(out) < k:
        noises = strategy.ask()
        images, _, _ = gen.generate(prompt, noises)
        scores = score(prompt, images)
        strategy.tell([Candidate(0, i, n, s["criteria_met"]) for i, (n, s) in enumerate(zip(noises, scores))])
        out += scores
    return out[:k]


def best_of(pool, k, key):
    """The exact verdict of the candidate with the highest ``key`` score among the first k (first wins ties)."""
    head = pool[:k]
    return head[int(np.argmax([c[key] for c in head]))]


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
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--model", default="tts://shapes-model")
    p.add_argument("--device", default="cpu", help="where the model runs (cpu, cuda)")
    p.add_argument("--json", type=Path, default=None, help="also write raw results here")
    p.add_argument("--plot", type=Path, default=None, help="write the score-vs-NFE plot here (needs matplotlib)")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    spec = PipelineSpec(name="shapes", model_id=args.model, height=32, width=32, num_inference_steps=args.steps,
                        guidance_scale=args.guidance, device=args.device)
    gen = Generator(spec.load(), spec)
    prompts = subset(build(), args.prompts)
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= args.max_k]
    methods = args.methods.split(",")
    pools = {m: [] for m in methods}
    start, nfe = time.time(), 0.0
    for n, prompt in enumerate(prompts):
        if "random" in methods:
            pool, nfe = random_pool(gen, prompt.text, args.max_k, args.seed, args.batch)
            pools["random"].append(pool)
        if "zero-order" in methods:
            pools["zero-order"].append(zero_order_pool(gen, prompt.text, args.max_k, args.seed))
        if (n + 1) % 20 == 0:
            print(f"# {n + 1}/{len(prompts)} prompts, {time.time() - start:.0f} s", file=sys.stderr)
    elapsed = time.time() - start
    rows = tables(prompts, pools, ks, nfe)
    print(f"command: python scripts/benchmark_scaling.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"{len(prompts)} prompts, {args.steps} DDIM steps, guidance {args.guidance}, {nfe:.0f} NFEs per candidate, "
          f"{elapsed / 60:.1f} min on {args.device if args.device != 'cpu' else f'{torch.get_num_threads()} CPU threads'}\n")
    print("\n".join(rows["text"]))
    if args.json:
        args.json.write_text(json.dumps({"prompts": [p.text for p in prompts], "pools": pools, "nfe": nfe}))
    if args.plot:
        plot(rows["curves"], nfe, args.plot)


def tables(prompts, pools, ks, nfe):
    groups = collections.defaultdict(list)
    for i, pr in enumerate(prompts):
        groups["all"].append(i)
        groups[pr.tags["category"]].append(i)
        groups[pr.tags["split"]].append(i)
    order = ["all", "in_dist", "held_out", "single_object", "two_object", "counting", "colors", "position", "color_attr"]
    runs = [(m, "criteria_met") for m in pools] + ([("random", "proxy")] if "random" in pools else [])
    text, curves = [], {}
    for method, key in runs:
        name = f"{method} search steered by {'the exact checker (criteria_met)' if key == 'criteria_met' else 'shapes-proxy'}"
        text += [f"### {name}", "", "success (correct) / mean criteria_met of the chosen candidate, by candidates per prompt "
                 f"(NFEs per prompt = candidates x {nfe:.0f})", "",
                 "| group | n | " + " | ".join(f"k={k}" for k in ks) + " |", "|---|---|" + "---|" * len(ks)]
        for g in [g for g in order if g in groups]:
            cells = []
            for k in ks:
                picks = [best_of(pools[method][i], k, key) for i in groups[g]]
                cells.append(f"{100 * np.mean([c['correct'] for c in picks]):.0f}% / "
                             f"{np.mean([c['criteria_met'] for c in picks]):.2f}")
                if g == "all":
                    curves.setdefault(name, []).append((k * nfe, 100 * np.mean([c["correct"] for c in picks])))
            text.append(f"| {g} | {len(groups[g])} | " + " | ".join(cells) + " |")
        text.append("")
    return {"text": text, "curves": curves}


def plot(curves, nfe, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for name, pts in curves.items():
        ax.plot([x for x, _ in pts], [y for _, y in pts], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("search NFEs per prompt")
    ax.set_ylabel("success (exact checker), %")
    ax.set_title("shapes-bench: success vs search compute")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
