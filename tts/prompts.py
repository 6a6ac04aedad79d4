"""Prompt sources: one prompt, a file (txt / csv / tsv / jsonl), a ``datasets`` dataset, or a built-in suite.

Each source is a small class whose ``load()`` returns a list of :class:`Prompt`; ``num_prompts``
(an integer or ``all``) takes the first N. Sources are chosen with ``prompts=<name>`` (configs/prompts).
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path
from typing import Any


@dataclasses.dataclass(frozen=True)
class Prompt:
    text: str
    tags: dict[str, Any] = dataclasses.field(default_factory=dict)


class PromptSourceError(ValueError):
    pass


def _check_text(text, where: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise PromptSourceError(f"empty or non-text prompt in {where}")
    return text.strip()


class SinglePrompt:
    """``prompt="..."``: one prompt from the command line."""

    def __init__(self, text: str | None):
        self.text = text

    def load(self) -> list[Prompt]:
        if not self.text or not str(self.text).strip():
            raise PromptSourceError("no prompt given: pass prompt=\"...\" or choose a prompt source with prompts=file")
        return [Prompt(str(self.text).strip())]


class FilePrompts:
    """A local file: .txt (one prompt a line), .csv/.tsv (``column``, other columns kept as tags), .jsonl."""

    def __init__(self, path: str, column: str = "prompt"):
        self.path, self.column = path, column

    def load(self) -> list[Prompt]:
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise PromptSourceError(f"prompt file {str(path)!r} does not exist (set prompts.path=...)")
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            with open(path, newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f, delimiter="\t" if suffix == ".tsv" else ","))
            return [self._row(r, f"{path}:{i + 2}") for i, r in enumerate(rows)]
        if suffix == ".jsonl":
            lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            return [self._row(json.loads(ln), f"{path}:{i + 1}") for i, ln in enumerate(lines)]
        return [Prompt(ln.strip()) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]

    def _row(self, row: dict, where: str) -> Prompt:
        if self.column not in row:
            raise PromptSourceError(f"{where}: no column {self.column!r}; columns: {', '.join(row)} "
                                    "(set prompts.column=...)")
        tags = {k: v for k, v in row.items() if k != self.column}
        return Prompt(_check_text(row[self.column], where), tags)


class DatasetPrompts:
    """A Hugging Face ``datasets`` dataset by name or local path (``load_dataset(name, split=...)``)."""

    def __init__(self, name: str, split: str = "train", column: str = "prompt", config_name: str | None = None):
        self.name, self.split, self.column, self.config_name = name, split, column, config_name

    def load(self) -> list[Prompt]:
        try:
            import datasets
        except ImportError as e:
            raise PromptSourceError("prompts=dataset needs the datasets package: pip install 'tts[datasets]'") from e
        path = Path(self.name).expanduser()
        if path.is_dir() and (path / "dataset_info.json").exists() or (path / "state.json").exists():
            ds = datasets.load_from_disk(str(path))
            ds = ds[self.split] if isinstance(ds, datasets.DatasetDict) else ds
        else:
            ds = datasets.load_dataset(self.name, self.config_name, split=self.split)
        if self.column not in ds.column_names:
            raise PromptSourceError(f"dataset {self.name!r} has no column {self.column!r}; "
                                    f"columns: {', '.join(ds.column_names)}")
        return [Prompt(_check_text(r[self.column], f"{self.name}[{i}]"),
                       {k: v for k, v in r.items() if k != self.column and isinstance(v, (str, int, float, bool))})
                for i, r in enumerate(ds)]


def take(prompts: list[Prompt], num_prompts) -> list[Prompt]:
    """The first ``num_prompts`` prompts (``all`` / None for every one)."""
    if num_prompts in (None, "all"):
        return prompts
    if isinstance(num_prompts, bool) or not isinstance(num_prompts, int) or num_prompts < 1:
        raise PromptSourceError(f"num_prompts must be a positive integer or 'all', got {num_prompts!r}")
    return prompts[:num_prompts]
