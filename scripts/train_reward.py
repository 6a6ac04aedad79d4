"""Train ``verifier=shapes-reward`` (tts.world.reward.ShapesRewardModel) and measure it on the bench.

    python scripts/train_reward.py                      # data, training, export to tts/assets/shapes-reward, report
    python scripts/train_reward.py --eval-only          # the report for the shipped weights
    # the shipped weights (docs/reward.md): about 14 min of data on one thread, 24 min of training on two
    python scripts/train_reward.py --work outputs/reward-v3 --out outputs/reward-v3/model --suite-seed 1

1. Data (training prompts only: drawn by tts.world.scenes.sample_training_spec, which never names a held-out
   colour-shape pair or relation, minus any prompt of the bench or the tuning suite): rendered scenes that
   satisfy the prompt, near misses (a scene of the prompt with one thing changed: a colour, a shape, a count, a
   size, the relation), and the embedded model's own samples with their x0 previews at every DDIM step. Every
   image is labelled by the exact checker (verifier=shapes) and carries the objects it finds: a rendered image
   by its own verdict, a sample and its previews by the verdict on the sample's final image (a preview is
   scored for where it leads). Cached in ``--work`` in parts of CHUNK prompts as they are made.
2. Training: binary cross-entropy on both heads (criteria_met as a soft target) plus the density loss: each
   phrase's, every object's and a few more queries' density maps against Gaussians at the checker's objects
   (batch_loss); AdamW, one-cycle learning rate; seeded; a checkpoint every epoch, so a rerun resumes.
3. Export (save_pretrained) and the report: AUC for ``correct`` and Spearman correlation with
   ``criteria_met`` on the bench's own samples (4 per prompt, the seeds tts-search's random search draws
   first), on final images and on previews at a few steps, per split and category, and the cost of scoring
   an image against generating one. ``--suite-seed 1`` reports on a suite drawn apart from the bench instead
   (for choosing options; the bench only for the final figures).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tts.sampling.generate import make_generator  # noqa: E402
from tts.core.noise import derive_seed, fresh  # noqa: E402
from tts.pipelines import PipelineSpec  # noqa: E402
from tts.core.runfolder import prompt_hash  # noqa: E402
from tts.verifiers.shapes import ShapesVerifier  # noqa: E402
from tts.world import bench, grammar, scenes  # noqa: E402
from tts.world.detect import detect  # noqa: E402
from tts.world.reward import (ShapesRewardModel, density_targets, encode_objects, encode_prompts,  # noqa: E402
                              held_out_free)

OUT = ROOT / "tts" / "assets" / "shapes-reward"
CHECKER = ShapesVerifier()
STEPS, GUIDANCE = 10, 1.0  # the shapes preset's defaults
PREVIEW_STEPS = (2, 4, 6, 8)  # previews reported (after this many of the 10 steps)


@dataclasses.dataclass
class Data:
    pixels: np.ndarray  # (N, 32, 32, 3) uint8
    prompts: list[str]
    noise: np.ndarray  # (N,) float32 noise level of the image (0: final)
    met: np.ndarray  # (N,) criteria_met label
    correct: np.ndarray  # (N,) correct label
    step: np.ndarray  # (N,) denoising steps done (STEPS: final or rendered)
    objects: np.ndarray  # (N, MAX_OBJECTS, 5) what the checker finds in the (final) image: tts.world.reward.encode_objects

    def __len__(self):
        return len(self.prompts)

    @staticmethod
    def concat(parts: list["Data"]) -> "Data":
        return Data(*(np.concatenate([getattr(p, f.name) for p in parts]) if f.name != "prompts"
                      else [x for p in parts for x in p.prompts] for f in dataclasses.fields(Data)))

    def save(self, path: Path) -> None:
        np.savez(path, **{f.name: np.array(getattr(self, f.name)) for f in dataclasses.fields(Data)})

    @staticmethod
    def load(path: Path) -> "Data":
        z = np.load(path, allow_pickle=False)
        return Data(**{f.name: [str(p) for p in z[f.name]] if f.name == "prompts" else z[f.name]
                       for f in dataclasses.fields(Data)})


def labels(prompts: list[str], images: list[Image.Image]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The exact checker's criteria_met and correct, and the objects it finds."""
    verdicts = CHECKER.score(prompts, images)
    return (np.array([v["criteria_met"].score for v in verdicts], np.float32),
            np.array([v["correct"].score for v in verdicts], np.float32),
            np.stack([encode_objects(detect(im)) for im in images]))


