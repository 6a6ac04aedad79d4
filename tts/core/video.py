"""Video candidates: a :class:`Video` is a list of PIL frames and a frame rate that stands in for an image where the
search handles images (its ``convert``/``save``/``size``/``info`` are its keyframe strip's, so a run folder's PNG of
a video candidate is its keyframe strip), and is written as an H.264 MP4 beside that PNG (:func:`write_mp4`, read
back by :func:`read_video`). :func:`frame_indices` picks the frames a verifier scores (``first,middle,last`` as
tt-scale-flux, or N evenly spaced). MP4 needs the ``video`` extra (imageio with imageio-ffmpeg, which ships ffmpeg).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from PIL import Image

from .validate import install_hint

#: the frames a keyframe strip shows (tt-scale-flux scores the same three)
STRIP_FRAMES = "first,middle,last"
FRAME_NAMES = ("first", "middle", "last")


class VideoError(ValueError):
    pass


@dataclasses.dataclass(eq=False)
class Video:
    """A generated video: RGB frames of one size, played at ``fps``; ``info`` as a PIL image's (flags, screening)."""

    frames: list
    fps: float
    info: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.frames:
            raise VideoError("a video needs at least one frame")
        self.frames = [f if f.mode == "RGB" else f.convert("RGB") for f in self.frames]

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def size(self) -> tuple[int, int]:
        return self.frames[0].size

    def strip(self, frames: str | int = STRIP_FRAMES) -> Image.Image:
        return keyframe_strip(self, frames)

    # -- what the image paths of a search call on a candidate: the keyframe strip's
    def convert(self, mode: str) -> Image.Image:
        return self.strip().convert(mode)

    def save(self, fp, format: str | None = None, **kw) -> None:  # noqa: A002 - PIL's signature
        self.strip().save(fp, format=format, **kw)


def is_video(item) -> bool:
    return isinstance(item, Video)


def parse_frames(spec: str | int) -> str | int:
    """``verifier.frames``: ``first,middle,last`` (any of them, in order) or a positive count N (evenly spaced);
    one-line error otherwise."""
    if not isinstance(spec, (str, int)) and hasattr(spec, "__iter__"):  # [first,last] from the command line
        spec = ",".join(str(s) for s in spec)
    if isinstance(spec, bool):
        raise VideoError(f"verifier.frames must be first,middle,last (any of them) or a positive count, got {spec!r}")
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().isdigit()):
        n = int(spec)
        if n < 1:
            raise VideoError(f"verifier.frames must be a positive count of evenly spaced frames, got {spec!r}")
        return n
    names = [s.strip() for s in str(spec).split(",") if s.strip()]
    bad = [n for n in names if n not in FRAME_NAMES]
    if not names or bad:
        raise VideoError(f"verifier.frames={spec!r}: use first,middle,last (any of them, comma-separated) or a "
                         f"count N of evenly spaced frames")
    return ",".join(names)


