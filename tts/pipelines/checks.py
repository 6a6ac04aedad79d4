"""Checks made before any model loads: where a checkpoint comes from, and which call arguments it takes.

``locate(model_id)`` finds a checkpoint's ``model_index.json`` without loading anything: a local folder,
else the local Hugging Face cache (huggingface_hub ``try_to_load_from_cache``), else, when online, the hub
after one HEAD request with a short timeout and no retries. Every way of failing (offline and not cached,
hub unreachable, gated, no such repo) ends in one line naming the fix, in seconds.

``check_call_args`` validates ``pipeline.call_args`` against the pipeline class's ``__call__`` signature;
keys tts sets itself are refused, naming the tts setting to use instead.
"""
from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import threading
from pathlib import Path

from ..core.configtree import suggest

log = logging.getLogger(__name__)
PROBE_TIMEOUT_S = 5.0
EMBEDDED_PREFIX = "tts://"
_HUB_SOURCES: dict[str, "Source"] = {}  # one look at the hub per process, shared by multirun jobs
_GET_IT = ("download it first with `hf download {id}` on a machine with network, "
           "or point pipeline.model_id at a local folder")

_PROMPT = "the prompt comes from prompt= or prompts= (tts encodes it once per prompt)"
_EMBEDS = ("tts encodes the prompt once and passes the embeddings itself; give the text "
           "(pipeline.call_args.negative_prompt)")
#: call arguments tts sets itself -> the setting to use instead
OWNED = {
    **dict.fromkeys(("prompt", "prompt_2", "prompt_3"), _PROMPT),
    **dict.fromkeys(("prompt_embeds", "pooled_prompt_embeds", "prompt_attention_mask", "negative_prompt_embeds",
                     "negative_pooled_prompt_embeds", "negative_prompt_attention_mask"), _EMBEDS),
    "latents": "initial noises come from the search (search=..., seed=)",
    "generator": "noises are drawn from seed= (each candidate's seed is in its record)",
    **dict.fromkeys(("num_images_per_prompt", "num_videos_per_prompt"), "use batch_size= (candidates per pipeline call)"),
    "num_frames": "use pipeline.num_frames=",
    "frame_rate": "use pipeline.fps= (the video's frame rate, also the MP4's)",
    **dict.fromkeys(("output_type", "return_dict"), "tts takes PIL images from the pipeline"),
    **{k: f"use pipeline.{k}=" for k in ("height", "width", "num_inference_steps", "guidance_scale",
                                         "max_sequence_length")},
    "use_resolution_binning": "tts builds latents at exactly pipeline.height x pipeline.width",
    **dict.fromkeys(("callback", "callback_steps", "callback_on_step_end", "callback_on_step_end_tensor_inputs"),
                    "callbacks cannot come from a config"),
}


class PipelineConfigError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Source:
    """Where ``from_pretrained`` loads from, the checkpoint's model_index.json, and whether to stay off the hub."""

    path: str
    index: dict
    local_files_only: bool = False


def embedded_path(model_id: str) -> Path:
    """``tts://NAME`` is a model shipped inside the package (tts/assets/NAME)."""
    path = Path(__file__).resolve().parents[1] / "assets" / model_id[len(EMBEDDED_PREFIX):]
    if not (path / "model_index.json").exists():
        raise PipelineConfigError(f"embedded model {model_id!r} not found at {path}")
    return path


def locate(model_id: str) -> Source:
    """The checkpoint's source, found without loading a model and without waiting on an unreachable hub."""
    if model_id.startswith(EMBEDDED_PREFIX):
        return _folder(embedded_path(model_id))
    path = Path(model_id).expanduser()
    if path.is_dir():
        return _folder(path)
    if _looks_like_path(model_id):
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise PipelineConfigError(f"pipeline.model_id={model_id}: {what} (tts loads diffusers pipeline folders, "
                                  "which hold model_index.json)")
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(model_id)
    except HFValidationError:
        raise PipelineConfigError(f"pipeline.model_id={model_id!r} is neither a local folder nor a hub id "
                                  "(owner/name)") from None
    if model_id not in _HUB_SOURCES:
        _HUB_SOURCES[model_id] = _hub(model_id)
    return _HUB_SOURCES[model_id]