def training_prompts(n: int, seed: int) -> list[str]:
    """Distinct in-distribution prompts, none of them a prompt of the bench (suite seed 0) or the tuning suite (1)."""
    rng, banned, out = np.random.default_rng(seed), {p.text for s in (0, 1) for p in bench.build(s)}, []
    while len(out) < n:
        text = scenes.sample_training_spec(rng).text()
        if text not in banned and text not in out:
            out.append(text)
    return out


def near_miss(spec: grammar.PromptSpec, rng: np.random.Generator) -> grammar.PromptSpec:
    """The spec with one thing changed (never into a held-out combination)."""
    for _ in range(50):
        groups, relation = list(spec.groups), spec.relation
        g = int(rng.integers(len(groups)))
        kind = rng.choice(["colour", "shape", "count", "size", "relation"])
        if kind == "colour":
            groups[g] = dataclasses.replace(groups[g], colour=str(rng.choice(list(grammar.COLOURS))))
        elif kind == "shape":
            groups[g] = dataclasses.replace(groups[g], shape=str(rng.choice(grammar.SHAPES)))
        elif kind == "count" and not relation:
            count = max(1, groups[g].count + int(rng.choice([-1, 1])))
            groups[g] = dataclasses.replace(groups[g], count=count)
        elif kind == "size":
            groups[g] = dataclasses.replace(groups[g], size=str(rng.choice(grammar.SIZES)))
        elif kind == "relation" and relation:
            relation = str(rng.choice([r for r in grammar.RELATIONS if r != relation]))
        out = grammar.PromptSpec(tuple(groups), relation)
        if out != spec and out.n_objects <= grammar.MAX_OBJECTS and not grammar.is_held_out(out):
            return out
    return spec


def rendered(prompts: list[str], seed: int) -> Data:
    rng, images, texts = np.random.default_rng(seed), [], []
    for text in prompts:
        spec = grammar.parse(text)
        for target in (spec, near_miss(spec, rng), near_miss(spec, rng)):
            images.append(scenes.render(target, rng, allow_held_out=False)[0])
            texts.append(text)
    met, correct, objects = labels(texts, images)
    n = len(images)
    return Data(np.stack([np.asarray(im) for im in images]), texts, np.zeros(n, np.float32), met, correct,
                np.full(n, STEPS), objects)


def sampled(generator, prompts: list[str], per_prompt: int, seed: int, purpose: str, batch: int = 64) -> Data:
    """The model's samples of each prompt (lineages seeded as tts-search seeds round 1 with run seed ``seed``)
    and their x0 previews after every step, labelled by the final image's verdict (and objects)."""
    items = [(p, fresh(derive_seed(seed, prompt_hash(p), 1, i, purpose))) for p in prompts for i in range(per_prompt)]
    parts = []
    for s in range(0, len(items), batch):
        chunk = items[s:s + batch]
        finals, previews = generate_with_previews(generator, chunk)
        texts = [p for p, _ in chunk]
        met, correct, objects = labels(texts, finals)
        rows = [(np.asarray(im), t, 0.0, STEPS) for im, t in zip(finals, texts)]
        for step, (level, images) in enumerate(previews, start=1):
            rows += [(np.asarray(im), t, level, step) for im, t in zip(images, texts)]
        k = len(previews) + 1
        parts.append(Data(np.stack([r[0] for r in rows]), [r[1] for r in rows], np.array([r[2] for r in rows], np.float32),
                          np.tile(met, k), np.tile(correct, k), np.array([r[3] for r in rows]),
                          np.tile(objects, (k, 1, 1))))
    return Data.concat(parts)