def frame_indices(count: int, spec: str | int = STRIP_FRAMES) -> list[int]:
    """The indices of the frames ``spec`` picks in a video of ``count`` frames (repeats dropped, in order)."""
    spec = parse_frames(spec)
    if isinstance(spec, int):
        n = min(spec, count)
        picks = [0] if n == 1 else [round(k * (count - 1) / (n - 1)) for k in range(n)]
    else:
        where = {"first": 0, "middle": (count - 1) // 2, "last": count - 1}
        picks = [where[name] for name in spec.split(",")]
    return list(dict.fromkeys(picks))


def sample_frames(video: Video, spec: str | int = STRIP_FRAMES) -> list[Image.Image]:
    return [video.frames[i] for i in frame_indices(len(video), spec)]


def keyframe_strip(video: Video, spec: str | int = STRIP_FRAMES, gap: int = 2) -> Image.Image:
    """The picked frames side by side, left to right, on white (``gap`` pixels between them)."""
    frames = sample_frames(video, spec)
    w, h = video.size
    strip = Image.new("RGB", (len(frames) * w + (len(frames) - 1) * gap, h), "white")
    for k, frame in enumerate(frames):
        strip.paste(frame, (k * (w + gap), 0))
    return strip


#: set in a keyframe grid's ``info``: the frames it shows, "3 of 9 (first, middle, last)" (graders read it)
GRID_KEY = "tts.video_frames"


def keyframe_grid(video: Video, spec: str | int = STRIP_FRAMES, per_row: int = 4, label_px: int = 14) -> Image.Image:
    """The picked frames in time order, left to right then top to bottom, each labelled ``frame k/N`` under it:
    one image that shows a grader the whole video (its ``info[GRID_KEY]`` says which frames)."""
    from PIL import ImageDraw

    picks = frame_indices(len(video), spec)
    w, h = video.size
    cols = min(per_row, len(picks))
    rows = -(-len(picks) // cols)
    grid = Image.new("RGB", (cols * w, rows * (h + label_px)), "white")
    draw = ImageDraw.Draw(grid)
    for k, i in enumerate(picks):
        x, y = (k % cols) * w, (k // cols) * (h + label_px)
        grid.paste(video.frames[i], (x, y))
        draw.text((x + 2, y + h + 1), f"frame {i + 1}/{len(video)}", fill="black")
    grid.info[GRID_KEY] = f"{len(picks)} of {len(video)} frames"
    return grid


def _imageio():
    try:
        import imageio.v2 as imageio
        import imageio_ffmpeg  # noqa: F401 - the ffmpeg binary imageio writes MP4 with
    except ImportError as e:
        raise VideoError(f"writing and reading MP4 needs imageio and imageio-ffmpeg ({e.name} is missing): "
                         f"{install_hint('video')}") from None
    return imageio


def missing() -> str | None:
    """What writing MP4s lacks here (checked before a video pipeline loads), or None."""
    try:
        _imageio()
    except VideoError as e:
        return str(e)
    return None


def video_path(image_path: Path) -> Path:
    """The MP4 beside a video candidate's PNG (its keyframe strip)."""
    return Path(image_path).with_suffix(".mp4")


def write_mp4(path: Path, video: Video) -> None:
    """H.264 (yuv420p, so browsers play it; quality 8 of 10) at the video's fps, written whole or not at all."""
    import os

    import numpy as np

    imageio = _imageio()
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.mp4")
    # yuv420p needs even sizes: macro_block_size=2 keeps every even size as it is (odd ones grow by a pixel)
    with imageio.get_writer(tmp, format="FFMPEG", mode="I", fps=float(video.fps), codec="libx264", quality=8,
                            pixelformat="yuv420p", macro_block_size=2, ffmpeg_log_level="error") as writer:
        for frame in video.frames:
            writer.append_data(np.asarray(frame.convert("RGB")))
    os.replace(tmp, path)


def read_video(path: Path) -> Video:
    """An MP4 as a :class:`Video` (its frames decoded, its fps)."""
    imageio = _imageio()
    reader = imageio.get_reader(Path(path), format="FFMPEG")
    try:
        fps = float(reader.get_meta_data().get("fps", 0) or 0)
        frames = [Image.fromarray(a).convert("RGB") for a in reader]
    finally:
        reader.close()
    return Video(frames, fps)


def mp4_bytes(video: Video) -> bytes:
    """The video as MP4 file bytes (tts-serve's answer for a video pipeline)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.mp4"
        write_mp4(path, video)
        return path.read_bytes()


def video_from_bytes(data: bytes) -> Video:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "video.mp4"
        path.write_bytes(data)
        return read_video(path)


def probe(path: Path) -> dict:
    """An MP4's frame count and frame rate (its frames decoded, not kept)."""
    imageio = _imageio()
    reader = imageio.get_reader(Path(path), format="FFMPEG")
    try:
        return {"frames": reader.count_frames(), "fps": float(reader.get_meta_data().get("fps", 0) or 0)}
    finally:
        reader.close()


def load_candidate(image_path: Path):
    """What a verifier scores of a saved candidate: the video when an MP4 sits beside its PNG, else the image."""
    mp4 = video_path(image_path)
    if Path(image_path).suffix == ".png" and mp4.exists():
        return read_video(mp4)
    return Image.open(image_path).convert("RGB")
