"""Loading diffusers pipelines for search, and the per-family facts search needs.

Each family module (flux, sd, sdxl, pixart, sd3, shapes, ...: every module of this package that defines
``CLASS_NAMES`` is a family, found by ``_discover``; there is no other list) exposes the same names:
``CLASS_NAMES`` (the pipeline classes model_index.json may name), ``DENOISER`` (``"unet"`` or
``"transformer"``: the pipeline attribute that holds the denoiser), optionally ``pipeline_class(name)`` (where
the class lives when it is not in diffusers, e.g. the shapes model's), ``ENCODE_KEYS`` (the
``pipeline.call_args`` its prompt encoding consumes, e.g. ``negative_prompt``),
``latent_shape(pipe, height, width)``, ``to_pipeline_latents(pipe, noise, height, width)``,
``call_args_problem(call_args, guidance_scale)`` (what is wrong with the call arguments for this family, or
None; a family without latent packing binds these three with ``stepping.plain_family``) and ``encode(pipe, prompt, guidance_scale, max_sequence_length, call_args)``, which returns the
prompt-dependent keyword arguments of the pipeline call (embeddings for batch size 1, repeated by the
generator; a negative prompt is encoded with the prompt, once). For the step-level sampler (tts.sampling.sampler) a
family also has ``STEP_ARGS`` (the call arguments it honours), ``prepare`` (timesteps and per-row
conditioning, tts.pipelines.stepping.Conditioning), ``predict`` (one guided denoiser evaluation) and
``decode`` (latents to PIL images). Optional: ``STATE_DTYPE`` (the dtype the pipeline keeps latents in, e.g.
"fp32"), ``STEP_NOISE`` and ``TRAILING_TIMESTEPS`` (a scheduler that draws its own noise each step; timesteps past
the last step: Sana-Sprint), ``call_kwargs(pipe, spec, step_seeds)`` (what the family adds to a pipeline call),
``passes(guidance_scale, call_args)`` (denoiser passes per step, for tts-plan; default 2 with guidance > 1),
``load_problem(index)`` (what keeps the checkpoint from loading here, said before it loads); a video family (wan,
ltx) sets ``VIDEO = True``, ``DEFAULT_NUM_FRAMES``, ``DEFAULT_FPS``, ``frames_problem(num_frames)``, takes
``num_frames`` as a fourth argument of ``latent_shape`` and decodes each row to a list of frames; ``MODEL_ID_HINTS``
and ``WEIGHTS_GB`` (tts-plan's offline guess of the family, and the presets' weights in memory). The family is
read from the checkpoint's
``model_index.json`` (its pipeline class), never from a table of model ids, so any checkpoint of a
supported family loads with ``pipeline.model_id=...``. ``PipelineSpec.check()`` finds the checkpoint and
validates the call arguments before any model loads (tts.pipelines.checks). Loaded pipelines are owned by
the process's model manager (tts.pipelines.models: least-recently-used unloading under ``models.max_resident`` and
``models.max_memory_gb``); with ``server`` set, generation runs on a tts-serve server instead (tts.pipelines.remote).
"""
from __future__ import annotations

import collections
import dataclasses
import difflib
import functools
import importlib
import logging
import pkgutil
from types import ModuleType
from typing import TYPE_CHECKING

from ..core.torchutil import DTYPES, resolve_device, torch_dtype
from ..core.validate import install_hint
from .checks import EMBEDDED_PREFIX, PipelineConfigError, Source, check_call_args, check_owned, embedded_path, locate

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)
#: the largest classifier-free guidance scale accepted (typical: 1-15; far beyond it images saturate or go black)
MAX_GUIDANCE = 100.0
#: what every family module defines (a module of this package with CLASS_NAMES is a family)
FAMILY_NAMES = ("CLASS_NAMES", "DENOISER", "ENCODE_KEYS", "latent_shape", "to_pipeline_latents", "call_args_problem",
                "encode")


def _discover() -> tuple[ModuleType, ...]:
    """The family modules of this package (flux, sd, sdxl, pixart, sd3, shapes, hidream, ...), by module name;
    a new family is one more module here, no list to edit."""
    families = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if not hasattr(module, "CLASS_NAMES"):
            continue
        missing = [n for n in FAMILY_NAMES if not hasattr(module, n)]
        if missing:
            raise ImportError(f"pipeline family module {module.__name__} lacks {', '.join(missing)} "
                              "(see tts/pipelines/__init__.py for what a family module defines)")
        families.append(module)
    return tuple(families)


