"""Video: the Wan and LTX-Video families on their tiny twins (tests/twins.py), MP4 outputs, verifiers on videos and
a video search end to end."""
import numpy as np
import pytest
from test_sampler import LINEAGES, PROMPT, opened  # noqa: F401  (opened is a fixture)

from tts.core.noise import fresh
from tts.core.video import Video, VideoError, frame_indices, keyframe_strip, parse_frames, read_video, write_mp4
from tts.pipelines import PipelineConfigError

VIDEO_FAMILIES = ["wan", "ltx"]


def frames_of(video) -> np.ndarray:
    return np.stack([np.asarray(f, dtype=int) for f in video.frames])


def video_diff(a, b) -> int:
    return max(int(np.abs(frames_of(x) - frames_of(y)).max()) for x, y in zip(a, b, strict=True))


def noisy_video(count=9, size=(16, 12), fps=8.0, seed=0) -> Video:
    """A moving gradient with noise: frames that differ, and compress differently."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    w, h = size
    frames = []
    for k in range(count):
        base = np.linspace(0, 255, w)[None, :, None] * np.ones((h, 1, 3)) * (k + 1) / count
        frames.append(Image.fromarray(np.clip(base + rng.normal(0, 8 * k, (h, w, 3)), 0, 255).astype("uint8")))
    return Video(frames, fps)


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_sampler_equals_the_pipeline_call(family, opened):
    """Golden: the step-level sampler's videos are the pipeline call's, frame for frame (<= 1/255), NFEs counted
    (two passes a step under guidance), num_frames and fps as the spec says, 5-D noise per candidate."""
    gen, sampler = opened(family)
    spec = gen.spec
    golden, nfe, _ = gen.generate(PROMPT, LINEAGES)
    videos, traj = sampler.generate(PROMPT, LINEAGES)
    assert len(gen.latent_shape) == 4  # (C, latent frames, h, w)
    assert all(isinstance(v, Video) and len(v) == spec.num_frames and v.size == (spec.width, spec.height)
               for v in golden + videos)
    assert golden[0].fps == videos[0].fps == gen.family.DEFAULT_FPS
    assert video_diff(videos, golden) <= 1
    assert nfe == 2 * spec.num_inference_steps and traj.nfe.tolist() == [nfe] * len(LINEAGES)
    assert sampler.fallback is None and traj.step == sampler.num_steps


@pytest.mark.parametrize("family", VIDEO_FAMILIES)
def test_video_prompt_encoded_once_and_candidates_replay_alone(family, opened):
    """A second batch of the same prompt runs no text encoder; a candidate alone is the same video as in a batch
    (its noise comes from its lineage only); another lineage gives another video; rows can be re-selected."""
    from tts.sampling.sampler import SamplerOptions

    gen, sampler = opened(family, options=SamplerOptions(batch_changes=True))
    calls = []
    hook = gen.pipe.text_encoder.register_forward_hook(lambda *a: calls.append(1))
    try:
        batch, _, _ = gen.generate(PROMPT, LINEAGES)
        once = len(calls)
        alone, _, _ = gen.generate(PROMPT, LINEAGES[1:2])
        traj = sampler.run(sampler.start(PROMPT, LINEAGES), until=1)
        picked = sampler.run(traj.select([2, 1]))
    finally:
        hook.remove()
    assert once >= 1 and len(calls) == once
    assert video_diff(alone, batch[1:2]) <= 1  # batched float arithmetic: within a level
    assert video_diff(sampler.decode(picked.latents), [batch[2], batch[1]]) <= 1
    other, _, _ = gen.generate(PROMPT, [fresh(99)])
    assert (gen.noise([fresh(99)]) - gen.noise(LINEAGES[1:2])).abs().max() > 0
    assert np.abs(frames_of(other[0]) - frames_of(batch[1])).max() > 0


def test_video_settings_are_checked_before_loading(twins_root):
    from test_sampler import make_spec

    with pytest.raises(PipelineConfigError, match="1 \\+ a multiple of 4 for Wan, got 10: use 9"):
        make_spec("wan", twins_root, num_frames=10).check()
    with pytest.raises(PipelineConfigError, match="1 \\+ a multiple of 8 for LTX-Video, got 12: use 9"):
        make_spec("ltx", twins_root, num_frames=12).check()
    with pytest.raises(PipelineConfigError, match="pipeline.num_frames is for video pipelines"):
        make_spec("sd15", twins_root, num_frames=9).check()
    with pytest.raises(PipelineConfigError, match="use pipeline.num_frames="):
        make_spec("wan", twins_root, {"num_frames": 9})
    with pytest.raises(PipelineConfigError, match="use pipeline.fps="):
        make_spec("ltx", twins_root, {"frame_rate": 24})
    with pytest.raises(PipelineConfigError, match="pipeline.fps must be"):
        make_spec("ltx", twins_root, fps=0)


def test_ltx_frame_rate_reaches_the_transformer(opened):
    """pipeline.fps is LTX's frame_rate (rotary positions): another rate gives another video, in the pipeline call
    and the sampler alike; the MP4's rate follows it."""
    gen, sampler = opened("ltx", fps=12)
    slow, _, _ = gen.generate(PROMPT, LINEAGES[:1])
    stepped, _ = sampler.generate(PROMPT, LINEAGES[:1])
    fast, _ = opened("ltx")
    default, _, _ = fast.generate(PROMPT, LINEAGES[:1])
    assert slow[0].fps == 12.0 and video_diff(slow, stepped) <= 1
    assert np.abs(frames_of(slow[0]) - frames_of(default[0])).max() > 0


