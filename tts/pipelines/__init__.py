"""Loading diffusers pipelines for search, and the per-family facts search needs.

Each family module (flux, sd, sdxl, pixart, sd3, shapes) exposes the same four names:
``CLASS_NAMES``, ``latent_shape(pipe, height, width)``, ``to_pipeline_latents(pipe, noise, height,
width)`` and ``encode(pipe, prompt, guidance_scale, max_sequence_length)``, which returns the prompt-dependent
keyword arguments of the pipeline call (embeddings for batch size 1, repeated by the generator). The family is read from
the checkpoint's ``model_index.json`` (its pipeline class), never from a table of model ids, so any
checkpoint of a supported family loads with ``pipeline.model_id=...``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from types import ModuleType

import torch

from . import flux, pixart, sd, sd3, sdxl, shapes

log = logging.getLogger(__name__)
FAMILIES: tuple[ModuleType, ...] = (flux, sd, sdxl, pixart, sd3, shapes)
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
EMBEDDED_PREFIX = "tts://"
_CACHE: dict[tuple, "LoadedPipeline"] = {}


class PipelineConfigError(ValueError):
    pass


def family_for(class_name: str) -> ModuleType:
    for fam in FAMILIES:
        if class_name in fam.CLASS_NAMES:
            return fam
    supported = ", ".join(n for f in FAMILIES for n in f.CLASS_NAMES)
    raise PipelineConfigError(f"pipeline class {class_name!r} is not supported; supported: {supported}")


def resolve_model_path(model_id: str) -> str:
    """``tts://NAME`` is a model shipped inside the package (tts/assets/NAME); anything else is passed on."""
    if model_id.startswith(EMBEDDED_PREFIX):
        path = Path(__file__).resolve().parents[1] / "assets" / model_id[len(EMBEDDED_PREFIX):]
        if not (path / "model_index.json").exists():
            raise PipelineConfigError(f"embedded model {model_id!r} not found at {path}")
        return str(path)
    return model_id


def model_index(model_id: str) -> dict:
    """The checkpoint's model_index.json (for a hub id, only that small file is fetched)."""
    path = Path(resolve_model_path(model_id)).expanduser()
    if path.is_dir():
        index = path / "model_index.json"
        if not index.exists():
            raise PipelineConfigError(f"{path} has no model_index.json: not a diffusers pipeline folder")
        return json.loads(index.read_text())
    from diffusers import DiffusionPipeline

    return dict(DiffusionPipeline.load_config(str(model_id)))


@dataclasses.dataclass
class LoadedPipeline:
    pipe: object
    family: ModuleType
    device: torch.device

    @property
    def denoiser(self) -> torch.nn.Module:
        return getattr(self.pipe, "transformer", None) or self.pipe.unet


@dataclasses.dataclass
class PipelineSpec:
    """What to load and how to call it (configs/pipeline/*.yaml). Validated on construction; ``load()``
    does the expensive part and is cached per process, so multirun jobs share one loaded pipeline."""

    name: str
    model_id: str
    height: int
    width: int
    num_inference_steps: int
    guidance_scale: float
    dtype: str = "fp32"
    device: str = "auto"
    max_sequence_length: int | None = None
    quantize: str | None = None
    cpu_offload: bool = False
    vae_tiling: bool = False
    vae_slicing: bool = False
    attention_slicing: bool = False
    tf32: bool = False
    compile: bool = False
    max_resolution: int = 2048

    def __post_init__(self):
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
        if self.guidance_scale < 0:
            raise PipelineConfigError(f"pipeline.guidance_scale must be >= 0, got {self.guidance_scale}")

    def resolve_device(self) -> torch.device:
        if self.device != "auto":
            return torch.device(self.device)
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")

    def load(self) -> LoadedPipeline:
        key = (self.model_id, self.dtype, self.device, self.quantize, self.cpu_offload, self.compile)
        if key not in _CACHE:
            _CACHE[key] = self._load()
        loaded = _CACHE[key]
        self._apply_memory_options(loaded.pipe)
        return loaded

    def _load(self) -> LoadedPipeline:
        index = model_index(self.model_id)
        class_name = index["_class_name"]
        family = family_for(class_name)
        if class_name == "ShapesPipeline":
            from ..world.pipeline import ShapesPipeline as cls
        else:
            import diffusers

            cls = getattr(diffusers, class_name)
        kwargs = {"dtype": DTYPES[self.dtype]}
        if self.quantize == "nf4":
            kwargs["quantization_config"] = _nf4_config(self.dtype, "transformer" if "transformer" in index else "unet")
        log.info("loading %s (%s) from %s", self.name, class_name, self.model_id)
        _quiet_loading_bars()
        pipe = cls.from_pretrained(resolve_model_path(self.model_id), **kwargs)
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
            denoiser = "transformer" if getattr(pipe, "transformer", None) is not None else "unet"
            setattr(pipe, denoiser, torch.compile(getattr(pipe, denoiser)))
        return LoadedPipeline(pipe, family, device)

    def _apply_memory_options(self, pipe) -> None:
        vae = getattr(pipe, "vae", None)
        if vae is not None:
            vae.enable_tiling() if self.vae_tiling else vae.disable_tiling()
            vae.enable_slicing() if self.vae_slicing else vae.disable_slicing()
        if hasattr(pipe, "enable_attention_slicing"):
            pipe.enable_attention_slicing() if self.attention_slicing else pipe.disable_attention_slicing()


def _nf4_config(dtype: str, component: str):
    try:
        import bitsandbytes  # noqa: F401
    except ImportError as e:
        raise PipelineConfigError("pipeline.quantize=nf4 needs bitsandbytes (and a CUDA GPU): pip install 'tts[quant]'") from e
    from diffusers.quantizers import PipelineQuantizationConfig

    return PipelineQuantizationConfig(
        quant_backend="bitsandbytes_4bit",
        quant_kwargs={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": DTYPES[dtype]},
        components_to_quantize=[component],
    )


def _quiet_loading_bars() -> None:
    """Loading bars of diffusers/transformers off: tts shows one bar per level of its own work."""
    import diffusers
    import transformers

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