def _folder(path: Path) -> Source:
    index = path / "model_index.json"
    if not index.exists():
        raise PipelineConfigError(f"{path} has no model_index.json: not a diffusers pipeline folder")
    return Source(str(path), json.loads(index.read_text()))


def _looks_like_path(model_id: str) -> bool:
    return (model_id.startswith(("/", "./", "../", "~", ".\\")) or model_id.count("/") > 1 or "\\" in model_id
            or Path(model_id).exists())


def _hub(repo_id: str) -> Source:
    import huggingface_hub

    cached = huggingface_hub.try_to_load_from_cache(repo_id, "model_index.json")
    index = json.loads(Path(cached).read_text()) if isinstance(cached, str) else None
    missing = _missing_components(Path(cached).parent, index) if index is not None else None
    if huggingface_hub.is_offline_mode():
        if index is None:
            raise PipelineConfigError(f"{repo_id} is not in the local Hugging Face cache (HF_HUB_OFFLINE=1): "
                                      + _GET_IT.format(id=repo_id))
        if missing:
            raise PipelineConfigError(f"{repo_id} is only partly in the local Hugging Face cache (HF_HUB_OFFLINE=1; "
                                      f"missing: {', '.join(missing)}): " + _GET_IT.format(id=repo_id))
        return Source(repo_id, index, local_files_only=True)
    problem = _probe(repo_id)
    if problem is None:
        return Source(repo_id, index if index is not None else _download_index(repo_id))
    if index is not None and not missing:
        log.warning("%s; loading %s from the local Hugging Face cache", problem[0], repo_id)
        return Source(repo_id, index, local_files_only=True)
    held = f"is only partly in (missing: {', '.join(missing)})" if missing else "is not in"
    raise PipelineConfigError(f"{repo_id} {held} the local Hugging Face cache and {problem[0]}: {problem[1]}")


def _missing_components(snapshot: Path, index: dict) -> list[str]:
    """Components that model_index.json names (library, class) but the cached snapshot lacks."""
    return [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and v and v[0] is not None
            and not (snapshot / k).is_dir()]


def _probe(repo_id: str) -> tuple[str, str] | None:
    """None when the hub serves the repo's model_index.json; else (what is wrong, the fix).

    One HEAD request, no retries; run in a thread so a hanging name lookup is cut off too."""
    from huggingface_hub import constants

    result: list[tuple[str, str] | None] = []
    worker = threading.Thread(target=lambda: result.append(_head(repo_id)), daemon=True)
    worker.start()
    worker.join(PROBE_TIMEOUT_S + 1)
    if not result:
        return (f"the hub at {constants.ENDPOINT} gave no answer within {PROBE_TIMEOUT_S + 1:.0f} s",
                _GET_IT.format(id=repo_id))
    return result[0]


