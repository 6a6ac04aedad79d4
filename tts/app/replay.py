"""``tts-replay RUN_DIR IMAGE [--out PATH]``: regenerate one candidate from its record alone.

Reads the run's ``config.json`` (the pipeline settings) and the candidate's manifest record (its
prompt and noise lineage; for an in-loop strategy's candidate, its whole path: every step, branch, re-noise
and resampling, replayed on the step-level sampler), regenerates the image with the same pipeline, writes it to ``--out``
(default ``<RUN_DIR>/replay/<IMAGE>``) and prints the largest pixel difference from the stored one.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ..core import runfolder as rf


def replay(run_dir: Path, image: str, out: Path | None = None, device: str | None = None) -> tuple[Path, int]:
    """Regenerate ``image`` of ``run_dir``; return (written path, max abs pixel difference from the original)."""
    from ..sampling.generate import make_generator
    from ..pipelines import PipelineSpec

    if not (run_dir / rf.CONFIG).is_file():
        raise SystemExit(f"tts-replay: {run_dir} is not a run folder (no {rf.CONFIG}); pass the folder tts-search "
                         "printed as 'run folder: ...'")
    config = json.loads((run_dir / rf.CONFIG).read_text())
    records = [r for r in rf.read_manifest(run_dir) if r.image == Path(image).name]
    if not records:
        raise SystemExit(f"tts-replay: no record for {image!r} in {run_dir / rf.MANIFEST} (give an image file name "
                         "listed there)")
    record = records[-1]
    settings = {k: v for k, v in config["pipeline"].items() if k != "_target_"}
    if device:
        settings["device"] = device
    spec = PipelineSpec(**settings)
    generator = make_generator(spec)
    try:
        regenerated = _regenerate(generator, record)
    finally:
        generator.close()
    out = out or run_dir / "replay" / record.image
    out.parent.mkdir(parents=True, exist_ok=True)
    rf.save_image(out, regenerated)
    original = np.asarray(Image.open(run_dir / record.image).convert("RGB"), dtype=np.int16)
    diff = int(np.abs(original - np.asarray(regenerated.convert("RGB"), dtype=np.int16)).max())
    return out, diff


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
    p.add_argument("run_dir", type=Path)
    p.add_argument("image", help="the candidate's image file name (as in manifest.jsonl)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--device", default=None, help="override the recorded device (e.g. cpu)")
    args = p.parse_args(argv)
    try:
        out, diff = replay(args.run_dir, args.image, args.out, args.device)
    except SystemExit as e:
        print(e, file=sys.stderr)
        sys.exit(2)
    except rf.RunFolderError as e:
        print(f"tts-replay: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"{out}  max pixel difference from the original: {diff}")


if __name__ == "__main__":
    main()
