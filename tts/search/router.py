"""Routers (``router=rules`` / ``router=llm``): pick the pipeline(s) of a search over pipelines (tts.search.over_models)
per prompt, before anything is generated, from a YAML of each pipeline's strengths::

    gs1.5:                          # a pipeline's label (search.pipelines, its `label` or preset[settings])
      description: guidance 1.5, best at counts and relations   # what the LLM router reads
      keywords: [two, three, left of, above]                   # what the rules router matches
    default: gs1                    # optional: the pipeline when nothing matches (else every pipeline)

``RulesRouter``: the pipelines whose keywords (whole words, case-insensitive) occur most often in the prompt.
``LLMRouter``: a small instruct LLM (transformers, its chat template, greedy decoding; default
``Qwen/Qwen2.5-1.5B-Instruct``, as PromptPics' backend routes prompts) reads the descriptions and names one pipeline;
its answer is kept. Each returns a :class:`Route` (chosen labels, the reason, the raw answer).
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path


@dataclasses.dataclass(frozen=True)
class Route:
    chosen: tuple[str, ...]
    reason: str
    router: str
    answer: str | None = None


def load_strengths(strengths) -> dict:
    """The strengths YAML (a path, ``configs/router/NAME.yaml``-relative name, or a mapping already read)."""
    import yaml

    if isinstance(strengths, dict) or hasattr(strengths, "items"):
        return {str(k): v for k, v in dict(strengths).items()}
    path = Path(str(strengths)).expanduser()
    if not path.is_file():
        from ..core.configtree import config_dir

        path = config_dir() / "router" / "strengths" / str(strengths)
    if not path.is_file():
        raise ValueError(f"router.strengths {strengths!r} is no file: give a YAML of each pipeline's strengths "
                         "(see configs/router/strengths/shapes.yaml)")
    return yaml.safe_load(path.read_text(encoding="utf-8")) or {}


def check_strengths(strengths: dict, labels: list[str]) -> None:
    """Every described pipeline is one of the search's (one line with did-you-mean otherwise)."""
    import difflib

    for key in [k for k in strengths if k != "default"] + ([strengths["default"]] if "default" in strengths else []):
        if key not in labels:
            close = difflib.get_close_matches(str(key), labels, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"router.strengths names pipeline {key!r}, not one of search.pipelines' labels{hint} "
                             f"({', '.join(labels)})")


class RulesRouter:
    name = "rules"

    def __init__(self, strengths="shapes.yaml"):
        self.strengths = load_strengths(strengths)

    def check(self, labels: list[str]) -> None:
        check_strengths(self.strengths, labels)

    def route(self, prompt: str, labels: list[str]) -> Route:
        text = " " + " ".join(re.findall(r"[a-z0-9]+", prompt.lower())) + " "
        hits = {}
        for label in labels:
            words = (self.strengths.get(label) or {}).get("keywords") or []
            found = [w for w in words if f" {' '.join(re.findall(r'[a-z0-9]+', str(w).lower()))} " in text]
            if found:
                hits[label] = found
        if not hits:
            default = self.strengths.get("default")
            chosen = (default,) if default in labels else tuple(labels)
            return Route(chosen, f"no keyword matched: {'the default' if default in labels else 'every pipeline'}",
                         self.name)
        top = max(len(f) for f in hits.values())
        chosen = tuple(x for x in labels if len(hits.get(x, ())) == top)
        return Route(chosen, "; ".join(f"{x}: {', '.join(map(str, hits[x]))}" for x in chosen), self.name)


INSTRUCTION = ("You choose which image generation pipeline should draw a prompt.\nPipelines:\n{pipelines}\n"
               "Prompt: {prompt}\nAnswer with the pipeline's name only, then one short sentence why.")


class LLMRouter:
    name = "llm"

    def __init__(self, strengths="shapes.yaml", model_id: str = "Qwen/Qwen2.5-1.5B-Instruct",
                 max_new_tokens: int = 48, device: str = "auto", dtype: str = "auto"):
        self.strengths, self.model_id = load_strengths(strengths), model_id
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"router.max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        self.max_new_tokens, self.device, self.dtype = max_new_tokens, device, dtype
        self._model = self._tokenizer = None

    def check(self, labels: list[str]) -> None:
        check_strengths(self.strengths, labels)
        try:
            import transformers  # noqa: F401
        except ImportError:
            raise ValueError("router=llm needs transformers: pip install transformers") from None

    def _load(self) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from ..core.torchutil import resolve_device, resolve_dtype

        device = resolve_device(self.device)
        self._tokenizer = AutoTokenizer.from_pretrained(self.model_id)
        self._model = AutoModelForCausalLM.from_pretrained(
            self.model_id, dtype=resolve_dtype(self.dtype, device, on_cuda="bf16")).to(device).eval()

    def answer(self, prompt: str, labels: list[str]) -> str:
        import torch

        if self._model is None:
            self._load()
        tok, model = self._tokenizer, self._model
        listed = "\n".join(f"- {x}: {(self.strengths.get(x) or {}).get('description', '')}" for x in labels)
        messages = [{"role": "user", "content": INSTRUCTION.format(pipelines=listed, prompt=prompt)}]
        inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        inputs = {k: v.to(model.device) for k, v in inputs.items()}
        with torch.no_grad():
            out = model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False, temperature=None,
                                 top_p=None, top_k=None, pad_token_id=tok.pad_token_id or tok.eos_token_id)
        return tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()

    def route(self, prompt: str, labels: list[str]) -> Route:
        text = self.answer(prompt, labels)
        named = parse_choice(text, labels)
        if named is None:
            return Route(tuple(labels), "the LLM named no pipeline: every pipeline", self.name, text)
        return Route((named,), text[:200] or named, self.name, text)

    def close(self) -> None:
        self._model = self._tokenizer = None


def parse_choice(text: str, labels: list[str]) -> str | None:
    """The pipeline an answer names first (the longest label wins where one contains another), or None."""
    found = [(text.find(x), -len(x), x) for x in labels if x and x in text]
    return min(found)[2] if found else None