FAMILIES: tuple[ModuleType, ...] = _discover()
__all__ = ["DTYPES", "EMBEDDED_PREFIX", "FAMILIES", "LoadedPipeline", "PipelineConfigError", "PipelineSpec",
           "family_by_model_id", "family_for", "frame_rate", "frames", "is_video", "latent_shape", "model_index",
           "passes_per_step", "pipeline_class", "resolve_device", "resolve_model_path", "torch_dtype", "video_problem",
           "weights_gb"]


def __getattr__(name: str):
    if name == "_CACHE":  # what this process has loaded, by load key (owned by tts.pipelines.models)
        from .models import manager

        return manager().resident_map
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def is_video(family: ModuleType) -> bool:
    """The family makes videos (its candidates are tts.core.video.Video; num_frames and fps apply)."""
    return bool(getattr(family, "VIDEO", False))


def video_problem(family: ModuleType, spec: PipelineSpec) -> str | None:
    """num_frames / fps on an image family, or a frame count the video family's VAE cannot take."""
    if not is_video(family):
        given = [k for k in ("num_frames", "fps") if getattr(spec, k) is not None]
        return (f"pipeline.{given[0]} is for video pipelines (Wan, LTX-Video); {family.CLASS_NAMES[0]} makes images: "
                "drop it") if given else None
    from ..core.video import missing

    problem = family.frames_problem(frames(family, spec)) if hasattr(family, "frames_problem") else None
    return problem or missing()


def frames(family: ModuleType, spec: PipelineSpec) -> int:
    """Frames per video: pipeline.num_frames, else the family's default."""
    return spec.num_frames or family.DEFAULT_NUM_FRAMES


def frame_rate(family: ModuleType, spec: PipelineSpec) -> float:
    return float(spec.fps or family.DEFAULT_FPS)


def latent_shape(family: ModuleType, pipe, spec: PipelineSpec) -> tuple[int, ...]:
    """The initial noise's shape for one candidate: (C, h, w) for images, (C, F, h, w) for videos."""
    if is_video(family):
        return tuple(family.latent_shape(pipe, spec.height, spec.width, frames(family, spec)))
    return tuple(family.latent_shape(pipe, spec.height, spec.width))


def family_for(class_name: str) -> ModuleType:
    for fam in FAMILIES:
        if class_name in fam.CLASS_NAMES:
            return fam
    supported = ", ".join(n for f in FAMILIES for n in f.CLASS_NAMES)
    raise PipelineConfigError(f"pipeline class {class_name!r} is not supported; supported: {supported}")


def passes_per_step(family: ModuleType, guidance_scale: float, call_args: dict) -> int:
    """Denoiser passes per step: the family's ``passes`` (distilled or true guidance), else two with
    classifier-free guidance (guidance_scale > 1), one without."""
    if hasattr(family, "passes"):
        return family.passes(guidance_scale, call_args)
    return 2 if guidance_scale > 1 else 1


def family_by_model_id(model_id: str) -> ModuleType | None:
    """A guess of the family from the model id alone (the family whose ``MODEL_ID_HINTS`` match it longest), for
    estimates when the checkpoint's model_index.json cannot be read (tts-plan offline); loading never guesses."""
    lowered = model_id.lower()
    hits = [(len(hint), fam) for fam in FAMILIES for hint in getattr(fam, "MODEL_ID_HINTS", ()) if hint in lowered]
    return max(hits, key=lambda h: h[0])[1] if hits else None


def weights_gb(model_id: str) -> float | None:
    """The half-precision (fp16/bf16) weights, in GB, of a preset's checkpoint (the families' ``WEIGHTS_GB``: the
    presets table of docs/configuration.md), or None for a checkpoint no preset names."""
    return next((fam.WEIGHTS_GB[model_id] for fam in FAMILIES if model_id in getattr(fam, "WEIGHTS_GB", {})), None)


def weights_in_memory(spec) -> float | None:
    """GB of the pipeline's weights in its dtype, from the presets table (None for a checkpoint it lacks)."""
    half = weights_gb(spec.model_id)
    return None if half is None else half * (2 if spec.dtype == "fp32" else 1)


def pipeline_class(class_name: str) -> type:
    """The pipeline class model_index.json names: the family's ``pipeline_class`` when it has one, else diffusers'."""
    family = family_for(class_name)
    if hasattr(family, "pipeline_class"):
        return family.pipeline_class(class_name)
    import diffusers

    return getattr(diffusers, class_name)


def resolve_model_path(model_id: str) -> str:
    """``tts://NAME`` is a model shipped inside the package (tts/assets/NAME); anything else is passed on."""
    return str(embedded_path(model_id)) if model_id.startswith(EMBEDDED_PREFIX) else model_id


def model_index(model_id: str) -> dict:
    """The checkpoint's model_index.json (local folder, local cache, or only that small file from the hub)."""
    return locate(model_id).index