def test_mp4_round_trip(tmp_path):
    """An H.264 MP4 written and read back: frame count, size and rate kept, pixels close (lossy codec)."""
    video = noisy_video(count=9, size=(32, 16), fps=12.0)
    path = tmp_path / "clip.mp4"
    write_mp4(path, video)
    back = read_video(path)
    assert len(back) == 9 and back.size == (32, 16) and back.fps == 12.0
    assert np.abs(frames_of(back) - frames_of(video)).mean() < 20
    assert path.read_bytes()[4:8] == b"ftyp" and not list(tmp_path.glob(".*tmp*"))


def test_keyframes_and_strip():
    assert frame_indices(9) == [0, 4, 8] and frame_indices(9, "first,last") == [0, 8]
    assert frame_indices(9, 4) == [0, 3, 5, 8] and frame_indices(9, "1") == [0] and frame_indices(2, 5) == [0, 1]
    for bad in ("first,end", 0, "", "-2"):
        with pytest.raises(VideoError, match="verifier.frames"):
            parse_frames(bad)
    video = noisy_video(count=9, size=(16, 12))
    strip = keyframe_strip(video)
    assert strip.size == (3 * 16 + 2 * 2, 12)
    assert np.array_equal(np.asarray(strip)[:, 32 + 4:], np.asarray(video.frames[8]))
    assert video.convert("RGB").size == strip.size  # where a search treats the candidate as an image


def test_every_image_verifier_scores_a_video_by_its_frames():
    """Frames picked, scored as images, reduced per metric (mean, or the worst frame); images pass through."""
    from tts.verifiers._jpeg import jpeg_kb
    from tts.verifiers.incompressibility import Incompressibility

    class JpegLoss(Incompressibility):
        name, metrics, lower_is_better = "jpeg-loss", ("kb",), frozenset({"kb"})

        def score(self, prompts, images):
            from tts.core.records import MetricScore

            return [{"kb": MetricScore(score=jpeg_kb(im))} for im in images]

    video = noisy_video()
    plain = Incompressibility()
    per_frame = [s["incompressibility"].score for s in plain.score(["p"] * 9, video.frames)]
    mean = Incompressibility(frames="first,last").score(["p", "p"], [video, video.frames[3]])
    assert mean[0].scores["incompressibility"].score == pytest.approx((per_frame[0] + per_frame[8]) / 2)
    assert mean[1]["incompressibility"].score == per_frame[3]
    worst = Incompressibility(frames=3, frame_reduce="min").score(["p"], [video])[0]
    assert worst.scores["incompressibility"].score == min(per_frame[0], per_frame[4], per_frame[8])
    # min is the worst frame in the metric's direction: the largest value of a lower-is-better metric
    kb = [jpeg_kb(video.frames[i]) for i in (0, 4, 8)]
    assert JpegLoss(frame_reduce="min").score(["p"], [video])[0].scores["kb"].score == pytest.approx(max(kb))
    assert JpegLoss().score(["p"], [video])[0].scores["kb"].score == pytest.approx(sum(kb) / 3)
    with pytest.raises(VideoError, match="frame_reduce must be one of mean, min"):
        Incompressibility(frame_reduce="median")