def generate_with_previews(generator, chunk):
    """Final images and, for each step but the last, (noise level, x0 preview images): the DDIM scheduler's
    ``pred_original_sample`` at that step, the level being the step's timestep over the training steps."""
    scheduler, previews = generator.pipe.scheduler, []
    step, total = scheduler.step, scheduler.config.num_train_timesteps

    def capture(model_output, timestep, sample, *args, **kwargs):
        out = step(model_output, timestep, sample, *args, **kwargs)
        x0 = ((out.pred_original_sample / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        previews.append((float(timestep) / total, [Image.fromarray(a) for a in x0.permute(0, 2, 3, 1).cpu().numpy()]))
        return out

    scheduler.step = capture
    try:
        finals = generator.generate([p for p, _ in chunk], [n for _, n in chunk])[0]
    finally:
        del scheduler.step
    return finals, previews[:-1]  # the last step's x0 is the final image


CHUNK = 250  # sampled prompts per cached part


def make_data(args, generator) -> Data:
    """Rendered scenes, then the model's samples in parts of CHUNK prompts, each cached in ``args.work`` as it is
    made (a rerun resumes; noises depend only on the prompt and sample index, so parts are independent)."""
    start, prompts = time.time(), training_prompts(args.prompts, args.seed)
    parts = [_cached(args.work / "rendered.npz", lambda: rendered(prompts, args.seed))]
    for a in range(0, args.sampled_prompts, CHUNK):
        b = min(a + CHUNK, args.sampled_prompts)
        parts.append(_cached(args.work / f"sampled-{a:05d}-{b:05d}-x{args.samples}.npz",
                             lambda: sampled(generator, prompts[a:b], args.samples, args.seed + 1, "reward-train")))
        print(f"# sampled prompts {a}-{b}: {time.time() - start:.0f} s", file=sys.stderr)
    data = Data.concat(parts)
    print(f"# {len(data)} training images ({len(parts[0])} rendered)", file=sys.stderr)
    return data


def _cached(path: Path, make) -> Data:
    if path.exists():
        return Data.load(path)
    data = make()
    data.save(path.with_suffix(".tmp.npz"))
    path.with_suffix(".tmp.npz").replace(path)
    return data


def train(args, data: Data) -> ShapesRewardModel:
    """BCE on both heads plus the density loss (tts.world.reward.density_targets) on the prompt's phrases, every
    object and a few more queries per image; each epoch takes every final and rendered image and a
    ``--preview-share`` of the previews (drawn per epoch). Checkpoint after every epoch; a rerun resumes."""
    torch.manual_seed(args.seed)
    model = ShapesRewardModel()
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01)
    final = np.flatnonzero(data.step == STEPS)
    previews = np.flatnonzero(data.step != STEPS)
    per_epoch = len(final) + int(args.preview_share * len(previews))
    steps_per_epoch = per_epoch // args.batch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, args.lr, total_steps=steps_per_epoch * args.epochs, pct_start=0.05)
    ckpt, epoch = args.work / "checkpoint.pt", 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        if state.get("config") != dict(model.config) or state.get("steps") != steps_per_epoch * args.epochs:
            raise SystemExit(f"{ckpt} is a checkpoint of another model or training length; give a new --work "
                             "folder, or delete the checkpoint to start over")
        model.load_state_dict(state["model"]), opt.load_state_dict(state["opt"]), sched.load_state_dict(state["sched"])
        epoch = state["epoch"]
        print(f"# resuming after epoch {epoch}", file=sys.stderr)
    t = Tensors.of(data)
    start = time.time()
    while epoch < args.epochs:
        rng = np.random.default_rng(args.seed + epoch)
        order = rng.permutation(np.concatenate([final, rng.choice(previews, per_epoch - len(final), replace=False)]))
        model.train()
        losses = []
        for s in range(steps_per_epoch):
            idx = torch.from_numpy(order[s * args.batch:(s + 1) * args.batch])
            g = torch.Generator().manual_seed(args.seed * 100_003 + epoch * 10_007 + s)
            loss = batch_loss(model, t, idx, g, args.aux_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            losses.append(loss.item())
        epoch += 1
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "epoch": epoch,
                    "config": dict(model.config), "steps": steps_per_epoch * args.epochs}, ckpt)
        print(f"# epoch {epoch}/{args.epochs}: loss {np.mean(losses):.4f}, {time.time() - start:.0f} s", file=sys.stderr)
    return model.eval()


@dataclasses.dataclass
class Tensors:
    """The training data as tensors (pixels stay uint8 until a batch is drawn)."""

    pixels: torch.Tensor
    groups: torch.Tensor
    relation: torch.Tensor
    noise: torch.Tensor
    target: torch.Tensor
    objects: torch.Tensor

    @staticmethod
    def of(data: Data) -> "Tensors":
        groups, relation = encode_prompts(data.prompts)
        return Tensors(torch.from_numpy(data.pixels).permute(0, 3, 1, 2), groups, relation, torch.from_numpy(data.noise),
                       torch.from_numpy(np.stack([data.met, data.correct], 1)), torch.from_numpy(data.objects))