def _head(repo_id: str) -> tuple[str, str] | None:
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import (EntryNotFoundError, GatedRepoError, HfHubHTTPError,
                                        RepositoryNotFoundError)

    endpoint = constants.ENDPOINT
    try:
        get_hf_file_metadata(hf_hub_url(repo_id, "model_index.json"), timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return (f"{repo_id} is gated on {endpoint}",
                f"accept its licence at {endpoint}/{repo_id} and set HF_TOKEN to a read token of that account")
    except RepositoryNotFoundError:
        return f"{endpoint} has no model repo {repo_id}", "check the id (a private repo needs HF_TOKEN)"
    except EntryNotFoundError:
        return f"{repo_id} on {endpoint} has no model_index.json", "it is not a diffusers pipeline repo"
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else "an error"
        if status in (401, 403):
            return (f"{endpoint} refused {repo_id} ({status})",
                    f"set HF_TOKEN to a read token and accept the model's licence at {endpoint}/{repo_id}")
        return (f"the hub at {endpoint} answered {status} for {repo_id}",
                "try again later, or " + _GET_IT.format(id=repo_id))
    except Exception as e:  # connection refused, name lookup failed, timeout, TLS: the hub is out of reach
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        return f"the hub at {endpoint} is unreachable ({reason})", _GET_IT.format(id=repo_id)
    return None


def _download_index(repo_id: str) -> dict:
    from huggingface_hub import hf_hub_download

    return json.loads(Path(hf_hub_download(repo_id, "model_index.json", etag_timeout=PROBE_TIMEOUT_S)).read_text())


def check_call_args(call_args: dict, cls, family, guidance_scale: float) -> None:
    """Refuse keys the pipeline's ``__call__`` does not take (with a close match), then the family's own rules."""
    params = inspect.signature(cls.__call__).parameters
    accepted = sorted(k for k, p in params.items()
                      if k != "self" and k not in OWNED and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    for key in call_args:
        if key not in accepted:
            raise PipelineConfigError(f"pipeline.call_args.{key}: {cls.__name__} takes no such argument"
                                      f"{suggest(key, accepted)} "
                                      f"accepted: {', '.join(accepted)}")
    problem = family.call_args_problem(call_args, guidance_scale)
    if problem:
        raise PipelineConfigError(problem)


def check_owned(call_args: dict) -> None:
    """Refuse call arguments tts sets itself (no model needed to know these)."""
    for key in call_args:
        if not isinstance(key, str):
            raise PipelineConfigError(f"pipeline.call_args keys must be argument names, got {key!r}")
        if key in OWNED:
            raise PipelineConfigError(f"pipeline.call_args.{key} is set by tts itself: {OWNED[key]}")


def negative_needs_guidance(call_args: dict, keys: tuple[str, ...], guidance_scale: float) -> str | None:
    """A negative prompt acts only through classifier-free guidance (guidance_scale > 1)."""
    given = [k for k in keys if k in call_args]
    if given and guidance_scale <= 1:
        return (f"pipeline.call_args.{given[0]} acts only with classifier-free guidance: set pipeline.guidance_scale "
                f"> 1 (it is {guidance_scale}) or drop the negative prompt")
    return None


def negative_prompt_check(keys: tuple[str, ...]):
    """``call_args_problem(call_args, guidance_scale)`` of a family whose only rule is
    :func:`negative_needs_guidance` on its negative-prompt ``keys``."""
    def call_args_problem(call_args: dict, guidance_scale: float) -> str | None:
        return negative_needs_guidance(call_args, keys, guidance_scale)

    return call_args_problem


def distilled_guidance(cfg: bool, guidance_scale: float, call_args: dict, keys: tuple[str, ...]) -> None:
    """A UNet with a guidance embedding (``time_cond_proj_dim``, e.g. LCM) runs no classifier-free guidance,
    so a negative prompt would be ignored: refuse it."""
    given = [k for k in keys if k in call_args]
    if given and guidance_scale > 1 and not cfg:
        raise PipelineConfigError(f"pipeline.call_args.{given[0]}: this checkpoint's UNet is guidance-distilled "
                                  "(time_cond_proj_dim) and runs no classifier-free guidance; drop the negative prompt")


def pick(call_args: dict | None, keys: tuple[str, ...]) -> dict:
    """The call arguments among ``keys`` (those a family's prompt encoding consumes)."""
    return {k: v for k, v in (call_args or {}).items() if k in keys}


def true_cfg_problem(call_args: dict, family: str) -> str | None:
    """True classifier-free guidance (Flux, Qwen-Image): a negative prompt acts only with ``true_cfg_scale`` > 1
    (two denoiser passes per step), and a ``true_cfg_scale`` > 1 given acts only with a negative prompt."""
    true_cfg = call_args.get("true_cfg_scale", 1.0)
    if isinstance(true_cfg, bool) or not isinstance(true_cfg, (int, float)):
        return f"pipeline.call_args.true_cfg_scale must be a number, got {true_cfg!r}"
    if "negative_prompt" in call_args and true_cfg <= 1:
        return (f"{family} takes a negative prompt only with true classifier-free guidance: add "
                "+pipeline.call_args.true_cfg_scale=4 (any value > 1; two denoiser passes per step)")
    if true_cfg > 1 and "negative_prompt" not in call_args:
        return ("pipeline.call_args.true_cfg_scale acts only with a negative prompt: add "
                "+pipeline.call_args.negative_prompt=...")
    return None
