"""``tts-replay RUN_DIR IMAGE [--out PATH]``: regenerate one candidate from its record alone.

Reads the run's ``config.json`` (the pipeline settings) and the candidate's manifest record (its
prompt and noise lineage; for an in-loop strategy's candidate, its whole path: every step, branch, re-noise
and resampling, replayed on the step-level sampler), regenerates the image with the same pipeline, writes it to ``--out``
(default ``<RUN_DIR>/replay/<IMAGE>``) and prints the largest pixel difference from the stored one. A video
candidate (Wan, LTX-Video) is compared on its keyframe strip (the PNG, lossless), then frame by frame: its MP4 is
written beside the replayed strip, both MP4s decoded, and each frame's largest difference printed.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import runfolder as rf


def replay(run_dir: Path, image: str, out: Path | None = None, device: str | None = None) -> tuple[Path, int]:
    """Regenerate ``image`` of ``run_dir``; return (written path, max abs pixel difference from the original)."""
    from ..sampling.generate import make_generator
    from ..pipelines import PipelineConfigError, PipelineSpec

    if not (run_dir / rf.CONFIG).is_file():
        raise SystemExit(f"tts-replay: {run_dir} is not a run folder (no {rf.CONFIG}); pass the folder tts-search "
                         "printed as 'run folder: ...'")
    settings = _pipeline_settings(run_dir)
    records = rf.records_for_image(run_dir, image)
    if not records:
        raise SystemExit(f"tts-replay: no record for {image!r} in {run_dir / rf.MANIFEST} (give an image file name "
                         "listed there)")
    record = records[-1]
    if device:
        settings["device"] = device
    try:
        spec = PipelineSpec(**settings)
        spec.check()
    except (PipelineConfigError, TypeError, ValueError) as e:
        raise SystemExit(f"tts-replay: cannot build the run's pipeline: {e}") from None
    generator = make_generator(spec)
    generator.noise_root = run_dir  # stored noises (gradient noise optimisation) live in the run folder
    try:
        regenerated = _regenerate(generator, record)
    except (ValueError, KeyError, TypeError, IndexError, OverflowError, RuntimeError) as e:
        raise SystemExit(f"tts-replay: the record of {image} cannot be replayed ({type(e).__name__}: "
                         f"{str(e)[:200]}): it was edited, or written by another tool") from None
    finally:
        generator.close()
    out = out or run_dir / "replay" / record.image
    out.parent.mkdir(parents=True, exist_ok=True)
    rf.save_image(out, regenerated)
    original = np.asarray(Image.open(run_dir / record.image).convert("RGB"), dtype=np.int16)
    diff = int(np.abs(original - np.asarray(regenerated.convert("RGB"), dtype=np.int16)).max())
    return out, diff


def _pipeline_settings(run_dir: Path) -> dict:
    """The run's pipeline settings from its config.json; one line when it holds none."""
    try:
        config = rf.read_run_config(run_dir)
    except ValueError as e:
        raise SystemExit(f"tts-replay: {e}") from None
    pipeline = config.get("pipeline")
    if not isinstance(pipeline, dict):
        raise SystemExit(f"tts-replay: {run_dir / rf.CONFIG} holds no pipeline settings: it is not a tts-search "
                         "run's config")
    return {k: v for k, v in pipeline.items() if k != "_target_"}


def _regenerate(generator, record):
    """One pipeline call from the noise lineage, or the recorded path on the step-level sampler."""
    if record.path is None:
        [image], _, _ = generator.generate(record.prompt, [record.noise])
        return image
    from ..sampling.particles import replay_path, sampler_options
    from ..sampling.sampler import Sampler

    sampler = Sampler(generator, sampler_options(record.path.eta))
    try:
        return replay_path(sampler, record.prompt, record.path.ops)
    finally:
        sampler.close()


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="tts-replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dir", type=Path, help="the run folder, or the candidate's image path inside it (RUN/IMAGE.png)")
    p.add_argument("image", nargs="?", default=None,
                   help="the candidate's image file name (as in manifest.jsonl); omit it when run_dir is the image")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--device", default=None, help="override the recorded device (e.g. cpu)")
    args = p.parse_args(argv)
    if args.image is None:  # one path: RUN/IMAGE.png, the image's own folder being the run folder
        if args.run_dir.is_dir():
            p.error("give the candidate's image too: tts-replay RUN IMAGE.png (or tts-replay RUN/IMAGE.png)")
        args.run_dir, args.image = args.run_dir.parent, args.run_dir.name
    try:
        out, diff = replay(args.run_dir, args.image, args.out, args.device)
    except SystemExit as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    except rf.RunFolderError as e:
        print(f"tts-replay: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{out}  max pixel difference from the original: {diff}")
    line = video_report(args.run_dir, args.image, out)
    if line:
        print(line)


def video_report(run_dir: Path, image: str, out: Path) -> str | None:
    """A video candidate: the replayed MP4 against the original, frame by frame (both decoded; the same frames
    encode to the same H.264 stream, so a faithful replay differs by 0 in every frame)."""
    from ..core.video import read_video, video_path

    original, replayed = video_path(run_dir / image), video_path(out)
    if not (original.exists() and replayed.exists()):
        return None
    diffs = frame_diffs(read_video(original), read_video(replayed))
    shown = " ".join(str(d) for d in diffs[:32]) + (" ..." if len(diffs) > 32 else "")
    return f"{replayed}  {len(diffs)} frames, max pixel difference per frame: {shown}"


def frame_diffs(a, b) -> list[int]:
    """Max absolute pixel difference of each pair of frames (a missing frame: 255)."""
    pairs = [(np.asarray(x, dtype=np.int16), np.asarray(y, dtype=np.int16)) for x, y in zip(a.frames, b.frames)]
    out = [int(np.abs(x - y).max()) if x.shape == y.shape else 255 for x, y in pairs]
    return out + [255] * abs(len(a) - len(b))


if __name__ == "__main__":
    main()