def batch_loss(model: ShapesRewardModel, t: Tensors, idx: torch.Tensor, g: torch.Generator, aux_weight: float):
    """BCE on the two heads + aux_weight x the density loss (squared map error x 10 + squared count error) over the
    prompt's phrases, every object and extra_queries."""
    x = augment(t.pixels[idx].float() / 127.5 - 1.0, g)
    groups, objects = t.groups[idx], t.objects[idx]
    extra = extra_queries(objects, g)
    logits, maps = model(x, groups, t.relation[idx], t.noise[idx], extra_queries=extra)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, t.target[idx])
    queries = torch.cat([groups[..., 1:], torch.zeros_like(groups[:, :1, 1:]), extra], 1)
    target = density_targets(objects, queries, size=maps.shape[-1])
    mask = torch.cat([(groups[..., 0] > 0).float(), torch.ones(len(idx), 1 + extra.shape[1])], 1)
    err = 10 * ((maps - target) ** 2).sum((2, 3)) + (maps.sum((2, 3)) - target.sum((2, 3))) ** 2
    return loss + aux_weight * (err * mask).sum() / mask.sum()


def extra_queries(objects: torch.Tensor, g: torch.Generator, k: int = 3) -> torch.Tensor:
    """(N, k, 3) more queries per image for the density loss: the first k-1 ask for the kind of an object the image
    holds (colour and size each dropped to "any" half the time), the last for a random kind; never a held-out
    colour-shape pair (tts.world.reward.held_out_free)."""
    n = len(objects)
    found = (objects[..., 0] >= 0).sum(1).clamp(min=1)
    pick = (torch.rand(n, k - 1, generator=g) * found[:, None]).long()
    attrs = torch.gather(objects[..., :3], 1, pick[..., None].expand(n, k - 1, 3)).long() + 1
    attrs = attrs.clamp(min=0)  # an image with no objects asks for "anything"
    drop = torch.rand(n, k - 1, 3, generator=g) < 0.5
    drop[..., 1] = False
    attrs = torch.where(drop, torch.zeros_like(attrs), attrs)
    rand = torch.stack([torch.randint(0, len(grammar.COLOURS) + 1, (n,), generator=g),
                        torch.randint(1, len(grammar.SHAPES) + 1, (n,), generator=g),
                        torch.randint(0, len(grammar.SIZES) + 1, (n,), generator=g)], 1)[:, None]
    return held_out_free(torch.cat([attrs, rand], 1))


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Small brightness jitter (the checker's colour tolerance) - never flips or shifts, which change relations."""
    return (x + 0.04 * torch.randn(len(x), 1, 1, 1, generator=g)).clamp(-1, 1)


def ranks(v: np.ndarray) -> np.ndarray:
    """1-based ranks, ties given their mean rank."""
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(1, len(v) + 1)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=r) / counts)[inverse]


def auc(scores: np.ndarray, labels_: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U over positives and negatives, ties half)."""
    pos = labels_ > 0.5
    if pos.all() or not pos.any():
        return float("nan")
    r = ranks(np.asarray(scores, dtype=float))
    return float((r[pos].sum() - pos.sum() * (pos.sum() + 1) / 2) / (pos.sum() * (~pos).sum()))


def within_prompt_auc(scores: np.ndarray, labels_: np.ndarray, prompts: np.ndarray) -> tuple[float, int]:
    """(AUC over the pairs of a right and a wrong image of the same prompt, ties half; the number of such pairs):
    how well the reward ranks one prompt's candidates, which is all a search asks of it (the pooled AUC also
    credits knowing which prompts are hard)."""
    wins, pairs = 0.0, 0
    for prompt in np.unique(prompts):
        m = prompts == prompt
        pos, neg = scores[m][labels_[m] > 0.5], scores[m][labels_[m] <= 0.5]
        wins += float((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
        pairs += len(pos) * len(neg)
    return (wins / pairs if pairs else float("nan")), pairs


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(ranks(np.asarray(a, float)), ranks(np.asarray(b, float)))[0, 1])


def report(model: ShapesRewardModel, generator, suite_seed: int, per_prompt: int) -> list[str]:
    """AUC(correct) / Spearman(criteria_met) on the suite's own samples, by split and category, and by step."""
    prompts = bench.build(suite_seed)
    tags = {p.text: p.tags for p in prompts}
    data = sampled(generator, [p.text for p in prompts], per_prompt, 0, "fresh")
    images = [Image.fromarray(a) for a in data.pixels]
    met, p_correct = (np.array(v) for v in model.predict(data.prompts, images, list(data.noise)))
    generate_s, score_s = cost(model, generator, data.prompts[:64], images[:64])
    rows = [f"AUC for `correct` / Spearman with `criteria_met` ({len(prompts)} prompts x {per_prompt} samples; "
            f"suite seed {suite_seed}{' = the bench' if suite_seed == 0 else ''}); scoring an image took "
            f"{1000 * score_s:.2f} ms, {100 * score_s / generate_s:.1f}% of generating one ({1000 * generate_s:.0f} ms; "
            f"batches of 64, {torch.get_num_threads()} threads, interleaved, medians of 5)", "",
            "| images | " + " | ".join(["all", "in_dist", "held_out"]) + " | within a prompt (AUC, pairs) | positives |",
            "|---|---|---|---|---|---|"]
    for step in (*PREVIEW_STEPS, STEPS):
        sel = data.step == step
        cells = []
        for split in ("all", "in_dist", "held_out"):
            m = sel & np.array([split == "all" or tags[p]["split"] == split for p in data.prompts])
            cells.append(f"{auc(p_correct[m], data.correct[m]):.3f} / {spearman(met[m], data.met[m]):.3f}")
        name = "final" if step == STEPS else f"x0 preview after {step}/{STEPS} steps"
        within, pairs = within_prompt_auc(p_correct[sel], data.correct[sel], np.array(data.prompts)[sel])
        rows.append(f"| {name} | " + " | ".join(cells) + f" | {within:.3f}, {pairs} | {100 * data.correct[sel].mean():.0f}% |")
    rows += ["", "Final images by category (AUC / Spearman / AUC within a prompt / mean predicted p_correct vs true "
             "success):", "", "| category | split | AUC | Spearman | within a prompt | predicted | true |",
             "|---|---|---|---|---|---|---|"]
    final = data.step == STEPS
    for category in scenes.CATEGORIES:
        for split in ("in_dist", "held_out"):
            m = final & np.array([tags[p]["category"] == category and tags[p]["split"] == split for p in data.prompts])
            if m.sum():
                within, _ = within_prompt_auc(p_correct[m], data.correct[m], np.array(data.prompts)[m])
                rows.append(f"| {category} | {split} | {auc(p_correct[m], data.correct[m]):.3f} | "
                            f"{spearman(met[m], data.met[m]):.3f} | {within:.3f} | {100 * p_correct[m].mean():.0f}% | "
                            f"{100 * data.correct[m].mean():.0f}% |")
    return rows


