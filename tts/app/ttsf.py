"""tt-scale-flux compatibility: its JSON configs as tts overrides, and its command-line names.

``tts-search ttsf_config=path/to/flux.1_dev.json [more overrides]`` runs a tt-scale-flux config as is:
every key of its schema becomes a tts override (a preset is chosen when the model id is one of
ours), later overrides on the command line win, and an unknown key is an error naming it.
"""
from __future__ import annotations

import difflib
import json
from pathlib import Path

from omegaconf import OmegaConf


class TtsfConfigError(ValueError):
    pass


#: tt-scale-flux names people type from habit, and the tts spelling of each.
HABITS = {
    "search_rounds": "search.rounds=N",
    "batch_size_for_img_gen": "batch_size=N",
    "use_low_gpu_vram": "pipeline.cpu_offload=true",
    "pretrained_model_name_or_path": "pipeline=<preset> or pipeline.model_id=...",
    "torch_dtype": "pipeline.dtype=bf16|fp16|fp32",
    "search_method": "search=random|zero-order",
    "search_args": "search.<key>=...",
    "verifier_args": "verifier=<name> verifier.<key>=...",
    "pipeline_call_args": "pipeline.<key>=... (or pipeline.call_args.<name>=... for other call arguments)",
    "num_neighbors": "search.num_neighbors=N (with search=zero-order)",
    "threshold": "search.threshold=... (with search=zero-order)",
    "choice_of_metric": "verifier.choice_of_metric=...",
    "max_new_tokens": "verifier.max_new_tokens=N (with verifier=qwen)",
    "model_name": "verifier.model_name=...",
    "prompt_path": "verifier.prompt_path=...",
    "num_inference_steps": "pipeline.num_inference_steps=N",
    "guidance_scale": "pipeline.guidance_scale=...",
    "height": "pipeline.height=N",
    "width": "pipeline.width=N",
    "max_sequence_length": "pipeline.max_sequence_length=N",
    "negative_prompt": "pipeline.call_args.negative_prompt='...'",
    "config": "ttsf_config=path/to/config.json",
}

_METHODS = {"random": "random", "zero-order": "zero-order", "zero_order": "zero-order"}
_VERIFIERS = ("gemini", "openai", "qwen")
_PIPELINE_KEYS = ("height", "width", "num_inference_steps", "guidance_scale", "max_sequence_length", "num_frames")
#: tt-scale-flux's verifier names and metrics where tts's differ (its video configs score with the LAION predictor)
_VERIFIER_NAMES = {"laion_aesthetic": "aesthetic"}
_METRIC_NAMES = {"laion_aesthetic_score": "aesthetic"}
_VERIFIER_KEYS = {"model_name": "model_name", "max_new_tokens": "max_new_tokens",
                  "choice_of_metric": "choice_of_metric", "prompt_path": "prompt_path"}
_SEARCH_KEYS = {"search_rounds": "rounds", "threshold": "threshold", "num_neighbors": "num_neighbors"}


