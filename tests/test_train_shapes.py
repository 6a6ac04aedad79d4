"""scripts/train_shapes.py: a stopped run resumes to exactly the weights of an uninterrupted one, the
export loads through from_pretrained, and a resume with another recipe is refused."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--width", "16", "--text-dim", "32", "--batch-size", "4", "--threads", "1", "--export-every", "1000"]


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("train_shapes", ROOT / "scripts" / "train_shapes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    yield module
    torch.set_num_threads(threads)  # --threads 1 set it for this whole process


def _unet_weights(path: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(path / "unet" / "diffusion_pytorch_model.safetensors"))


def test_resume_matches_an_uninterrupted_run_and_exports_a_loadable_pipeline(train, tmp_path):
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    train.main([*TINY, "--steps", "4", "--out", str(straight / "model"), "--ckpt", str(straight / "ck.pt")])
    # The same 4-step schedule, stopped after 2 steps, then run again: it resumes from the checkpoint.
    train.main([*TINY, "--steps", "4", "--stop-after", "2", "--out", str(resumed / "model"),
                "--ckpt", str(resumed / "ck.pt")])
    assert json.loads((resumed / "model" / "training.json").read_text())["step"] == 2
    train.main([*TINY, "--steps", "4", "--out", str(resumed / "model"), "--ckpt", str(resumed / "ck.pt")])
    assert json.loads((resumed / "model" / "training.json").read_text())["step"] == 4
    a, b = _unet_weights(straight / "model"), _unet_weights(resumed / "model")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)

    from tts.world.pipeline import ShapesPipeline

    pipe = ShapesPipeline.from_pretrained(str(resumed / "model"))
    assert pipe.scheduler.config.timestep_spacing == "trailing"
    assert pipe.unet.config.addition_embed_type == "text"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    out = pipe("a red circle", num_inference_steps=2, output_type="np")
    assert out.images.shape == (1, 32, 32, 3)


def test_resume_with_another_recipe_is_refused(train, tmp_path):
    args = [*TINY, "--steps", "2", "--out", str(tmp_path / "model"), "--ckpt", str(tmp_path / "ck.pt")]
    train.main(args)
    with pytest.raises(SystemExit, match="--width 16 \\(asked 32\\)"):
        train.main([*args, "--width", "32"])


def test_shifted_schedule_divides_the_cosine_snr_and_reaches_the_exported_scheduler(train, tmp_path):
    from diffusers import DDPMScheduler

    from tts.world.pipeline import ShapesPipeline

    train.main([*TINY, "--steps", "1", "--schedule-shift", "4", "--out", str(tmp_path / "m"), "--ckpt", str(tmp_path / "ck.pt")])
    shifted = ShapesPipeline.from_pretrained(str(tmp_path / "m")).scheduler.alphas_cumprod.double()
    cosine = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2").alphas_cumprod.double()
    ratio = (cosine / (1 - cosine)) / (shifted / (1 - shifted))
    assert torch.allclose(ratio[:950], torch.full_like(ratio[:950], 4.0), rtol=1e-2)  # float32 cumprod
    assert json.loads((tmp_path / "m" / "training.json").read_text())["schedule_shift"] == 4.0