def test_a_failed_frame_fails_the_video():
    from tts.verifiers.base import Verdict, Verifier

    class Picky(Verifier):
        name, metrics = "picky", ("m",)

        def score(self, prompts, images):
            from tts.core.records import MetricScore

            return [Verdict(error="too dark") if np.asarray(im).mean() < 40 else {"m": MetricScore(score=1.0)}
                    for im in images]

    out = Picky().score(["p"], [noisy_video()])
    assert out[0].error == "too dark"


def test_temporal_verifier_prefers_steady_videos(twins_root):
    from twins import save_clip

    from tts.verifiers.temporal import TemporalVerifier

    steady = Video([noisy_video(seed=1).frames[4]] * 5, 8.0)
    jumpy = noisy_video(count=5, seed=2)
    pixel = TemporalVerifier(backend="pixel")
    a, b = pixel.score(["p", "p"], [steady, jumpy])
    assert a["temporal"].score == 1.0 and b["temporal"].score < 0.99
    assert b["temporal_min"].score <= b["temporal"].score
    clip = TemporalVerifier(backend="clip", model_name=str(save_clip(twins_root)), device="cpu")
    clip.setup()
    c, d = clip.score(["p", "p"], [steady, jumpy])
    assert c["temporal"].score == pytest.approx(1.0, abs=1e-5) and d["temporal"].score < c["temporal"].score
    assert "CLIP" in d["temporal"].explanation
    with pytest.raises(Exception, match="backend=pixel"):
        TemporalVerifier(backend="clip", model_name="/no/such/clip", device="cpu").setup()


@pytest.mark.slow
def test_video_search_writes_mp4s_and_resumes(twins_root, tmp_path):
    """tts-search on the Wan twin with random search: every candidate is an MP4 (its frame count and size as the
    spec) with its keyframe strip PNG, the records carry video, frames and fps, a rerun resumes without
    regenerating, and the verifier scored the frames it was told to."""
    from conftest import run_tts
    from PIL import Image
    from twins import TWINS, save_twin

    from tts.core.runfolder import read_manifest

    _, preset, call = TWINS["wan"]
    overrides = [f"pipeline={preset}", f"pipeline.model_id={save_twin('wan', twins_root)}", "pipeline.dtype=fp32",
                 "pipeline.device=cpu", "verifier=incompressibility", "+verifier.frames=2", "search.rounds=2",
                 "batch_size=2", "prompt=a red cube on the moon",
                 *(f"pipeline.{k}={v}" for k, v in call.items())]
    run_tts(overrides, tmp_path)
    records = read_manifest(tmp_path)
    assert len(records) == 2 + 4 and all(r.status == "ok" for r in records)
    for r in records:
        assert r.video == r.image.replace(".png", ".mp4") and r.frames == 9 and r.fps == 16.0
        back = read_video(tmp_path / r.video)
        assert len(back) == 9 and back.size == (16, 16)
        assert Image.open(tmp_path / r.image).size == (3 * 16 + 4, 16)
        assert "mean of 2 frames" in r.scores["incompressibility"]["incompressibility"].explanation
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.mp4")}
    run_tts(overrides, tmp_path)
    assert len(read_manifest(tmp_path)) == 6
    assert {p: p.stat().st_mtime_ns for p in tmp_path.glob("*.mp4")} == mtimes


@pytest.mark.slow
@pytest.mark.parametrize("family,search", [
    ("wan", ["search=prune", "search.num_particles=3", "search.prune_at=[1]"]),
    ("ltx", ["search=smc", "search.num_particles=3", "search.resample_interval=1"]),
    ("ltx", ["search=paths", "search.num_paths=2", "search.num_branches=2", "search.start_step=1", "search.forward=1",
             "search.backward=2"]),
    ("wan", ["search=beam", "search.width=2", "search.branching=2", "search.branch_at=[1]"]),
    ("ltx", ["search=evolution", "search.population=3", "search.generations=2", "search.preview_step=1",
             "search.finals=2"]),
    ("wan", ["search=zero-order", "search.rounds=2"])])