@dataclasses.dataclass
class LoadedPipeline:
    pipe: object
    family: ModuleType
    device: torch.device
    #: prompt embeddings by (prompt, encoding settings), most recent last (tts.sampling.generate keeps a few)
    embeds: collections.OrderedDict = dataclasses.field(default_factory=collections.OrderedDict, repr=False)

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, self.family.DENOISER)


@dataclasses.dataclass
class PipelineSpec:
    """What to load and how to call it (configs/pipeline/*.yaml; ``call_args``: further keyword arguments of
    the pipeline call). Validated on construction; ``check()`` finds the checkpoint and checks ``call_args``
    against its pipeline class in seconds; ``load()`` does the expensive part through the model manager, so
    multirun jobs share one loaded pipeline. ``server``: one tts-serve URL or a list (round-robin) that
    generates instead of this process (``server_attempts`` tries with backoff, ``server_timeout_s`` per
    request)."""

    name: str
    model_id: str
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    dtype: str = "fp32"
    device: str = "auto"
    max_sequence_length: int | None = None
    #: video families (Wan, LTX-Video): frames per video and its frame rate (None: the family's default)
    num_frames: int | None = None
    fps: float | None = None
    quantize: str | None = None
    cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_slicing: bool = False
    tf32: bool = False
    compile: bool = False
    max_resolution: int = 2048
    call_args: dict = dataclasses.field(default_factory=dict)
    server: str | list[str] | None = None
    server_attempts: int = 5
    server_timeout_s: float = 600.0
    #: keep|off: the checkpoint's safety checker (SD 1.x); components loaded on their own (tts.pipelines.components)
    safety_checker: str = "keep"
    components: dict = dataclasses.field(default_factory=dict)
    #: settings a resumed run folder may change: how it runs, not what it computes (tts.core.runfolder.operational_paths)
    operational_keys = ("device", "cpu_offload", "compile", "attention_slicing", "vae_tiling", "vae_slicing", "tf32",
                        "server", "server_attempts", "server_timeout_s")

    def __post_init__(self):
        self.call_args = _plain_call_args(self.call_args)
        from .components import check as check_load_options

        check_load_options(self)
        self.server = _plain_servers(self.server)
        attempts, timeout = self.server_attempts, self.server_timeout_s
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise PipelineConfigError(f"pipeline.server_attempts must be a positive integer, got {attempts!r}")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise PipelineConfigError(f"pipeline.server_timeout_s must be a positive number, got {timeout!r}")
        check_owned(self.call_args)
        if self.dtype not in DTYPES:
            raise PipelineConfigError(f"pipeline.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        if self.quantize not in (None, "nf4"):
            raise PipelineConfigError(f"pipeline.quantize must be null or 'nf4', got {self.quantize!r}")
        for key in ("height", "width", "num_inference_steps"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PipelineConfigError(f"pipeline.{key} must be a positive integer, got {value!r}")
        if max(self.height, self.width) > self.max_resolution:
            raise PipelineConfigError(f"pipeline.height/width {self.height}x{self.width} exceed pipeline.max_resolution="
                                      f"{self.max_resolution}; lower them or raise the cap")
        scale = self.guidance_scale
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not 0 <= scale <= MAX_GUIDANCE:
            raise PipelineConfigError(f"pipeline.guidance_scale must be a number in [0, {MAX_GUIDANCE}], got {scale!r}")
        frames, fps = self.num_frames, self.fps
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
            raise PipelineConfigError(f"pipeline.num_frames must be a positive integer or null, got {frames!r}")
        if fps is not None and (isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 240):
            raise PipelineConfigError(f"pipeline.fps must be a number in (0, 240] or null, got {fps!r}")
        length = self.max_sequence_length
        if length is not None and (isinstance(length, bool) or not isinstance(length, int) or length < 1):
            raise PipelineConfigError(f"pipeline.max_sequence_length must be a positive integer or null, "
                                      f"got {length!r}")

    def resolve_device(self) -> torch.device:
        return resolve_device(self.device)

    @property
    def load_key(self) -> tuple:
        """What makes two specs share one loaded pipeline (call settings do not)."""
        from .components import load_key

        return (self.model_id, self.dtype, self.device, self.quantize, self.cpu_offload, self.compile, *load_key(self))

    def check(self) -> Source | None:
        """Find the checkpoint and validate ``call_args`` against its pipeline class; loads no model.

        Fails in one line, in seconds, when the checkpoint cannot be had (tts.pipelines.checks.locate). With
        ``server`` set, checks instead that every server answers and serves this pipeline (tts.pipelines.remote)."""
        if self.server:
            from .remote import check_servers

            check_servers(self)
            return None
        source = locate(self.model_id)
        class_name = source.index.get("_class_name", "")
        family = family_for(class_name)
        if self.call_args:
            check_call_args(self.call_args, pipeline_class(class_name), family, self.guidance_scale)
        problem = family.load_problem(source.index) if hasattr(family, "load_problem") else None
        problem = problem or video_problem(family, self)
        if problem:
            raise PipelineConfigError(f"pipeline.model_id={self.model_id}: {problem}")
        return source

    def load(self) -> LoadedPipeline:
        """The loaded pipeline, from the process's model manager (loaded there when it is not resident)."""
        if self.server:
            raise PipelineConfigError("pipeline.server is set: this pipeline generates on the server "
                                      "(tts.sampling.generate.make_generator), it is not loaded here")
        from .models import manager

        loaded = manager().load(self)
        self._apply_memory_options(loaded.pipe)
        return loaded

    def _load(self, source: Source) -> LoadedPipeline:
        import torch

        index = source.index
        class_name = index["_class_name"]
        family = family_for(class_name)
        cls = pipeline_class(class_name)
        kwargs = {"dtype": torch_dtype(self.dtype)}
        if source.local_files_only:
            kwargs["local_files_only"] = True
        from .components import load_kwargs

        kwargs |= load_kwargs(self, cls, index, source.local_files_only)
        if self.quantize == "nf4":
            kwargs["quantization_config"] = _nf4_config(self.dtype, family.DENOISER)
        log.info("loading %s (%s) from %s", self.name, class_name, self.model_id)
        _quiet_loading_bars()
        pipe = cls.from_pretrained(source.path, **kwargs)
        pipe.set_progress_bar_config(disable=True)
        device = self.resolve_device()
        if self.tf32 and device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        if self.cpu_offload:
            pipe.enable_model_cpu_offload(device=device)
        else:
            pipe.to(device)
        if self.compile:
            setattr(pipe, family.DENOISER, torch.compile(getattr(pipe, family.DENOISER)))
        return LoadedPipeline(pipe, family, device)

    def _apply_memory_options(self, pipe) -> None:
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            vae.enable_tiling() if self.vae_tiling else vae.disable_tiling()
            vae.enable_slicing() if self.vae_slicing else vae.disable_slicing()
        if hasattr(pipe, "enable_attention_slicing"):
            pipe.enable_attention_slicing() if self.attention_slicing else pipe.disable_attention_slicing()


def _known_keys_only(init):
    """``PipelineSpec(**config)`` refuses an unknown key in one line, sending call arguments to call_args."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        names = [f.name for f in dataclasses.fields(PipelineSpec)]
        for key in kwargs:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f"did you mean pipeline.{close[0]}? " if close else ""
                raise PipelineConfigError(f"pipeline.{key} is not a pipeline setting: {hint}arguments of the pipeline "
                                          f"call go in pipeline.call_args (+pipeline.call_args.{key}=...)")
        init(self, *args, **kwargs)
    return wrapper


PipelineSpec.__init__ = _known_keys_only(PipelineSpec.__init__)


def _plain_call_args(call_args) -> dict:
    """``pipeline.call_args`` as a plain dict (Hydra passes a DictConfig); null values mean the default."""
    if call_args is None:
        return {}
    if not isinstance(call_args, dict):
        from omegaconf import DictConfig, OmegaConf

        if not isinstance(call_args, DictConfig):
            raise PipelineConfigError("pipeline.call_args must map argument names to values, e.g. "
                                      f"+pipeline.call_args.negative_prompt=blurry; got {call_args!r}")
        call_args = OmegaConf.to_container(call_args, resolve=True)
    return {k: v for k, v in call_args.items() if v is not None}


def _plain_servers(server) -> list[str] | None:
    """``pipeline.server``: one URL, a list of them (Hydra passes a ListConfig), or null; each http(s)://host[:port]."""
    if server in (None, "", []):
        return None
    urls = [server] if isinstance(server, str) else list(server)
    for url in urls:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")) or len(url.split("://", 1)[1]) == 0:
            raise PipelineConfigError(f"pipeline.server takes http(s)://HOST:PORT URLs of tts-serve servers (or a list "
                                      f"[URL1,URL2]), got {url!r}")
    return [u.rstrip("/") for u in urls]


def _nf4_config(dtype: str, component: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise PipelineConfigError(f"pipeline.quantize=nf4 needs bitsandbytes (and a CUDA GPU): {install_hint('quant')}") from e
    from diffusers.quantizers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(
        quant_backend="bitsandbytes_4bit",
        quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": torch_dtype(dtype)},
        components_to_quantize=[component],
    )


def _quiet_loading_bars() -> None:
    """Loading bars of diffusers/transformers off: tts shows one bar per level of its own work."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
