"""Prompt sources: one prompt, a file (txt / csv / tsv / jsonl), a ``datasets`` dataset, or a built-in suite.

Each source is a small class whose ``load()`` returns a list of :class:`Prompt`; ``num_prompts``
(an integer or ``all``) takes the first N. Sources are chosen with ``prompts=<name>`` (configs/prompts).
"""
from __future__ import annotations

import csv
import dataclasses
import difflib
import io
import json
import logging
from pathlib import Path
from typing import Any
from .core.validate import install_hint, is_int

log = logging.getLogger(__name__)


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


class ListPrompts:
    """Prompts given as a list (tts.search with several prompts): ``prompts.texts=[...]``."""

    def __init__(self, texts: list[str]):
        self.texts = list(texts or [])

    def load(self) -> list[Prompt]:
        if not self.texts:
            raise PromptSourceError("no prompt given: pass at least one prompt")
        return [Prompt(_check_text(t, "the prompt list")) for t in self.texts]


#: Columns the summary groups by when a file or dataset does not say (``prompts.tags``): PartiPrompts'
#: declared tag columns and the shapes bench's; free-text columns (e.g. PartiPrompts' ``Note``) are not tags.
DEFAULT_GROUP_TAGS = ("Category", "Challenge", "category", "challenge", "split")


class FilePrompts:
    """A local file: .txt (one prompt a line), .csv/.tsv (``column``, other columns kept as tags), .jsonl
    (one JSON object a line). Lines are read only as far as the prompts asked for; a bad line is an error
    naming the file and line."""

    def __init__(self, path: str, column: str = "prompt", tags: list[str] | None = None):
        self.path, self.column = path, column
        self.group_by = tuple(tags) if tags is not None else DEFAULT_GROUP_TAGS

    def load(self) -> list[Prompt]:
        return list(self.iter())

    def iter(self):
        path = Path(self.path).expanduser()
        if path.is_dir():
            raise PromptSourceError(f"prompts.path={str(path)!r} is a folder: give a prompt file in it (.txt, .csv, "
                                    ".tsv or .jsonl)")
        if path.exists() and not path.is_file():
            raise PromptSourceError(f"prompts.path={str(path)!r} is not a regular file (a device, a pipe or a socket): "
                                    "give a prompt file (.txt, .csv, .tsv or .jsonl)")
        if not path.is_file():
            raise PromptSourceError(f"prompt file {str(path)!r} does not exist (set prompts.path=...)")
        text = _read_utf8(path)
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            reader = csv.DictReader(io.StringIO(text, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
            try:
                header = reader.fieldnames or []
                if self.column not in header:  # a header problem is line 1's, named before any row is read
                    close = difflib.get_close_matches(self.column, [str(h) for h in header], n=1)
                    hint = f"did you mean prompts.column={close[0]}? " if close else ""
                    raise PromptSourceError(f"{path}:1: the header has no column {self.column!r}; {hint}columns: "
                                            f"{', '.join(map(str, header)) or '(none)'} (set prompts.column=...)")
                for row in reader:
                    yield self._row(row, f"{path}:{reader.line_num}")
            except csv.Error as e:
                raise PromptSourceError(f"{path}:{reader.line_num}: not valid {suffix[1:].upper()} ({e})") from None
            return
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            if suffix == ".jsonl":
                yield self._row(_json_object(line, f"{path}:{number}", self.column), f"{path}:{number}")
            else:
                yield Prompt(line.strip())

    def _row(self, row: dict, where: str) -> Prompt:
        if self.column not in row:
            raise PromptSourceError(f"{where}: no column {self.column!r}; columns: {', '.join(map(str, row))} "
                                    "(set prompts.column=...)")
        tags = {k: v for k, v in row.items() if k != self.column and k is not None}
        return Prompt(_check_text(row[self.column], where), tags)


def _read_utf8(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise PromptSourceError(f"{path}:{line}: not UTF-8 text (byte {data[e.start]:#04x}); save the file as "
                                "UTF-8 and rerun") from None


def _json_object(line: str, where: str, column: str) -> dict:
    try:
        value = json.loads(line)
    except RecursionError:
        raise PromptSourceError(f"{where}: the JSON nests too deeply; each line must be a JSON object such as "
                                f"{{\"{column}\": \"a red circle\"}}") from None
    except json.JSONDecodeError as e:
        raise PromptSourceError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); each line must be a JSON "
                                f"object such as {{\"{column}\": \"a red circle\"}}") from None
    if not isinstance(value, dict):
        raise PromptSourceError(f"{where}: a JSON object with a {column!r} key expected, got {type(value).__name__} "
                                f"{line.strip()[:40]!r}")
    return value


class DatasetPrompts:
    """A Hugging Face ``datasets`` dataset by name or local path (``load_dataset(name, split=...)``)."""

    def __init__(self, name: str, split: str = "train", column: str = "prompt", config_name: str | None = None,
                 tags: list[str] | None = None):
        self.name, self.split, self.column, self.config_name = name, split, column, config_name
        self.group_by = tuple(tags) if tags is not None else DEFAULT_GROUP_TAGS

    def load(self) -> list[Prompt]:
        try:
            import datasets
        except ImportError as e:
            raise PromptSourceError(f"prompts=dataset needs the datasets package: {install_hint('datasets')}") from e
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


def check_num_prompts(num_prompts) -> int | None:
    """``all`` / None -> None (every prompt), else a positive integer; tt-scale-flux's ``None`` gets a hint."""
    if num_prompts in (None, "all"):
        return None
    if num_prompts in ("None", "null"):
        raise PromptSourceError("num_prompts=None is tt-scale-flux's spelling; in tts use num_prompts=all (every "
                                "prompt) or num_prompts=N")
    if not is_int(num_prompts) or num_prompts < 1:
        raise PromptSourceError(f"num_prompts must be a positive integer or 'all', got {num_prompts!r}")
    return num_prompts


def take(prompts, num_prompts) -> list[Prompt]:
    """The first ``num_prompts`` distinct prompts (``all`` / None for every one) of a list or an iterator;
    a prompt listed again is dropped with one warning (the first keeps its tags)."""
    limit = check_num_prompts(num_prompts)
    out: list[Prompt] = []
    seen: set[str] = set()
    repeated = 0
    for p in prompts:
        if p.text in seen:
            repeated += 1
            continue
        seen.add(p.text)
        out.append(p)
        if limit is not None and len(out) >= limit:
            break
    if repeated:
        log.warning("%d repeated prompt%s dropped (each prompt is searched once; the first keeps its tags)", repeated,
                    "s" if repeated > 1 else "")
    return out


def select(source, num_prompts) -> list[Prompt]:
    """The prompts a run searches: a source's own subset rule when it has one (a stratified subset of a
    suite), else the first ``num_prompts`` distinct prompts, reading no further than needed."""
    limit = check_num_prompts(num_prompts)
    if limit is not None and hasattr(source, "subset"):
        prompts = source.subset(limit)
    else:
        prompts = take(source.iter() if hasattr(source, "iter") else source.load(), limit)
    if not prompts:
        where = getattr(source, "path", None) or getattr(source, "name", None) or type(source).__name__
        raise PromptSourceError(f"no prompts in {where} (an empty file?): add prompts, or point prompts.path at "
                                "another file")
    return prompts