def test_every_strategy_searches_video(family, search, twins_root, tmp_path):
    """The particle engine steps 5-D (Wan) and packed (LTX) video states, x0 previews decode to videos the verifier
    scores by their frames; every finished candidate is a playable MP4 of the spec's frame count."""
    from conftest import run_tts
    from twins import TWINS, save_twin

    from tts.core.runfolder import read_manifest

    _, preset, call = TWINS[family]
    overrides = [f"pipeline={preset}", f"pipeline.model_id={save_twin(family, twins_root)}", "pipeline.dtype=fp32",
                 "pipeline.device=cpu", "verifier=incompressibility", "prompt=a red cube on the moon", *search,
                 *(f"pipeline.{k}={v}" for k, v in {**call, "num_inference_steps": 3}.items())]
    run_tts(overrides, tmp_path)
    records = read_manifest(tmp_path)
    assert records and all(r.status == "ok" and r.nfe > 0 and r.frames == 9 for r in records)
    for r in records[:2]:
        assert len(read_video(tmp_path / r.video)) == 9


@pytest.mark.parametrize("preset,frames,weights", [("wan2.1-t2v-1.3b", 81, 14.5), ("wan2.1-t2v-14b", 81, 39.7),
                                                   ("ltx-video", 161, 14.1), ("ltx-video-0.9.1", 161, 14.1)])
def test_video_presets_plan_offline(preset, frames, weights, monkeypatch):
    """tts-plan's estimate for each video preset without the checkpoint: the family guessed from the model id, 50
    steps x 2 guided passes, the weights table; the preset's frames and rate as the model card says."""
    import hydra
    from conftest import compose

    from tts.pipelines import family_by_model_id, weights_gb
    from tts.pipelines.nfe import nfe_per_image

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    spec = hydra.utils.instantiate(compose([f"pipeline={preset}"]).pipeline)
    family = family_by_model_id(spec.model_id)
    assert family.VIDEO and spec.num_frames == frames and spec.fps == family.DEFAULT_FPS
    assert family.frames_problem(spec.num_frames) is None
    nfe, how = nfe_per_image(spec)
    assert nfe == 100.0 and "50 steps x 2 passes" in how
    assert weights_gb(spec.model_id) == weights


@pytest.fixture(scope="module")
def video_run(tmp_path_factory):
    """A finished random search on the Wan twin: 2 rounds (2 + 4 videos)."""
    from conftest import run_tts
    from twins import TWINS, save_twin

    root = tmp_path_factory.mktemp("video-run")
    _, preset, call = TWINS["wan"]
    run_tts([f"pipeline={preset}", f"pipeline.model_id={save_twin('wan', root / 'twins')}", "pipeline.dtype=fp32",
             "pipeline.device=cpu", "verifier=incompressibility", "search.rounds=2", "batch_size=3",
             "prompt=a red cube on the moon", *(f"pipeline.{k}={v}" for k, v in call.items())], root / "run")
    return root / "run"


