"""Golden HPSv2 scores from the REFERENCE implementation (the ``hpsv2`` package 1.2.0, ``hpsv2.img_score.score``,
with its vendored open_clip) on the tiny random checkpoint of tests/hpsv2_twin.py -> tests/golden/hpsv2.json.

Run it in a separate environment, never in tts's own (the package pins old protobuf and pytest):

    python3.11 -m venv /tmp/hps-ref && . /tmp/hps-ref/bin/activate
    pip install torch torchvision && pip install hpsv2 --no-deps
    pip install ftfy regex tqdm numpy pillow huggingface_hub clint requests
    pip download open-clip-torch --no-deps -d /tmp/oc && unzip -o -j /tmp/oc/open_clip_torch-*.whl \
        'open_clip/bpe_simple_vocab_16e6.txt.gz' -d "$(python -c 'import importlib.util as u, os; \
        print(os.path.dirname(u.find_spec("hpsv2").origin))')/src/open_clip"
    python scripts/hpsv2_golden.py

The wheel lacks its BPE vocabulary (its tokenizer module builds one at import), so open_clip's own file is put
where it looks, as the unzip command does. Offline and at the twin's sizes: ``score`` is called as the package
has it, with ``create_model_and_transforms`` bound to the twin's open_clip model config (``pretrained=None``
instead of downloading laion2B weights; every other argument as the package passes it) and the tokenizer's
module-level ``_tokenizer`` replaced by open_clip's ``SimpleTokenizer`` on the twin's BPE merges; the
checkpoint is the twin's file, passed as ``cp``.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import hpsv2_twin as twin  # noqa: E402

NAME = "tts-tiny-hps"


def reference(folder: Path):
    try:
        import hpsv2.img_score as img_score
    except ImportError as e:
        sys.exit(f"error: the reference package does not import here ({e}); see this script's docstring")
    from hpsv2.src.open_clip import factory, tokenizer

    factory._MODEL_CONFIGS[NAME] = twin.open_clip_model_config()
    original = img_score.create_model_and_transforms

    def tiny(model_name, pretrained=None, **kw):
        assert model_name == "ViT-H-14"
        return original(NAME, None, **kw)

    img_score.create_model_and_transforms = tiny
    tokenizer._tokenizer = tokenizer.SimpleTokenizer(str(twin.save_bpe_gz(folder / "bpe.txt.gz")))
    return img_score, tokenizer


def main() -> None:
    import PIL
    import torch
    import torchvision

    out = ROOT / "tests" / "golden" / "hpsv2.json"
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        state = twin.random_state_dict()
        torch.save({"state_dict": state}, folder / "HPS_v2.1_compressed.pt")
        img_score, tokenizer = reference(folder)
        images = twin.golden_images()
        scores = [[float(img_score.score(im, p, cp=str(folder / "HPS_v2.1_compressed.pt"), hps_version="v2.1")[0])
                   for im in images] for p in twin.PROMPTS]
        tokens = tokenizer.tokenize(twin.PROMPTS).tolist()
        preprocess = img_score.model_dict["preprocess_val"]
        pixels = [float(preprocess(im).double().sum()) for im in images]
    golden = {
        "made_by": "scripts/hpsv2_golden.py (reference: hpsv2 1.2.0, hpsv2.img_score.score per pair)",
        "versions": {"hpsv2": "1.2.0", "torch": torch.__version__, "torchvision": torchvision.__version__,
                     "pillow": PIL.__version__},
        "weights_checksum": twin.weights_checksum(state), "prompts": twin.PROMPTS,
        "token_ids": [row[:row.index(max(row)) + 1] for row in tokens], "pixel_sums": pixels, "scores": scores}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}" for k, v in golden.items()) + "\n}\n")
    print(f"wrote {out}: {len(twin.PROMPTS)} prompts x {len(images)} images")


if __name__ == "__main__":
    main()