def _value(v) -> str:
    """A Python value as a Hydra override value."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{_value(x)}" for k, x in v.items()) + "}"
    return json.dumps(str(v))  # quoted: commas and spaces stay one value


def _presets(config_dir: Path) -> dict[str, str]:
    """model id -> preset name, for the shipped pipeline presets."""
    out = {}
    for path in sorted((config_dir / "pipeline").glob("*.yaml")):
        model_id = OmegaConf.load(path).get("model_id")
        out.setdefault(str(model_id), path.stem)
    return out


def _take(section: dict, known, where: str) -> None:
    unknown = [k for k in section if k not in known]
    if unknown:
        raise TtsfConfigError(f"{where}: tts does not know {', '.join(map(repr, unknown))} (known: {', '.join(known)})")


def to_overrides(config: dict, config_dir: Path, where: str = "ttsf_config") -> list[str]:
    """The tts overrides equivalent to a tt-scale-flux JSON config (see the module docstring)."""
    top = ("pretrained_model_name_or_path", "torch_dtype", "pipeline_call_args", "verifier_args", "search_args",
           "batch_size_for_img_gen", "use_low_gpu_vram", "num_prompts", "export_args")
    if not isinstance(config, dict):
        raise TtsfConfigError(f"{where}: a JSON object expected")
    _take(config, top, where)
    out: list[str] = []
    model = config.get("pretrained_model_name_or_path")
    preset = _presets(config_dir).get(model) if model is not None else None
    if model is not None:
        out += [f"pipeline={preset}"] if preset else [f"pipeline.model_id={_value(model)}"]
    if "torch_dtype" in config:
        out.append(f"pipeline.dtype={_value(config['torch_dtype'])}")
    call = dict(config.get("pipeline_call_args") or {})
    for key in _PIPELINE_KEYS:
        if key in call:  # ++: an image preset's YAML has no num_frames (a video model id without a preset)
            out.append(f"{'++' if key == 'num_frames' else ''}pipeline.{key}={_value(call.pop(key))}")
    if call:  # the JSON's call arguments replace a preset's own (++: the preset may have some)
        has = preset is not None and OmegaConf.load(config_dir / "pipeline" / f"{preset}.yaml").get("call_args")
        out.append(f"{'++' if has else '+'}pipeline.call_args={_value(call)}")
    export = dict(config.get("export_args") or {})
    _take(export, ("fps",), f"{where}: export_args")
    if "fps" in export:  # the video's frame rate (tt-scale-flux's export_to_video fps)
        out.append(f"++pipeline.fps={_value(export['fps'])}")
    out += _verifier(dict(config.get("verifier_args") or {}), f"{where}: verifier_args", config_dir)
    out += _search(dict(config.get("search_args") or {}), f"{where}: search_args")
    if "batch_size_for_img_gen" in config:
        out.append(f"batch_size={_value(config['batch_size_for_img_gen'])}")
    if config.get("use_low_gpu_vram"):
        out.append("pipeline.cpu_offload=true")
    if config.get("num_prompts") not in (None, "None"):
        out.append(f"num_prompts={_value(config['num_prompts'])}")
    return out


def _verifier(args: dict, where: str, config_dir: Path) -> list[str]:
    """tt-scale-flux's graders keep every key; any other tts verifier (e.g. ``shapes``, offline) takes only a
    metric of its own: a grader's metric (the JSON's ``overall_score``) falls back to that verifier's default."""
    from ..verifiers.grading import METRICS as GRADER_METRICS

    _take(args, ("name", *_VERIFIER_KEYS), where)
    name = _VERIFIER_NAMES.get(args.get("name"), args.get("name"))
    if "choice_of_metric" in args:
        args["choice_of_metric"] = _METRIC_NAMES.get(args["choice_of_metric"], args["choice_of_metric"])
    if name is not None:
        names = sorted(p.stem for p in (config_dir / "verifier").glob("*.yaml"))
        if name not in names:
            close = difflib.get_close_matches(str(name), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise TtsfConfigError(f"{where}: unknown verifier {name!r}{hint} choices: {', '.join(names)}")
    out = [f"verifier={name}"] if name is not None else []
    grader = name is None or name in _VERIFIERS
    for key, ours in _VERIFIER_KEYS.items():
        if key not in args or (key == "max_new_tokens" and name != "qwen"):
            continue
        if not grader and (key != "choice_of_metric" or args[key] in GRADER_METRICS):
            continue  # model_name / prompt_path / a grader's metric mean nothing to this verifier
        out.append(f"verifier.{ours}={_value(args[key])}")
    return out


def _search(args: dict, where: str) -> list[str]:
    _take(args, ("search_method", *_SEARCH_KEYS), where)
    method = args.get("search_method", "random")
    if method not in _METHODS:
        raise TtsfConfigError(f"{where}: search_method {method!r} is not available in tts yet (available: "
                              f"{', '.join(sorted(set(_METHODS.values())))})")
    out = [f"search={_METHODS[method]}"]
    for key, ours in _SEARCH_KEYS.items():
        if key in args:
            if method == "random" and key != "search_rounds":
                continue  # tt-scale-flux ignores the zero-order keys under random search
            out.append(f"search.{ours}={_value(args[key])}")
    return out


def expand_config_args(argv: list[str]) -> list[str]:
    """Replace ``ttsf_config=PATH`` on a command line by the overrides it stands for (placed first, so the
    rest of the command line wins)."""
    from ..core.configtree import config_dir

    found = [a for a in argv if a.partition("=")[0].lstrip("+") == "ttsf_config"]
    if not found:
        return argv
    if len(found) > 1:
        raise TtsfConfigError("give ttsf_config=... once")
    path = Path(found[0].partition("=")[2]).expanduser()
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TtsfConfigError(f"ttsf_config: {str(path)!r} does not exist") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TtsfConfigError(f"ttsf_config: {path} is not a JSON file ({e})") from None
    rest = [a for a in argv if a is not found[0]]
    given = {a.lstrip("+~").partition("=")[0] for a in rest}
    return [o for o in to_overrides(config, config_dir(), f"ttsf_config {path}") if o.partition("=")[0] not in given] + rest