@pytest.mark.slow
def test_replay_of_a_video_compares_every_frame(video_run, capsys):
    from tts.app import replay
    from tts.core.runfolder import read_manifest

    record = read_manifest(video_run)[-1]
    replay.main([str(video_run), record.image, "--device", "cpu"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("max pixel difference from the original: 0")
    assert out[1].endswith("9 frames, max pixel difference per frame: " + " ".join(["0"] * 9))
    assert (video_run / "replay" / record.video).exists()
    other = noisy_video(count=8, size=(16, 16))
    assert replay.frame_diffs(read_video(video_run / record.video), other)[-1] == 255  # a frame missing


@pytest.mark.slow
def test_collage_and_report_show_a_video_run(video_run, tmp_path):
    """tts-collage draws each round's best keyframe strip (best marked); tts-report plays the best MP4 inline in a
    real headless Chromium (decoded: its size and duration known), the strips beside it, nothing from a network."""
    import re
    from pathlib import Path

    from conftest import headless_chromium, needs_browser  # noqa: F401
    from PIL import Image
    from selenium.webdriver.support.ui import WebDriverWait

    from tts.views import collage, report

    collage.main([str(video_run)])
    [made] = (video_run / "collages").glob("*_rounds.png")
    assert Image.open(made).size[0] > 2 * 16
    report.main([str(video_run), "-o", str(tmp_path / "report.html")])
    page = tmp_path / "report.html"
    assert not re.search(r"""(src|href)=["']?(https?:|//|/)""", page.read_text())
    driver = headless_chromium(1300, 1000, console_log=True)
    try:
        driver.get(page.resolve().as_uri())
        WebDriverWait(driver, 30).until(lambda d: d.execute_script(
            "const v = document.querySelector('.tile.video video'); return v && v.readyState >= 1"))
        info = driver.execute_script(
            "const v = document.querySelector('.tile.video video');"
            " return {w: v.videoWidth, h: v.videoHeight, d: v.duration, src: v.getAttribute('src'),"
            " cap: v.parentNode.querySelector('figcaption').textContent}")
        driver.execute_script("document.getElementById('prompts').scrollIntoView()")
        driver.save_screenshot(str(Path(tmp_path) / "video-report.png"))
        problems = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        driver.quit()
    assert (info["w"], info["h"]) == (16, 16) and info["d"] == pytest.approx(9 / 16, abs=0.1)
    assert info["src"].endswith(".mp4") and info["cap"].startswith("best video")
    assert not problems, problems


@pytest.mark.slow
def test_a_video_pipeline_served_as_mp4_bytes(twins_root, tmp_path):
    """tts-serve answers a video pipeline with each candidate's MP4 (and its keyframe strip PNG); a search with
    pipeline.server writes MP4s of the spec's frame count, whose frames match a local search's within the codec."""
    import base64
    import io

    import httpx
    from conftest import run_tts
    from PIL import Image
    from test_serve import start_server, stop
    from twins import TWINS, save_twin

    from tts.core.runfolder import read_manifest
    from tts.core.video import video_from_bytes

    _, preset, call = TWINS["wan"]
    twin = save_twin("wan", twins_root)
    settings = [f"pipeline.{k}={v}" for k, v in call.items()]
    proc, url = start_server(tmp_path / "serve.log", "server.port=0", f"pipeline={preset}",
                             f"pipeline.model_id={twin}", "pipeline.device=cpu", "pipeline.dtype=fp32", *settings)
    try:
        r = httpx.post(f"{url}/generate", json={"model": preset, "prompt": "a red cube", "lineages": [fresh(1)],
                                                "num_frames": 5}, timeout=300)
        assert r.status_code == 200, r.text
        [mp4], [png] = r.json()["videos"], r.json()["images"]
        video = video_from_bytes(base64.b64decode(mp4))
        assert len(video) == 5 and video.size == (16, 16)
        assert Image.open(io.BytesIO(base64.b64decode(png))).size == (3 * 16 + 4, 16)
        common = [f"pipeline={preset}", f"pipeline.model_id={twin}", "pipeline.dtype=fp32", "pipeline.device=cpu",
                  "verifier=incompressibility", "search.rounds=1", "prompt=a red cube on the moon", *settings]
        run_tts([*common, f"++pipeline.server={url}"], tmp_path / "remote")
    finally:
        stop(proc)
    run_tts(common, tmp_path / "local")
    remote, here = read_manifest(tmp_path / "remote"), read_manifest(tmp_path / "local")
    assert len(remote) == len(here) == 2 and all(r.frames == 9 and r.video for r in remote)
    for x, y in zip(sorted(remote, key=lambda r: r.index), sorted(here, key=lambda r: r.index)):
        a, b = read_video(tmp_path / "remote" / x.video), read_video(tmp_path / "local" / y.video)
        assert x.video == y.video and np.abs(frames_of(a) - frames_of(b)).mean() < 3  # encoded twice vs once


WAN_TTSF = {"pretrained_model_name_or_path": "Wan-AI/Wan2.1-T2V-1.3B-Diffusers", "torch_dtype": "bf16",
            "pipeline_call_args": {"height": 480, "width": 832, "num_frames": 81, "guidance_scale": 5.0,
                                   "negative_prompt": "Bright tones, overexposed, static", "num_inference_steps": 50},
            "verifier_args": {"name": "laion_aesthetic", "choice_of_metric": "laion_aesthetic_score"},
            "search_args": {"search_method": "random", "search_rounds": 4}, "export_args": {"fps": 15}}


def test_tt_scale_flux_video_configs_map_to_the_video_presets():
    """tt-scale-flux's wan.json / ltx_video.json (its keys as there): the preset, frames, the export fps, the LAION
    aesthetic predictor as tts's aesthetic verifier, the negative prompt replacing the preset's."""
    from tts.app.ttsf import TtsfConfigError, to_overrides
    from tts.core.configtree import config_dir

    over = to_overrides(WAN_TTSF, config_dir())
    assert {"pipeline=wan2.1-t2v-1.3b", "++pipeline.num_frames=81", "++pipeline.fps=15", "verifier=aesthetic",
            'verifier.choice_of_metric="aesthetic"', "search.rounds=4",
            '++pipeline.call_args={negative_prompt:"Bright tones, overexposed, static"}'} <= set(over)
    ltx = {**WAN_TTSF, "pretrained_model_name_or_path": "a-r-r-o-w/LTX-Video-0.9.1-diffusers", "export_args": {"fps": 24}}
    assert {"pipeline=ltx-video-0.9.1", "++pipeline.fps=24"} <= set(to_overrides(ltx, config_dir()))
    with pytest.raises(TtsfConfigError, match="export_args: tts does not know 'codec'"):
        to_overrides({**WAN_TTSF, "export_args": {"codec": "h265"}}, config_dir())


@pytest.mark.slow
def test_a_tt_scale_flux_video_config_runs_on_the_twin(twins_root, tmp_path):
    from conftest import compose, run_tts  # noqa: F401
    from twins import save_twin

    from tts.app.ttsf import to_overrides
    from tts.core.configtree import config_dir
    from tts.core.runfolder import read_manifest

    config = {**WAN_TTSF, "pretrained_model_name_or_path": str(save_twin("wan", twins_root)), "torch_dtype": "fp32",
              "pipeline_call_args": {"height": 16, "width": 16, "num_frames": 5, "guidance_scale": 5.0,
                                     "negative_prompt": "static", "num_inference_steps": 2},
              "verifier_args": {"name": "incompressibility"}, "search_args": {"search_rounds": 1}}
    run_tts([*to_overrides(config, config_dir()), "pipeline.device=cpu", "prompt=a red cube"], tmp_path)
    records = read_manifest(tmp_path)
    assert records and all(r.frames == 5 and r.fps == 15.0 and r.status == "ok" for r in records)


def test_without_imageio_a_video_pipeline_says_what_to_install(twins_root, monkeypatch, tmp_path):
    """Before any model loads: the video extra named with its install command; writing an MP4 says the same."""
    import sys

    from test_sampler import make_spec

    spec = make_spec("wan", twins_root)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(PipelineConfigError, match=r"imageio-ffmpeg.*pip install.*\[video\]"):
        spec.check()
    with pytest.raises(VideoError, match=r"\[video\]"):
        write_mp4(tmp_path / "x.mp4", noisy_video())
    make_spec("sd15", twins_root).check()  # image pipelines do not need it


@pytest.mark.parametrize("protocol", ["gemini", "openai"])
def test_api_graders_grade_a_video_in_one_request_on_its_keyframe_grid(protocol, monkeypatch):
    """An API grader sends one request per video: the labelled grid of verifier.frames (not one per frame), under a
    video-aware preamble; an image is sent as it is."""
    from test_api_verifiers import KEY, sent_key, verifier_for

    from tts.core.video import keyframe_grid
    from tts.verifiers import grading
    from tts.verifiers.loopback import LoopbackGrader

    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    video, image = noisy_video(count=9, size=(32, 32)), noisy_video(seed=3).frames[2]
    seen = []
    with LoopbackGrader(faults=lambda key, attempt: seen.append(key), api_key=KEY) as server:
        verifier = verifier_for(server, protocol, frames=4, backoff_s=0.01, max_backoff_s=0.05)
        verdicts = verifier.score(["a red cube", "a blue ball"], [video, image])
        verifier.close()
    grid = keyframe_grid(video, 4)
    assert sorted(seen) == sorted([sent_key(grid), sent_key(image)])
    assert all(v.error is None and v.usage.requests == 1 for v in verdicts)
    assert grid.size == (4 * 32, 32 + 14)
    text = grading.fill_template("Rate this: {prompt}", "a red cube", grid)
    assert text.startswith("The image shows a video") and "4 of 9 frames" in text and text.endswith("a red cube")
    assert grading.fill_template("Rate this: {prompt}", "a red cube", image) == "Rate this: a red cube"
