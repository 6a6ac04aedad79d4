"""Search scaling on the shapes world: success vs candidates per prompt, for random and zero-order search.

    python scripts/benchmark_scaling.py                      # full bench (234 prompts), ~25 min on 2 CPU cores
    python scripts/benchmark_scaling.py --prompts 60 --max-k 8   # a quick look

For every bench prompt, random search draws 32 fresh noises (seeds derived exactly as tts-search
derives them); best-of-k uses the first k. Zero-order search (3 neighbours, cosine 0.95) runs until
32 candidates exist; budget k uses the first k in the order it generated them. All prompts' searches
advance in lockstep and each pipeline call mixes prompts (``--batch`` rows), so the small zero-order
rounds still fill the batch; the candidates are the same as one prompt at a time would give. The searched score
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
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts.cli import config_dir  # noqa: E402
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
PRESET = yaml.safe_load((config_dir() / "pipeline" / "shapes.yaml").read_text())  # default steps and guidance


def score(prompt, images):
    exact = EXACT.score([prompt] * len(images), images)
    proxy = PROXY.score([prompt] * len(images), images)
    return [{"correct": e["correct"].score, "criteria_met": e["criteria_met"].score, "proxy": p["proxy_score"].score}
            for e, p in zip(exact, proxy)]


def generate_mixed(gen, items, batch):
    """Images for (prompt, lineage) pairs, ``batch`` per pipeline call with prompts mixed inside a call
    (one prompt per row), so every call is full even when each prompt's search asks for 3 or 4
    candidates at a time. Returns (images, NFEs per image)."""
    images, nfe = [], 0.0
    for s in range(0, len(items), batch):
        chunk = items[s:s + batch]
        out, nfe, _ = gen.generate([p for p, _ in chunk], [n for _, n in chunk])
        images += out
    return images, nfe


def random_pools(gen, prompts, k, seed, batch):
    """Per prompt, k fresh noises seeded exactly as tts-search seeds round 1, all scored."""
    lineages = {p: [fresh(derive_seed(seed, prompt_hash(p), 1, i, "fresh")) for i in range(k)] for p in prompts}
    pools, nfe, start = [], 0.0, time.time()
    for n in range(0, len(prompts), 8):  # 8 prompts per slice: progress is reported as it goes
        part = prompts[n:n + 8]
        images, nfe = generate_mixed(gen, [(p, ln) for p in part for ln in lineages[p]], batch)
        pools += [score(p, images[j * k:(j + 1) * k]) for j, p in enumerate(part)]
        print(f"# random: {n + len(part)}/{len(prompts)} prompts, {time.time() - start:.0f} s", file=sys.stderr)
    return pools, nfe


def zero_order_pools(gen, prompts, k, seed, batch):
    """Zero-order search (3 neighbours, cosine 0.95) for every prompt in lockstep, until each has k candidates:
    each step asks every prompt's strategy, generates all their noises together, and tells each its scores."""
    strategies = [ZeroOrderSearch(lambda r, i, p, ph=prompt_hash(pr): derive_seed(seed, ph, r, i, p), rounds=10_000,
                                  num_neighbors=3, threshold=0.95) for pr in prompts]
    pools, start = [[] for _ in prompts], time.time()
    while any(len(pool) < k for pool in pools):
        asks = [(i, strategies[i].ask()) for i, pool in enumerate(pools) if len(pool) < k]
        images, _ = generate_mixed(gen, [(prompts[i], n) for i, noises in asks for n in noises], batch)
        pos = 0
        for i, noises in asks:
            scores = score(prompts[i], images[pos:pos + len(noises)])
            pos += len(noises)
            strategies[i].tell([Candidate(0, j, n, s["criteria_met"]) for j, (n, s) in enumerate(zip(noises, scores))])
            pools[i] += scores
        done = sum(min(len(p), k) for p in pools)
        print(f"# zero-order: {done}/{k * len(prompts)} candidates, {time.time() - start:.0f} s", file=sys.stderr)
    return [pool[:k] for pool in pools]


def best_of(pool, k, key):
    """The exact verdict of the candidate with the highest ``key`` score among the first k (first wins ties)."""
    head = pool[:k]
    return head[int(np.argmax([c[key] for c in head]))]


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
    gen = Generator(spec.load(), spec)
    prompts = subset(build(args.suite_seed), args.prompts)
    ks = [k for k in (1, 2, 4, 8, 16, 32) if k <= args.max_k]
    methods = args.methods.split(",")
    texts = [p.text for p in prompts]
    pools, start, nfe = {}, time.time(), 0.0
    if "random" in methods:
        pools["random"], nfe = random_pools(gen, texts, args.max_k, args.seed, args.batch)
    if "zero-order" in methods:
        pools["zero-order"] = zero_order_pools(gen, texts, args.max_k, args.seed, args.batch)
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
                picks = [c for i in groups[g] for c in pick(pools[method][i], k, key)]
                cells.append(f"{100 * np.mean([c['correct'] for c in picks]):.0f}% / "
                             f"{np.mean([c['criteria_met'] for c in picks]):.2f}")
                if g == "all":
                    curves.setdefault(name, []).append((k * nfe, 100 * np.mean([c["correct"] for c in picks]),
                                                        np.mean([c["criteria_met"] for c in picks])))
            text.append(f"| {g} | {len(groups[g])} | " + " | ".join(cells) + " |")
        text.append("")
    return {"text": text, "curves": curves}


def plot(curves, nfe, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
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


if __name__ == "__main__":
    main()
