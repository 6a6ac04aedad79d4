"""Golden ImageReward scores from the REFERENCE implementation (the ``image-reward`` package, 1.5) on the tiny
random checkpoint of tests/imagereward_twin.py, written to tests/golden/imagereward.json.

Run it in a separate environment, never in tts's own (the package pins old timm/fairscale/transformers):

    python3.11 -m venv /tmp/ir-ref && . /tmp/ir-ref/bin/activate
    pip install torch && pip install image-reward --no-deps
    pip install "transformers==4.30.2" "timm==0.6.13" numpy pillow ftfy regex tqdm openai-clip "setuptools<70" \
        "huggingface_hub==0.16.4"
    pip install --no-deps --no-build-isolation fairscale==0.4.13
    python scripts/imagereward_golden.py

Offline: the twin's med_config.json is passed in, and its WordPiece vocabulary is offered to the package's
``BertTokenizer.from_pretrained('bert-base-uncased')`` as a local folder of that name (the working directory is
a temporary folder holding it). The package is used as installed; only its sizes are shrunk: ``create_vit``
builds the package's own ``VisionTransformer`` at the twin's sizes instead of ViT-L, and ``MLP(768)`` is the
package's ``MLP`` at the twin's text width. The package's ``__init__`` (which imports its training code,
needing accelerate/datasets/diffusers) is bypassed by importing its modules under a bare package object.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import imagereward_twin as twin  # noqa: E402


def reference_modules():
    spec = importlib.util.find_spec("ImageReward")
    if spec is None:
        sys.exit("error: the reference package is not installed here: pip install image-reward --no-deps (see the docstring)")
    pkg = types.ModuleType("ImageReward")
    pkg.__path__ = list(spec.submodule_search_locations)
    sys.modules["ImageReward"] = pkg
    import ImageReward.ImageReward as ir
    import ImageReward.models.BLIP.blip_pretrain as bp
    import ImageReward.models.BLIP.vit as vit

    return ir, bp, vit


def build_reference(folder: Path):
    import torch

    ir, bp, vit = reference_modules()
    v = twin.VISION
    bp.create_vit = lambda *a, **k: (vit.VisionTransformer(
        img_size=v["image"], patch_size=v["patch"], embed_dim=v["hidden"], depth=v["layers"],
        num_heads=v["hidden"] // 64, drop_path_rate=0.0), v["hidden"])
    original_mlp = ir.MLP
    ir.MLP = lambda _768: original_mlp(twin.TEXT["hidden"])
    model = ir.ImageReward(med_config=str(folder / "med_config.json"), device="cpu")
    state = torch.load(folder / "ImageReward.pt", map_location="cpu")
    ours, theirs = {k: tuple(t.shape) for k, t in state.items()}, {k: tuple(t.shape) for k, t in model.state_dict().items()}
    if ours != theirs:
        sys.exit(f"error: the twin's layout differs from the reference: only in the twin "
                 f"{sorted(set(ours) - set(theirs))}, only in the reference {sorted(set(theirs) - set(ours))}, "
                 f"shapes {[k for k in ours if k in theirs and ours[k] != theirs[k]]}")
    model.load_state_dict(state, strict=True)
    return model.eval(), ir


def main() -> None:
    import PIL
    import timm
    import torch
    import transformers

    out = ROOT / "tests" / "golden" / "imagereward.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = twin.save_imagereward_twin(Path(tmp))
        shutil.copytree(folder / "tokenizer", Path(tmp) / "bert-base-uncased")
        os.chdir(tmp)  # BertTokenizer.from_pretrained('bert-base-uncased') finds the local folder first
        model, ir = build_reference(folder)
        checksum = twin.weights_checksum(torch.load(folder / "ImageReward.pt", map_location="cpu"))
        images = twin.golden_images()
        with torch.no_grad():
            scores = [[model.score(p, im) for im in images] for p in twin.PROMPTS]
            tokens = [model.blip.tokenizer(p, padding="max_length", truncation=True, max_length=35)["input_ids"]
                      for p in twin.PROMPTS]
            pixels = [float(model.preprocess(im).double().sum()) for im in images]
    out.parent.mkdir(parents=True, exist_ok=True)
    golden = {
        "made_by": "scripts/imagereward_golden.py (reference: image-reward 1.5, ImageReward.score per pair)",
        "versions": {"image-reward": "1.5", "torch": torch.__version__, "transformers": transformers.__version__,
                     "timm": timm.__version__, "pillow": PIL.__version__},
        "weights_checksum": checksum, "mean": model.mean,
        "std": model.std, "prompts": twin.PROMPTS, "sizes": twin.SIZES, "token_ids": tokens,
        "pixel_sums": pixels, "scores": scores}
    out.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in golden.items()) + "\n}\n")
    print(f"wrote {out}: {len(twin.PROMPTS)} prompts x {len(images)} images")


if __name__ == "__main__":
    main()
