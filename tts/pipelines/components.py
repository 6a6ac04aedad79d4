"""Load-time options of a pipeline: components loaded on their own, and the checkpoint's safety checker.

``pipeline.components``: ``{name: {model_id, dtype, subfolder}}``, components that the checkpoint lacks or
that should load from elsewhere or in another dtype, passed to ``from_pretrained`` by name (diffusers'
documented way to swap a component). HiDream-I1's checkpoints ship without their Llama-3.1-8B-Instruct text
encoder: its preset loads ``text_encoder_4`` and ``tokenizer_4`` from ``meta-llama/Llama-3.1-8B-Instruct``, the
encoder in fp16. A model component loads with the class the pipeline's constructor declares for it, a
tokenizer with ``AutoTokenizer``; ``dtype`` defaults to ``pipeline.dtype``.

``pipeline.safety_checker``: ``keep`` (default) loads the checkpoint's safety checker when it has one (Stable
Diffusion 1.x and its DDPO fine-tunes; it blacks out flagged images, which tts.run.safety then records as
blocked); ``off`` loads the pipeline without it (``safety_checker=None``). Checkpoints without a checker load
the same either way.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .checks import PipelineConfigError

if TYPE_CHECKING:
    from . import PipelineSpec

SAFETY_CHECKER = ("keep", "off")
COMPONENT_KEYS = ("model_id", "dtype", "subfolder")


def check(spec: "PipelineSpec") -> None:
    """Validate ``safety_checker`` and ``components`` (shape only; nothing is looked up)."""
    if spec.safety_checker not in SAFETY_CHECKER:
        raise PipelineConfigError(f"pipeline.safety_checker must be keep or off, got {spec.safety_checker!r}")
    components = _plain(spec.components)
    for name, settings in components.items():
        if not isinstance(settings, dict) or not isinstance(settings.get("model_id"), str):
            raise PipelineConfigError(f"pipeline.components.{name} needs a model_id, e.g. "
                                      f"pipeline.components.{name}.model_id=ORG/NAME")
        unknown = sorted(set(settings) - set(COMPONENT_KEYS))
        if unknown:
            raise PipelineConfigError(f"unknown key pipeline.components.{name}.{unknown[0]} (keys: "
                                      f"{', '.join(COMPONENT_KEYS)})")
        if settings.get("dtype", "fp32") not in ("fp32", "fp16", "bf16"):
            raise PipelineConfigError(f"pipeline.components.{name}.dtype must be fp32, fp16 or bf16, got "
                                      f"{settings['dtype']!r}")
    spec.components = components


def load_key(spec: "PipelineSpec") -> tuple:
    """What of these options makes two loaded pipelines differ."""
    return (spec.safety_checker, tuple(sorted((n, tuple(sorted(s.items()))) for n, s in spec.components.items())))


def load_kwargs(spec: "PipelineSpec", cls: type, index: dict, local_files_only: bool) -> dict:
    """``from_pretrained`` keyword arguments: each component of ``pipeline.components`` loaded, and
    ``safety_checker=None`` when it is off and the checkpoint has one."""
    import inspect

    from . import torch_dtype

    kwargs = {}
    if spec.safety_checker == "off" and (index.get("safety_checker") or [None])[0] is not None:
        kwargs |= {"safety_checker": None, "requires_safety_checker": False}
    declared = inspect.signature(cls.__init__).parameters
    _check_complete(spec, cls, declared, index)
    for name, settings in spec.components.items():
        if name not in declared:
            raise PipelineConfigError(f"pipeline.components.{name}: {cls.__name__} has no component {name!r} "
                                      f"(its components: {', '.join(p for p in declared if p != 'self')})")
        extra = {"local_files_only": True} if local_files_only else {}
        if settings.get("subfolder"):
            extra["subfolder"] = settings["subfolder"]
        component_cls = declared[name].annotation
        if not isinstance(component_cls, type) or "Tokenizer" in component_cls.__name__ \
                or component_cls.__name__ == "TokenizersBackend":
            from transformers import AutoTokenizer

            kwargs[name] = AutoTokenizer.from_pretrained(settings["model_id"], **extra)
        else:
            dtype = torch_dtype(settings.get("dtype", spec.dtype))
            kwargs[name] = component_cls.from_pretrained(settings["model_id"], dtype=dtype, **extra)
    return kwargs


def _check_complete(spec: "PipelineSpec", cls: type, declared, index: dict) -> None:
    """A component the pipeline needs that the checkpoint lacks (HiDream's Llama) must come from
    ``pipeline.components``: one line naming the setting, before anything loads."""
    import inspect

    optional = set(getattr(cls, "_optional_components", ()))
    for name, param in declared.items():
        if name == "self" or name in optional or param.default is not inspect.Parameter.empty:
            continue
        if (index.get(name) or [None])[0] is None and name not in spec.components:
            raise PipelineConfigError(f"{spec.model_id} has no {name}, which {cls.__name__} needs: load it on its own "
                                      f"with pipeline.components.{name}.model_id=ORG/NAME (see the "
                                      f"{spec.name} preset)")


def _plain(components) -> dict:
    if components is None:
        return {}
    if not isinstance(components, dict):
        from omegaconf import DictConfig, OmegaConf

        if not isinstance(components, DictConfig):
            raise PipelineConfigError(f"pipeline.components must map component names to {{model_id, dtype}}, got "
                                      f"{components!r}")
        components = OmegaConf.to_container(components, resolve=True)
    return {str(k): dict(v) if isinstance(v, dict) else v for k, v in components.items()}