def cost(model, generator, prompts: list[str], images: list[Image.Image], repeats: int = 5) -> tuple[float, float]:
    """Seconds per image to generate (10 steps, batch of 64) and to score with the reward (batch of 64),
    interleaved, medians."""
    gen, score = [], []
    for r in range(repeats):
        t0 = time.perf_counter()
        generator.generate(prompts, [fresh(10_000 + r * 64 + i) for i in range(len(prompts))])
        t1 = time.perf_counter()
        model.predict(prompts, images)
        t2 = time.perf_counter()
        gen.append((t1 - t0) / len(prompts))
        score.append((t2 - t1) / len(images))
    return float(np.median(gen)), float(np.median(score))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=ROOT / "outputs" / "reward-training", help="data cache + checkpoint")
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prompts", type=int, default=4000, help="training prompts (rendered scenes: 3 per prompt)")
    p.add_argument("--sampled-prompts", type=int, default=2500, help="training prompts the model samples")
    p.add_argument("--samples", type=int, default=2, help="samples per sampled prompt")
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--aux-weight", type=float, default=1.0, help="weight of the density (counting) loss")
    p.add_argument("--preview-share", type=float, default=0.25, help="share of the previews each epoch draws")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--suite-seed", type=int, default=0, help="report on the bench (0) or a suite drawn apart")
    p.add_argument("--report-samples", type=int, default=4)
    p.add_argument("--eval-only", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    start = time.time()
    generator = make_generator(PipelineSpec(name="shapes", model_id="tts://shapes-model", height=32, width=32,
                                            num_inference_steps=STEPS, guidance_scale=GUIDANCE))
    if args.eval_only:
        model = ShapesRewardModel.from_pretrained(args.out).eval()
    else:
        args.work.mkdir(parents=True, exist_ok=True)
        data = make_data(args, generator)
        model = train(args, data)
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out)
        meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("work", "out")}
        meta |= {"images": len(data), "minutes": round((time.time() - start) / 60, 1),
                 "command": "python scripts/train_reward.py " + " ".join(argv if argv is not None else sys.argv[1:])}
        (args.out / "training.json").write_text(json.dumps(meta, indent=2) + "\n")
        print(f"# trained in {(time.time() - start) / 60:.1f} min", file=sys.stderr)
    print(f"command: python scripts/train_reward.py {' '.join(argv if argv is not None else sys.argv[1:])}")
    print("\n".join(report(model, generator, args.suite_seed, args.report_samples)))


if __name__ == "__main__":
    main()
